"""The scheduler's share of one controller pass over a big fleet, with the nodes'
columns read anew and with the columns kept from the last pass (``Fleet``).

    python bench/reconcile_pass.py [--nodes 5000,50000] [--replicas 10000]
                                   [--reported 0.1] [--passes 5] [--seed 7]

Every pass asks which placed replicas may no longer stay (``misplaced``: one
round, each replica checked at its node's row) and, when something is to be
placed, builds the round those placements share (``new_round``: every placed
replica's share committed). The fleet and the six deployments are those of
``bench/scheduler.py``; the replicas are placed first, then each pass follows
``--reported`` of the nodes sending a new capacity report (new usage).

One JSON document goes to stdout: per fleet size, the median seconds of each
step read anew and from the kept fleet, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scheduler import deployments, fleet, report_usage, requests

from federation.inventory import Node
from federation.model import SlotRecord
from federation.planning import misplaced, new_round
from federation.scheduler import Fleet, Round, place


def _placed(nodes: list[Node], replicas: int) -> tuple[dict[str, Any], list[SlotRecord]]:
    specs = {d.name: d for d in deployments(replicas)}
    rnd = Round(nodes=nodes)
    slots = []
    for req in requests(list(specs.values()), replicas):
        node = place(req, rnd).node
        slots.append(SlotRecord(deployment=req.deployment, index=req.slot, generation=1,
                                revision=1, node=node))
    return specs, slots


def _median(passes: int, before: Callable[[], None], step: Callable[[Fleet | None], object],
            kept: Fleet | None) -> float:
    times = []
    for _ in range(passes):
        before()
        started = time.perf_counter()
        step(kept)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(size: int, replicas: int, share: float, passes: int, seed: int) -> dict[str, Any]:
    nodes, rtt = fleet(size, seed)
    specs, slots = _placed(nodes, replicas)
    rng = random.Random(seed)
    kept = Fleet()
    Round(nodes=nodes, fleet=kept)
    out: dict[str, Any] = {"nodes": size, "replicas": replicas,
                           "placed": sum(1 for s in slots if s.node), "reported": share}
    steps: dict[str, Callable[[Fleet | None], object]] = {
        "misplaced": lambda f: misplaced(specs, slots, nodes, fleet=f),
        "new_round": lambda f: new_round(nodes, slots, specs, rtt=rtt, fleet=f),
    }
    def report() -> None:
        report_usage(nodes, share, rng)

    for name, step in steps.items():
        anew = _median(passes, report, step, None)
        from_kept = _median(passes, report, step, kept)
        out[name] = {"anew_s": round(anew, 4), "kept_s": round(from_kept, 4),
                     "ratio": round(anew / from_kept, 1)}
        print(f"{size} nodes: {name} {out[name]}", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="5000,50000")
    parser.add_argument("--replicas", type=int, default=10_000)
    parser.add_argument("--reported", type=float, default=0.1,
                        help="share of the nodes that report between two passes")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    results = [run(int(size), args.replicas, args.reported, args.passes, args.seed)
               for size in args.nodes.split(",")]
    print(json.dumps({
        "bench": "reconcile_pass",
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "loadavg": os.getloadavg()},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
