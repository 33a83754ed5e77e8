"""Deployments become scheduler requests; dry runs say where each replica would go."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from federation import wire
from federation.inventory import Node, NodeState
from federation.model import SlotKey, SlotRecord, template_of
from federation.planning import (
    Change,
    PlannedSlot,
    dry_run,
    misplaced,
    new_round,
    request_for,
    unenforced,
)
from federation.scheduler import Apart, Preference, Request, Usage, place
from federation.scheduler import Scope as SchedulerScope
from policies.model import (
    AffinityTerm,
    Container,
    DataSet,
    Deployment,
    Failover,
    HealthCheck,
    LabelRequirement,
    OnReconnect,
    Operator,
    Placement,
    Port,
    Residency,
    Resources,
    RestartPolicy,
    Rollout,
    Scope,
    Security,
    Selector,
    SplitGroup,
    SpreadConstraint,
    Toleration,
    UserGroup,
    Volume,
)

MiB = 1024**2
GiB = 1024**3


def node(name: str, *, site: str = "s1", cpu: int = 4000, memory: int = 4 * GiB,
         used_cpu: int = 0, used_memory: int = 0, state: NodeState = NodeState.READY,
         labels: dict[str, str] | None = None) -> Node:
    capacity = wire.Capacity(
        site=site, arch="arm64", os="linux", runtime="docker", labels=labels or {},
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
        host_ports=(8080, 5353), has_command=True, image="busybox:1.36", node_selector=node_sel,
        site_selector=site_sel, weights={"spread-sites": 4.0}, current_node=None, replicas=2)
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


def test_a_running_deployment_keeps_what_its_anti_affinity_shuns_off_its_nodes() -> None:
    """The round knows the required anti-affinity terms of the deployments already
    running: db, which has no terms, is not placed next to web, which shuns it."""
    web = replace(spec("web"), labels={"app": "web"}, placement=Placement(anti_affinity=(
        AffinityTerm(selector=Selector(match_labels={"app": "db"}), scope=Scope.NODE,
                     required=True),)))
    db = replace(spec("db"), labels={"app": "db"})
    rnd = new_round([node("n1"), node("n2")], [placed(0, "n1", dep=web)], specs(web, db))
    assert rnd.deployment_apart == {"web": request_for(web, 0, 1).apart}
    planned = dry_run(db, [node("n1"), node("n2")], slots(placed(0, "n1", dep=web)),
                      specs(web, db))
    assert [p.node for p in planned] == ["n2", "n2", "n2"]
    rnd = new_round([node("n1")], [placed(0, "n1", dep=web)], specs(web, db))
    assert place(request_for(db, 0, 1), rnd).explanation.message == (
        "0/1 nodes fit: 1 web's anti-affinity with app=db on the node")


# -- dry_run -------------------------------------------------------------------------


def three_sites() -> list[Node]:
    return [node("n1", site="s1", cpu=8000, memory=8 * GiB),
            node("n2", site="s2", used_cpu=1000, used_memory=GiB),
            node("n3", site="s3")]


def test_dry_run_keeps_placed_slots_and_places_the_rest() -> None:
    web = spec()
    plan = dry_run(web, three_sites(), slots(placed(0, "n1", generation=4)), specs(web))
    assert plan == [
        PlannedSlot(slot=0, node="n1", site="s1", change=Change.STAYS, message="stays on n1"),
        # n3: least-allocated avg(3000/4000, 3Gi/4Gi) = 75, headroom 75, balanced 100
        #     -> (4*75 + 2*75 + 100 + 2*100) / 9 = 83.3
        # n1 holds slot 0 on twice the room: 75, 75, spread-sites 50 -> 77.8
        # n2: avg(2000/4000, 2Gi/4Gi) = 50, headroom 50 -> 66.7
        PlannedSlot(slot=1, node="n3", site="s3", change=Change.NEW, message=(
            "3/3 nodes fit; chose n3 (site s3) score 83.3 (least-allocated 75, headroom 75, "
            "spread-sites 100, balanced 100); runner-up n1 77.8")),
        # n3 now holds slot 1: least-allocated 50, headroom 50, spread-sites 50 -> 61.1
        PlannedSlot(slot=2, node="n1", site="s1", change=Change.NEW, message=(
            "3/3 nodes fit; chose n1 (site s1) score 77.8 (least-allocated 75, headroom 75, "
            "spread-sites 50, balanced 100); runner-up n2 66.7")),
    ]


def test_dry_run_of_an_unschedulable_replica() -> None:
    big = spec(replicas=1, memory=8 * GiB)
    nodes = [node("n1"), node("n2", memory=2 * GiB), node("n3", state=NodeState.LOST)]
    assert dry_run(big, nodes, {}, specs(big)) == [PlannedSlot(
        slot=0, node=None, site=None, change=Change.UNSCHEDULABLE,
        message="0/3 nodes fit: 3 insufficient memory (need 8Gi, most free 4Gi), 1 node Lost")]


def test_dry_run_counts_what_other_deployments_hold() -> None:
    db = spec("db", replicas=1, cpu=3500)
    web = spec("web", replicas=1, cpu=1000)
    plan = dry_run(web, [node("n1")], slots(placed(0, "n1", dep=db)), specs(db, web))
    assert plan == [PlannedSlot(
        slot=0, node=None, site=None, change=Change.UNSCHEDULABLE,
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
    assert plan == [PlannedSlot(slot=0, node="n1", site="s1", change=Change.STAYS,
                                message="stays on n1")]


def test_dry_run_of_a_template_change_that_no_longer_fits() -> None:
    old = spec(replicas=1, memory=GiB)
    new = spec(replicas=1, memory=6 * GiB)
    nodes = [node("n1", memory=4 * GiB), node("n2", site="s2", memory=8 * GiB)]
    plan = dry_run(new, nodes, slots(placed(0, "n1", dep=old)), specs(old))
    assert (plan[0].node, plan[0].moves) == ("n2", True)


# -- replicas that may no longer stay ------------------------------------------------


def zoned(zone: str, *, replicas: int = 3) -> Deployment:
    return replace(spec(replicas=replicas),
                   placement=Placement(node_selector=Selector(match_labels={"zone": zone})))


def zones() -> list[Node]:
    return [node("n1", site="s1", labels={"zone": "a"}), node("n2", site="s2", labels={"zone": "b"}),
            node("n3", site="s3", labels={"zone": "b"}, state=NodeState.SUSPECT),
            node("n4", site="s4", labels={"zone": "a"})]


def test_misplaced_names_replicas_their_node_no_longer_allows() -> None:
    web = zoned("a")
    current = [placed(0, "n1"), placed(1, "n2"), placed(2, "n3"), placed(3, "n2"),
               placed(0, "n2", dep=spec("db")), SlotRecord(deployment="web", index=4,
                                                           generation=1, revision=1)]
    # n3 is Suspect: its replica waits like any other; slot 3 is beyond replicas (scaled
    # down, stopped anyway); db is not in the specs; slot 4 is not placed.
    assert misplaced(specs(web), current, zones()) == {
        ("web", 1): "node n2 no longer fits: node selector unmatched (zone=b)"}
    assert misplaced(specs(zoned("b")), current, zones()) == {
        ("web", 0): "node n1 no longer fits: node selector unmatched (zone=a)"}


def test_dry_run_shows_what_moves_and_from_where() -> None:
    web = zoned("a", replicas=2)
    plan = dry_run(web, zones(), slots(placed(0, "n1"), placed(1, "n2", generation=5)),
                   specs(spec()))
    assert plan[0] == PlannedSlot(slot=0, node="n1", site="s1", change=Change.STAYS,
                                  message="stays on n1")
    assert (plan[1].node, plan[1].change, plan[1].from_node, plan[1].moves) == (
        "n4", Change.MOVES, "n2", True)
    assert plan[1].reason == "node n2 no longer fits: node selector unmatched (zone=b)"
    # n1 holds slot 0, so spreading sends slot 1 to n4 (both n2 and n3 are zone b).
    assert plan[1].message == (
        "2/4 nodes fit; chose n4 (site s4) score 83.3 (least-allocated 75, headroom 75, "
        "spread-sites 100, balanced 100); runner-up n1 61.1; refused: 2 node selector "
        "unmatched (zone=b), 1 node Suspect")


def test_dry_run_of_a_template_change_prefers_the_node_it_runs_on() -> None:
    old, new = spec(replicas=1), spec(replicas=1, cpu=500)
    plan = dry_run(new, three_sites(), slots(placed(0, "n2", dep=old)), specs(old))
    assert (plan[0].node, plan[0].change, plan[0].from_node, plan[0].reason) == (
        "n2", Change.REPLACED, "n2", "template changed")
    assert "stay-put 100" in plan[0].message


def test_dry_run_of_a_new_replica_says_new() -> None:
    plan = dry_run(spec(replicas=1), three_sites(), {}, {})
    assert (plan[0].change, plan[0].from_node, plan[0].reason) == (Change.NEW, None, "")


# -- what is enforced, and warnings for the rest ---------------------------------------

BARE = Deployment(name="web", container=Container(image="busybox:1.36"))


def with_placement(**fields: Any) -> Deployment:
    return replace(BARE, placement=Placement(**fields))


def with_container(**fields: Any) -> Deployment:
    return replace(BARE, container=replace(BARE.container, **fields))


def term(scope: Scope = Scope.NODE, *, required: bool = True) -> AffinityTerm:
    return AffinityTerm(selector=Selector(match_labels={"app": "web"}), scope=scope,
                        required=required)


# Every field of the model a deployment can set, with a value that is not its default,
# and the warning it gets (None: enforced). A field added to the model fails
# test_every_model_field_is_classified until it is listed here, and so until
# someone decides whether the scheduler honours it.
CLASSIFIED: dict[tuple[str, str], tuple[Deployment, str | None]] = {
    ("Deployment", "replicas"): (replace(BARE, replicas=3), None),
    ("Deployment", "labels"): (replace(BARE, labels={"app": "web"}), None),
    ("Deployment", "restart_policy"): (replace(BARE, restart_policy=RestartPolicy.NEVER), None),
    ("Container", "command"): (with_container(command=("sh",)), None),
    ("Container", "args"): (with_container(args=("-v",)), None),
    ("Container", "env"): (with_container(env={"A": "1"}), None),
    ("Container", "ports"): (with_container(ports=(Port(container_port=80, host_port=80),)),
                             None),
    ("Resources", "cpu_millis"): (with_container(resources=Resources(cpu_millis=100)), None),
    ("Resources", "memory_bytes"): (with_container(resources=Resources(memory_bytes=MiB)), None),
    ("Resources", "disk_bytes"): (with_container(resources=Resources(disk_bytes=MiB)), None),
    ("Resources", "devices"): (
        with_container(resources=Resources(devices={"nvidia.com/gpu": 1})),
        "spec.container.resources.devices: replicas go only to nodes that report enough "
        "devices (agents find NVIDIA GPUs in /dev, or are told with --device); the runtime "
        "does not pass devices to the container yet"),
    ("Container", "health_check"): (
        with_container(health_check=HealthCheck(command=("true",))),
        "spec.container.healthCheck: health checks are not run yet; the agent ignores it"),
    ("Container", "volumes"): (
        with_container(volumes=(Volume(name="c", host_path="/c", mount_path="/c"),)),
        "spec.container.volumes: host path volumes are not mounted yet; the runtime ignores "
        "them"),
    ("Container", "data_sets"): (
        with_container(data_sets=(DataSet(name="frames", mount_path="/data"),)),
        "spec.container.dataSets: nodes that hold the data sets are preferred; the runtime "
        "does not mount data sets yet"),
    ("Container", "security"): (
        with_container(security=Security(privileged=True)),
        "spec.container.security: security settings are not applied yet; the runtime ignores "
        "them"),
    ("Placement", "node_selector"): (with_placement(node_selector=Selector(
        match_labels={"arch": "arm64"})), None),
    ("Placement", "site_selector"): (with_placement(site_selector=Selector(
        match_labels={"tier": "edge"})), None),
    ("Placement", "strategy"): (with_placement(strategy="random"), None),
    ("Placement", "weights"): (with_placement(weights={"spread-sites": 0.0}), None),
    ("Placement", "affinity"): (with_placement(affinity=(term(), term(required=False))), None),
    ("Placement", "anti_affinity"): (
        with_placement(anti_affinity=(term(), term(Scope.SITE), term(required=False),
                                      term(Scope.REGION))), None),
    ("Placement", "spread"): (with_placement(spread=(SpreadConstraint(),)), None),
    ("Placement", "max_per_node"): (with_placement(max_per_node=1), None),
    ("Placement", "max_per_site"): (with_placement(max_per_site=1), None),
    ("Placement", "split"): (
        with_placement(split=(SplitGroup(sites=Selector(), weight=100),)), None),
    ("Placement", "users"): (with_placement(users=(UserGroup(name="eu", site="berlin"),)),
                             None),
    ("Placement", "residency"): (with_placement(residency=Residency(countries=("de",))), None),
    ("Placement", "tolerations"): (with_placement(tolerations=(Toleration(key="gpu"),)), None),
    ("Deployment", "rollout"): (replace(BARE, rollout=Rollout(parallelism=2)), None),
    ("Failover", "grace"): (replace(BARE, failover=Failover(grace=timedelta(seconds=30))), None),
    ("Failover", "disconnect_tolerance"): (
        replace(BARE, failover=Failover(disconnect_tolerance=timedelta(seconds=5))), None),
    ("Failover", "on_reconnect"): (
        replace(BARE, failover=Failover(on_reconnect=OnReconnect.KEEP_ORIGINAL)), None),
    ("Failover", "singleton"): (replace(BARE, failover=Failover(singleton=True)), None),
}
# Fields that are whole parts classified field by field above, or identity.
STRUCTURAL = {("Deployment", "name"), ("Deployment", "container"), ("Deployment", "placement"),
              ("Deployment", "failover"), ("Container", "image"), ("Container", "resources"),
              ("Placement", "set_fields"), ("Failover", "set_fields")}


def test_every_model_field_is_classified() -> None:
    fields = {(t.__name__, f.name) for t in (Deployment, Container, Resources, Placement,
                                             Failover) for f in dataclasses.fields(t)}
    assert fields - STRUCTURAL == set(CLASSIFIED)


@pytest.mark.parametrize("field", list(CLASSIFIED), ids=lambda f: ".".join(f))
def test_unenforced_fields_warn_and_enforced_ones_do_not(field: tuple[str, str]) -> None:
    deployment, warning = CLASSIFIED[field]
    assert unenforced(deployment) == ([] if warning is None else warning.split("\n"))


def test_defaults_written_out_do_not_warn() -> None:
    assert unenforced(BARE) == []
    spelled_out = replace(BARE, rollout=Rollout(), failover=Failover(grace=timedelta(seconds=10)),
                          placement=Placement(strategy="two-phase"))
    assert unenforced(spelled_out) == []


def test_request_for_maps_the_enforced_placement_fields() -> None:
    dep = replace(
        with_placement(residency=Residency(countries=("de", "fr"), regions=("eu-central",)),
                       max_per_node=1, max_per_site=2,
                       anti_affinity=(term(), term(Scope.SITE), term(required=False),
                                      term(Scope.REGION))),
        labels={"app": "web"},
        container=replace(BARE.container, resources=Resources(
            devices={"nvidia.com/gpu": 1, "hailo.ai/npu": 0})))
    req = request_for(dep, 0, 1)
    assert (req.labels, req.countries, req.regions, req.max_per_node, req.max_per_site) == (
        {"app": "web"}, ("de", "fr"), ("eu-central",), 1, 2)
    assert req.devices == {"nvidia.com/gpu": 1}
    sel = Selector(match_labels={"app": "web"})
    assert req.apart == (Apart(selector=sel, scope=SchedulerScope.NODE),
                         Apart(selector=sel, scope=SchedulerScope.SITE),
                         Apart(selector=sel, scope=SchedulerScope.REGION))
    assert req.preferences == (Preference(selector=sel, scope=SchedulerScope.NODE, apart=True),)


def test_lowering_max_per_node_moves_the_highest_slots() -> None:
    web = with_placement(max_per_node=1)
    web = replace(web, replicas=3)
    current = [placed(0, "n1", dep=web), placed(1, "n1", dep=web), placed(2, "n2", dep=web)]
    assert misplaced(specs(web), current, three_sites()) == {
        ("web", 1): "node n1 no longer fits: 1 replica already on the node, maxPerNode 1"}


def test_lowering_max_per_site_moves_the_highest_slots() -> None:
    web = replace(with_placement(max_per_site=1), replicas=3)
    current = [placed(0, "n1", dep=web), placed(1, "n1", dep=web), placed(2, "n2", dep=web)]
    assert misplaced(specs(web), current, three_sites()) == {
        ("web", 1): "node n1 no longer fits: 1 replica already on the site, maxPerSite 1"}
