"""Failover policy, pure: flap damping and hold-down, per-deployment grace and
disconnect tolerance, the replacement rate limit, singletons (fence wait, operator
confirmation), keep-original, and the agent's side of self-fencing."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.commands import LocalSlot, Verdict, Want, answer, fence, to_fence
from federation import wire
from federation.failover import FENCE_MARGIN, Throttle, fence_after, replace_after, verdict
from federation.inventory import Inventory, Liveness, Node, NodeState
from federation.model import DeploymentRecord, Desired, Observed, SlotRecord, template_of
from federation.reconcile import Place, Reclaim, Stop, reconcile
from policies.model import Container, Deployment, Failover, OnReconnect

GiB = 1024**3
OFFLINE = wire.Presence(state=wire.PresenceState.OFFLINE, site="berlin")
ONLINE = wire.Presence(state=wire.PresenceState.ONLINE, site="berlin")
INTERVAL = 1.0  # capacity interval: heartbeat overdue after 3 s


def capacity(instances: tuple[wire.InstanceReport, ...] = ()) -> wire.Capacity:
    return wire.Capacity(
        site="berlin", arch="arm64", os="linux", runtime="process", labels={},
        allocatable=wire.Resources(cpu_millis=4000, memory_bytes=4 * GiB, disk_bytes=0),
        used=wire.Resources(cpu_millis=0, memory_bytes=0, disk_bytes=0),
        images=(), instances=instances, interval=INTERVAL)


def inventory(**knobs: Any) -> Inventory:
    inv = Inventory(liveness=Liveness(**knobs))
    inv.observe_capacity("n1", "boot-1", capacity(), 0.0)
    return inv


def flap(inv: Inventory, times: list[tuple[str, float]]) -> Node:
    """Feed ``off``/``cap``/``tick`` steps to node n1; return it after the last."""
    for op, at in times:
        if op == "off":
            inv.observe_presence("n1", "boot-1", OFFLINE, at)
        elif op == "on":
            inv.observe_presence("n1", "boot-1", ONLINE, at)
        elif op == "cap":
            inv.observe_capacity("n1", "boot-1", capacity(), at)
        else:
            inv.tick(at)
    return inv.nodes["n1"]


def square_wave(down: float, up: float, until: float, start: float = 10.0
                ) -> list[tuple[str, float]]:
    """A link down ``down`` s and up ``up`` s (reporting every second while up)."""
    steps: list[tuple[str, float]] = []
    t = start
    while t < until:
        steps += [("off", t), ("tick", t + down - 0.01)]
        back = t + down
        steps += [("cap", back + i) for i in range(int(up))] + [("tick", back + up - 0.01)]
        t = back + up
    return steps


# -- flap damping -------------------------------------------------------------------


def test_disconnects_under_the_limit_do_not_hold_a_node() -> None:
    node = flap(inventory(), [("off", 10.0), ("cap", 11.0), ("off", 20.0), ("cap", 21.0)])
    assert (node.state, node.disconnects, node.held_until) == (NodeState.READY, (10.0, 20.0), 0.0)


def test_the_third_disconnect_in_the_window_holds_the_node_suspect() -> None:
    node = flap(inventory(), [("off", 10.0), ("cap", 11.0), ("off", 20.0), ("cap", 21.0),
                              ("off", 30.0), ("cap", 31.0)])
    assert node.state is NodeState.SUSPECT
    assert node.held_until == 60.0  # hold_down 30 s after the last disconnect
    assert node.reason == "flapping: 3 disconnects in 60s, held until 00:01:00Z"
    assert node.unreachable_since is None  # in contact: keeps its work


def test_disconnects_older_than_the_window_do_not_count() -> None:
    node = flap(inventory(), [("off", 10.0), ("cap", 11.0), ("off", 20.0), ("cap", 21.0),
                              ("off", 71.0), ("cap", 72.0)])
    assert (node.state, node.disconnects) == (NodeState.READY, (20.0, 71.0))


@pytest.mark.parametrize(("report_at", "state"), [
    (59.0, NodeState.SUSPECT), (60.0, NodeState.READY), (80.0, NodeState.READY)])
def test_a_held_node_is_ready_on_the_first_report_after_the_hold_down(
        report_at: float, state: NodeState) -> None:
    node = flap(inventory(), [("off", 10.0), ("cap", 11.0), ("off", 20.0), ("cap", 21.0),
                              ("off", 30.0), *[("cap", t) for t in range(31, int(report_at))],
                              ("cap", report_at)])
    assert node.state is state


def test_each_disconnect_while_held_extends_the_hold() -> None:
    node = flap(inventory(), [("off", 10.0), ("cap", 11.0), ("off", 20.0), ("cap", 21.0),
                              ("off", 30.0), ("cap", 31.0), ("off", 50.0), ("cap", 51.0)])
    assert (node.state, node.held_until) == (NodeState.SUSPECT, 80.0)
    assert node.reason == "flapping: 4 disconnects in 60s, held until 00:01:20Z"


def test_a_flapping_node_that_never_stays_down_past_the_grace_is_never_lost() -> None:
    inv = inventory(lost_after=3.0)
    seen = set()
    for step in square_wave(down=2.0, up=2.0, until=40.0):
        seen.add(flap(inv, [step]).state)
    assert NodeState.LOST not in seen
    assert inv.nodes["n1"].state is NodeState.SUSPECT  # held: no new work
    assert inv.nodes["n1"].reason.startswith("flapping: ")


def test_a_flapping_node_silent_for_the_grace_is_lost() -> None:
    inv = inventory(lost_after=3.0)
    flap(inv, square_wave(down=2.0, up=2.0, until=30.0))
    node = flap(inv, [("off", 40.0), ("tick", 42.9)])
    assert node.state is NodeState.SUSPECT
    node = flap(inv, [("tick", 43.0)])
    assert node.state is NodeState.LOST
    assert node.reason.startswith("agent went offline; flapping: ")
    assert node.reason.endswith("; grace of 3 s over")


def test_with_damping_the_out_of_contact_clock_restarts_at_every_contact() -> None:
    inv = inventory(lost_after=1.0, ready_after_reports=5)
    flap(inv, [("off", 10.0), ("tick", 11.0)])  # Lost
    assert inv.nodes["n1"].state is NodeState.LOST
    node = flap(inv, [("cap", 12.0)])
    assert (node.state, node.unreachable_since) == (NodeState.SUSPECT, None)
    node = flap(inv, [("off", 14.0)])
    assert (node.state, node.unreachable_since) == (NodeState.LOST, 14.0)


def test_without_damping_a_node_back_from_lost_is_out_of_contact_until_ready() -> None:
    inv = inventory(lost_after=1.0, ready_after_reports=5, flap_limit=0)
    flap(inv, [("off", 10.0), ("tick", 11.0), ("cap", 12.0), ("cap", 13.0)])
    node = flap(inv, [("off", 14.0)])
    assert (node.state, node.unreachable_since) == (NodeState.LOST, 10.0)
    assert (node.disconnects, node.held_until) == ((), 0.0)


def test_without_damping_a_flapping_node_is_never_held() -> None:
    inv = inventory(lost_after=3.0, flap_limit=0)
    node = flap(inv, square_wave(down=2.0, up=2.0, until=40.0))
    assert node.state is NodeState.READY


def test_heartbeat_silence_counts_as_a_disconnect() -> None:
    inv = inventory()
    node = flap(inv, [("tick", 3.01), ("cap", 4.0), ("tick", 7.01), ("cap", 8.0),
                      ("tick", 11.01), ("cap", 12.0)])
    assert node.state is NodeState.SUSPECT
    assert len(node.disconnects) == 3
    assert inv.next_change() == pytest.approx(12.0 + 3 * INTERVAL + 1e-3)


# -- operator confirmation ------------------------------------------------------------


def test_confirm_lost_is_refused_while_the_node_is_in_contact() -> None:
    inv = inventory()
    with pytest.raises(ValueError, match="node n1 is Ready and in contact"):
        inv.confirm_lost("n1", 1.0)
    with pytest.raises(LookupError, match="node n9 not found"):
        inv.confirm_lost("n9", 1.0)


def test_confirm_lost_lasts_until_the_node_is_heard_again() -> None:
    inv = inventory()
    flap(inv, [("off", 10.0)])
    node = inv.confirm_lost("n1", 11.0)
    assert (node.state, node.confirmed_lost, node.reason) == (
        NodeState.LOST, True, "confirmed lost by an operator")
    assert not flap(inv, [("cap", 20.0)]).confirmed_lost


# -- per-deployment grace, tolerance, singletons ------------------------------------------


def out_node(since: float | None, *, last_seen: float = 0.0, confirmed: bool = False,
             state: NodeState = NodeState.SUSPECT) -> Node:
    return Node(name="n1", site="s1", epoch="e", online=False, state=state, state_since=0.0,
                last_seen=last_seen, capacity=capacity(), unreachable_since=since,
                confirmed_lost=confirmed)


S = timedelta(seconds=1)
GRACE_CASES = [
    pytest.param(Failover(), 9.9, False,
                 "node n1 out of contact for 9.9 s; replaced after 10 s (the controller's grace "
                 "of 10 s)", id="default-grace-not-over"),
    pytest.param(Failover(), 10.0, True,
                 "node n1 out of contact for 10.0 s (the controller's grace of 10 s)",
                 id="default-grace-over"),
    pytest.param(Failover(grace=30 * S), 29.0, False,
                 "node n1 out of contact for 29.0 s; replaced after 30 s (failover.grace 30 s)",
                 id="own-grace-not-over"),
    pytest.param(Failover(grace=2 * S), 2.0, True,
                 "node n1 out of contact for 2.0 s (failover.grace 2 s)",
                 id="own-grace-shorter-than-the-controllers"),
    pytest.param(Failover(disconnect_tolerance=60 * S), 69.0, False,
                 "node n1 out of contact for 69.0 s; replaced after 70 s (the controller's "
                 "grace of 10 s + disconnectTolerance 60 s)", id="tolerance-not-over"),
    pytest.param(Failover(grace=5 * S, disconnect_tolerance=60 * S), 65.0, True,
                 "node n1 out of contact for 65.0 s (failover.grace 5 s + disconnectTolerance "
                 "60 s)", id="grace-plus-tolerance-over"),
]


@pytest.mark.parametrize(("policy", "out", "replaced", "reason"), GRACE_CASES)
def test_replacement_waits_for_the_deployments_grace(policy: Failover, out: float,
                                                     replaced: bool, reason: str) -> None:
    got = verdict(policy, out_node(100.0, last_seen=100.0), 100.0 + out, 10.0)
    assert (got.replace, got.reason) == (replaced, reason)


def test_a_node_in_contact_keeps_its_replicas_whatever_its_state() -> None:
    got = verdict(Failover(), out_node(None, state=NodeState.LOST), 1e6, 10.0)
    assert (got.replace, got.reason) == (False, "node n1 is Lost but in contact: its replicas "
                                         "stay")


SINGLETON = Failover(grace=10 * S, singleton=True)


@pytest.mark.parametrize(("now", "replaced"), [
    (101.5 + 10.0, False),  # grace over, but the agent may not have fenced yet
    (100.0 + 10.0 + FENCE_MARGIN - 0.1, False),
    (100.0 + 10.0 + FENCE_MARGIN, True),
])
def test_a_singleton_waits_for_its_agent_to_fence(now: float, replaced: bool) -> None:
    got = verdict(SINGLETON, out_node(101.5, last_seen=100.0), now, 10.0)
    assert got.replace is replaced
    assert ("its agent has stopped it" in got.reason) is replaced
    assert ("waiting" in got.reason) is not replaced


def test_a_singletons_fence_is_at_least_three_report_intervals() -> None:
    tiny = Failover(grace=1 * S, singleton=True)
    assert not verdict(tiny, out_node(100.0, last_seen=100.0), 100.0 + 1 + FENCE_MARGIN,
                       10.0).replace
    assert verdict(tiny, out_node(100.0, last_seen=100.0), 100.0 + 3 + FENCE_MARGIN,
                   10.0).replace


def test_an_operator_confirmation_replaces_at_once_even_a_singleton() -> None:
    got = verdict(SINGLETON, out_node(100.0, last_seen=100.0, confirmed=True,
                                      state=NodeState.LOST), 100.5, 10.0)
    assert (got.replace, got.reason) == (True, "node n1 confirmed lost by an operator")


def test_fence_time_is_the_replacement_delay_and_only_for_singletons() -> None:
    assert fence_after(Failover(), 10.0) is None
    assert fence_after(Failover(singleton=True), 7.0) == 7.0
    assert fence_after(Failover(singleton=True, disconnect_tolerance=5 * S), 7.0) == 12.0
    assert replace_after(Failover(grace=3 * S), 7.0) == (3.0, "failover.grace 3 s")


# -- the rate limit ----------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "granted"), [
    ([(0.0, 50)], [40]),  # burst
    ([(0.0, 40), (0.5, 50)], [40, 10]),  # 20/s refills 10 in half a second
    ([(0.0, 40), (0.01, 5), (0.06, 5)], [40, 0, 1]),
    ([(0.0, 40), (100.0, 100)], [40, 40]),  # never more than the burst
    ([(0.0, 3), (0.0, 3)], [3, 3]),
])
def test_token_bucket(steps: list[tuple[float, int]], granted: list[int]) -> None:
    bucket = Throttle(rate=20.0, burst=40.0, tokens=40.0)
    got = []
    for now, wanted in steps:
        n, bucket = bucket.take(wanted, now)
        got.append(n)
    assert got == granted


def test_next_token() -> None:
    _, bucket = Throttle(rate=20.0, burst=40.0, tokens=40.0).take(40, 10.0)
    assert bucket.next_token(10.0) == pytest.approx(10.05)


# -- reconcile with the policy -----------------------------------------------------------


def record(failover: Failover | None = None, replicas: int = 1) -> DeploymentRecord:
    failover = failover or Failover()
    spec = Deployment(name="db", container=Container(image="busybox:1.36"), replicas=replicas,
                      failover=failover)
    return DeploymentRecord(spec=spec, revision=1)


def slot(node: str, generation: int) -> SlotRecord:
    spec = record().spec
    return SlotRecord(deployment="db", index=0, generation=generation, revision=1,
                      template=template_of(spec), node=node)


def ready(name: str, instances: tuple[wire.InstanceReport, ...] = ()) -> Node:
    return Node(name=name, site="s1", epoch="e", online=True, state=NodeState.READY,
                state_since=0.0, last_seen=0.0, capacity=capacity(instances))


def live(generation: int) -> wire.InstanceReport:
    return wire.InstanceReport(deployment="db", slot=0, generation=generation, revision=1,
                               state="running")


def test_reconcile_replaces_by_the_deployments_grace_and_marks_it_failover() -> None:
    want = Desired(deployments={"db": record(Failover(grace=30 * S))},
                   slots={("db", 0): slot("n1", 1)})
    have = Observed(nodes={"n1": out_node(100.0, state=NodeState.LOST)})
    assert reconcile(want, have, 129.0, grace=5.0) == []
    assert reconcile(want, have, 130.0, grace=5.0) == [Place(
        slot=slot("n1", 1), generation=2, revision=1, failover=True,
        reason="node n1 out of contact for 30.0 s (failover.grace 30 s)")]


def keep_original(node_state: NodeState) -> tuple[Desired, Observed]:
    want = Desired(deployments={"db": record(Failover(on_reconnect=OnReconnect.KEEP_ORIGINAL))},
                   slots={("db", 0): slot("n2", 2)})
    n1 = ready("n1", (live(1),)) if node_state is NodeState.READY else out_node(
        None, state=node_state)
    have = Observed(nodes={"n1": n1, "n2": ready("n2", (live(2),))},
                    instances={("n1", "db", 0): live(1), ("n2", "db", 0): live(2)})
    return want, have


@pytest.mark.parametrize("state", [NodeState.LOST, NodeState.SUSPECT])
def test_keep_original_neither_stops_nor_keeps_before_the_node_is_ready(
        state: NodeState) -> None:
    want, have = keep_original(state)
    assert reconcile(want, have, 200.0, replaced_from={("db", 0): "n1"}) == []


def test_keep_original_takes_the_slot_back_once_the_node_is_ready() -> None:
    want, have = keep_original(NodeState.READY)
    assert reconcile(want, have, 200.0, replaced_from={("db", 0): "n1"}) == [Reclaim(
        slot=slot("n2", 2), node="n1", generation=3, revision=1,
        reason="keep-original: n1 is back with generation 1 running; the replacement on n2 "
        "(generation 2) is superseded")]


def test_keep_original_then_stops_the_replacement() -> None:
    want, have = keep_original(NodeState.READY)
    healed = Desired(deployments=want.deployments, slots={("db", 0): slot("n1", 3)})
    have = Observed(nodes=have.nodes, instances={("n1", "db", 0): live(3),
                                                 ("n2", "db", 0): live(2)})
    assert reconcile(healed, have, 200.0) == [Stop(
        node="n2", deployment="db", index=0, generation=2,
        reason="slot moved to n1 at generation 3")]


def test_keep_original_applies_only_to_failover_moves() -> None:
    want, have = keep_original(NodeState.READY)
    assert reconcile(want, have, 200.0) == [Stop(
        node="n1", deployment="db", index=0, generation=1,
        reason="slot moved to n2 at generation 2")]


def test_keep_replacement_stops_the_returning_original() -> None:
    want, have = keep_original(NodeState.READY)
    want = Desired(deployments={"db": record()}, slots=want.slots)
    assert reconcile(want, have, 200.0, replaced_from={("db", 0): "n1"}) == [Stop(
        node="n1", deployment="db", index=0, generation=1,
        reason="slot moved to n2 at generation 2")]


# -- the agent's side ------------------------------------------------------------------------


WORKLOAD = wire.WorkloadBody(image="busybox:1.36", fence_after=10.0)


def local(want: Want = Want.RUN, generation: int = 3,
          workload: wire.WorkloadBody | None = WORKLOAD) -> LocalSlot:
    return LocalSlot(deployment="db", slot=0, generation=generation, revision=1, want=want,
                     workload=workload)


def test_only_singletons_past_their_fence_time_are_fenced() -> None:
    plain = LocalSlot(deployment="web", slot=0, generation=1, revision=1, want=Want.RUN,
                      workload=wire.WorkloadBody(image="busybox:1.36"))
    slots = [local(), plain, local(Want.STOP, 2)]
    assert to_fence(slots, 9.9) == []
    assert to_fence(slots, 10.0) == [local()]
    assert to_fence([fence(local())], 100.0) == []


def run(generation: int) -> wire.Command:
    return wire.Command(op=wire.CommandOp.RUN, command_id="c1", deployment="db", slot=0,
                        generation=generation, revision=1, workload=WORKLOAD)


def test_a_fenced_singleton_runs_again_on_the_same_run_command() -> None:
    got = answer(run(3), fence(local()))
    assert (got.verdict, got.slot) == (Verdict.ACCEPT, local())


def test_a_fenced_singleton_stops_on_a_stop() -> None:
    stop = wire.Command(op=wire.CommandOp.STOP, command_id="c2", deployment="db", slot=0,
                        generation=3)
    got = answer(stop, fence(local()))
    assert got.verdict is Verdict.ACCEPT and got.slot is not None
    assert got.slot.want is Want.STOP


def test_an_older_run_is_still_refused_after_fencing() -> None:
    assert answer(run(2), fence(local())).verdict is Verdict.REJECT


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), (12.5, 12.5), ("absent", None)])
def test_run_command_carries_the_fence_time(value: object, expected: float | None) -> None:
    body = json.loads(wire.encode(wire.SCHEMA_COMMAND, run(3), sender="controller", epoch="e",
                                  seq=1, sent_at=1.0))
    if value == "absent":
        del body["body"]["workload"]["fence_after"]
    else:
        body["body"]["workload"]["fence_after"] = value
    message = wire.decode(json.dumps(body).encode())
    assert isinstance(message.body, wire.Command) and message.body.workload is not None
    assert message.body.workload.fence_after == expected


@pytest.mark.parametrize("value", [0, -1, "10", 1e9])
def test_a_bad_fence_time_is_refused_with_the_field(value: object) -> None:
    body = json.loads(wire.encode(wire.SCHEMA_COMMAND, run(3), sender="controller", epoch="e",
                                  seq=1, sent_at=1.0))
    body["body"]["workload"]["fence_after"] = value
    with pytest.raises(wire.Refused, match=r"workload\.fence_after"):
        wire.decode(json.dumps(body).encode())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 2.9), st.integers(1, 5)), min_size=1, max_size=30),
       st.booleans())
def test_with_damping_outages_shorter_than_the_grace_never_make_a_node_lost(
        outages: list[tuple[float, int]], by_heartbeat: bool) -> None:
    """Whatever the rhythm of a flapping link, a node never silent for the grace
    (3 s here) is never Lost, and is held Suspect once it flaps."""
    inv = inventory(lost_after=3.0)
    t = 10.0
    for down, reports in outages:
        if by_heartbeat:  # heartbeats stop: Suspect once 3 intervals are over
            inv.tick(t + 3 * INTERVAL + 0.01)
            t += 3 * INTERVAL + 0.01
        else:
            inv.observe_presence("n1", "boot-1", OFFLINE, t)
        for step in (0.5, down):
            assert inv.tick(t + step) == [] or inv.nodes["n1"].state is not NodeState.LOST
            assert inv.nodes["n1"].state is not NodeState.LOST
        t += down
        for _ in range(reports):
            inv.observe_capacity("n1", "boot-1", capacity(), t)
            t += INTERVAL * 0.9
    node = inv.nodes["n1"]
    # In contact after its last report: Ready, or held because it flaps.
    assert node.state is (NodeState.SUSPECT if node.held_until > t - INTERVAL * 0.9
                          else NodeState.READY)
    assert (node.state is NodeState.SUSPECT) is node.reason.startswith("flapping: ")
    if len(outages) >= 3 and sum(d + r for d, r in outages[-3:]) < 20:
        assert node.held_until > 0  # three outages within a minute: it was held at least once


def test_tokens_of_replacements_that_found_no_node_are_given_back() -> None:
    _, bucket = Throttle(rate=1.0, burst=5.0, tokens=5.0).take(5, 0.0)
    assert bucket.give_back(3).take(5, 0.0)[0] == 3
    assert bucket.give_back(99).tokens == 5.0
