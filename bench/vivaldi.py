"""How well Vivaldi coordinates estimate the RTTs nobody measured, and what
``rtt_from`` costs over a large fleet.

    python bench/vivaldi.py [--sites 200] [--peers 4,8,16] [--rounds 30] [--seeds 3]
                            [--fleet 50000]

A synthetic fleet: ``--sites`` sites (one node each) on a 150 ms wide plane,
each with an access link of 1-10 ms (true RTT = distance + both heights).
Each node probes the same ``peers`` random peers every round with 10%
multiplicative noise and reports them to a :class:`federation.latency.RttMatrix`
exactly as capacity reports do. After ``--rounds`` rounds, the relative error
|estimate - true| / true is taken over every pair nobody measured. Printed per
probe count: median and p90 relative error (over ``--seeds`` fleets), pairs
estimable, and the probes per round against N² (all pairs).

Then the scheduler's call: ``rtt_from`` from a landmark and from a site to
every node of a ``--fleet`` node inventory (median of 20 calls, ms).
Prints one JSON document to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from federation.latency import RttMatrix


def synthetic(n: int, rng: np.random.Generator) -> np.ndarray:
    pos = rng.uniform(0, 150, size=(n, 2))
    height = rng.uniform(1, 10, size=n)
    true = np.linalg.norm(pos[:, None] - pos[None], axis=2) + height[:, None] + height[None]
    np.fill_diagonal(true, 0.0)
    return true


def accuracy(sites: int, peers: int, rounds: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    true = synthetic(sites, rng)
    chosen = [rng.choice([j for j in range(sites) if j != i], size=peers, replace=False)
              for i in range(sites)]
    matrix = RttMatrix(seed=seed)
    now = 0.0
    started = time.perf_counter()
    for _ in range(rounds):
        for i in rng.permutation(sites):
            now += 0.01
            matrix.observe(f"n{i}", f"s{i}", {f"n{j}": float(true[i, j] * rng.uniform(0.9, 1.1))
                                              for j in chosen[i]}, now)
    elapsed = time.perf_counter() - started
    measured = np.zeros((sites, sites), dtype=bool)
    for i in range(sites):
        measured[i, chosen[i]] = True
    measured |= measured.T
    errors, unknown = [], 0
    for i in range(sites):
        for j in range(i + 1, sites):
            if measured[i, j]:
                continue
            est = matrix.estimate(f"n{i}", f"n{j}")
            if np.isnan(est):
                unknown += 1
            else:
                errors.append(abs(est - true[i, j]) / true[i, j])
    return {"median": float(np.median(errors)), "p90": float(np.percentile(errors, 90)),
            "unmeasured_pairs": len(errors) + unknown, "unknown_pairs": unknown,
            "measured_pairs": int(measured.sum()) // 2,
            "updates_per_second": round(2 * peers * sites * rounds / elapsed)}


def rtt_from_cost(fleet: int) -> dict[str, object]:
    """rtt_from over ``fleet`` nodes in 500 sites, every node having probed a landmark
    and one peer (coordinates need not be settled for the cost)."""
    rng = np.random.default_rng(1)
    matrix = RttMatrix()
    started = time.perf_counter()
    for k in range(fleet):
        matrix.observe(f"n{k}", f"site-{k % 500}", {"users-eu": float(rng.uniform(5, 80)),
                                                    f"n{(k * 7919) % fleet}": 10.0}, float(k))
    fill = time.perf_counter() - started
    names = [f"n{k}" for k in range(fleet)]
    out: dict[str, object] = {"nodes": fleet, "fill_seconds": round(fill, 2)}
    for label, source in (("landmark_ms", "users-eu"), ("site_ms", "site-7")):
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            values = matrix.rtt_from(source, names)
            times.append(1000 * (time.perf_counter() - t0))
        assert values.shape == (fleet,)
        out[label] = round(float(np.median(times)), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--peers", default="4,8,16")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--fleet", type=int, default=50_000)
    args = parser.parse_args()
    n = args.sites
    result: dict[str, object] = {"sites": n, "rounds": args.rounds, "noise": 0.10,
                                 "all_pairs": n * (n - 1) // 2, "n_squared": n * n}
    rows = []
    for peers in (int(p) for p in args.peers.split(",")):
        print(f"{n} sites, {peers} peers per node", file=sys.stderr)
        runs = [accuracy(n, peers, args.rounds, seed) for seed in range(args.seeds)]
        rows.append({
            "peers_per_node": peers, "probes_per_round": n * peers,
            "probes_vs_n_squared": round(n * peers / (n * n), 4),
            "measured_pairs": round(float(np.mean([r["measured_pairs"] for r in runs]))),
            "median_relative_error": round(float(np.median([r["median"] for r in runs])), 4),
            "median_relative_error_worst_seed": round(max(r["median"] for r in runs), 4),
            "p90_relative_error": round(float(np.median([r["p90"] for r in runs])), 4),
            "unknown_pairs": int(sum(r["unknown_pairs"] for r in runs)),
            "unmeasured_pairs": int(sum(r["unmeasured_pairs"] for r in runs)),
            "vivaldi_updates_per_second": round(float(np.median(
                [r["updates_per_second"] for r in runs]))),
        })
    result["by_peers"] = rows
    if args.fleet:
        print(f"rtt_from over {args.fleet} nodes", file=sys.stderr)
        result["rtt_from"] = rtt_from_cost(args.fleet)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
