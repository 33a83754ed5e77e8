"""Deployments become scheduler requests; dry runs say where each replica would go."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

import pytest

from federation import wire
from federation.inventory import Node, NodeState
from federation.model import SlotKey, SlotRecord, template_of
from federation.planning import PlannedSlot, dry_run, new_round, request_for
from federation.scheduler import Request, Usage
from policies.model import (
    Container,
    Deployment,
    LabelRequirement,
    Operator,
    Placement,
    Port,
    Resources,
    Selector,
)

MiB = 1024**2
GiB = 1024**3


def node(name: str, *, site: str = "s1", cpu: int = 4000, memory: int = 4 * GiB,
         used_cpu: int = 0, used_memory: int = 0,
         state: NodeState = NodeState.READY) -> Node:
    capacity = wire.Capacity(
        site=site, arch="arm64", os="linux", runtime="docker", labels={},
        allocatable=wire.Resources(cpu_millis=cpu, memory_bytes=memory, disk_bytes=0),
        used=wire.Resources(cpu_millis=used_cpu, memory_bytes=used_memory, disk_bytes=0),
        images=(), instances=())
    return Node(name=name, site=site, epoch="boot-1", online=state is NodeState.READY,
                state=state, state_since=0.0, last_seen=0.0, capacity=capacity)


def spec(name: str = "web", *, replicas: int = 3, cpu: int = 1000, memory: int = GiB,
         ports: tuple[Port, ...] = ()) -> Deployment:
    return Deployment(name=name, replicas=replicas, container=Container(
        image="busybox:1.36", ports=ports,
        resources=Resources(cpu_millis=cpu, memory_bytes=memory)))


def slots(*records: SlotRecord) -> dict[SlotKey, SlotRecord]:
    return {r.key: r for r in records}


def placed(index: int, on: str, *, dep: Deployment | None = None,
           generation: int = 1) -> SlotRecord:
    dep = dep or spec()
    return SlotRecord(deployment=dep.name, index=index, generation=generation, revision=1,
                      template=template_of(dep), node=on)


def specs(*deployments: Deployment) -> dict[str, Deployment]:
    return {d.name: d for d in deployments}


# -- request_for ---------------------------------------------------------------------


def test_request_for_maps_resources_ports_command_and_placement() -> None:
    node_sel = Selector(match_labels={"arch": "arm64"},
                        match_expressions=(LabelRequirement(key="gpu", operator=Operator.EXISTS),))
    site_sel = Selector(match_labels={"region": "eu"})
    dep = Deployment(
        name="web", replicas=2,
        container=Container(
            image="busybox:1.36", command=("httpd", "-f"),
            ports=(Port(container_port=80, host_port=8080), Port(container_port=443),
                   Port(container_port=53, host_port=5353, protocol="udp")),
            resources=Resources(cpu_millis=250, memory_bytes=64 * MiB)),
        placement=Placement(node_selector=node_sel, site_selector=site_sel,
                            weights={"spread-sites": 4.0}))
    assert request_for(dep, 1, 7) == Request(
        deployment="web", slot=1, generation=7, cpu_millis=250, memory_bytes=64 * MiB,
        host_ports=(8080, 5353), has_command=True, node_selector=node_sel,
        site_selector=site_sel, weights={"spread-sites": 4.0}, current_node=None)
    assert request_for(dep, 1, 7, current_node="n1").current_node == "n1"


@pytest.mark.parametrize(("container", "has_command", "host_ports"), [
    pytest.param(Container(image="busybox"), False, (), id="bare"),
    pytest.param(Container(image="busybox", args=("-v",)), False, (), id="args-are-not-a-command"),
    pytest.param(Container(image="busybox", command=("sleep",)), True, (), id="command"),
    pytest.param(Container(image="busybox", ports=(Port(container_port=80),)), False, (),
                 id="no-host-port"),
])
def test_request_for_small_cases(container: Container, has_command: bool,
                                 host_ports: tuple[int, ...]) -> None:
    req = request_for(Deployment(name="d", container=container), 0, 1)
    assert (req.has_command, req.host_ports, req.cpu_millis, req.memory_bytes) == (
        has_command, host_ports, 0, 0)
    assert req.seed == "d/0@1"


# -- new_round -----------------------------------------------------------------------


def test_new_round_commits_every_placed_slot_but_the_excluded_deployment() -> None:
    web = spec("web", ports=(Port(container_port=80, host_port=8080),))
    db = spec("db", cpu=500, memory=512 * MiB)
    records: Iterable[SlotRecord] = [
        placed(0, "n1", dep=web), placed(1, "n1", dep=web), placed(2, "n2", dep=web),
        placed(0, "n1", dep=db), SlotRecord(deployment="db", index=1, generation=1, revision=1),
        SlotRecord(deployment="gone", index=0, generation=1, revision=1, node="n1")]
    rnd = new_round([node("n1"), node("n2")], records, specs(web, db))
    assert rnd.committed == {
        "n1": Usage(cpu_millis=2500, memory_bytes=2 * GiB + 512 * MiB,
                    host_ports=frozenset({8080})),
        "n2": Usage(cpu_millis=1000, memory_bytes=GiB, host_ports=frozenset({8080}))}
    assert rnd.placed == {"web": Counter({"n1": 2, "n2": 1}), "db": Counter({"n1": 1})}
    without_web = new_round([node("n1"), node("n2")], records, specs(web, db), exclude="web")
    assert without_web.committed == {"n1": Usage(cpu_millis=500, memory_bytes=512 * MiB)}


# -- dry_run -------------------------------------------------------------------------


def three_sites() -> list[Node]:
    return [node("n1", site="s1", cpu=8000, memory=8 * GiB),
            node("n2", site="s2", used_cpu=1000, used_memory=GiB),
            node("n3", site="s3")]


def test_dry_run_keeps_placed_slots_and_places_the_rest() -> None:
    web = spec()
    plan = dry_run(web, three_sites(), slots(placed(0, "n1", generation=4)), specs(web))
    assert plan == [
        PlannedSlot(slot=0, node="n1", site="s1", moves=False, message="stays on n1"),
        # n3: least-allocated avg(3000/4000, 3Gi/4Gi) = 75 -> (75 + 200 + 100) / 4 = 93.75
        # n2: avg(2000/4000, 2Gi/4Gi) = 50 -> 87.5; n1 holds slot 0: 75, 50, 50 -> 56.25
        PlannedSlot(slot=1, node="n3", site="s3", moves=True, message=(
            "3/3 nodes fit; chose n3 (site s3) score 93.8 (least-allocated 75, spread-sites 100, "
            "spread-nodes 100); runner-up n2 87.5")),
        PlannedSlot(slot=2, node="n2", site="s2", moves=True, message=(
            "3/3 nodes fit; chose n2 (site s2) score 87.5 (least-allocated 50, spread-sites 100, "
            "spread-nodes 100); runner-up n1 56.2")),
    ]


def test_dry_run_of_an_unschedulable_replica() -> None:
    big = spec(replicas=1, memory=8 * GiB)
    nodes = [node("n1"), node("n2", memory=2 * GiB), node("n3", state=NodeState.LOST)]
    assert dry_run(big, nodes, {}, specs(big)) == [PlannedSlot(
        slot=0, node=None, site=None, moves=True,
        message="0/3 nodes fit: 3 insufficient memory (need 8Gi, most free 4Gi), 1 node Lost")]


def test_dry_run_counts_what_other_deployments_hold() -> None:
    db = spec("db", replicas=1, cpu=3500)
    web = spec("web", replicas=1, cpu=1000)
    plan = dry_run(web, [node("n1")], slots(placed(0, "n1", dep=db)), specs(db, web))
    assert plan == [PlannedSlot(
        slot=0, node=None, site=None, moves=True,
        message="0/1 nodes fit: 1 insufficient cpu (need 1, most free 500m)")]


def test_dry_run_does_not_count_the_deployment_twice() -> None:
    web = spec(replicas=2, cpu=2000)
    current = slots(placed(0, "n1", dep=web), placed(1, "n1", dep=web))
    plan = dry_run(web, [node("n1")], current, specs(web))
    assert [(p.node, p.moves, p.message) for p in plan] == [
        ("n1", False, "stays on n1"), ("n1", False, "stays on n1")]


@pytest.mark.parametrize(("state", "stays"), [
    (NodeState.READY, True), (NodeState.SUSPECT, True), (NodeState.LOST, False)])
def test_dry_run_moves_slots_only_off_lost_nodes(state: NodeState, stays: bool) -> None:
    web = spec(replicas=1)
    nodes = [node("n1", state=state), node("n2", site="s2")]
    plan = dry_run(web, nodes, slots(placed(0, "n1", generation=2)), specs(web))
    assert (plan[0].node, plan[0].moves) == (("n1", False) if stays else ("n2", True))


def test_dry_run_places_a_slot_whose_node_is_gone() -> None:
    web = spec(replicas=1)
    plan = dry_run(web, [node("n2")], slots(placed(0, "vanished")), specs(web))
    assert (plan[0].node, plan[0].moves) == ("n2", True)


def test_dry_run_of_a_scale_down_lists_only_the_remaining_replicas() -> None:
    web = spec(replicas=1)
    current = slots(placed(0, "n1"), placed(1, "n2"), placed(2, "n3"))
    plan = dry_run(web, three_sites(), current, specs(replace(web, replicas=3)))
    assert plan == [PlannedSlot(slot=0, node="n1", site="s1", moves=False,
                                message="stays on n1")]


def test_dry_run_of_a_template_change_that_no_longer_fits() -> None:
    old = spec(replicas=1, memory=GiB)
    new = spec(replicas=1, memory=6 * GiB)
    nodes = [node("n1", memory=4 * GiB), node("n2", site="s2", memory=8 * GiB)]
    plan = dry_run(new, nodes, slots(placed(0, "n1", dep=old)), specs(old))
    assert (plan[0].node, plan[0].moves) == ("n2", True)
