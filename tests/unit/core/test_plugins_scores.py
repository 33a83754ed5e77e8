"""Score plugins: each one's values on small fleets, when it applies, and how
the weighted sum picks the winner the explanation names."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from rtt_table import TableRtt

from federation import wire
from federation.inventory import Node, NodeState
from federation.scheduler import (
    DEFAULT_WEIGHTS,
    SCORES,
    Preference,
    Request,
    Round,
    Scope,
    Spread,
    Users,
    place,
)
from federation.scheduling.scores import active_weights, score
from policies.model import Selector, Toleration

MiB = 1024**2
GiB = 1024**3


def node(name: str, *, site: str = "s1", labels: Mapping[str, str] | None = None,
         cpu: int = 4000, memory: int = 4 * GiB, used_cpu: int = 0, used_memory: int = 0,
         images: tuple[str, ...] = ()) -> Node:
    capacity = wire.Capacity(
        site=site, arch="arm64", os="linux", runtime="docker", labels=dict(labels or {}),
        allocatable=wire.Resources(cpu_millis=cpu, memory_bytes=memory, disk_bytes=0),
        used=wire.Resources(cpu_millis=used_cpu, memory_bytes=used_memory, disk_bytes=0),
        images=images, instances=())
    return Node(name=name, site=site, epoch="boot-1", online=True, state=NodeState.READY,
                state_since=0.0, last_seen=0.0, capacity=capacity)


def request(slot: int = 0, **kw: Any) -> Request:
    kw.setdefault("deployment", "web")
    kw.setdefault("generation", 1)
    return Request(slot=slot, **kw)


def values(name: str, req: Request, rnd: Round) -> list[float]:
    return [round(float(v), 2) for v in SCORES[name].score(req, rnd)]


# (plugin, round, request, score per node in round order)
CASES = [
    pytest.param("user-rtt", Round(nodes=[node("n1"), node("n2"), node("n3"), node("n4")],
                                   rtt=TableRtt({("berlin", "n1"): 10.0, ("berlin", "n2"): 20.0,
                                                 ("berlin", "n3"): 30.0})),
                 request(users=(Users(name="eu", source="berlin"),)), [100.0, 50.0, 0.0, 0.0],
                 id="user-rtt-nearest-best-unknown-zero"),
    pytest.param("user-rtt", Round(nodes=[node("n1"), node("n2")], rtt=TableRtt({
        ("berlin", "n1"): 10.0, ("berlin", "n2"): 50.0, ("ohio", "n1"): 90.0,
        ("ohio", "n2"): 10.0})),
                 request(users=(Users(name="eu", source="berlin", share=0.75),
                                Users(name="us", source="ohio", share=0.25))), [75.0, 25.0],
                 id="user-rtt-by-share"),
    pytest.param("data-locality", Round(nodes=[
        node("a1", site="a", labels={"data.edgefed.io/frames": "present"}),
        node("a2", site="a"), node("b1", site="b")]),
                 request(data_sets=("frames",)), [100.0, 50.0, 0.0], id="data-node-site-none"),
    pytest.param("data-locality", Round(nodes=[
        node("a1", labels={"data.edgefed.io/frames": "present", "data.edgefed.io/maps": "x"}),
        node("b1", site="b", labels={"data.edgefed.io/maps": "present"})]),
                 request(data_sets=("frames", "maps")), [100.0, 50.0], id="data-averaged"),
    pytest.param("image-locality", Round(nodes=[node("n1", images=("web:1", "db:2")),
                                                node("n2", images=("web:2",))]),
                 request(image="web:1"), [100.0, 0.0], id="image"),
    pytest.param("cost", Round(nodes=[node("n1", labels={"price": "0.1"}),
                                      node("n2", labels={"price": "0.3"}),
                                      node("n3", labels={"price": "0.2"}), node("n4"),
                                      node("n5", labels={"price": "cheap"})]),
                 request(), [100.0, 0.0, 50.0, 0.0, 0.0], id="cost-lower-better"),
    pytest.param("least-allocated", Round(nodes=[node("n1"), node("n2", used_cpu=2000,
                                                                  used_memory=GiB)]),
                 request(cpu_millis=1000, memory_bytes=GiB), [75.0, 37.5], id="least-allocated"),
    # n2 keeps half its memory but a quarter of its cpu: the scarcer share counts.
    pytest.param("headroom", Round(nodes=[node("n1"), node("n2", used_cpu=2000,
                                                           used_memory=GiB)]),
                 request(cpu_millis=1000, memory_bytes=GiB), [75.0, 25.0], id="headroom"),
    pytest.param("headroom", Round(nodes=[node("n1", used_cpu=4000), node("n2", cpu=0)]),
                 request(cpu_millis=1000), [0.0, 0.0], id="headroom-full-or-no-cpu"),
    pytest.param("balanced", Round(nodes=[node("n1", used_cpu=1000),
                                          node("n2", used_cpu=1000, used_memory=GiB)]),
                 request(cpu_millis=1000, memory_bytes=GiB), [75.0, 100.0], id="balanced"),
    pytest.param("prefer-no-schedule", Round(nodes=[
        node("n1", labels={"taint.edgefed.io/busy": "yes:PreferNoSchedule"}), node("n2")]),
                 request(), [0.0, 100.0], id="prefer-no-schedule"),
    pytest.param("prefer-no-schedule", Round(nodes=[
        node("n1", labels={"taint.edgefed.io/busy": "yes:PreferNoSchedule"}), node("n2")]),
                 request(tolerations=(Toleration(key="busy", value="yes"),)), [100.0, 100.0],
                 id="prefer-no-schedule-tolerated"),
    pytest.param("spread-sites", Round(nodes=[
        node("a1", site="a", labels={"region": "eu", "provider": "aws"}),
        node("b1", site="b", labels={"region": "eu", "provider": "gcp"}),
        node("c1", site="c", labels={"region": "us", "provider": "aws"}), node("x1", site="x")],
        placed={"web": Counter({"a1": 1})}),
                 request(), [50.0, 83.33, 83.33, 100.0], id="spread-sites-regions-providers"),
    pytest.param("topology-spread", Round(nodes=[
        node("a1", labels={"region": "eu"}), node("a2", labels={"region": "eu"}),
        node("c1", labels={"region": "us"}), node("x1")],
        placed={"web": Counter({"a1": 2, "c1": 1})}),
                 request(spread=(Spread(scope=Scope.REGION),)), [50.0, 50.0, 100.0, 0.0],
                 id="topology-spread"),
    pytest.param("affinity", Round(nodes=[node("a1", site="a"), node("b1", site="b")],
                                   placed={"db": Counter({"a1": 1}), "batch": Counter({"b1": 1})},
                                   deployment_labels={"db": {"app": "db"},
                                                      "batch": {"app": "batch"}}),
                 request(preferences=(
                     Preference(selector=Selector(match_labels={"app": "db"}),
                                scope=Scope.SITE, weight=75),
                     Preference(selector=Selector(match_labels={"app": "batch"}), weight=25,
                                apart=True))), [100.0, 0.0], id="affinity-weighted"),
    pytest.param("stay-put", Round(nodes=[node("n1"), node("n2")]),
                 request(current_node="n2"), [0.0, 100.0], id="stay-put"),
]


@pytest.mark.parametrize(("name", "rnd", "req", "expected"), CASES)
def test_score_values(name: str, rnd: Round, req: Request, expected: list[float]) -> None:
    assert values(name, req, rnd) == expected


# (request, round, plugins that apply beyond the always-on ones)
def test_plugins_apply_only_when_they_have_something_to_say() -> None:
    plain = Round(nodes=[node("n1"), node("n2")])
    assert list(active_weights(request(image="web:1"), plain)) == [
        "least-allocated", "headroom", "spread-sites", "balanced"]
    rich = Round(nodes=[node("n1", images=("web:1",), labels={"price": "1"}),
                        node("n2", labels={"taint.edgefed.io/a": "b:PreferNoSchedule"})])
    req = request(image="web:1", users=(Users(name="eu", source="x"),), data_sets=("d",),
                  spread=(Spread(),), current_node="n1",
                  preferences=(Preference(selector=Selector()),), weights={"spread-nodes": 1.0})
    assert list(active_weights(req, rich)) == list(DEFAULT_WEIGHTS)


def test_the_explanation_shows_the_winner_scores_from_the_deciding_vectors() -> None:
    rnd = Round(nodes=[node("near"), node("far"), node("mid")],
                rtt=TableRtt({("berlin", "near"): 5.0, ("berlin", "far"): 80.0,
                              ("berlin", "mid"): 40.0}))
    req = request(users=(Users(name="eu", source="berlin"),))
    total, vectors = score(req, rnd)
    decision = place(req, rnd)
    best = decision.explanation.ranked[0]
    i = rnd.index[best.node]
    assert best.node == "near" == rnd.node_names[int(np.argmax(total))]
    assert best.total == pytest.approx(total[i])
    assert best.scores == pytest.approx({name: v[i] for name, v in vectors.items()})
    assert [r.node for r in decision.explanation.ranked] == ["near", "mid", "far"]
    # mid: user-rtt (80 - 40) / (80 - 5) = 53.3;
    # (4 * 100 + 2 * 100 + 100 + 20 * 53.3 + 2 * 100) / 29 = 67.8
    assert decision.explanation.message == (
        "3/3 nodes fit; chose near (site s1) score 100.0 (least-allocated 100, headroom 100, "
        "spread-sites 100, user-rtt 100, balanced 100); runner-up mid 67.8")


def test_user_rtt_outweighs_spreading_by_default() -> None:
    """Replicas stay near their users even when that stacks them on one node: a
    millisecond nearer (user-rtt 100 against 95.7) outweighs a second replica there."""
    nodes = [node("berlin-1", site="berlin"), node("berlin-2", site="berlin"),
             node("paris-1", site="paris")]
    rnd = Round(nodes=nodes, rtt=TableRtt({("berlin", "berlin-1"): 2.0,
                                           ("berlin", "berlin-2"): 3.0,
                                           ("berlin", "paris-1"): 25.0}))
    chosen = [place(request(i, users=(Users(name="eu", source="berlin"),)), rnd).node
              for i in range(3)]
    assert chosen == ["berlin-1", "berlin-1", "berlin-1"]
    # Weighted below the spread plugins, RTT gives way: the second replica goes to Paris.
    spread_out = Round(nodes=nodes, rtt=rnd.rtt)
    weights = {"user-rtt": 1.0, "spread-sites": 2.0, "spread-nodes": 1.0}
    assert [place(request(i, users=(Users(name="eu", source="berlin"),),
                          weights=weights), spread_out).node
            for i in range(3)] == ["berlin-1", "paris-1", "berlin-2"]


def test_data_locality_and_image_bring_replicas_to_their_bytes() -> None:
    rnd = Round(nodes=[node("plain"), node("cached", images=("web:1",)),
                       node("holder", labels={"data.edgefed.io/frames": "present"})])
    assert place(request(image="web:1"), rnd).node == "cached"
    assert place(request(1, data_sets=("frames",)), rnd).node == "holder"


def test_policy_weights_turn_plugins_on_and_off() -> None:
    rnd = Round(nodes=[node("cheap", labels={"price": "0.1"}),
                       node("dear", labels={"price": "0.9"}, used_cpu=3000)])
    assert place(request(weights={"cost": 0.0}), rnd).explanation.ranked[0].node == "cheap"
    by_room = place(request(1, weights={"cost": 0.0, "least-allocated": 5.0}),
                    Round(nodes=[node("cheap", labels={"price": "0.1"}, used_cpu=3000),
                                 node("dear", labels={"price": "0.9"})]))
    assert by_room.node == "dear"
    assert "cost" not in by_room.explanation.ranked[0].scores
    by_cost = place(request(2, weights={"cost": 50.0}),
                    Round(nodes=[node("cheap", labels={"price": "0.1"}, used_cpu=3000),
                                 node("dear", labels={"price": "0.9"})]))
    assert by_cost.node == "cheap"
