"""Filters say exactly why a node was refused, the histogram counts every reason,
scores spread and pack replicas, and the tie-break is deterministic."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation import wire
from federation.inventory import Node, NodeState
from federation.scheduler import (
    FILTERS,
    Apart,
    Explanation,
    Request,
    Round,
    Scope,
    Usage,
    place,
    refusals,
)
from federation.scheduling.place import tie_keys
from federation.scheduling.scores import DEFAULT_WEIGHTS, score
from policies.model import LabelRequirement, Operator, Selector

MiB = 1024**2
GiB = 1024**3


def node(name: str, *, site: str = "s1", arch: str = "arm64", os: str = "linux",
         runtime: str = "docker", labels: Mapping[str, str] | None = None, cpu: int = 4000,
         memory: int = 4 * GiB, used_cpu: int = 0, used_memory: int = 0,
         state: NodeState = NodeState.READY, reported: bool = True,
         devices: Mapping[str, int] | None = None) -> Node:
    """A node as the inventory holds it after (or, ``reported=False``, before) its
    first capacity report."""
    capacity = wire.Capacity(
        site=site, arch=arch, os=os, runtime=runtime, labels=dict(labels or {}),
        allocatable=wire.Resources(cpu_millis=cpu, memory_bytes=memory, disk_bytes=0),
        used=wire.Resources(cpu_millis=used_cpu, memory_bytes=used_memory, disk_bytes=0),
        images=(), instances=(), devices=dict(devices or {})) if reported else None
    return Node(name=name, site=site, epoch="boot-1", online=state is NodeState.READY,
                state=state, state_since=0.0, last_seen=0.0, capacity=capacity)


def request(slot: int = 0, **kw: Any) -> Request:
    kw.setdefault("deployment", "web")
    kw.setdefault("generation", 1)
    return Request(slot=slot, **kw)


def expr(key: str, op: Operator, *values: str) -> LabelRequirement:
    return LabelRequirement(key=key, operator=op, values=values)


def labels_sel(**labels: str) -> Selector:
    return Selector(match_labels=labels)


def exprs_sel(*requirements: LabelRequirement) -> Selector:
    return Selector(match_expressions=requirements)


# -- one filter at a time ----------------------------------------------------------

# (filter, node, request, reasons that filter gives, message of placing on that node alone)
SINGLE_FILTER = [
    pytest.param("node-ready", node("n1", state=NodeState.SUSPECT), request(),
                 ["node Suspect"], "0/1 nodes fit: 1 node Suspect", id="suspect"),
    pytest.param("node-ready", node("n1", state=NodeState.LOST), request(),
                 ["node Lost"], "0/1 nodes fit: 1 node Lost", id="lost"),
    pytest.param("runtime", node("n1", runtime="process"), request(),
                 ["runtime is process, which needs a command"],
                 "0/1 nodes fit: 1 runtime is process, which needs a command",
                 id="process-without-command"),
    pytest.param("platform", node("n1", arch="amd64"),
                 request(node_selector=labels_sel(arch="arm64")),
                 ["arch is amd64 not arm64"], "0/1 nodes fit: 1 arch is amd64 not arm64",
                 id="arch"),
    pytest.param("platform", node("n1"), request(node_selector=labels_sel(os="windows")),
                 ["os is linux not windows"], "0/1 nodes fit: 1 os is linux not windows",
                 id="os"),
    pytest.param("platform", node("n1", arch="amd64"),
                 request(node_selector=labels_sel(arch="arm64", os="windows")),
                 ["arch is amd64 not arm64", "os is linux not windows"],
                 "0/1 nodes fit: 1 arch is amd64 not arm64, 1 os is linux not windows",
                 id="arch-and-os"),
    pytest.param("node-selector", node("n1", labels={"zone": "b"}),
                 request(node_selector=labels_sel(zone="a")),
                 ["node selector unmatched (zone=b)"],
                 "0/1 nodes fit: 1 node selector unmatched (zone=b)", id="match-labels-other"),
    pytest.param("node-selector", node("n1"), request(node_selector=labels_sel(zone="a")),
                 ["node selector unmatched (no label zone)"],
                 "0/1 nodes fit: 1 node selector unmatched (no label zone)",
                 id="match-labels-missing"),
    pytest.param("node-selector", node("n1"), request(node_selector=labels_sel(node="n2")),
                 ["node selector unmatched (node=n1)"],
                 "0/1 nodes fit: 1 node selector unmatched (node=n1)", id="builtin-node-label"),
    pytest.param("node-selector", node("n1", labels={"zone": "b"}),
                 request(node_selector=exprs_sel(expr("zone", Operator.IN, "a", "c"))),
                 ["node selector unmatched (not zone In (a,c))"],
                 "0/1 nodes fit: 1 node selector unmatched (not zone In (a,c))", id="in"),
    pytest.param("node-selector", node("n1"),
                 request(node_selector=exprs_sel(expr("zone", Operator.IN, "a"))),
                 ["node selector unmatched (not zone In (a))"],
                 "0/1 nodes fit: 1 node selector unmatched (not zone In (a))", id="in-missing"),
    pytest.param("node-selector", node("n1", labels={"zone": "a"}),
                 request(node_selector=exprs_sel(expr("zone", Operator.NOT_IN, "a", "b"))),
                 ["node selector unmatched (not zone NotIn (a,b))"],
                 "0/1 nodes fit: 1 node selector unmatched (not zone NotIn (a,b))", id="not-in"),
    pytest.param("node-selector", node("n1"),
                 request(node_selector=exprs_sel(expr("gpu", Operator.EXISTS))),
                 ["node selector unmatched (not gpu Exists)"],
                 "0/1 nodes fit: 1 node selector unmatched (not gpu Exists)", id="exists"),
    pytest.param("node-selector", node("n1", labels={"gpu": "hailo-8"}),
                 request(node_selector=exprs_sel(expr("gpu", Operator.DOES_NOT_EXIST))),
                 ["node selector unmatched (not gpu DoesNotExist)"],
                 "0/1 nodes fit: 1 node selector unmatched (not gpu DoesNotExist)",
                 id="does-not-exist"),
    pytest.param("node-selector", node("n1", labels={"cores": "4"}),
                 request(node_selector=exprs_sel(expr("cores", Operator.GT, "4"))),
                 ["node selector unmatched (not cores Gt (4))"],
                 "0/1 nodes fit: 1 node selector unmatched (not cores Gt (4))", id="gt"),
    pytest.param("node-selector", node("n1", labels={"cores": "four"}),
                 request(node_selector=exprs_sel(expr("cores", Operator.GT, "2"))),
                 ["node selector unmatched (not cores Gt (2))"],
                 "0/1 nodes fit: 1 node selector unmatched (not cores Gt (2))",
                 id="gt-not-a-number"),
    pytest.param("node-selector", node("n1", labels={"cores": "4"}),
                 request(node_selector=exprs_sel(expr("cores", Operator.LT, "2"))),
                 ["node selector unmatched (not cores Lt (2))"],
                 "0/1 nodes fit: 1 node selector unmatched (not cores Lt (2))", id="lt"),
    pytest.param("node-selector", node("n1"),
                 request(node_selector=exprs_sel(expr("cores", Operator.LT, "2"))),
                 ["node selector unmatched (not cores Lt (2))"],
                 "0/1 nodes fit: 1 node selector unmatched (not cores Lt (2))", id="lt-missing"),
    pytest.param("node-selector", node("n1", labels={"zone": "b", "gpu": "x"}),
                 request(node_selector=Selector(
                     match_labels={"zone": "a"},
                     match_expressions=(expr("gpu", Operator.DOES_NOT_EXIST),))),
                 ["node selector unmatched (zone=b)"],
                 "0/1 nodes fit: 1 node selector unmatched (zone=b)",
                 id="first-mismatch-only"),
    pytest.param("site-selector", node("n1", site="berlin", labels={"region": "eu"}),
                 request(site_selector=labels_sel(region="us")),
                 ["site selector unmatched (region=eu)"],
                 "0/1 nodes fit: 1 site selector unmatched (region=eu)", id="site-labels"),
    pytest.param("site-selector", node("n1", site="berlin"),
                 request(site_selector=labels_sel(site="paris")),
                 ["site selector unmatched (site=berlin)"],
                 "0/1 nodes fit: 1 site selector unmatched (site=berlin)", id="site-name"),
    pytest.param("site-selector", node("n1", site="berlin", labels={"country": "de"}),
                 request(site_selector=exprs_sel(expr("country", Operator.IN, "fr", "it"))),
                 ["site selector unmatched (not country In (fr,it))"],
                 "0/1 nodes fit: 1 site selector unmatched (not country In (fr,it))",
                 id="site-in"),
    pytest.param("site-selector", node("n1", site="berlin", labels={"country": "de"}),
                 request(site_selector=exprs_sel(expr("country", Operator.NOT_IN, "de"))),
                 ["site selector unmatched (not country NotIn (de))"],
                 "0/1 nodes fit: 1 site selector unmatched (not country NotIn (de))",
                 id="site-not-in"),
    pytest.param("site-selector", node("n1", site="berlin"),
                 request(site_selector=exprs_sel(expr("tier", Operator.EXISTS))),
                 ["site selector unmatched (not tier Exists)"],
                 "0/1 nodes fit: 1 site selector unmatched (not tier Exists)", id="site-exists"),
    pytest.param("site-selector", node("n1", site="berlin", labels={"tier": "edge"}),
                 request(site_selector=exprs_sel(expr("tier", Operator.DOES_NOT_EXIST))),
                 ["site selector unmatched (not tier DoesNotExist)"],
                 "0/1 nodes fit: 1 site selector unmatched (not tier DoesNotExist)",
                 id="site-does-not-exist"),
    pytest.param("site-selector", node("n1", site="berlin", labels={"rank": "3"}),
                 request(site_selector=exprs_sel(expr("rank", Operator.GT, "5"))),
                 ["site selector unmatched (not rank Gt (5))"],
                 "0/1 nodes fit: 1 site selector unmatched (not rank Gt (5))", id="site-gt"),
    pytest.param("site-selector", node("n1", site="berlin", labels={"rank": "3"}),
                 request(site_selector=exprs_sel(expr("rank", Operator.LT, "1.5"))),
                 ["site selector unmatched (not rank Lt (1.5))"],
                 "0/1 nodes fit: 1 site selector unmatched (not rank Lt (1.5))", id="site-lt"),
    pytest.param("resources", node("n1", cpu=1000, used_cpu=500), request(cpu_millis=2000),
                 ["insufficient cpu"], "0/1 nodes fit: 1 insufficient cpu (need 2, most free 500m)",
                 id="cpu"),
    pytest.param("resources", node("n1", memory=256 * MiB), request(memory_bytes=512 * MiB),
                 ["insufficient memory"],
                 "0/1 nodes fit: 1 insufficient memory (need 512Mi, most free 256Mi)",
                 id="memory"),
    pytest.param("resources", node("n1", memory=2 * GiB, used_memory=512 * MiB),
                 request(memory_bytes=2 * GiB),
                 ["insufficient memory"],
                 "0/1 nodes fit: 1 insufficient memory (need 2Gi, most free 1.5Gi)",
                 id="memory-used"),
    pytest.param("resources", node("n1", cpu=1000, used_cpu=1500), request(cpu_millis=100),
                 ["insufficient cpu"], "0/1 nodes fit: 1 insufficient cpu (need 100m, most free 0)",
                 id="cpu-overcommitted"),
    pytest.param("resources", node("n1", cpu=1000, used_cpu=500, memory=256 * MiB),
                 request(cpu_millis=2000, memory_bytes=1 * GiB),
                 ["insufficient cpu", "insufficient memory"],
                 "0/1 nodes fit: 1 insufficient cpu (need 2, most free 500m), "
                 "1 insufficient memory (need 1Gi, most free 256Mi)", id="cpu-and-memory"),
    pytest.param("residency", node("n1", labels={"country": "us"}),
                 request(countries=("de", "fr")), ["country is us, residency allows de,fr"],
                 "0/1 nodes fit: 1 country is us, residency allows de,fr", id="country"),
    pytest.param("residency", node("n1"), request(countries=("de",)),
                 ["no country label, residency requires one"],
                 "0/1 nodes fit: 1 no country label, residency requires one",
                 id="no-country-label"),
    pytest.param("residency", node("n1", labels={"region": "us-east"}),
                 request(regions=("eu-central", "eu-west")),
                 ["region is us-east, residency allows eu-central,eu-west"],
                 "0/1 nodes fit: 1 region is us-east, residency allows eu-central,eu-west",
                 id="region"),
    pytest.param("residency", node("n1", labels={"country": "de"}),
                 request(countries=("de",), regions=("eu-central",)),
                 ["no region label, residency requires one"],
                 "0/1 nodes fit: 1 no region label, residency requires one",
                 id="country-fits-region-missing"),
    pytest.param("residency", node("n1", labels={"country": "us", "region": "us-east"}),
                 request(countries=("de",), regions=("eu-central",)),
                 ["country is us, residency allows de", "region is us-east, residency allows "
                  "eu-central"],
                 "0/1 nodes fit: 1 country is us, residency allows de, 1 region is us-east, "
                 "residency allows eu-central", id="country-and-region"),
    pytest.param("devices", node("n1"), request(devices={"nvidia.com/gpu": 1}),
                 ["insufficient nvidia.com/gpu"],
                 "0/1 nodes fit: 1 insufficient nvidia.com/gpu (need 1, most free 0)",
                 id="device-not-reported"),
    pytest.param("devices", node("n1", devices={"nvidia.com/gpu": 1, "hailo.ai/npu": 1}),
                 request(devices={"nvidia.com/gpu": 2, "hailo.ai/npu": 2}),
                 ["insufficient hailo.ai/npu", "insufficient nvidia.com/gpu"],
                 "0/1 nodes fit: 1 insufficient hailo.ai/npu (need 2, most free 1), "
                 "1 insufficient nvidia.com/gpu (need 2, most free 1)", id="every-device-kind"),
]


@pytest.mark.parametrize(("name", "n", "req", "reasons", "message"), SINGLE_FILTER)
def test_single_filter_reason_and_message(name: str, n: Node, req: Request,
                                          reasons: list[str], message: str) -> None:
    rnd = Round(nodes=[n])
    assert [r.reason for r in FILTERS[name](req, n, rnd)] == reasons
    others = [f for f in FILTERS if f != name]
    assert [r.reason for f in others for r in FILTERS[f](req, n, rnd)] == []
    decision = place(req, rnd)
    assert (decision.node, decision.site) == (None, None)
    assert decision.explanation.message == message
    assert decision.explanation.feasible == 0
    assert decision.explanation.ranked == ()
    assert rnd.committed == {}


def crowded(**placed: Counter[str]) -> Round:
    """Nodes a1, a2 (site a) and b1 (site b); ``placed`` replicas per deployment and node.
    Deployment ``web`` is labelled app=web, ``db`` app=db."""
    return Round(nodes=[node("a1", site="a"), node("a2", site="a"), node("b1", site="b")],
                 placed=dict(placed),
                 deployment_labels={"web": {"app": "web"}, "db": {"app": "db", "tier": "data"}})


def apart(scope: Scope = Scope.NODE, **labels: str) -> tuple[Apart, ...]:
    return (Apart(selector=labels_sel(**labels), scope=scope),)


# (filter, round, request, reasons on node a1, message of placing in that round)
ROUND_FILTERS = [
    pytest.param("max-per-node", crowded(web=Counter({"a1": 2, "a2": 2, "b1": 2})),
                 request(max_per_node=2), ["2 replicas already on the node, maxPerNode 2"],
                 "0/3 nodes fit: 3 2 replicas already on the node, maxPerNode 2",
                 id="max-per-node"),
    pytest.param("max-per-node", crowded(web=Counter({"a1": 3, "a2": 1, "b1": 1})),
                 request(max_per_node=1), ["3 replicas already on the node, maxPerNode 1"],
                 "0/3 nodes fit: 2 1 replica already on the node, maxPerNode 1, "
                 "1 3 replicas already on the node, maxPerNode 1", id="max-per-node-lowered"),
    pytest.param("max-per-site", crowded(web=Counter({"a1": 1, "a2": 1, "b1": 2})),
                 request(max_per_site=2), ["2 replicas already on the site, maxPerSite 2"],
                 "0/3 nodes fit: 3 2 replicas already on the site, maxPerSite 2",
                 id="max-per-site"),
    pytest.param("anti-affinity", crowded(web=Counter({"a1": 1, "a2": 1, "b1": 1})),
                 request(apart=apart(app="web")), ["anti-affinity with app=web on the node"],
                 "0/3 nodes fit: 3 anti-affinity with app=web on the node",
                 id="anti-affinity-node-itself"),
    pytest.param("anti-affinity", crowded(db=Counter({"a2": 1, "b1": 1})),
                 request(apart=apart(Scope.SITE, tier="data")),
                 ["anti-affinity with tier=data on the site"],
                 "0/3 nodes fit: 3 anti-affinity with tier=data on the site",
                 id="anti-affinity-site-other-deployment"),
]


@pytest.mark.parametrize(("name", "rnd", "req", "reasons", "message"), ROUND_FILTERS)
def test_filters_that_count_replicas(name: str, rnd: Round, req: Request, reasons: list[str],
                                     message: str) -> None:
    a1 = rnd.by_name["a1"]
    assert [r.reason for r in FILTERS[name](req, a1, rnd)] == reasons
    others = [f for f in FILTERS if f != name]
    assert [r.reason for f in others for r in FILTERS[f](req, a1, rnd)] == []
    decision = place(req, rnd)
    assert decision.node is None
    assert decision.explanation.message == message


# (round, request, the nodes it fits on)
ROUND_PASSING = [
    pytest.param(crowded(web=Counter({"a1": 2, "a2": 1})), request(max_per_node=2), ["a2", "b1"],
                 id="max-per-node"),
    pytest.param(crowded(web=Counter({"a1": 1, "a2": 1})), request(max_per_site=2), ["b1"],
                 id="max-per-site"),
    pytest.param(crowded(web=Counter({"a1": 1})), request(apart=apart(app="web")), ["a2", "b1"],
                 id="anti-affinity-node"),
    pytest.param(crowded(web=Counter({"a1": 1})), request(apart=apart(Scope.SITE, app="web")),
                 ["b1"], id="anti-affinity-site"),
    pytest.param(crowded(db=Counter({"a1": 1, "a2": 1, "b1": 1})),
                 request(apart=apart(app="web")), ["a1", "a2", "b1"],
                 id="anti-affinity-other-labels"),
    pytest.param(crowded(web=Counter({"a1": 5})), request(deployment="db", max_per_node=1),
                 ["a1", "a2", "b1"], id="limits-count-only-the-deployment"),
]


@pytest.mark.parametrize(("rnd", "req", "fits"), ROUND_PASSING)
def test_counting_filters_let_through(rnd: Round, req: Request, fits: list[str]) -> None:
    assert sorted(n.name for n in rnd.nodes if not refusals(req, n, rnd)) == fits
    assert place(req, rnd).explanation.feasible == len(fits)


def test_limits_and_anti_affinity_count_what_the_round_reserved() -> None:
    rnd = crowded()
    req = request(labels={"app": "web"}, apart=apart(app="web"), max_per_site=1)
    placed = [place(replace(req, slot=i), rnd) for i in range(3)]
    assert sorted(d.site or "" for d in placed[:2]) == ["a", "b"]
    assert placed[2].node is None
    assert placed[2].explanation.message == (
        "0/3 nodes fit: 3 1 replica already on the site, maxPerSite 1, "
        "2 anti-affinity with app=web on the node")


def test_devices_held_by_slots_are_not_free() -> None:
    rnd = Round(nodes=[node("n1", devices={"nvidia.com/gpu": 2})],
                committed={"n1": Usage(devices={"nvidia.com/gpu": 1})})
    assert place(request(0, devices={"nvidia.com/gpu": 1}), rnd).node == "n1"
    third = place(request(1, devices={"nvidia.com/gpu": 1}), rnd)
    assert third.explanation.message == (
        "0/1 nodes fit: 1 insufficient nvidia.com/gpu (need 1, most free 0)")


# (node, request) that each filter lets through
PASSING = [
    pytest.param(node("n1", runtime="process"), request(has_command=True), id="process-command"),
    pytest.param(node("n1"), request(node_selector=labels_sel(arch="arm64", os="linux")),
                 id="platform"),
    pytest.param(node("n1", labels={"zone": "a"}), request(node_selector=labels_sel(zone="a")),
                 id="match-labels"),
    pytest.param(node("n1", labels={"zone": "a"}),
                 request(node_selector=exprs_sel(expr("zone", Operator.IN, "a", "b"))), id="in"),
    pytest.param(node("n1"), request(node_selector=exprs_sel(expr("zone", Operator.NOT_IN, "a"))),
                 id="not-in-missing"),
    pytest.param(node("n1", labels={"zone": "c"}),
                 request(node_selector=exprs_sel(expr("zone", Operator.NOT_IN, "a"))),
                 id="not-in-other"),
    pytest.param(node("n1", labels={"gpu": ""}),
                 request(node_selector=exprs_sel(expr("gpu", Operator.EXISTS))), id="exists-empty"),
    pytest.param(node("n1"), request(node_selector=exprs_sel(expr("gpu", Operator.DOES_NOT_EXIST))),
                 id="does-not-exist"),
    pytest.param(node("n1", labels={"cores": "8"}),
                 request(node_selector=exprs_sel(expr("cores", Operator.GT, "4"))), id="gt"),
    pytest.param(node("n1", labels={"cores": "1.5"}),
                 request(node_selector=exprs_sel(expr("cores", Operator.LT, "2"))), id="lt"),
    pytest.param(node("n1", site="berlin", labels={"region": "eu"}),
                 request(site_selector=Selector(match_labels={"region": "eu", "site": "berlin"},
                                                match_expressions=(
                                                    expr("arch", Operator.IN, "arm64"),))),
                 id="site"),
    pytest.param(node("n1", cpu=1000, used_cpu=500, memory=GiB, used_memory=GiB // 2),
                 request(cpu_millis=500, memory_bytes=GiB // 2), id="exactly-fits"),
    pytest.param(node("n1", labels={"country": "DE", "region": "eu-central"}),
                 request(countries=("de", "fr"), regions=("eu-central",)),
                 id="residency-ignores-case"),
    pytest.param(node("n1", labels={"country": "us"}), request(regions=()),
                 id="residency-not-set"),
    pytest.param(node("n1", devices={"nvidia.com/gpu": 2}), request(devices={"nvidia.com/gpu": 2}),
                 id="devices-exactly-fit"),
    pytest.param(node("n1"), request(max_per_node=1, max_per_site=1, apart=apart(app="web")),
                 id="limits-on-an-empty-round"),
]


@pytest.mark.parametrize(("n", "req"), PASSING)
def test_filters_let_through(n: Node, req: Request) -> None:
    rnd = Round(nodes=[n])
    assert [r.reason for check in FILTERS.values() for r in check(req, n, rnd)] == []
    assert place(req, rnd).node == "n1"


# -- the histogram -------------------------------------------------------------------


def test_histogram_of_memory_and_arch() -> None:
    nodes = [node("n1", memory=128 * MiB), node("n2", memory=256 * MiB),
             node("n3", memory=64 * MiB), node("n4", arch="amd64"), node("n5", arch="amd64")]
    req = request(memory_bytes=512 * MiB, node_selector=labels_sel(arch="arm64"))
    decision = place(req, Round(nodes=nodes))
    assert decision.node is None
    assert decision.explanation.message == (
        "0/5 nodes fit: 3 insufficient memory (need 512Mi, most free 256Mi), "
        "2 arch is amd64 not arm64")
    assert decision.explanation.rejections == {"insufficient memory": 3,
                                               "arch is amd64 not arm64": 2}
    assert decision.explanation.details == {"insufficient memory": "(need 512Mi, most free 256Mi)"}


def test_histogram_counts_every_reason_of_every_node() -> None:
    nodes = [node("n1", cpu=500, memory=128 * MiB, state=NodeState.SUSPECT),
             node("n2", cpu=1500, memory=256 * MiB, arch="amd64"),
             node("n3", cpu=4000, memory=4 * GiB, arch="riscv64")]
    req = request(cpu_millis=2000, memory_bytes=GiB, node_selector=labels_sel(arch="arm64"))
    explanation = place(req, Round(nodes=nodes)).explanation
    # Equal counts are ordered by reason; a node refused for three reasons counts thrice.
    assert explanation.message == (
        "0/3 nodes fit: 2 insufficient cpu (need 2, most free 1500m), "
        "2 insufficient memory (need 1Gi, most free 256Mi), "
        "1 arch is amd64 not arm64, 1 arch is riscv64 not arm64, 1 node Suspect")
    assert explanation.to_dict() == {
        "message": explanation.message, "total_nodes": 3, "feasible": 0,
        "rejections": {"node Suspect": 1, "insufficient cpu": 2, "insufficient memory": 2,
                       "arch is amd64 not arm64": 1, "arch is riscv64 not arm64": 1},
        "details": {"insufficient cpu": "(need 2, most free 1500m)",
                    "insufficient memory": "(need 1Gi, most free 256Mi)"},
        "ranked": [],
    }


def test_no_nodes_at_all() -> None:
    decision = place(request(), Round(nodes=[]))
    assert decision.node is None
    assert decision.explanation.message == "0/0 nodes fit: no nodes"


def test_message_of_a_placement_names_scores_runner_up_and_refusals() -> None:
    nodes = [node("n1", site="s1"), node("n2", site="s2", used_cpu=2000, used_memory=2 * GiB),
             node("n3", site="s3", state=NodeState.LOST)]
    decision = place(request(cpu_millis=1000, memory_bytes=GiB), Round(nodes=nodes))
    assert (decision.node, decision.site) == ("n1", "s1")
    # n1: least-allocated avg(3000/4000, 3Gi/4Gi) = 75, headroom min(3/4, 3/4) = 75,
    # balanced 100 (cpu and memory a quarter used); total (4*75 + 2*75 + 100 + 2*100) / 9
    # n2: least-allocated avg(1000/4000, 1Gi/4Gi) = 25, headroom 25;
    # total (4*25 + 2*25 + 100 + 200) / 9
    assert decision.explanation.message == (
        "2/3 nodes fit; chose n1 (site s1) score 83.3 (least-allocated 75, headroom 75, "
        "spread-sites 100, balanced 100); runner-up n2 50.0; refused: 1 node Lost")
    assert [(r.node, r.total) for r in decision.explanation.ranked] == [
        ("n1", pytest.approx(750 / 9)), ("n2", pytest.approx(50.0))]


def test_ranked_keeps_the_best_three() -> None:
    nodes = [node(f"n{i}", used_cpu=100 * i) for i in range(6)]
    explanation = place(request(), Round(nodes=nodes)).explanation
    assert [r.node for r in explanation.ranked] == ["n0", "n1", "n2"]
    assert explanation.feasible == 6


# -- a round remembers what it reserved --------------------------------------------


def test_host_port_conflict_after_one_placement() -> None:
    rnd = Round(nodes=[node("n1")])
    first = place(request(0, host_ports=(8080,)), rnd)
    assert first.node == "n1"
    assert rnd.reserved["n1"] == Usage(cpu_millis=0, memory_bytes=0, host_ports=frozenset({8080}))
    second = place(request(1, host_ports=(8080,)), rnd)
    assert second.node is None
    assert second.explanation.message == "0/1 nodes fit: 1 host port 8080 in use"
    other_port = place(request(2, host_ports=(9090,)), rnd)
    assert other_port.node == "n1"


def test_host_port_conflict_reports_the_lowest_clashing_port() -> None:
    rnd = Round(nodes=[node("n1")], committed={"n1": Usage(host_ports=frozenset({443, 80}))})
    decision = place(request(host_ports=(8080, 443, 80)), rnd)
    assert decision.explanation.message == "0/1 nodes fit: 1 host port 80 in use"


def test_host_port_conflict_moves_the_replica_to_another_node() -> None:
    rnd = Round(nodes=[node("n1", site="s1"), node("n2", site="s1")])
    nodes = {place(request(i, host_ports=(8080,)), rnd).node for i in range(2)}
    assert nodes == {"n1", "n2"}
    third = place(request(2, host_ports=(8080,)), rnd)
    assert third.explanation.message == "0/2 nodes fit: 2 host port 8080 in use"


def test_reservations_fill_a_node() -> None:
    rnd = Round(nodes=[node("n1", cpu=1000)])
    placed = [place(request(i, cpu_millis=400), rnd).node for i in range(3)]
    assert placed == ["n1", "n1", None]
    assert rnd.reserved["n1"].cpu_millis == 800


def test_committed_usage_counts_when_reports_lag() -> None:
    n = node("n1", cpu=1000, used_cpu=0)
    rnd = Round(nodes=[n], committed={"n1": Usage(cpu_millis=900)})
    decision = place(request(cpu_millis=200), rnd)
    assert decision.explanation.message == (
        "0/1 nodes fit: 1 insufficient cpu (need 200m, most free 100m)")


def test_reservations_count_on_top_of_reported_usage() -> None:
    rnd = Round(nodes=[node("n1", cpu=1000, used_cpu=600)])
    assert place(request(0, cpu_millis=300), rnd).node == "n1"
    second = place(request(1, cpu_millis=300), rnd)
    # 600 reported + 300 reserved leaves 100m: the second replica must not fit.
    assert second.node is None
    assert second.explanation.message == (
        "0/1 nodes fit: 1 insufficient cpu (need 300m, most free 100m)")


def test_a_node_waiting_for_its_first_report_keeps_site_labels() -> None:
    ready = node("n1", site="berlin", labels={"region": "eu"})
    waiting = node("n2", site="berlin", state=NodeState.SUSPECT, reported=False)
    decision = place(request(site_selector=labels_sel(region="eu")),
                     Round(nodes=[ready, waiting]))
    assert decision.node == "n1"


# -- spread and packing --------------------------------------------------------------


@pytest.mark.parametrize(("replicas", "per_site"), [(3, [1, 1, 1]), (6, [2, 2, 2]),
                                                    (7, [2, 2, 3]), (2, [0, 1, 1])])
def test_replicas_spread_over_sites(replicas: int, per_site: list[int]) -> None:
    rnd = Round(nodes=[node(f"n{s}", site=f"s{s}", cpu=64_000, memory=64 * GiB)
                       for s in range(3)])
    sites = Counter(place(request(i, cpu_millis=100, memory_bytes=MiB), rnd).site
                    for i in range(replicas))
    assert sorted(sites.get(f"s{s}", 0) for s in range(3)) == per_site


def test_spread_over_sites_then_nodes() -> None:
    nodes = [node(f"{s}-{i}", site=s) for s in ("a", "b", "c") for i in range(2)]
    rnd = Round(nodes=nodes)
    decisions = [place(request(i, cpu_millis=100, memory_bytes=MiB), rnd) for i in range(6)]
    assert sorted(d.site or "" for d in decisions[:3]) == ["a", "b", "c"]
    assert sorted(d.node or "" for d in decisions) == sorted(n.name for n in nodes)


def test_spread_counts_only_the_same_deployment() -> None:
    rnd = Round(nodes=[node("n1", site="s1"), node("n2", site="s2")],
                placed={"db": Counter({"n1": 5})})
    assert rnd.count_on_site("db", "s1") == 5
    assert rnd.count_on_site("web", "s1") == 0
    d = place(request(deployment="db"), rnd)
    assert d.node == "n2"


def test_a_replica_prefers_the_emptier_node_on_equal_spread() -> None:
    rnd = Round(nodes=[node("busy", used_cpu=3000, used_memory=3 * GiB), node("idle")])
    assert place(request(cpu_millis=100), rnd).node == "idle"


# -- tie-break ----------------------------------------------------------------------


def _identical(count: int) -> list[Node]:
    return [node(f"n{i}") for i in range(count)]


def test_tie_break_is_deterministic() -> None:
    first = place(request(3), Round(nodes=_identical(5)))
    again = place(request(3), Round(nodes=list(reversed(_identical(5)))))
    assert first.node == again.node
    assert first.explanation == again.explanation


def test_tie_break_depends_on_slot_and_generation() -> None:
    by_slot = {place(request(i), Round(nodes=_identical(5))).node for i in range(10)}
    by_generation = {place(request(0, generation=g), Round(nodes=_identical(5))).node
                     for g in range(1, 11)}
    # Ten seeds over five equal nodes: not all on one node (the hash spreads them).
    assert len(by_slot) > 1
    assert len(by_generation) > 1


def _hash_order(req: Request, rnd: Round, names: list[str]) -> list[str]:
    rows = np.array([rnd.index[n] for n in names], dtype=np.int64)
    return [names[k] for k in np.argsort(tie_keys(req, rnd, rows), kind="stable")]


@pytest.mark.parametrize(("nodes", "best"), [
    pytest.param(_identical(8), [], id="all-equal"),
    pytest.param([node("big", cpu=8000, memory=8 * GiB), *_identical(7)], ["big"],
                 id="one-best-then-equal"),
    pytest.param([node("big", cpu=8000, memory=8 * GiB), node("bigger", cpu=16000,
                  memory=16 * GiB), *_identical(2)], ["bigger", "big"],
                 id="two-best-then-equal"),
])
def test_ranked_takes_equal_totals_in_hash_order(nodes: list[Node], best: list[str]) -> None:
    """The runners-up among equal totals are the ones the seeded hash puts first,
    however many nodes share the total."""
    rnd = Round(nodes=nodes)
    req = request(5, cpu_millis=500, memory_bytes=512 * MiB)
    equal = [n.name for n in nodes if n.name not in best]
    ranked = place(req, rnd).explanation.ranked
    assert [r.node for r in ranked] == (best + _hash_order(req, rnd, equal))[:3]
    assert len({r.total for r in ranked[len(best):]}) == 1


def test_kept_scores_equal_a_fresh_round_after_every_placement() -> None:
    """Scores that change only where a replica lands are updated there and nowhere
    else; after every placement they equal those of a round built from scratch."""
    nodes = [node(f"n{i}", site=f"s{i % 3}", cpu=1000 * (1 + i % 4),
                  memory=GiB * (1 + i % 3), used_cpu=100 * (i % 5)) for i in range(12)]
    rnd = Round(nodes=nodes)
    # web's template changes halfway (a rollout): its replicas come in two sizes.
    shapes = [("web", 250, 256 * MiB), ("db", 500, 128 * MiB), ("cache", 100, 512 * MiB),
              ("web", 400, 256 * MiB)]
    for slot in range(24):
        name, cpu, memory = shapes[slot % 4]
        req = request(slot, deployment=name, cpu_millis=cpu, memory_bytes=memory,
                      labels={"app": name})
        fresh = Round(nodes=nodes, reserved=dict(rnd.reserved),
                      placed={d: Counter(c) for d, c in rnd.placed.items()},
                      deployment_labels=dict(rnd.deployment_labels))
        total, vectors = score(req, rnd)
        expected_total, expected = score(req, fresh)
        assert np.array_equal(total, expected_total)
        assert vectors.keys() == expected.keys()
        assert all(np.array_equal(vectors[k], expected[k]) for k in vectors)
        assert place(req, rnd).node == place(req, fresh).node


# -- weights ------------------------------------------------------------------------


def _crowded_and_full() -> Round:
    # "roomy" already runs a replica of web on site A; "tight" is nearly full on site B.
    return Round(nodes=[node("roomy", site="A"),
                        node("tight", site="B", used_cpu=3000, used_memory=3 * GiB)],
                 placed={"web": Counter({"roomy": 1})})


@pytest.mark.parametrize(("weights", "winner", "total"), [
    # roomy: least-allocated 87.5, headroom 87.5, spread-sites 50, spread-nodes 50,
    # balanced 100; tight: 12.5, 12.5, 100, 100, 100 (both used in proportion)
    pytest.param({}, "roomy", (4 * 87.5 + 2 * 87.5 + 50 + 2 * 100) / 9, id="default"),
    pytest.param({"spread-sites": 10.0, "spread-nodes": 5.0}, "tight",
                 (4 * 12.5 + 2 * 12.5 + 10 * 100 + 5 * 100 + 2 * 100) / 23, id="spread-first"),
    pytest.param({"spread-sites": 0.0}, "roomy", (4 * 87.5 + 2 * 87.5 + 2 * 100) / 8,
                 id="no-spread"),
    pytest.param({"least-allocated": 0.0, "headroom": 0.0, "balanced": 0.0}, "tight", 100.0,
                 id="spread-only"),
    pytest.param({"no-such-score": 100.0}, "roomy", (4 * 87.5 + 2 * 87.5 + 50 + 2 * 100) / 9,
                 id="unknown-weight-ignored"),
])
def test_weights_from_the_policy_change_the_winner(weights: dict[str, float], winner: str,
                                                   total: float) -> None:
    decision = place(request(cpu_millis=500, memory_bytes=512 * MiB, weights=weights),
                     _crowded_and_full())
    assert decision.node == winner
    best = decision.explanation.ranked[0]
    assert best.total == pytest.approx(total)
    # The scores shown are the ones summed: the total is their weighted mean.
    weight = {**DEFAULT_WEIGHTS, **weights}
    assert best.total == pytest.approx(
        sum(weight[k] * v for k, v in best.scores.items()) / sum(weight[k] for k in best.scores))


def test_all_weights_zero_falls_back_to_the_tie_break() -> None:
    weights = {"least-allocated": 0.0, "headroom": 0.0, "spread-sites": 0.0,
               "spread-nodes": 0.0, "balanced": 0.0}
    decision = place(request(weights=weights), _crowded_and_full())
    assert [r.total for r in decision.explanation.ranked] == [0.0, 0.0]
    assert decision.node in {"roomy", "tight"}


# -- a replacement stays put -----------------------------------------------------------


def _old_home_and_empty_node() -> Round:
    return Round(nodes=[node("home", site="A", used_cpu=3000, used_memory=3 * GiB),
                        node("empty", site="B")])


def test_a_replacement_stays_on_its_node_while_it_fits() -> None:
    req = request(cpu_millis=500, memory_bytes=512 * MiB, current_node="home")
    decision = place(req, _old_home_and_empty_node())
    assert decision.node == "home"
    # home: (4*12.5 + 2*12.5 + 100 + 10*100 + 2*100) / 19;
    # empty: (4*87.5 + 2*87.5 + 100 + 0 + 2*100) / 19
    assert decision.explanation.message == (
        "2/2 nodes fit; chose home (site A) score 72.4 (least-allocated 12, headroom 12, "
        "spread-sites 100, stay-put 100, balanced 100); runner-up empty 43.4")


def test_a_replacement_moves_when_its_node_no_longer_fits() -> None:
    req = request(cpu_millis=1500, memory_bytes=512 * MiB, current_node="home")
    decision = place(req, _old_home_and_empty_node())
    assert decision.node == "empty"
    assert decision.explanation.message == (
        "1/2 nodes fit; chose empty (site B) score 35.5 (least-allocated 75, headroom 62, "
        "spread-sites 100, stay-put 0, balanced 75); refused: 1 insufficient cpu (need 1500m, "
        "most free 1)")


def test_stay_put_only_scores_replacements() -> None:
    req = request(cpu_millis=500, memory_bytes=512 * MiB, weights={"stay-put": 50.0})
    decision = place(req, _old_home_and_empty_node())
    assert decision.node == "empty"
    assert list(decision.explanation.ranked[0].scores) == [
        "least-allocated", "headroom", "spread-sites", "balanced"]


def test_stay_put_weight_from_the_policy() -> None:
    req = request(cpu_millis=500, memory_bytes=512 * MiB, current_node="home",
                  weights={"stay-put": 0.0})
    assert place(req, _old_home_and_empty_node()).node == "empty"


# -- properties ---------------------------------------------------------------------

node_strategy = st.builds(
    lambda i, site, arch, runtime, zone, cpu, mem, used_cpu, used_mem, state: node(
        f"n{i}", site=site, arch=arch, runtime=runtime,
        labels={} if zone is None else {"zone": zone}, cpu=cpu, memory=mem * MiB,
        used_cpu=used_cpu, used_memory=used_mem * MiB, state=state),
    st.integers(0, 1000), st.sampled_from(["s1", "s2", "s3"]),
    st.sampled_from(["arm64", "amd64"]), st.sampled_from(["docker", "process"]),
    st.sampled_from([None, "a", "b"]), st.integers(0, 4000), st.integers(0, 4096),
    st.integers(0, 4000), st.integers(0, 4096), st.sampled_from(list(NodeState)),
)
selector_strategy = st.one_of(
    st.just(Selector()),
    st.builds(lambda a: labels_sel(arch=a), st.sampled_from(["arm64", "amd64"])),
    st.builds(lambda z: exprs_sel(expr("zone", Operator.IN, z)), st.sampled_from(["a", "b"])),
    st.just(exprs_sel(expr("zone", Operator.EXISTS))),
    st.builds(lambda s: labels_sel(site=s), st.sampled_from(["s1", "s2", "s3"])),
)
request_strategy = st.builds(
    lambda slot, cpu, mem, ports, cmd, nsel, ssel: request(
        slot, cpu_millis=cpu, memory_bytes=mem * MiB, host_ports=ports, has_command=cmd,
        node_selector=nsel, site_selector=ssel),
    st.integers(0, 50), st.integers(0, 3000), st.integers(0, 3000),
    st.sampled_from([(), (80,), (8080,), (80, 8080)]), st.booleans(),
    selector_strategy, selector_strategy,
)


@settings(max_examples=120, deadline=None)
@given(nodes=st.lists(node_strategy, max_size=8, unique_by=lambda n: n.name),
       requests=st.lists(request_strategy, min_size=1, max_size=5))
def test_placements_never_violate_a_filter(nodes: list[Node], requests: list[Request]) -> None:
    rnd = Round(nodes=nodes)
    for req in requests:
        passing = [n.name for n in nodes
                   if not [r for check in FILTERS.values() for r in check(req, n, rnd)]]
        decision = place(req, rnd)
        explanation: Explanation = decision.explanation
        assert explanation.total_nodes == len(nodes)
        assert explanation.feasible == len(passing)
        assert (decision.node is None) == (explanation.feasible == 0)
        assert sum(explanation.rejections.values()) >= len(nodes) - len(passing)
        if decision.node is not None:
            assert decision.node in passing
            assert decision.node == explanation.ranked[0].node
            assert explanation.message.startswith(f"{len(passing)}/{len(nodes)} nodes fit; chose "
                                                  f"{decision.node} ")
        else:
            assert explanation.message.startswith(f"0/{len(nodes)} nodes fit: ")


def test_policy_weight_names_are_the_scheduler_score_plugins() -> None:
    from federation.scheduler import DEFAULT_WEIGHTS, SCORES
    from policies.model import SCORE_NAMES

    assert set(SCORES) == set(SCORE_NAMES) == set(DEFAULT_WEIGHTS)
