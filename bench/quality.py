"""Placement quality: how far two-phase and the baseline strategies are from the
optimum of the 0/1 program (``federation.optimal``) on seeded synthetic fleets.

    python bench/quality.py [--instances 60] [--seed 1] [--time-limit 10]
                            [--weights user-rtt=20,least-allocated=1,...]

Each instance is a fleet of 4-12 sites placed at random points of a 100 x 100
plane (RTT between sites 2 ms + 1.2 ms per unit of distance, 1 ms inside a
site), 1-4 nodes per site with mixed capacities and some of it already used,
each site in one of four countries; and 1-3 deployments, 3-30 replicas in
all, each with 1-4 user groups at random sites (shares summing to 1), some
with residency (two allowed countries) and most with an anti-affinity rule
(maxPerNode 1, maxPerSite 1 or a required anti-affinity term on the node).

Every strategy places the same replicas one at a time through the
controller's pass (``federation.planning.decide`` with ``Request.strategy``:
``place`` per replica, and for two-phase the room-making of
``federation.scheduling.repair`` when a replica fits nowhere), on a fresh
``Round`` whose RTT source is the instance's site matrix;
``place-optimal`` is the batch through ``federation.optimal.place_optimal``
(the optimal strategy end to end: its gap must be 0). The optimum
comes from ``federation.optimal.solve`` on ``problem_from_round`` of that
round, and every strategy's result is scored with the program's objective:

    J = mean over replicas of the share-weighted user RTT (ms)
        + BALANCE_WEIGHT_MS * balance
    balance = the peak cpu or memory utilisation (0..1) over the nodes some
              replica may run on, after placing

Gaps are (J_strategy - J_optimum) / J_optimum over the feasible instances
(the optimum places every replica) that the strategy placed completely.
Prints one JSON document to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from federation import optimal, wire
from federation.inventory import Node, NodeState
from federation.planning import decide
from federation.scheduler import (
    DEFAULT_WEIGHTS,
    Apart,
    Request,
    Round,
    Scope,
    Users,
)
from policies.model import Selector

MiB = 1024**2
GiB = 1024**3
STRATEGIES = ("two-phase", "random", "round-robin", "least-load", "place-optimal")
COUNTRIES = ("de", "fr", "nl", "pl")
INTRA_SITE_MS = 1.0


# -- instances ----------------------------------------------------------------------------


class SiteRtt:
    """The contract's RttSource over a site-to-site matrix: users are at a site."""

    def __init__(self, sites: Sequence[str], matrix: NDArray[np.float64],
                 node_site: Mapping[str, str]) -> None:
        self.index = {s: i for i, s in enumerate(sites)}
        self.matrix = matrix
        self.node_site = node_site

    def rtt_from(self, source: str, nodes: Sequence[str]) -> NDArray[np.float64]:
        row = self.index.get(source)
        if row is None:
            return np.full(len(nodes), np.nan)
        return np.array([self.matrix[row, self.index[self.node_site[n]]] for n in nodes])


@dataclass
class Instance:
    number: int
    nodes: list[Node]
    requests: list[Request]
    rtt: SiteRtt
    sites: int

    def round(self) -> Round:
        return Round(nodes=self.nodes, rtt=self.rtt)


def make_node(name: str, site: str, country: str, cpu: int, memory: int, used: float) -> Node:
    capacity = wire.Capacity(
        site=site, arch="amd64", os="linux", runtime="docker", labels={"country": country},
        allocatable=wire.Resources(cpu_millis=cpu, memory_bytes=memory, disk_bytes=0),
        used=wire.Resources(cpu_millis=int(cpu * used), memory_bytes=int(memory * used),
                            disk_bytes=0),
        images=(), instances=())
    return Node(name=name, site=site, epoch="boot-1", online=True, state=NodeState.READY,
                state_since=0.0, last_seen=0.0, capacity=capacity)


def make_instance(seed: int, number: int, weights: Mapping[str, float]) -> Instance:
    rng = np.random.default_rng([seed, number])
    count = int(rng.integers(4, 13))
    sites = [f"site-{i:02d}" for i in range(count)]
    points = rng.uniform(0, 100, (count, 2))
    distance = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2)
    matrix = np.where(np.eye(count, dtype=bool), INTRA_SITE_MS, 2.0 + 1.2 * distance)
    country = [str(rng.choice(COUNTRIES)) for _ in sites]
    nodes, node_site = [], {}
    for i, site in enumerate(sites):
        for j in range(int(rng.integers(1, 5))):
            name = f"{site}-n{j}"
            nodes.append(make_node(name, site, country[i],
                                   cpu=int(rng.choice([1000, 2000, 4000, 8000])),
                                   memory=int(rng.choice([1, 2, 4, 8, 16])) * GiB,
                                   used=float(rng.uniform(0.0, 0.5))))
            node_site[name] = site
    total = int(rng.integers(3, 31))
    deployments = int(rng.integers(1, 4))
    cuts = sorted(rng.choice(np.arange(1, total), size=min(deployments, total) - 1,
                             replace=False).tolist()) if deployments > 1 else []
    sizes = np.diff([0, *cuts, total]).tolist()
    requests = []
    for d, replicas in enumerate(sizes):
        requests += make_requests(rng, f"app{d}", int(replicas), sites, country, nodes, weights)
    return Instance(number=number, nodes=nodes, requests=requests,
                    rtt=SiteRtt(sites, matrix, node_site), sites=count)


def make_requests(rng: np.random.Generator, name: str, replicas: int, sites: list[str],
                  country: list[str], nodes: list[Node],
                  weights: Mapping[str, float]) -> list[Request]:
    """One deployment's replicas. Its rules are drawn so that they can hold all of
    them (one per site only with as many allowed sites, one per node only with as
    many allowed nodes): infeasible instances come from capacity alone."""
    groups = int(rng.integers(1, 5))
    shares = rng.dirichlet(np.ones(groups))
    at = rng.choice(len(sites), size=groups)
    users = tuple(Users(name=f"users-{g}", source=sites[int(at[g])], share=float(shares[g]))
                  for g in range(groups))
    countries: tuple[str, ...] = ()
    if rng.random() < 0.3:
        countries = tuple(sorted(rng.choice(COUNTRIES, size=2, replace=False).tolist()))
    rule = str(rng.choice(["none", "per-node", "per-site", "apart"], p=[0.25, 0.3, 0.2, 0.25]))
    allowed_sites = sum(1 for c in country if not countries or c in countries)
    allowed_nodes = sum(1 for n in nodes if not countries or n.labels["country"] in countries)
    if rule == "per-site" and replicas > allowed_sites:
        rule = "per-node"
    if rule in ("per-node", "apart") and replicas > allowed_nodes:
        rule = "none"
    labels = {"app": name}
    cpu = int(rng.choice([100, 250, 500, 1000]))
    memory = int(rng.choice([64, 128, 256, 512, 1024])) * MiB
    return [Request(deployment=name, slot=i, generation=1, labels=labels, cpu_millis=cpu,
                    memory_bytes=memory, users=users, countries=countries,
                    max_per_node=1 if rule == "per-node" else 0,
                    max_per_site=1 if rule == "per-site" else 0,
                    apart=((Apart(selector=Selector(match_labels=labels), scope=Scope.NODE),)
                           if rule == "apart" else ()),
                    weights=dict(weights))
            for i in range(replicas)]


# -- running -----------------------------------------------------------------------------------


def run_strategy(inst: Instance, strategy: str, time_limit: float) -> optimal.Assignment:
    rnd = inst.round()
    if strategy == "place-optimal":  # the batch through the scheduler adapter, end to end
        placed = optimal.place_optimal(inst.requests, rnd, time_limit=time_limit)
        decisions = [p.decision for p in placed]
    else:
        decided = decide([replace(req, strategy=strategy) for req in inst.requests], rnd)
        decisions = [d.decision for d in decided]
    return tuple(rnd.index[d.node] if d.node is not None else None for d in decisions)


def measure(inst: Instance, time_limit: float, balance_weight: float) -> dict[str, Any]:
    problem = optimal.problem_from_round(inst.requests, inst.round(),
                                         balance_weight=balance_weight)
    started = time.perf_counter()
    best = optimal.solve(problem, time_limit=time_limit)
    seconds = time.perf_counter() - started
    row: dict[str, Any] = {
        "instance": inst.number, "sites": inst.sites, "nodes": len(inst.nodes),
        "replicas": len(inst.requests), "status": best.status.value, "gap": best.gap,
        "solve_seconds": seconds, "optimum": _scored(problem, best.assignment),
        "violations": {}, "strategies": {}}
    if optimal.violations(problem, best.assignment):
        row["violations"]["optimal"] = optimal.violations(problem, best.assignment)
    for strategy in STRATEGIES:
        assignment = run_strategy(inst, strategy, time_limit)
        broken = optimal.violations(problem, assignment)
        if broken:
            row["violations"][strategy] = broken
        row["strategies"][strategy] = _scored(problem, assignment)
    return row


def _scored(problem: optimal.Problem, assignment: optimal.Assignment) -> dict[str, Any]:
    ev = optimal.evaluate(problem, assignment)
    return {"placed": ev.placed, "objective": ev.objective, "mean_rtt_ms": ev.mean_rtt,
            "balance": ev.balance, "assignment": assignment}


# -- summary -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _r(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or value != value else round(value, digits)


def summarise(rows: list[dict[str, Any]], time_limit: float, weights: Mapping[str, float],
              balance_weight: float) -> dict[str, Any]:
    feasible = [r for r in rows if r["optimum"]["placed"] == r["replicas"]]
    out: dict[str, Any] = {
        "instances": len(rows), "feasible_instances": len(feasible),
        "replicas": sum(r["replicas"] for r in rows),
        "solver": {
            "time_limit_seconds": time_limit,
            "p50_seconds": _r(percentile([r["solve_seconds"] for r in rows], 50)),
            "p99_seconds": _r(percentile([r["solve_seconds"] for r in rows], 99)),
            "max_seconds": _r(max(r["solve_seconds"] for r in rows)),
            "hit_time_limit": sum(r["status"] == "time-limit" for r in rows),
            "statuses": {s: sum(r["status"] == s for r in rows)
                         for s in ("optimal", "time-limit", "infeasible")},
        },
        "objective": f"mean user RTT (ms) + {balance_weight:g} * balance",
        "balance": "peak cpu or memory utilisation (0..1) over the nodes a replica may use",
        "two_phase_weights": {**DEFAULT_WEIGHTS, **weights},
        "optimum": _strategy_summary(rows, feasible, "optimum"),
        "strategies": {s: _strategy_summary(rows, feasible, s) for s in STRATEGIES},
        "violations": {k: v for r in rows for k, v in r["violations"].items()},
    }
    two = out["strategies"]["two-phase"]
    out["target"] = {"two_phase_mean_gap_at_most": 0.05, "two_phase_p95_gap_at_most": 0.10,
                     "met": bool(two["gap_mean"] is not None and two["gap_mean"] <= 0.05
                                 and two["gap_p95"] <= 0.10
                                 and two["complete_on_feasible"] == 1.0)}
    out["two_phase_worst"] = _worst(feasible, "two-phase")
    return out


def _pick(row: dict[str, Any], strategy: str) -> dict[str, Any]:
    return row["optimum"] if strategy == "optimum" else row["strategies"][strategy]  # type: ignore[no-any-return]


def _strategy_summary(rows: list[dict[str, Any]], feasible: list[dict[str, Any]],
                      strategy: str) -> dict[str, Any]:
    complete = [r for r in feasible if _pick(r, strategy)["placed"] == r["replicas"]]
    gaps = [_gap(r, strategy) for r in complete]
    rtt_gaps = [(_pick(r, strategy)["mean_rtt_ms"] - r["optimum"]["mean_rtt_ms"])
                / r["optimum"]["mean_rtt_ms"] for r in complete]
    out = {
        "mean_user_rtt_ms": _r(statistics.fmean(_pick(r, strategy)["mean_rtt_ms"]
                                                for r in complete) if complete else None, 2),
        "mean_balance": _r(statistics.fmean(_pick(r, strategy)["balance"] for r in complete)
                           if complete else None),
        "replicas_placed": _r(sum(_pick(r, strategy)["placed"] for r in rows)
                              / sum(r["replicas"] for r in rows)),
        "places_as_many_as_optimum": _r(sum(_pick(r, strategy)["placed"]
                                            >= r["optimum"]["placed"] for r in rows) / len(rows)),
        "complete_on_feasible": _r(len(complete) / len(feasible)) if feasible else None,
    }
    if strategy != "optimum":
        out.update({
            "gap_mean": _r(statistics.fmean(gaps)) if gaps else None,
            "gap_p95": _r(percentile(gaps, 95)),
            "gap_max": _r(max(gaps)) if gaps else None,
            "rtt_gap_mean": _r(statistics.fmean(rtt_gaps)) if rtt_gaps else None,
            "gap_counted_on": len(gaps),
        })
    return out


def _gap(row: dict[str, Any], strategy: str) -> float:
    best = row["optimum"]["objective"]
    return float((_pick(row, strategy)["objective"] - best) / best)


def _worst(feasible: list[dict[str, Any]], strategy: str, count: int = 5) -> list[dict[str, Any]]:
    complete = [r for r in feasible if _pick(r, strategy)["placed"] == r["replicas"]]
    complete.sort(key=lambda r: -_gap(r, strategy))
    return [{"instance": r["instance"], "sites": r["sites"], "nodes": r["nodes"],
             "replicas": r["replicas"], "gap": _r(_gap(r, strategy)),
             "rtt_ms": [_r(_pick(r, strategy)["mean_rtt_ms"], 2),
                        _r(r["optimum"]["mean_rtt_ms"], 2)],
             "balance": [_r(_pick(r, strategy)["balance"], 3), _r(r["optimum"]["balance"], 3)]}
            for r in complete[:count]]


def parse_weights(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in DEFAULT_WEIGHTS:
            raise SystemExit(f"--weights: unknown score {key!r} (known: "
                             f"{', '.join(DEFAULT_WEIGHTS)})")
        out[key] = float(value)
    return out


def environment() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    return {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0)),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "git_commit": git("rev-parse", "--short", "HEAD"),
            "dirty": bool(git("status", "--porcelain")),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--weights", default="", help="two-phase weights, name=value,...")
    parser.add_argument("--balance-weight", type=float, default=optimal.BALANCE_WEIGHT_MS,
                        help="ms of mean user RTT a whole unit of peak utilisation is worth")
    parser.add_argument("--rows", action="store_true", help="include every instance's row")
    args = parser.parse_args()
    weights = parse_weights(args.weights)
    # HiGHS sometimes prints a diagnostic line on the C stdout: keep it out of the JSON.
    sys.stdout.flush()
    document = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    rows = []
    for number in range(args.instances):
        inst = make_instance(args.seed, number, weights)
        row = measure(inst, args.time_limit, args.balance_weight)
        rows.append(row)
        two = row["strategies"]["two-phase"]
        print(f"instance {number}: {row['replicas']} replicas on {row['nodes']} nodes, "
              f"{row['status']} in {row['solve_seconds']:.2f}s, J {row['optimum']['objective']:.2f},"
              f" two-phase {two['objective']:.2f} ({two['placed']} placed)", file=sys.stderr)
    summary = summarise(rows, args.time_limit, weights, args.balance_weight)
    summary["seed"] = args.seed
    summary["environment"] = environment()
    if args.rows:
        summary["rows"] = rows
    print(json.dumps(summary, indent=2, default=str), file=document)
    document.close()


if __name__ == "__main__":
    main()
