"""reconcile(desired, observed, now): the exact actions for each situation."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest

from federation import wire
from federation.inventory import Node, NodeState
from federation.model import (
    CommandKey,
    DeploymentRecord,
    Desired,
    Observed,
    Op,
    SlotRecord,
    template_of,
)
from federation.reconcile import RESEND_AFTER, Action, Forget, Place, Purge, Run, Stop, reconcile
from policies.model import Container, Deployment, Placement, Port, Resources, RestartPolicy

NOW = 1000.0


def spec(name: str = "web", *, replicas: int = 1, image: str = "busybox:1.36") -> Deployment:
    return Deployment(name=name, container=Container(image=image), replicas=replicas)


TEMPLATE = template_of(spec())


def deployment(name: str = "web", *, replicas: int = 1, revision: int = 1, deleted: bool = False,
               image: str = "busybox:1.36") -> DeploymentRecord:
    return DeploymentRecord(spec=spec(name, replicas=replicas, image=image), revision=revision,
                            deleted=deleted)


def slot(index: int = 0, node: str | None = "n1", *, generation: int = 1, revision: int = 1,
         dep: str = "web", template: str = TEMPLATE) -> SlotRecord:
    return SlotRecord(deployment=dep, index=index, generation=generation, revision=revision,
                      template=template, node=node, assigned_at=0.0)


def node(name: str, state: NodeState = NodeState.READY) -> Node:
    # A Suspect node lost contact a second ago (within any grace); a Lost one long ago.
    out = {NodeState.SUSPECT: NOW - 1.0, NodeState.LOST: 0.0}.get(state)
    return Node(name=name, site="s1", epoch="boot-1", online=state is NodeState.READY,
                state=state, state_since=0.0, last_seen=0.0, unreachable_since=out)


LOST_REASON = "node n1 out of contact for 1000.0 s (the controller's grace of 10 s)"


def instance(index: int = 0, *, generation: int = 1, state: str = "running",
             dep: str = "web") -> wire.InstanceReport:
    return wire.InstanceReport(deployment=dep, slot=index, generation=generation, revision=1,
                               state=state)


def desired(*records: DeploymentRecord, slots: Iterable[SlotRecord] = ()) -> Desired:
    return Desired(deployments={r.name: r for r in records},
                   slots={s.key: s for s in slots})


def observed(*nodes: Node, instances: dict[tuple[str, str, int], wire.InstanceReport] | None = None,
             inflight: dict[CommandKey, float] | None = None) -> Observed:
    return Observed(nodes={n.name: n for n in nodes}, instances=instances or {},
                    inflight=inflight or {})


def run_key(node_name: str = "n1", index: int = 0, generation: int = 1) -> CommandKey:
    return (node_name, Op.RUN, "web", index, generation)


def stop_key(node_name: str = "n1", index: int = 0, generation: int = 1) -> CommandKey:
    return (node_name, Op.STOP, "web", index, generation)


def new_slot(index: int, revision: int = 1) -> SlotRecord:
    """The record reconcile makes up for a slot that has none yet."""
    return SlotRecord(deployment="web", index=index, generation=0, revision=revision,
                      template=TEMPLATE)


RUNNING_G3 = {("n1", "web", 0): instance(generation=3)}

SCENARIOS = [
    pytest.param(
        desired(deployment(replicas=2, revision=4)), observed(node("n1")),
        [Place(slot=new_slot(0, 4), generation=1, revision=4, reason="new replica"),
         Place(slot=new_slot(1, 4), generation=1, revision=4, reason="new replica")],
        id="new-deployment"),
    pytest.param(
        desired(deployment(), slots=[slot(node=None, generation=2)]), observed(node("n1")),
        [Place(slot=slot(node=None, generation=2), generation=3, revision=1,
               reason="not placed yet")],
        id="unschedulable-slot-tried-again"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1"), instances=RUNNING_G3),
        [], id="running-at-its-generation"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1"), instances={("n1", "web", 0): instance(generation=3, state="exited")}),
        [], id="exited-at-its-generation-is-the-agents-business"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]), observed(node("n1")),
        [Run(slot=slot(generation=3))], id="placed-not-observed"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1"), inflight={run_key(generation=3): NOW - 1.0}),
        [], id="run-inflight"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1"), inflight={run_key(generation=3): NOW - RESEND_AFTER + 0.01}),
        [], id="run-inflight-just-before-resend"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1"), inflight={run_key(generation=3): NOW - RESEND_AFTER}),
        [Run(slot=slot(generation=3))], id="run-resent-after-resend-period"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1"), inflight={run_key(generation=2): NOW - 1.0}),
        [Run(slot=slot(generation=3))], id="inflight-for-another-generation"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1", NodeState.SUSPECT)),
        [], id="no-run-to-a-suspect-node"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1", NodeState.SUSPECT), instances=RUNNING_G3),
        [], id="suspect-node-keeps-its-work"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1", NodeState.LOST), instances=RUNNING_G3),
        [Place(slot=slot(generation=3), generation=4, revision=1, reason=LOST_REASON,
               failover=True)],
        id="node-lost"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]), observed(node("n2")),
        [Place(slot=slot(generation=3), generation=4, revision=1, reason="node n1 is unknown")],
        id="node-unknown-counts-as-lost"),
    pytest.param(
        desired(deployment(revision=2, image="busybox:1.37"),
                slots=[slot(generation=3, revision=1)]),
        observed(node("n1"), instances=RUNNING_G3),
        [Place(slot=slot(generation=3, revision=1), generation=4, revision=2, prefer_node="n1",
               reason="template changed in revision 2")],
        id="template-change-prefers-its-node"),
    pytest.param(
        desired(deployment(revision=2, replicas=1), slots=[slot(generation=3, revision=1)]),
        observed(node("n1"), instances=RUNNING_G3),
        [], id="revision-without-template-change-leaves-instances-alone"),
    pytest.param(
        desired(deployment(revision=2, image="busybox:1.37"),
                slots=[slot(generation=3, revision=1)]),
        observed(node("n1", NodeState.SUSPECT), instances=RUNNING_G3),
        [], id="template-change-waits-for-a-suspect-node"),
    pytest.param(
        desired(deployment(revision=2, image="busybox:1.37"),
                slots=[slot(generation=3, revision=1)]),
        observed(node("n1", NodeState.LOST)),
        [Place(slot=slot(generation=3, revision=1), generation=4, revision=2,
               reason=LOST_REASON, failover=True)],
        id="template-change-on-a-lost-node"),
    pytest.param(
        desired(deployment(replicas=1),
                slots=[slot(0, "n1"), slot(1, "n2"), slot(2, None, generation=5)]),
        observed(node("n1"), node("n2"),
                 instances={("n1", "web", 0): instance(0), ("n2", "web", 1): instance(1)}),
        [Stop(node="n2", deployment="web", index=1, generation=1, reason="scaled to 1"),
         Forget(deployment="web", index=1),
         Forget(deployment="web", index=2)],
        id="scale-down"),
    pytest.param(
        desired(deployment(replicas=0), slots=[slot(0, "n1")]),
        observed(node("n1"), instances={("n1", "web", 0): instance(0)}),
        [Stop(node="n1", deployment="web", index=0, generation=1, reason="scaled to 0"),
         Forget(deployment="web", index=0)],
        id="scale-to-zero-is-not-a-delete"),
    pytest.param(
        desired(deployment(replicas=2, deleted=True), slots=[slot(0, "n1"), slot(1, "n2")]),
        observed(node("n1"), node("n2"),
                 instances={("n1", "web", 0): instance(0), ("n2", "web", 1): instance(1)}),
        [Stop(node="n1", deployment="web", index=0, generation=1, reason="deployment deleted"),
         Forget(deployment="web", index=0),
         Stop(node="n2", deployment="web", index=1, generation=1, reason="deployment deleted"),
         Forget(deployment="web", index=1)],
        id="deleted-with-live-instances"),
    pytest.param(
        desired(deployment(replicas=2, deleted=True), slots=[slot(0, "n1"), slot(1, None)]),
        observed(node("n1"), instances={("n1", "web", 0): instance(0, state="exited")}),
        [Stop(node="n1", deployment="web", index=0, generation=1, reason="deployment deleted"),
         Forget(deployment="web", index=0),
         Forget(deployment="web", index=1),
         Purge(deployment="web")],
        id="deleted-nothing-live"),
    pytest.param(
        desired(deployment(deleted=True)), observed(node("n1")),
        [Purge(deployment="web")], id="deleted-and-forgotten"),
    pytest.param(
        desired(deployment(deleted=True)),
        observed(node("n1"), instances={("n1", "web", 0): instance(0, state="starting")}),
        [Stop(node="n1", deployment="web", index=0, generation=1, reason="no such slot")],
        id="deleted-and-forgotten-but-still-starting"),
    pytest.param(
        desired(deployment(deleted=True)),
        observed(node("n1", NodeState.LOST), instances={("n1", "web", 0): instance(0)}),
        [Purge(deployment="web"),
         Stop(node="n1", deployment="web", index=0, generation=1, reason="no such slot")],
        id="deleted-purges-though-a-lost-node-last-reported-it-live"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1"), instances={("n1", "web", 0): instance(generation=2)}),
        [Run(slot=slot(generation=3)),
         Stop(node="n1", deployment="web", index=0, generation=2,
              reason="generation 2 superseded by 3")],
        id="older-generation-on-the-same-node"),
    pytest.param(
        desired(deployment(), slots=[slot(node="n2", generation=3)]),
        observed(node("n1"), node("n2"),
                 instances={("n1", "web", 0): instance(generation=2),
                            ("n2", "web", 0): instance(generation=3)}),
        [Stop(node="n1", deployment="web", index=0, generation=2,
              reason="slot moved to n2 at generation 3")],
        id="live-on-the-node-it-left"),
    pytest.param(
        desired(deployment(), slots=[slot(node=None, generation=3)]),
        observed(node("n1"), instances={("n1", "web", 0): instance(generation=2)}),
        [Place(slot=slot(node=None, generation=3), generation=4, revision=1,
               reason="not placed yet"),
         Stop(node="n1", deployment="web", index=0, generation=2,
              reason="slot moved to nowhere at generation 3")],
        id="live-while-the-slot-is-unplaced"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1"), instances={("n1", "web", 0): instance(generation=3),
                                        ("n1", "web", 7): instance(7, generation=1),
                                        ("n1", "db", 0): instance(dep="db")}),
        [Stop(node="n1", deployment="db", index=0, generation=1, reason="no such slot"),
         Stop(node="n1", deployment="web", index=7, generation=1, reason="no such slot")],
        id="instances-of-no-slot"),
    pytest.param(
        desired(deployment(), slots=[slot(node="n2", generation=3)]),
        observed(node("n1"), node("n2"),
                 instances={("n1", "web", 0): instance(generation=2, state="exited"),
                            ("n2", "web", 0): instance(generation=3)}),
        [], id="exited-old-instances-are-left-alone"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1"), instances={("n1", "web", 0): instance(generation=2,
                                                                    state="failed")}),
        [Run(slot=slot(generation=3))], id="failed-old-instance-is-not-stopped"),
    pytest.param(
        desired(deployment(), slots=[slot(generation=3)]),
        observed(node("n1"), instances={("n1", "web", 0): instance(generation=4)}),
        [Run(slot=slot(generation=3))], id="newer-instance-than-the-slot-is-kept"),
    pytest.param(
        desired(deployment(), slots=[slot(node="n2", generation=3)]),
        observed(node("n1"), node("n2"),
                 instances={("n1", "web", 0): instance(generation=2),
                            ("n2", "web", 0): instance(generation=3)},
                 inflight={stop_key("n1", 0, 2): NOW - 1.0}),
        [], id="stop-inflight"),
    pytest.param(
        desired(deployment(), slots=[slot(node="n2", generation=3)]),
        observed(node("n1"), node("n2"),
                 instances={("n1", "web", 0): instance(generation=2),
                            ("n2", "web", 0): instance(generation=3)},
                 inflight={stop_key("n1", 0, 2): NOW - RESEND_AFTER}),
        [Stop(node="n1", deployment="web", index=0, generation=2,
              reason="slot moved to n2 at generation 3")],
        id="stop-resent"),
    pytest.param(
        desired(deployment(), slots=[slot(node="n2", generation=3)]),
        observed(node("n2"), instances={("gone", "web", 0): instance(generation=2),
                                        ("n2", "web", 0): instance(generation=3)}),
        [], id="no-stop-to-an-unknown-node"),
    pytest.param(
        desired(deployment(), slots=[slot(node="n2", generation=3)]),
        observed(node("n1", NodeState.LOST), node("n2"),
                 instances={("n1", "web", 0): instance(generation=2),
                            ("n2", "web", 0): instance(generation=3)}),
        [Stop(node="n1", deployment="web", index=0, generation=2,
              reason="slot moved to n2 at generation 3")],
        id="stop-queued-for-a-lost-node"),
    pytest.param(
        desired(deployment(), slots=[slot(node="n2", generation=3)]),
        observed(node("n1", NodeState.LOST), node("n2"),
                 instances={("n1", "web", 0): instance(generation=2),
                            ("n2", "web", 0): instance(generation=3)},
                 inflight={stop_key("n1", generation=2): NOW - 600}),
        [], id="stop-to-a-lost-node-queued-once-per-outage"),
    pytest.param(
        desired(deployment(), slots=[slot(node="n2", generation=3)]),
        observed(node("n1"), node("n2"),
                 instances={("n1", "web", 0): instance(generation=2),
                            ("n2", "web", 0): instance(generation=3)},
                 inflight={stop_key("n1", generation=2): NOW - 600}),
        [Stop(node="n1", deployment="web", index=0, generation=2,
              reason="slot moved to n2 at generation 3")],
        id="stop-sent-again-once-the-node-is-back"),
]


@pytest.mark.parametrize(("want", "have", "actions"), SCENARIOS)
def test_reconcile(want: Desired, have: Observed, actions: list[Action]) -> None:
    assert reconcile(want, have, NOW) == actions


def test_deployments_are_reconciled_in_name_order() -> None:
    want = desired(deployment("web"), deployment("api"), deployment("db"))
    names = [a.slot.deployment for a in reconcile(want, observed(), NOW)
             if isinstance(a, Place)]
    assert names == ["api", "db", "web"]


def test_reconcile_is_pure() -> None:
    want = desired(deployment(replicas=2), slots=[slot(0, "n1", generation=3)])
    have = observed(node("n1"), instances={("n1", "web", 0): instance(generation=2)})
    first = reconcile(want, have, NOW)
    assert reconcile(want, have, NOW) == first
    assert want.slots == {("web", 0): slot(0, "n1", generation=3)}
    assert dict(have.inflight) == {}


# -- what counts as a new template -------------------------------------------------

BASE = Deployment(name="web", container=Container(image="busybox:1.36", env={"MODE": "edge"}),
                  replicas=2)


@pytest.mark.parametrize(("changed", "replaces"), [
    pytest.param(replace(BASE, replicas=5), False, id="replicas"),
    pytest.param(replace(BASE, labels={"team": "ops"}), False, id="labels"),
    pytest.param(replace(BASE, placement=Placement(weights={"spread-sites": 5.0})), False,
                 id="placement"),
    pytest.param(replace(BASE, container=replace(BASE.container, image="busybox:1.37")), True,
                 id="image"),
    pytest.param(replace(BASE, container=replace(BASE.container, env={"MODE": "cloud"})), True,
                 id="env"),
    pytest.param(replace(BASE, container=replace(BASE.container, command=("sh",))), True,
                 id="command"),
    pytest.param(replace(BASE, container=replace(
        BASE.container, resources=Resources(cpu_millis=250))), True, id="resources"),
    pytest.param(replace(BASE, container=replace(
        BASE.container, ports=(Port(container_port=80, host_port=8080),))), True, id="ports"),
    pytest.param(replace(BASE, restart_policy=RestartPolicy.NEVER), True, id="restart-policy"),
])
def test_which_changes_replace_running_instances(changed: Deployment, replaces: bool) -> None:
    assert (template_of(changed) != template_of(BASE)) is replaces
    slots = [slot(0, "n1", template=template_of(BASE))]
    have = observed(node("n1"), instances={("n1", "web", 0): instance(0)})
    record = DeploymentRecord(spec=replace(changed, replicas=1), revision=2)
    actions = reconcile(desired(record, slots=slots), have, NOW)
    assert [type(a).__name__ for a in actions] == (["Place"] if replaces else [])


# -- a replica that may no longer stay where it runs -----------------------------------

NO_LONGER_FITS = "node n1 no longer fits: country is us, residency allows de"


@pytest.mark.parametrize(("state", "template", "actions"), [
    pytest.param(NodeState.READY, TEMPLATE,
                 [Place(slot=slot(generation=3), generation=4, revision=1,
                        reason=NO_LONGER_FITS)], id="moves"),
    # A new template too: placed elsewhere, not preferring the node it may not stay on.
    pytest.param(NodeState.READY, "old-template",
                 [Place(slot=slot(generation=3, template="old-template"), generation=4,
                        revision=1, reason=NO_LONGER_FITS)], id="moves-with-a-new-template"),
    # Its work waits for the node to come back or be lost, as always.
    pytest.param(NodeState.SUSPECT, TEMPLATE, [], id="suspect-node-waits"),
])
def test_misplaced_replicas_are_placed_again(state: NodeState, template: str,
                                             actions: list[Action]) -> None:
    want = desired(deployment(), slots=[slot(generation=3, template=template)])
    have = observed(node("n1", state), instances=RUNNING_G3)
    assert reconcile(want, have, NOW, misplaced={("web", 0): NO_LONGER_FITS}) == actions
    assert reconcile(want, have, NOW, misplaced={("web", 1): NO_LONGER_FITS}) == (
        [] if template == TEMPLATE else [Place(slot=slot(generation=3, template=template),
                                               generation=4, revision=1, prefer_node="n1",
                                               reason="template changed in revision 1")])
