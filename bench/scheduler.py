"""Scheduler throughput and per-placement latency on synthetic fleets, with the
full plugin set, against a plain Python loop that applies the same filters and
scores node by node.

    python bench/scheduler.py [--nodes 500,5000,50000] [--replicas 10000]
                              [--loop-replicas 1000,200,20] [--seed 7] [--repeat 3]

The fleet: sites on a plane (coordinates in milliseconds of RTT), labelled with
region, country, provider, tier and (cloud sites) a price; nodes of mixed arch
and capacity, some already busy, some Suspect, some tainted (NoSchedule and
PreferNoSchedule), some holding a data set or an image. User groups sit at a
few sites and at two landmarks; their RTT to a node is the distance between
sites plus a per-node jitter, unknown for a few nodes. Six deployments use
every plugin: users with and without maxRtt, residency, node selectors with
In/Gt, tolerations, required and preferred (anti-)affinity, required and
preferred spread over regions and providers, per-node and per-site limits,
host ports, data sets, image, cost. Replicas of the six are placed in turn
into one round (a reconcile pass placing ``--replicas`` replicas).

One JSON document goes to stdout: for each fleet size, placements/s, p50 and
p99 latency of one placement for the array scheduler (the median of
``--repeat`` rounds, each round's placements/s listed beside it: on a shared
host they move from minute to minute) and for the loop, the
speed ratio, and how often the two chose the same node (the loop must agree
on feasibility; totals are summed in another order, so an exact tie may break
another way). The loop runs fewer replicas on big fleets (``--loop-replicas``)
to keep the bench short; the JSON says how many.

``round_build_s`` is building the round from the nodes; ``round_refresh_s``,
making the next pass's round from the columns the last one kept (``Fleet``)
after a tenth of the nodes sent a new capacity report, as the controller does
on every pass.

``target`` holds the marks the scheduler is held to, for the fleet sizes run:
at least 10,000 placements/s with p99 at most 2 ms at 5,000 nodes, at least
1,000/s at 50,000; ``met`` says whether this run met them all.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scheduler_loop import LoopRound, loop_place

from federation import wire
from federation.inventory import Node, NodeState
from federation.planning import request_for
from federation.scheduler import FILTERS, SCORES, Fleet, Request, Round, place
from policies.model import (
    AffinityTerm,
    Container,
    DataSet,
    Deployment,
    LabelRequirement,
    Operator,
    Placement,
    Port,
    Residency,
    Resources,
    Scope,
    Selector,
    SpreadConstraint,
    Toleration,
    TolerationOperator,
    UserGroup,
)

GiB = 1024**3
MiB = 1024**2
REGIONS = [("eu-central", "de"), ("eu-west", "fr"), ("eu-north", "se"), ("us-east", "us"),
           ("us-west", "us"), ("ap-south", "in")]
PROVIDERS = ["onprem", "aws", "gcp", "azure"]
LANDMARKS = {"probe-us": (900.0, 120.0), "probe-ap": (400.0, 900.0)}


class PlaneRtt:
    """RTT from a site or landmark to nodes: the distance on the plane between the
    places plus each node's own jitter; nan for the nodes without measurements."""

    def __init__(self, coords: dict[str, tuple[float, float]], node_site: dict[str, str],
                 jitter: dict[str, float], unknown: set[str]) -> None:
        self.coords, self.node_site, self.jitter, self.unknown = coords, node_site, jitter, unknown

    def rtt_from(self, source: str, nodes: Sequence[str]) -> NDArray[np.float64]:
        sx, sy = self.coords.get(source) or LANDMARKS[source]
        out = np.empty(len(nodes))
        for i, name in enumerate(nodes):
            if name in self.unknown:
                out[i] = math.nan
                continue
            x, y = self.coords[self.node_site[name]]
            out[i] = math.hypot(x - sx, y - sy) / 10.0 + self.jitter[name]
        return out


def fleet(size: int, seed: int) -> tuple[list[Node], PlaneRtt]:
    rng = random.Random(seed)
    sites = max(10, size // 50)
    coords, site_labels = {}, {}
    for s in range(sites):
        region, country = REGIONS[s % len(REGIONS)]
        cx, cy = (150.0 * (s % len(REGIONS)), 100.0 * (s % len(REGIONS)))
        name = f"site-{s}"
        coords[name] = (cx + rng.uniform(0, 120), cy + rng.uniform(0, 120))
        cloud = s % 3 == 0
        labels = {"region": region, "country": country, "provider": PROVIDERS[s % 4]
                  if cloud else "onprem", "tier": "cloud" if cloud else "edge"}
        if cloud:
            labels["price"] = f"{rng.uniform(0.02, 0.4):.3f}"
        site_labels[name] = labels
    nodes, node_site, jitter, unknown = [], {}, {}, set()
    for i in range(size):
        site = f"site-{i % sites}"
        name = f"n{i}"
        arch = "arm64" if rng.random() < 0.4 else "amd64"
        cpu = rng.choice([2000, 4000, 8000, 16000, 32000])
        memory = rng.choice([2, 4, 8, 16, 64]) * GiB
        labels = dict(site_labels[site])
        labels["cores"] = str(cpu // 1000)
        roll = rng.random()
        if roll < 0.05:
            labels["taint.edgefed.io/dedicated"] = "gpu:NoSchedule"
        elif roll < 0.10:
            labels["taint.edgefed.io/maintenance"] = ":PreferNoSchedule"
        if rng.random() < 0.1:
            labels["data.edgefed.io/frames"] = "present"
        images = ("registry.local/web:1",) if rng.random() < 0.3 else ()
        state = NodeState.SUSPECT if rng.random() < 0.02 else NodeState.READY
        capacity = wire.Capacity(
            site=site, arch=arch, os="linux", runtime="docker", labels=labels,
            allocatable=wire.Resources(cpu_millis=cpu, memory_bytes=memory, disk_bytes=0),
            used=wire.Resources(cpu_millis=int(cpu * rng.uniform(0, 0.5)),
                                memory_bytes=int(memory * rng.uniform(0, 0.5)), disk_bytes=0),
            images=images, instances=())
        nodes.append(Node(name=name, site=site, epoch="e", online=True, state=state,
                          state_since=0.0, last_seen=0.0, capacity=capacity))
        node_site[name] = site
        jitter[name] = rng.uniform(0.2, 3.0)
        if rng.random() < 0.01:
            unknown.add(name)
    return nodes, PlaneRtt(coords, node_site, jitter, unknown)


def _sel(**labels: str) -> Selector:
    return Selector(match_labels=labels)


def deployments(replicas: int) -> list[Deployment]:
    per = max(1, replicas // 6)

    def dep(name: str, image: str, cpu: int, memory: int, placement: Placement,
            **container: Any) -> Deployment:
        return Deployment(name=name, replicas=per, labels={"app": name}, placement=placement,
                          container=Container(image=image, resources=Resources(
                              cpu_millis=cpu, memory_bytes=memory), **container))

    ms = timedelta(milliseconds=1)
    return [
        dep("web", "registry.local/web:1", 100, 64 * MiB, Placement(
            users=(UserGroup(name="users-eu", site="site-0", share=0.6, max_rtt=120 * ms),
                   UserGroup(name="users-us", landmark="probe-us", share=0.4)),
            spread=(SpreadConstraint(scope=Scope.REGION, max_skew=2),))),
        dep("db", "registry.local/db:3", 250, 256 * MiB, Placement(
            residency=Residency(countries=("de", "fr", "se")),
            anti_affinity=(AffinityTerm(selector=_sel(app="db"), scope=Scope.NODE,
                                        required=True),),
            node_selector=Selector(match_expressions=(
                LabelRequirement(key="cores", operator=Operator.GT, values=("2",)),)))),
        dep("cache", "registry.local/cache:2", 50, 32 * MiB, Placement(
            max_per_node=2,
            affinity=(AffinityTerm(selector=_sel(app="db"), scope=Scope.SITE, weight=50),),
            anti_affinity=(AffinityTerm(selector=_sel(app="batch"), scope=Scope.NODE,
                                        weight=20),))),
        dep("batch", "registry.local/batch:9", 500, 512 * MiB, Placement(
            tolerations=(Toleration(key="dedicated", operator=TolerationOperator.EQUAL,
                                    value="gpu"),),
            node_selector=_sel(arch="amd64"), weights={"cost": 5.0, "balanced": 1.0})),
        dep("relay", "registry.local/relay:1", 50, 16 * MiB, Placement(
            spread=(SpreadConstraint(scope=Scope.PROVIDER, max_skew=3, required=True),),
            max_per_site=max(2, per // 20)), ports=(Port(container_port=1883, host_port=1883),)),
        dep("analytics", "registry.local/analytics:4", 200, 128 * MiB, Placement(
            users=(UserGroup(name="users-ap", landmark="probe-ap", share=1.0),),
            site_selector=Selector(match_expressions=(
                LabelRequirement(key="region", operator=Operator.IN,
                                 values=("ap-south", "eu-central", "us-west")),))),
            data_sets=(DataSet(name="frames", mount_path="/data"),)),
    ]


def requests(deps: list[Deployment], count: int) -> list[Request]:
    out = []
    for slot in range(count):
        spec = deps[slot % len(deps)]
        out.append(request_for(spec, slot // len(deps), 1))
    return out


def _stats(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    total = sum(ordered)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"placements_per_s": round(len(ordered) / total, 1),
            "p50_ms": round(at(0.50) * 1000, 4), "p99_ms": round(at(0.99) * 1000, 4),
            "max_ms": round(ordered[-1] * 1000, 4)}


def report_usage(nodes: list[Node], share: float, rng: random.Random) -> None:
    """``share`` of the nodes send a capacity report with new usage (each replaced
    in ``nodes``, as the inventory replaces a node that reports)."""
    for i in rng.sample(range(len(nodes)), int(share * len(nodes))):
        cap = nodes[i].capacity
        assert cap is not None
        used = replace(cap.used, cpu_millis=rng.randrange(cap.allocatable.cpu_millis // 2))
        nodes[i] = replace(nodes[i], capacity=replace(cap, used=used))


def _refresh(nodes: list[Node], rtt: PlaneRtt, seed: int, share: float = 0.1) -> float:
    """Seconds to make the next pass's round from the columns kept by the last
    (``Fleet``) after ``share`` of the nodes sent a new capacity report: the
    controller's case, where every pass builds a round and most nodes have not
    changed since the one before. The median of five passes."""
    rng = random.Random(seed)
    kept = Fleet()
    Round(nodes=nodes, rtt=rtt, fleet=kept)
    nodes = list(nodes)
    times = []
    for _ in range(5):
        report_usage(nodes, share, rng)
        started = time.perf_counter()
        Round(nodes=nodes, rtt=rtt, fleet=kept)
        times.append(time.perf_counter() - started)
        assert kept.rows_read == int(share * len(nodes)) and not kept.relaid
    return sorted(times)[len(times) // 2]


def _pass(nodes: list[Node], rtt: PlaneRtt, reqs: list[Request]) -> tuple[float, list[float],
                                                                           list[str | None]]:
    """One round over ``nodes`` placing ``reqs``: the seconds the round took to
    build, each placement's seconds and each chosen node."""
    started = time.perf_counter()
    rnd = Round(nodes=nodes, rtt=rtt)
    build = time.perf_counter() - started
    latencies, chosen = [], []
    for req in reqs:
        t0 = time.perf_counter()
        decision = place(req, rnd)
        latencies.append(time.perf_counter() - t0)
        chosen.append(decision.node)
    return build, latencies, chosen


def run(size: int, replicas: int, loop_replicas: int, seed: int,
        repeat: int) -> dict[str, Any]:
    nodes, rtt = fleet(size, seed)
    reqs = requests(deployments(replicas), replicas)
    runs = [_pass(nodes, rtt, reqs) for _ in range(repeat)]
    per_run = [len(latencies) / sum(latencies) for _, latencies, _ in runs]
    middle = sorted(range(repeat), key=per_run.__getitem__)[repeat // 2]
    build, latencies, chosen = runs[middle]
    assert all(other == chosen for _, _, other in runs)  # the same decisions every time
    arrays: dict[str, Any] = dict(_stats(latencies))
    arrays["runs_placements_per_s"] = [round(r, 1) for r in per_run]
    arrays["round_build_s"] = round(build, 3)
    arrays["round_refresh_s"] = round(_refresh(nodes, rtt, seed), 4)
    arrays["placed"] = sum(1 for c in chosen if c)
    print(f"{size} nodes: arrays {arrays}", file=sys.stderr)

    loop_rnd = LoopRound(nodes, rtt)
    loop_latencies, same, agree_fit = [], 0, 0
    for req, mine in zip(reqs[:loop_replicas], chosen, strict=False):
        t0 = time.perf_counter()
        node = loop_place(req, loop_rnd)
        loop_latencies.append(time.perf_counter() - t0)
        same += node == mine
        agree_fit += (node is None) == (mine is None)
    loop = _stats(loop_latencies)
    loop["replicas"] = len(loop_latencies)
    print(f"{size} nodes: loop {loop}", file=sys.stderr)
    return {
        "nodes": size, "sites": max(10, size // 50), "replicas": replicas, "arrays": arrays,
        "loop": loop,
        "speedup": round(loop["p50_ms"] / arrays["p50_ms"], 1) if arrays["p50_ms"] else None,
        "loop_same_node": round(same / max(len(loop_latencies), 1), 4),
        "loop_same_feasibility": round(agree_fit / max(len(loop_latencies), 1), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="500,5000,50000")
    parser.add_argument("--replicas", type=int, default=10_000)
    parser.add_argument("--loop-replicas", default="1000,200,20",
                        help="replicas the loop places, per fleet size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds the arrays place, per fleet size (the median is shown)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.nodes.split(",")]
    loops = [int(s) for s in args.loop_replicas.split(",")]
    loops += [loops[-1]] * (len(sizes) - len(loops))
    results = [run(size, args.replicas, min(loop, args.replicas), args.seed, max(1, args.repeat))
               for size, loop in zip(sizes, loops, strict=False)]
    print(json.dumps({
        "bench": "scheduler", "plugins": f"full set ({len(FILTERS)} filters, {len(SCORES)} scores)",
        "environment": {"python": platform.python_version(), "numpy": np.__version__,
                        "cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "results": results,
        "target": target(results),
    }, indent=2))


# Per fleet size: placements/s at least, p99 ms per placement at most (None: no mark).
TARGETS = {5_000: (10_000.0, 2.0), 50_000: (1_000.0, None)}


def target(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Each mark for the fleet sizes this run measured, and whether all of them were
    met; ``met`` is None when the run measured none of the marked sizes."""
    marks: dict[str, Any] = {}
    for r in results:
        if r["nodes"] not in TARGETS:
            continue
        rate, p99 = TARGETS[r["nodes"]]
        a = r["arrays"]
        marks[str(r["nodes"])] = {
            "placements_per_s_at_least": rate, "p99_ms_at_most": p99,
            "met": a["placements_per_s"] >= rate and (p99 is None or a["p99_ms"] <= p99)}
    return {"by_nodes": marks, "met": all(m["met"] for m in marks.values()) if marks else None}


if __name__ == "__main__":
    main()
