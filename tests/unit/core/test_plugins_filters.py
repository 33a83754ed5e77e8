"""The filter plugins beyond the classic ones: taints, latency SLOs, disk,
affinity and anti-affinity at every scope, required topology spread, split over
site groups; each
asserts the exact reason a node gets and the histogram a placement shows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from rtt_table import TableRtt

from federation import wire
from federation.inventory import Node, NodeState
from federation.model import SlotRecord, template_of
from federation.planning import misplaced
from federation.scheduler import (
    FILTERS,
    Apart,
    Near,
    Request,
    Round,
    Scope,
    Share,
    Spread,
    Usage,
    Users,
    feasible,
    place,
    refusals,
)
from federation.scheduling.filters import split_targets
from federation.scheduling.refusal import by_value
from policies.model import (
    Container,
    Deployment,
    Placement,
    Selector,
    TaintEffect,
    Toleration,
    TolerationOperator,
)

MiB = 1024**2
GiB = 1024**3


def node(name: str, *, site: str = "s1", arch: str = "arm64", labels: Mapping[str, str] | None
         = None, cpu: int = 4000, memory: int = 4 * GiB, disk: int = 0, used_disk: int = 0,
         used_cpu: int = 0, state: NodeState = NodeState.READY) -> Node:
    capacity = wire.Capacity(
        site=site, arch=arch, os="linux", runtime="docker", labels=dict(labels or {}),
        allocatable=wire.Resources(cpu_millis=cpu, memory_bytes=memory, disk_bytes=disk),
        used=wire.Resources(cpu_millis=used_cpu, memory_bytes=0, disk_bytes=used_disk),
        images=(), instances=())
    return Node(name=name, site=site, epoch="boot-1", online=True, state=state,
                state_since=0.0, last_seen=0.0, capacity=capacity)


def request(slot: int = 0, **kw: Any) -> Request:
    kw.setdefault("deployment", "web")
    kw.setdefault("generation", 1)
    return Request(slot=slot, **kw)


def users(name: str = "users-eu", source: str = "berlin", max_rtt: float | None = 30.0,
          share: float = 1.0) -> tuple[Users, ...]:
    return (Users(name=name, source=source, max_rtt_ms=max_rtt, share=share),)


def sel(**labels: str) -> Selector:
    return Selector(match_labels=labels)


# -- the example -------------------------------------------------------------------


def test_the_histogram_of_an_unschedulable_replica_over_twelve_nodes() -> None:
    short = [node(f"small-{i}", memory=m) for i, m in
             enumerate([128 * MiB, 256 * MiB, 64 * MiB, 200 * MiB, 256 * MiB])]
    x86 = [node(f"x86-{i}", arch="amd64") for i in range(4)]
    far = [node(f"far-{i}") for i in range(3)]
    rtt = TableRtt({("berlin", n.name): 5.0 for n in short + x86}
                   | {("berlin", "far-0"): 48.0, ("berlin", "far-1"): 61.0,
                      ("berlin", "far-2"): 120.0})
    req = request(memory_bytes=512 * MiB, node_selector=sel(arch="arm64"), users=users())
    decision = place(req, Round(nodes=short + x86 + far, rtt=rtt))
    assert decision.node is None
    assert decision.explanation.message == (
        "0/12 nodes fit: 5 insufficient memory (need 512Mi, most free 256Mi), "
        "4 arch is amd64 not arm64, 3 rtt from users-eu 48ms > 30ms")
    assert decision.explanation.details == {"insufficient memory": "(need 512Mi, most free 256Mi)"}


# -- one plugin, one node ------------------------------------------------------------------

TAINTED = {"taint.edgefed.io/dedicated": "gpu:NoSchedule"}

# (filter, nodes, rtt table, request, reasons of the first node, placement message)
CASES = [
    pytest.param("taints", [node("n1", labels=TAINTED)], None, request(),
                 ["untolerated taint dedicated=gpu:NoSchedule"],
                 "0/1 nodes fit: 1 untolerated taint dedicated=gpu:NoSchedule", id="no-schedule"),
    pytest.param("no-execute", [node("n1", labels={"taint.edgefed.io/drain": ":NoExecute"})],
                 None,
                 request(), ["untolerated taint drain=:NoExecute"],
                 "0/1 nodes fit: 1 untolerated taint drain=:NoExecute", id="no-execute-empty"),
    pytest.param("taints", [node("n1", labels=TAINTED)], None,
                 request(tolerations=(Toleration(key="dedicated", value="cpu"),)),
                 ["untolerated taint dedicated=gpu:NoSchedule"],
                 "0/1 nodes fit: 1 untolerated taint dedicated=gpu:NoSchedule",
                 id="other-value"),
    pytest.param("taints", [node("n1", labels=TAINTED)], None,
                 request(tolerations=(Toleration(key="dedicated", value="gpu",
                                                 effect=TaintEffect.NO_EXECUTE),)),
                 ["untolerated taint dedicated=gpu:NoSchedule"],
                 "0/1 nodes fit: 1 untolerated taint dedicated=gpu:NoSchedule",
                 id="other-effect"),
    pytest.param("taints", [node("n1", labels={**TAINTED, "taint.edgefed.io/a": "b:NoSchedule"})],
                 None, request(), ["untolerated taint a=b:NoSchedule",
                                   "untolerated taint dedicated=gpu:NoSchedule"],
                 "0/1 nodes fit: 1 untolerated taint a=b:NoSchedule, "
                 "1 untolerated taint dedicated=gpu:NoSchedule", id="every-taint"),
    pytest.param("latency", [node("n1")], None, request(users=users()),
                 ["rtt from users-eu unknown"], "0/1 nodes fit: 1 rtt from users-eu unknown",
                 id="rtt-unknown-without-source"),
    pytest.param("latency", [node("n1")], {("berlin", "n2"): 3.0}, request(users=users()),
                 ["rtt from users-eu unknown"], "0/1 nodes fit: 1 rtt from users-eu unknown",
                 id="rtt-unknown-for-the-node"),
    pytest.param("latency", [node("n1")], {("berlin", "n1"): 48.0}, request(users=users()),
                 ["rtt from users-eu 48ms > 30ms"],
                 "0/1 nodes fit: 1 rtt from users-eu 48ms > 30ms", id="rtt-over"),
    pytest.param("latency", [node("n1")], {("probe", "n1"): 2.5},
                 request(users=users("us", "probe", 2.0)),
                 ["rtt from us 2.5ms > 2ms"], "0/1 nodes fit: 1 rtt from us 2.5ms > 2ms",
                 id="rtt-fraction"),
    pytest.param("latency", [node("n1")], {("berlin", "n1"): 48.0, ("paris", "n1"): 9.0},
                 request(users=users() + users("users-fr", "paris", 8.0)),
                 ["rtt from users-eu 48ms > 30ms", "rtt from users-fr 9ms > 8ms"],
                 "0/1 nodes fit: 1 rtt from users-eu 48ms > 30ms, 1 rtt from users-fr 9ms > 8ms",
                 id="every-group"),
    pytest.param("resources", [node("n1", disk=4 * GiB, used_disk=3 * GiB)], None,
                 request(disk_bytes=2 * GiB), ["insufficient disk"],
                 "0/1 nodes fit: 1 insufficient disk (need 2Gi, most free 1Gi)", id="disk"),
    pytest.param("resources", [node("n1", cpu=500, memory=128 * MiB, disk=GiB)], None,
                 request(cpu_millis=1000, memory_bytes=GiB, disk_bytes=2 * GiB),
                 ["insufficient cpu", "insufficient memory", "insufficient disk"],
                 "0/1 nodes fit: 1 insufficient cpu (need 1, most free 500m), "
                 "1 insufficient disk (need 2Gi, most free 1Gi), "
                 "1 insufficient memory (need 1Gi, most free 128Mi)", id="every-dimension"),
    pytest.param("spread", [node("n1", site="a")], None,
                 request(spread=(Spread(scope=Scope.REGION, required=True),)),
                 ["no region label, spread requires one"],
                 "0/1 nodes fit: 1 no region label, spread requires one", id="spread-no-label"),
]


@pytest.mark.parametrize(("name", "nodes", "table", "req", "reasons", "message"), CASES)
def test_filter_reason_and_message(name: str, nodes: list[Node],
                                   table: dict[tuple[str, str], float] | None, req: Request,
                                   reasons: list[str], message: str) -> None:
    rnd = Round(nodes=nodes, rtt=TableRtt(table) if table is not None else None)
    first = nodes[0]
    assert [r.reason for r in FILTERS[name](req, first, rnd)] == reasons
    others = [f for f in FILTERS if f != name]
    assert refusals(req, first, rnd, others) == []
    decision = place(req, rnd)
    assert decision.node is None
    assert decision.explanation.message == message


# (nodes, rtt table, request): every filter lets the node through
PASSING = [
    pytest.param([node("n1", labels=TAINTED)], None,
                 request(tolerations=(Toleration(key="dedicated", value="gpu"),)),
                 id="tolerated-equal"),
    pytest.param([node("n1", labels=TAINTED)], None,
                 request(tolerations=(Toleration(key="dedicated",
                                                 operator=TolerationOperator.EXISTS),)),
                 id="tolerated-exists"),
    pytest.param([node("n1", labels=TAINTED)], None,
                 request(tolerations=(Toleration(operator=TolerationOperator.EXISTS),)),
                 id="tolerates-everything"),
    pytest.param([node("n1", labels=TAINTED)], None,
                 request(tolerations=(Toleration(key="dedicated", value="gpu",
                                                 effect=TaintEffect.NO_SCHEDULE),)),
                 id="tolerated-effect"),
    pytest.param([node("n1", labels={"taint.edgefed.io/busy": "yes:PreferNoSchedule"})], None,
                 request(), id="prefer-no-schedule-only-scores"),
    pytest.param([node("n1", labels={"taint.edgefed.io/x": "no effect"})], None, request(),
                 id="not-a-taint"),
    pytest.param([node("n1")], {("berlin", "n1"): 30.0}, request(users=users()),
                 id="rtt-at-the-bound"),
    pytest.param([node("n1")], None, request(users=users(max_rtt=None)),
                 id="users-without-bound"),
    pytest.param([node("n1", disk=GiB)], None, request(disk_bytes=GiB), id="disk-exactly"),
    pytest.param([node("n1", labels={"region": "eu"})], None,
                 request(spread=(Spread(scope=Scope.REGION, required=True),)),
                 id="spread-first-replica"),
    pytest.param([node("n1")], None,
                 request(labels={"app": "web"}, near=(Near(selector=sel(app="web")),)),
                 id="affinity-starts-its-own-group"),
]


@pytest.mark.parametrize(("nodes", "table", "req"), PASSING)
def test_filters_let_through(nodes: list[Node], table: dict[tuple[str, str], float] | None,
                             req: Request) -> None:
    rnd = Round(nodes=nodes, rtt=TableRtt(table) if table is not None else None)
    assert refusals(req, nodes[0], rnd) == []
    assert feasible(req, rnd).tolist() == [True]
    assert place(req, rnd).node == nodes[0].name


def test_site_taints_come_from_the_labels_all_its_nodes_share() -> None:
    nodes = [node("a1", site="a", labels=TAINTED), node("a2", site="a", labels=TAINTED),
             node("b1", site="b")]
    rnd = Round(nodes=nodes)
    assert rnd.site_labels["a"]["taint.edgefed.io/dedicated"] == "gpu:NoSchedule"
    assert feasible(request(), rnd).tolist() == [False, False, True]


# -- rules that count replicas, at every scope --------------------------------------------------


def topology() -> Round:
    """Two regions, two providers: a1, a2 (site a, eu, aws); b1 (site b, eu, gcp);
    c1 (site c, us, aws); x1 (site x, no region or provider label)."""
    eu_aws = {"region": "eu", "provider": "aws"}
    return Round(nodes=[node("a1", site="a", labels=eu_aws), node("a2", site="a", labels=eu_aws),
                        node("b1", site="b", labels={"region": "eu", "provider": "gcp"}),
                        node("c1", site="c", labels={"region": "us", "provider": "aws"}),
                        node("x1", site="x")],
                 deployment_labels={"web": {"app": "web"}, "db": {"app": "db"}})


def fits(rnd: Round, req: Request) -> list[str]:
    return [n for n, ok in zip(rnd.node_names, feasible(req, rnd).tolist(), strict=True) if ok]


# Per scope: a replica shunned from what runs on a1 may go to these nodes.
KEPT_AWAY_FROM_A1 = [
    (Scope.NODE, "a1", ["a2", "b1", "c1", "x1"]),
    (Scope.SITE, "a1", ["b1", "c1", "x1"]),
    (Scope.REGION, "a1", ["c1", "x1"]),
    (Scope.PROVIDER, "a1", ["b1", "x1"]),
]


@pytest.mark.parametrize(("scope", "db_on", "allowed"), KEPT_AWAY_FROM_A1)
def test_anti_affinity_at_every_scope(scope: Scope, db_on: str, allowed: list[str]) -> None:
    rnd = topology()
    rnd.placed["db"] = Counter({db_on: 1})
    req = request(apart=(Apart(selector=sel(app="db"), scope=scope),))
    assert fits(rnd, req) == allowed
    refused = refusals(req, rnd.by_name["a1"], rnd)
    assert [r.reason for r in refused] == [f"anti-affinity with app=db on the {scope.value}"]


@pytest.mark.parametrize(("scope", "web_on", "allowed"), KEPT_AWAY_FROM_A1)
def test_anti_affinity_holds_both_ways(scope: Scope, web_on: str, allowed: list[str]) -> None:
    """web shuns db and runs on ``web_on``: a db replica, which has no terms of its
    own, is kept out of web's domain too, with web named in the reason."""
    rnd = topology()
    rnd.placed["web"] = Counter({web_on: 1})
    rnd.deployment_apart["web"] = (Apart(selector=sel(app="db"), scope=scope),)
    db = request(deployment="db", labels={"app": "db"})
    assert fits(rnd, db) == allowed
    refused = refusals(db, rnd.by_name["a1"], rnd)
    assert [r.reason for r in refused] == [f"web's anti-affinity with app=db on the {scope.value}"]
    # A deployment web's terms do not match goes anywhere.
    assert fits(rnd, request(deployment="cache", labels={"app": "cache"})) == rnd.node_names


def test_a_deployment_that_joins_the_round_with_terms_keeps_what_it_shuns_away() -> None:
    """The terms come with the first reserved replica: db, placed before and after
    web arrives, is kept off web's node only after."""
    rnd = topology()
    db = request(deployment="db", labels={"app": "db"})
    assert place(db, rnd).node is not None
    web = request(deployment="web", labels={"app": "web"}, slot=0,
                  apart=(Apart(selector=sel(app="db"), scope=Scope.NODE),))
    there = place(web, rnd).node
    assert there is not None
    decision = place(request(deployment="db", labels={"app": "db"}, slot=1), rnd)
    assert decision.node not in (None, there)
    assert there not in fits(rnd, request(deployment="db", labels={"app": "db"}, slot=2))
    # web's own replicas are kept apart by its own term only: it does not shun itself.
    assert there in fits(rnd, request(deployment="web", labels={"app": "web"}, slot=1,
                                      apart=web.apart))


@pytest.mark.parametrize(("scope", "db_on", "allowed"), [
    (Scope.NODE, "a1", ["a1"]),
    (Scope.SITE, "a1", ["a1", "a2"]),
    (Scope.REGION, "b1", ["a1", "a2", "b1"]),
    (Scope.PROVIDER, "c1", ["a1", "a2", "c1"]),
])
def test_required_affinity_at_every_scope(scope: Scope, db_on: str, allowed: list[str]) -> None:
    rnd = topology()
    rnd.placed["db"] = Counter({db_on: 1})
    req = request(near=(Near(selector=sel(app="db"), scope=scope),))
    assert fits(rnd, req) == allowed
    decision = place(request(near=(Near(selector=sel(app="db"), scope=scope),)), topology())
    # Nothing of app=db runs and the replica is not app=db itself: nowhere to go.
    assert decision.explanation.message == (
        f"0/5 nodes fit: 5 affinity with app=db: none on the {scope.value}")


def test_required_spread_measures_skew_against_the_emptiest_open_domain() -> None:
    rnd = topology()
    rnd.placed["web"] = Counter({"a1": 2, "b1": 1})
    req = request(spread=(Spread(scope=Scope.SITE, max_skew=1, required=True),))
    # Sites: a holds 2, b 1, c 0, x 0: the emptiest is 0, so a (3 - 0) and b (2 - 0) skew.
    assert fits(rnd, req) == ["c1", "x1"]
    assert [r.reason for r in refusals(req, rnd.by_name["a1"], rnd)] == [
        "site spread skew 3 > maxSkew 1"]
    # Only a and b may take it (c and x refuse for another reason): b is the emptiest.
    pinned = request(spread=req.spread, node_selector=Selector(match_labels={"region": "eu"}))
    assert fits(rnd, pinned) == ["b1"]
    decision = place(pinned, rnd)
    assert decision.node == "b1"
    assert "2 site spread skew 2 > maxSkew 1" in decision.explanation.message


@pytest.mark.parametrize("closed", [1, 4, 70])
def test_the_emptiest_open_domain_is_found_past_closed_emptier_ones(closed: int) -> None:
    """Sites c0.. hold no replica but refuse for another reason (no ``disk`` label);
    s8 and s9 hold 2 and 3. The emptiest open site is s8: s8 may take one more
    (skew 1), s9 may not (skew 2). With one closed site the emptiest few are looked
    at one by one; with four, every site at once; with seventy, the sites are
    ordered by numpy rather than by Python's sort."""
    nodes = [node(f"m{k}", site=f"c{k}") for k in range(closed)]
    nodes += [node("n8", site="s8", labels={"disk": "ssd"}),
              node("n9", site="s9", labels={"disk": "ssd"})]
    rnd = Round(nodes=nodes)
    rnd.placed["web"] = Counter({"n8": 2, "n9": 3})
    req = request(spread=(Spread(scope=Scope.SITE, max_skew=1, required=True),),
                  node_selector=Selector(match_labels={"disk": "ssd"}))
    assert fits(rnd, req) == ["n8"]
    assert [r.reason for r in refusals(req, rnd.by_name["n9"], rnd)] == [
        "site spread skew 2 > maxSkew 1"]


def test_required_spread_over_regions_places_evenly() -> None:
    rnd = topology()
    req = request(spread=(Spread(scope=Scope.REGION, max_skew=1, required=True),),
                  weights={"spread-sites": 0.0, "spread-nodes": 0.0})
    regions: Counter[str] = Counter()
    for i in range(6):
        decision = place(request(i, spread=req.spread, weights=req.weights), rnd)
        assert decision.node is not None
        regions[rnd.by_name[decision.node].labels["region"]] += 1
        assert max(regions.values()) - min(regions.get(r, 0) for r in ("eu", "us")) <= 1
    assert regions == {"eu": 3, "us": 3}
    # x1 has no region label: refused by the spread filter for every replica.
    assert rnd.placed["web"]["x1"] == 0


# -- strategies share filters and explanations ---------------------------------------------------


@pytest.mark.parametrize("strategy", ["two-phase", "random", "round-robin", "least-load",
                                      "optimal"])
def test_every_strategy_explains_a_refusal_the_same_way(strategy: str) -> None:
    nodes = [node("n1", memory=256 * MiB), node("n2", arch="amd64")]
    req = request(strategy=strategy, memory_bytes=GiB, node_selector=sel(arch="arm64"))
    assert place(req, Round(nodes=nodes)).explanation.message == (
        "0/2 nodes fit: 1 arch is amd64 not arm64, "
        "1 insufficient memory (need 1Gi, most free 256Mi)")


def test_random_is_seeded_per_decision_and_spreads() -> None:
    nodes = [node(f"n{i}") for i in range(8)] + [node("far", arch="amd64")]
    req = request(strategy="random", node_selector=sel(arch="arm64"))
    first = [place(request(i, strategy="random", node_selector=req.node_selector),
                   Round(nodes=nodes)).node for i in range(40)]
    again = [place(request(i, strategy="random", node_selector=req.node_selector),
                   Round(nodes=list(reversed(nodes)))).node for i in range(40)]
    assert first == again  # the same decision whatever the order of the nodes
    assert "far" not in first
    assert len(set(first)) >= 5  # 40 seeds over 8 nodes: not stuck on a few
    decision = place(req, Round(nodes=nodes))
    assert decision.explanation.message == (
        f"8/9 nodes fit; chose {decision.node} (site s1) by random; "
        "refused: 1 arch is amd64 not arm64")


def test_round_robin_cycles_over_the_nodes_that_fit_in_name_order() -> None:
    rnd = Round(nodes=[node("c"), node("a"), node("full", memory=0), node("b")])
    chosen = [place(request(i, strategy="round-robin", memory_bytes=MiB), rnd).node
              for i in range(5)]
    assert chosen == ["a", "b", "c", "a", "b"]


def test_least_load_takes_the_least_utilised_node() -> None:
    rnd = Round(nodes=[node("busy", cpu=1000, used_cpu=800), node("idle", cpu=4000),
                       node("mid", cpu=2000, used_cpu=600)])
    decisions = [place(request(i, strategy="least-load", cpu_millis=500), rnd)
                 for i in range(4)]
    # cpu used (memory is idle everywhere, so it adds 0 to each average):
    # idle 0%, 12.5%, 25% of 4 cores, then 37.5% > mid's 30%.
    assert [d.node for d in decisions] == ["idle", "idle", "idle", "mid"]
    refused = "; refused: 1 insufficient cpu (need 500m, most free 200m)"
    assert decisions[0].explanation.message == (
        "2/3 nodes fit; chose idle (site s1) by least-load (utilisation 0)" + refused)
    assert decisions[3].explanation.message == (
        "2/3 nodes fit; chose mid (site s1) by least-load (utilisation 15)" + refused)


def test_feasible_is_over_the_round_node_names() -> None:
    rnd = Round(nodes=[node("n1"), node("n2", state=NodeState.SUSPECT), node("n3", arch="amd64")])
    assert rnd.node_names == ["n1", "n2", "n3"]
    mask = feasible(request(node_selector=sel(arch="arm64")), rnd)
    assert mask.dtype == np.bool_
    assert mask.tolist() == [True, False, False]


def test_a_no_execute_taint_moves_running_replicas_and_no_schedule_does_not() -> None:
    web = Deployment(name="web", replicas=2, container=Container(image="busybox"))
    slots = [SlotRecord(deployment="web", index=i, generation=1, revision=1,
                        template=template_of(web), node=name)
             for i, name in enumerate(["drained", "reserved"])]
    nodes = [node("drained", labels={"taint.edgefed.io/drain": ":NoExecute"}),
             node("reserved", labels=TAINTED)]
    assert misplaced({"web": web}, slots, nodes) == {
        ("web", 0): "node drained no longer fits: untolerated taint drain=:NoExecute"}
    tolerant = Deployment(name="web", replicas=2, container=web.container,
                          placement=Placement(tolerations=(Toleration(key="drain"),)))
    assert misplaced({"web": tolerant}, slots, nodes) == {}


@pytest.mark.parametrize(("values", "expected"), [
    pytest.param([3, -1, 3, 0, 7, -1], [("value -1", 2), ("value 3", 2), ("value 7", 1)],
                 id="narrow"),
    pytest.param([10**9, -1, 10**9, 0, 7, -1],
                 [("value -1", 2), ("value 7", 1), (f"value {10**9}", 2)], id="wide"),
])
def test_reasons_by_value_count_each_value_in_order(values: list[int],
                                                    expected: list[tuple[str, int]]) -> None:
    codes = np.array(values, dtype=np.int64)
    refusal = by_value(codes != 0, codes, lambda v: f"value {v}")
    assert [(r.reason, n) for r, n in refusal.explain(refusal.mask)] == expected


# -- split over site groups --------------------------------------------------------------


def split_fleet() -> list[Node]:
    """Two edge sites and one cloud site, two roomy nodes each."""
    return [node(f"{site}{i}", site=site, labels={"tier": tier})
            for site, tier in (("e1", "edge"), ("e2", "edge"), ("c1", "cloud")) for i in (1, 2)]


SEVENTY_THIRTY = (Share(sites=sel(tier="edge"), weight=70), Share(sites=sel(tier="cloud"),
                                                                   weight=30))


@pytest.mark.parametrize(("weights", "replicas", "targets"), [
    ((70, 30), 10, [7, 3]), ((70, 30), 3, [2, 1]), ((50, 50), 3, [2, 1]),
    ((34, 33, 33), 2, [1, 1, 0]), ((100,), 4, [4]), ((60, 40), 0, [0, 0]),
])
def test_split_targets_round_by_largest_remainder(weights: tuple[int, ...], replicas: int,
                                                  targets: list[int]) -> None:
    assert split_targets(weights, replicas) == targets
    assert sum(targets) == replicas


def test_split_places_each_group_its_share() -> None:
    rnd = Round(nodes=split_fleet())
    sites = Counter()
    for slot in range(10):
        decision = place(request(slot, cpu_millis=100, split=SEVENTY_THIRTY, replicas=10), rnd)
        assert decision.node is not None
        sites[rnd.by_name[decision.node].labels["tier"]] += 1
    assert sites == {"edge": 7, "cloud": 3}


def test_split_reason_names_the_group_and_its_count() -> None:
    rnd = Round(nodes=split_fleet(), placed={"web": Counter({"e11": 4, "e21": 3})})
    req = request(7, cpu_millis=100, split=SEVENTY_THIRTY, replicas=10)
    reason = "site not in split group 2 (tier=cloud, 30%: 0 of 3 placed)"
    assert [r.reason for r in FILTERS["split"](req, rnd.by_name["e11"], rnd)] == [reason]
    assert FILTERS["split"](req, rnd.by_name["c11"], rnd) == []
    decision = place(req, rnd)
    assert decision.site == "c1"
    assert decision.explanation.rejections == {reason: 4}


def test_a_full_group_leaves_its_replicas_unplaced_with_the_reason() -> None:
    fleet = [n if n.site != "c1" else node(n.name, site="c1", labels={"tier": "cloud"}, cpu=100)
             for n in split_fleet()]
    rnd = Round(nodes=fleet, placed={"web": Counter({"e11": 7, "c11": 1, "c12": 1})},
                committed={"c11": Usage(cpu_millis=100), "c12": Usage(cpu_millis=100)})
    decision = place(request(9, cpu_millis=100, split=SEVENTY_THIRTY, replicas=10), rnd)
    assert decision.node is None
    assert decision.explanation.message == (
        "0/6 nodes fit: 4 site not in split group 2 (tier=cloud, 30%: 2 of 3 placed), "
        "2 insufficient cpu (need 100m, most free 0)")


def test_once_every_share_is_met_any_group_will_do() -> None:
    rnd = Round(nodes=split_fleet(), placed={"web": Counter({"e11": 7, "c11": 3})})
    req = request(10, cpu_millis=100, split=SEVENTY_THIRTY, replicas=10)
    assert all(FILTERS["split"](req, n, rnd) == [] for n in rnd.nodes)
