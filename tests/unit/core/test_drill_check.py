"""The drill checker on hand-written logs: each table row is a log and the exact
violations (or measurements) it must produce."""

from __future__ import annotations

from typing import Any

import pytest

from federation.drill.check import check, counted, live_intervals, out_of_contact
from federation.drill.spec import Assertions

# Two nodes, one slot each way; t is the log clock. "converged" at 1.0.
BASE: list[dict[str, Any]] = [
    {"t": 0.0, "kind": "drill", "phase": "start"},
    {"t": 0.5, "kind": "node", "node": "a-1", "site": "a", "state": "Ready"},
    {"t": 0.5, "kind": "node", "node": "b-1", "site": "b", "state": "Ready"},
    {"t": 0.8, "kind": "placement", "deployment": "web", "slot": 0, "node": "a-1",
     "generation": 1, "state": "Running"},
    {"t": 0.8, "kind": "instance", "node": "a-1", "deployment": "web", "slot": 0,
     "generation": 1, "state": "running", "source": "event"},
    {"t": 1.0, "kind": "drill", "phase": "converged"},
]


def log(*records: dict[str, Any], end: float = 20.0) -> list[dict[str, Any]]:
    return [*BASE, *records, {"t": end, "kind": "drill", "phase": "end"}]


def inst(t: float, node: str, gen: int, state: str, *, slot: int = 0, at: float | None = None,
         dep: str = "web") -> dict[str, Any]:
    r = {"t": t, "kind": "instance", "node": node, "deployment": dep, "slot": slot,
         "generation": gen, "state": state, "source": "event"}
    if at is not None:
        r["at"] = at
    return r


def node(t: float, name: str, state: str) -> dict[str, Any]:
    return {"t": t, "kind": "node", "node": name, "site": name[0], "state": state}


def heard(t: float, name: str) -> dict[str, Any]:
    return {"t": t, "kind": "heard", "node": name, "what": "capacity"}


def fault(t: float, action: str, **extra: Any) -> dict[str, Any]:
    target = f"node {extra['node']}" if "node" in extra else f"site {extra.get('site', '')}"
    return {"t": t, "kind": "fault", "action": action, "target": target,
            "mechanism": "test", **extra}


def cmd(t: float, name: str, op: str, gen: int, cid: str, slot: int = 0) -> dict[str, Any]:
    return {"t": t, "kind": "cmd", "node": name, "op": op, "command_id": cid,
            "deployment": "web", "slot": slot, "generation": gen}


def answer(t: float, name: str, cid: str) -> dict[str, Any]:
    return {"t": t, "kind": "answer", "node": name, "command_id": cid, "type": "ack"}


def test_a_clean_run_passes_with_every_bound():
    outcome = check(log(), Assertions(max_detection=1, max_recovery=1, max_reschedules=0,
                                      max_command_latency=1))
    assert outcome.passed, outcome.violations
    assert outcome.metrics["slots"] == 1
    assert outcome.metrics["lost_slots"] == []


def test_overlapping_live_instances_name_the_slot_and_the_instant():
    records = log(inst(5.0, "b-1", 2, "running"), inst(7.5, "a-1", 1, "stopped"))
    outcome = check(records, Assertions())
    [v] = outcome.violations
    assert v.assertion == "duplicateLiveInstances"
    assert v.slot == "web/0"
    assert v.at == 5.0
    assert "2 live instances at t=4.00 s" in v.message  # since convergence (t=1.0)
    assert "generation 1 on a-1" in v.message and "generation 2 on b-1" in v.message
    assert "for 2.50 s" in v.message
    assert {e["node"] for e in v.evidence} == {"a-1", "b-1"}


def test_instances_of_different_slots_never_overlap():
    records = log(inst(5.0, "b-1", 1, "running", slot=1))
    assert not check(records, Assertions(lost_slots=None)).violations


def test_a_stop_sent_before_the_replacement_started_is_no_overlap_even_if_heard_later():
    # The agent stopped it at 4.0 (its own clock) but we heard only at 9.0 (after a cut).
    records = log(inst(5.0, "b-1", 2, "running"), inst(9.0, "a-1", 1, "stopped", at=4.0))
    assert check(records, Assertions()).passed


def test_an_out_of_contact_node_is_not_counted_until_it_is_ready_again():
    # a-1 last heard at 3.0, Lost at 6.0, replacement at 6.5; a-1 heard at 10.0 (held
    # Suspect while returning), Ready at 10.5 with the old instance still running until
    # 10.9: a duplicate only from 10.5.
    records = log(heard(3.0, "a-1"), node(4.5, "a-1", "Suspect"), node(6.0, "a-1", "Lost"),
                  inst(6.5, "b-1", 2, "running"), heard(10.0, "a-1"),
                  node(10.0, "a-1", "Suspect"), node(10.5, "a-1", "Ready"),
                  inst(10.9, "a-1", 1, "stopped"))
    [v] = check(records, Assertions()).violations
    assert (v.assertion, v.slot, v.at) == ("duplicateLiveInstances", "web/0", 10.5)
    assert "for 0.40 s" in v.message


def test_superseded_instances_stopped_while_the_node_returns_are_no_duplicate():
    records = log(heard(3.0, "a-1"), node(6.0, "a-1", "Lost"), inst(6.5, "b-1", 2, "running"),
                  heard(10.0, "a-1"), node(10.0, "a-1", "Suspect"),
                  inst(10.2, "a-1", 1, "stopped"), node(10.5, "a-1", "Ready"))
    assert check(records, Assertions()).passed


def test_a_singleton_counts_while_out_of_contact_too():
    records = log(heard(3.0, "a-1"), node(6.0, "a-1", "Lost"),
                  inst(6.5, "b-1", 2, "running"), heard(10.0, "a-1"),
                  inst(10.1, "a-1", 1, "stopped"), node(10.5, "a-1", "Ready"))
    assert check(records, Assertions()).passed
    [v] = check(records, Assertions(singletons=("web",))).violations
    assert (v.slot, v.at) == ("web/0", 6.5)


def test_a_singleton_fenced_in_time_passes_the_strict_check():
    records = log(heard(3.0, "a-1"), node(6.0, "a-1", "Lost"),
                  inst(6.5, "b-1", 2, "running"), inst(11.0, "a-1", 1, "stopped", at=5.0))
    assert check(records, Assertions(singletons=("web",))).passed


@pytest.mark.parametrize(("bound", "violated"), [(6.0, False), (5.0, True)])
def test_recovery_is_measured_from_the_fault_to_the_slot_served_again(bound, violated):
    records = log(fault(2.0, "kill-node", node="a-1"), heard(1.9, "a-1"),
                  node(2.1, "a-1", "Suspect"), node(5.0, "a-1", "Lost"),
                  inst(7.5, "b-1", 2, "running"))
    outcome = check(records, Assertions(max_recovery=bound, max_detection=1))
    [f] = outcome.faults
    assert f.recovery == pytest.approx(5.5)
    assert f.detection == pytest.approx(0.1)
    assert f.unserved == ("web/0",)
    assert [v.assertion for v in outcome.violations] == (["maxRecovery"] if violated else [])
    if violated:
        assert "web/0 served again only after 5.50 s (bound 5 s)" in outcome.violations[0].message


def test_a_slot_never_served_again_is_lost_and_not_recovered():
    records = log(fault(2.0, "kill-node", node="a-1"), heard(1.9, "a-1"),
                  node(5.0, "a-1", "Lost"))
    outcome = check(records, Assertions(max_recovery=10))
    assert sorted(v.assertion for v in outcome.violations) == ["lostSlots", "maxRecovery"]
    lost = next(v for v in outcome.violations if v.assertion == "lostSlots")
    assert "web/0" in lost.message
    assert "not served again by the end" in next(
        v for v in outcome.violations if v.assertion == "maxRecovery").message


def test_an_undetected_node_fault_violates_max_detection():
    outcome = check(log(fault(2.0, "hang-node", node="a-1")), Assertions(max_detection=2))
    [v] = outcome.violations
    assert v.assertion == "maxDetection"
    assert "never detected" in v.message


def test_reschedules_count_run_commands_at_a_new_generation_after_convergence():
    records = log(cmd(0.7, "a-1", "run", 1, "c1"), cmd(0.9, "a-1", "run", 1, "c1b"),
                  cmd(6.0, "b-1", "run", 2, "c2"), cmd(6.1, "b-1", "run", 2, "c2-resend"),
                  cmd(9.0, "a-1", "run", 3, "c3"))
    outcome = check(records, Assertions(max_reschedules=1, lost_slots=None,
                                        duplicate_live_instances=None))
    assert outcome.metrics["reschedules"] == 2
    [v] = outcome.violations
    assert v.assertion == "maxReschedules"
    assert v.at == 9.0


def test_command_latency_skips_nodes_cut_off_on_purpose():
    records = log(cmd(2.0, "a-1", "stop", 1, "slow"), answer(2.5, "a-1", "slow"),
                  fault(3.0, "cut-link", site="a"), cmd(4.0, "a-1", "stop", 1, "cut"),
                  answer(12.0, "a-1", "cut"), fault(11.0, "restore-link", site="a"))
    outcome = check(records, Assertions(max_command_latency=0.4, lost_slots=None,
                                        duplicate_live_instances=None))
    [v] = outcome.violations
    assert v.assertion == "maxCommandLatency"
    assert "answered after 0.500 s" in v.message
    assert outcome.metrics["commands_answered"] == 1


def test_out_of_contact_spans_run_from_the_last_message_before_lost_to_ready():
    records = log(heard(3.0, "a-1"), heard(3.5, "a-1"), node(7.0, "a-1", "Lost"),
                  heard(9.0, "a-1"), node(9.2, "a-1", "Ready"), heard(9.3, "a-1"),
                  node(12.0, "a-1", "Lost"))
    assert out_of_contact(records, 20.0) == {"a-1": [(3.5, 9.2), (9.3, 20.0)]}


def test_counted_intervals_cut_out_the_spans_out_of_contact():
    records = log(inst(12.0, "a-1", 1, "stopped"))
    ivs = counted(live_intervals(records, 20.0), {"a-1": [(3.0, 5.0), (8.0, 9.0)]})
    assert [(iv.start, iv.end) for iv in ivs] == [(0.8, 3.0), (5.0, 8.0), (9.0, 12.0)]


def test_a_short_overlap_while_a_returning_node_stops_its_old_instance_can_be_tolerated():
    records = log(heard(3.0, "a-1"), node(6.0, "a-1", "Lost"), inst(6.5, "b-1", 2, "running"),
                  node(10.0, "a-1", "Ready"), inst(10.3, "a-1", 1, "stopped"))
    assert not check(records, Assertions()).passed
    tolerant = check(records, Assertions(duplicate_tolerance=0.5))
    assert tolerant.passed
    assert tolerant.metrics["tolerated_overlaps"] == 1
    assert tolerant.metrics["max_overlap_seconds"] == pytest.approx(0.3)
    assert not check(records, Assertions(duplicate_tolerance=0.2)).passed


def test_a_singleton_overlap_is_never_tolerated():
    records = log(inst(5.0, "b-1", 2, "running"), inst(5.1, "a-1", 1, "stopped"))
    outcome = check(records, Assertions(singletons=("web",), duplicate_tolerance=1.0))
    [v] = outcome.violations
    assert v.lasted == pytest.approx(0.1)
