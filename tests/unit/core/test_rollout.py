"""rollout.step: which replicas may get the new template now, and what the rollout records."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation import wire
from federation.inventory import Node, NodeState
from federation.model import DeploymentRecord, Desired, Observed, SlotRecord, template_of
from federation.output import format_rollout
from federation.reconcile import Place, reconcile
from federation.rollout import (
    MONITOR,
    Phase,
    Replica,
    RolloutState,
    Step,
    begin,
    from_document,
    status,
    step,
    to_document,
)
from federation.store import Store
from policies.loader import load_text
from policies.model import Container, Deployment, FailureAction, Rollout

NOW = 1000.0


def replicas(marks: str, *, since: float = NOW - 60) -> list[Replica]:
    """One letter per slot: o old serving, x old down, s new starting, n new serving
    (since ``since``), f new failed, l old, serving, on a node that is not Ready."""
    out = []
    for index, mark in enumerate(marks):
        out.append(Replica(
            index=index, updated=mark in "snf", serving=mark in "onl",
            failed="exited with code 1" if mark == "f" else "",
            running_since=since if mark == "n" else None, movable=mark != "l"))
    return out


def state(marks: str = "ooo", **kw: object) -> RolloutState:
    base = begin(deployment="web", from_revision=1, to_revision=2, target="t2",
                 replicas=replicas(marks), now=NOW - 100)
    return replace(base, **kw)  # type: ignore[arg-type]


def settings(**kw: object) -> Rollout:
    return Rollout(**kw)  # type: ignore[arg-type]


# -- the first batch: parallelism, surge and unavailability ---------------------------

FIRST_BATCH = {
    "parallelism 1": (settings(), "ooo", {0}, set()),
    "parallelism 2 bounded by maxUnavailable 1": (settings(parallelism=2), "ooo", {0}, set()),
    "parallelism 2, maxUnavailable 2": (settings(parallelism=2, max_unavailable=2), "ooo",
                                        {0, 1}, set()),
    "parallelism above the replicas": (settings(parallelism=5, max_unavailable=5), "ooo",
                                       {0, 1, 2}, set()),
    "surge 1 (start-first)": (settings(max_surge=1, max_unavailable=0), "ooo", {0}, {0}),
    "surge 1 plus one stop": (settings(parallelism=2, max_surge=1, max_unavailable=1), "ooo",
                              {0, 1}, {0}),
    "a down replica goes at once and uses the budget": (settings(), "oxo", {1}, set()),
    "a down replica does not stop surge": (settings(max_surge=1, max_unavailable=1), "oxo",
                                           {0, 1}, {0}),
    "a replica on a node that is not Ready is failover's": (settings(), "loo", {1}, set()),
}


@pytest.mark.parametrize(("rollout", "marks", "now", "hold"), FIRST_BATCH.values(),
                         ids=FIRST_BATCH.keys())
def test_first_batch(rollout: Rollout, marks: str, now: set[int], hold: set[int]) -> None:
    result = step(state(marks), rollout, replicas(marks), NOW)
    assert result.replace_now == now
    assert result.hold == hold
    movable_old = {i for i, m in enumerate(marks) if m in "ox"}
    assert set(result.waiting) == movable_old - now


def test_first_batch_is_recorded_with_its_number_and_slots() -> None:
    result = step(state(), settings(), replicas("ooo"), NOW)
    assert result.state.batch == 1
    assert result.state.batch_slots == (0,)
    assert result.state.replaced == (0,)
    assert result.events == (("RolloutBatch", "batch 1/3: replacing web/0 with revision 2"),)
    assert result.waiting == {1: "waits for batch 2", 2: "waits for batch 2"}


def test_no_room_to_stop_another_waits_with_the_reason() -> None:
    # Replica 2 is down and replaced at once; with maxUnavailable 1 nothing else may stop.
    result = step(state("oox"), settings(parallelism=2), replicas("oox"), NOW)
    assert result.replace_now == {2}
    assert result.state.phase is Phase.WAITING_BUDGET
    assert result.waiting == {0: "waits: 1 replica(s) unavailable",
                              1: "waits: 1 replica(s) unavailable"}


# -- pacing: readiness, health gate, delay --------------------------------------------

def in_batch(marks: str, batch_slots: tuple[int, ...], **kw: object) -> RolloutState:
    fields: dict[str, object] = {"batch": 1, "replaced": batch_slots,
                                 "batch_started_at": NOW - 5, **kw}
    return state(marks, batch_slots=batch_slots, **fields)


PACING = {
    # name: (rollout, marks, running since, state extras, replaced now, phase)
    "batch still starting": (settings(), "soo", NOW - 1, {}, set(), Phase.WAITING_HEALTH),
    "batch running, no delay: next batch": (settings(), "noo", NOW - 1, {}, {1},
                                            Phase.PROGRESSING),
    "batch running, delay 10s not over": (settings(delay=timedelta(seconds=10)), "noo",
                                          NOW - 1, {"batch_ready_at": NOW - 9.9}, set(),
                                          Phase.WAITING_DELAY),
    "batch running, delay 10s over": (settings(delay=timedelta(seconds=10)), "noo", NOW - 1,
                                      {"batch_ready_at": NOW - 10}, {1}, Phase.PROGRESSING),
    "health-gated, running 1s": (settings(health_gated=True), "noo", NOW - 1, {}, set(),
                                 Phase.WAITING_HEALTH),
    "health-gated, running the monitor window": (settings(health_gated=True), "noo",
                                                 NOW - MONITOR, {}, {1}, Phase.PROGRESSING),
}


@pytest.mark.parametrize(("rollout", "marks", "since", "extra", "now", "phase"),
                         PACING.values(), ids=PACING.keys())
def test_pacing(rollout: Rollout, marks: str, since: float, extra: dict[str, float],
                now: set[int], phase: Phase) -> None:
    result = step(in_batch(marks, (0,), **extra), rollout, replicas(marks, since=since), NOW)
    assert result.replace_now == now
    assert result.state.phase is phase


def test_the_delay_counts_from_the_batch_becoming_ready() -> None:
    rollout = settings(delay=timedelta(seconds=10))
    first = step(in_batch("noo", (0,)), rollout, replicas("noo", since=NOW - 1), NOW)
    assert first.state.batch_ready_at == NOW
    assert first.events == (("RolloutBatchReady", "batch 1 ready: web/0"),)
    assert first.state.message == "batch 1/3 ready; next batch in 10s (delay 10s)"
    waiting = step(first.state, rollout, replicas("noo", since=NOW - 1), NOW + 9.9)
    assert waiting.replace_now == frozenset()
    second = step(first.state, rollout, replicas("noo", since=NOW - 1), NOW + 10)
    assert second.replace_now == {1}
    assert second.state.batch == 2


def simulate(rollout: Rollout, n: int, *, start_takes: float = 2.0,
             until: float = 300.0) -> tuple[list[tuple[float, tuple[int, ...]]], int, Step]:
    """Drive ``step`` once a second; an admitted replica runs ``start_takes`` later.
    Returns when each batch started, the most replicas ever down at once, the last step."""
    placed: dict[int, float] = {}
    st_ = begin(deployment="web", from_revision=1, to_revision=2, target="t2",
                replicas=replicas("o" * n), now=0.0)
    batches: list[tuple[float, tuple[int, ...]]] = []
    worst = 0
    result: Step | None = None
    t = 0.0
    while t < until:
        reps = [Replica(index=i, updated=i in placed,
                        serving=i not in placed or t >= placed[i] + start_takes,
                        running_since=placed[i] + start_takes if i in placed
                        and t >= placed[i] + start_takes else None) for i in range(n)]
        worst = max(worst, sum(1 for r in reps if not r.serving))
        result = step(st_, rollout, reps, t)
        if result.state.batch != st_.batch:
            batches.append((t, result.state.batch_slots))
        for i in result.replace_now:
            placed.setdefault(i, t)
        st_ = result.state
        if st_.phase is Phase.COMPLETE:
            break
        t += 1.0
    assert result is not None
    return batches, worst, result


def test_seed_compose_settings_replace_one_at_a_time_ten_seconds_apart() -> None:
    batches, worst, last = simulate(settings(parallelism=1, delay=timedelta(seconds=10)), 3)
    assert [slots for _, slots in batches] == [(0,), (1,), (2,)]
    starts = [t for t, _ in batches]
    # Ready 2 s after it starts, then the 10 s delay.
    assert [b - a for a, b in itertools.pairwise(starts)] == [12.0, 12.0]
    assert worst == 1
    assert last.state.phase is Phase.COMPLETE
    assert last.events == (("RolloutComplete",
                            "revision 2 rolled out: 3 replica(s) in 3 batch(es)"),)


@pytest.mark.parametrize(("order", "held"), [("stop-first", set()), ("start-first", {0, 1})])
def test_compose_parallelism_two_replaces_two_at_a_time(order: str, held: set[int]) -> None:
    compose = ("services:\n  web:\n    image: busybox\n    deploy:\n      replicas: 4\n"
               f"      update_config: {{parallelism: 2, delay: 10s, order: {order}}}\n")
    (spec,) = load_text(compose, filename="compose.yaml").deployments
    batches, _, last = simulate(spec.rollout, 4)
    assert [slots for _, slots in batches] == [(0, 1), (2, 3)]
    assert last.state.phase is Phase.COMPLETE
    # start-first keeps both old instances until their replacements run.
    first = step(begin(deployment="web", from_revision=1, to_revision=2, target="t2",
                       replicas=replicas("oooo"), now=0.0), spec.rollout, replicas("oooo"), 0.0)
    assert (set(first.replace_now), set(first.hold)) == ({0, 1}, held)


@given(n=st.integers(1, 8), parallelism=st.integers(1, 5), surge=st.integers(0, 3),
       unavailable=st.integers(0, 3), delay=st.integers(0, 5))
def test_a_rollout_completes_within_its_bounds(n: int, parallelism: int, surge: int,
                                               unavailable: int, delay: int) -> None:
    if surge == unavailable == 0:
        unavailable = 1  # the policy checks refuse both 0
    rollout = settings(parallelism=parallelism, max_surge=surge, max_unavailable=unavailable,
                       delay=timedelta(seconds=delay))
    batches, worst, last = simulate(rollout, n)
    assert last.state.phase is Phase.COMPLETE
    assert sorted(i for _, slots in batches for i in slots) == list(range(n))
    assert all(len(slots) <= min(parallelism, surge + unavailable) for _, slots in batches)
    # Surge instances keep their old one serving (the hold), so only the stops count;
    # the simulation shows the slot down either way, so the bound is the batch size.
    assert worst <= max(1, min(parallelism, surge + unavailable))


# -- failures -------------------------------------------------------------------------

def test_failure_with_pause_stops_the_rollout_with_the_reason() -> None:
    result = step(in_batch("foo", (0,)), settings(), replicas("foo"), NOW)
    assert result.state.paused == "web/0 failed: exited with code 1"
    assert result.state.failed == (0,)
    assert result.state.phase is Phase.PAUSED
    assert result.state.message == "paused: web/0 failed: exited with code 1"
    assert result.replace_now == frozenset()
    assert result.waiting == {1: "the rollout is paused", 2: "the rollout is paused"}
    assert result.events == (("RolloutPaused", "rollout to revision 2 paused: web/0 failed: "
                              "exited with code 1"),)
    # Still paused on the next pass, and the failure is not reported twice.
    again = step(result.state, settings(), replicas("foo"), NOW + 1)
    assert again.replace_now == frozenset() and again.events == ()


def test_failure_with_rollback_asks_for_the_rollback() -> None:
    rollout = settings(failure_action=FailureAction.ROLLBACK)
    result = step(in_batch("foo", (0,)), rollout, replicas("foo"), NOW)
    assert result.rollback == "web/0 failed: exited with code 1"
    assert result.replace_now == frozenset()
    assert result.events == (("RolloutFailed", "revision 2 failed (web/0 failed: exited with "
                              "code 1); rolling back to revision 1"),)


DEADLINE = timedelta(seconds=60)


def test_a_batch_that_misses_the_progress_deadline_is_a_failed_update() -> None:
    rollout = settings(progress_deadline=DEADLINE)
    # Batch 1 started 59 s ago and its new instance still does not run: not yet.
    early = step(in_batch("soo", (0,), batch_started_at=NOW - 59), rollout, replicas("soo"), NOW)
    assert early.state.paused == "" and early.events == ()
    late = step(in_batch("soo", (0,), batch_started_at=NOW - 60), rollout, replicas("soo"), NOW)
    why = "batch 1 not ready within the progress deadline of 60s"
    assert late.state.paused == why and late.state.phase is Phase.PAUSED
    assert late.events == (("RolloutPaused", f"rollout to revision 2 paused: {why}"),)
    assert from_document(to_document(late.state)).overdue_batch == 1
    rollback = step(in_batch("soo", (0,), batch_started_at=NOW - 60),
                    settings(progress_deadline=DEADLINE, failure_action=FailureAction.ROLLBACK),
                    replicas("soo"), NOW)
    assert rollback.rollback == why


def test_a_missed_deadline_with_continue_is_reported_once() -> None:
    rollout = settings(progress_deadline=DEADLINE, failure_action=FailureAction.CONTINUE)
    first = step(in_batch("soo", (0,), batch_started_at=NOW - 61), rollout, replicas("soo"), NOW)
    assert [kind for kind, _ in first.events] == ["RolloutFailure"]
    again = step(first.state, rollout, replicas("soo"), NOW + 1)
    assert again.events == ()


def test_a_zero_progress_deadline_waits_forever() -> None:
    rollout = settings(progress_deadline=timedelta(0))
    result = step(in_batch("soo", (0,), batch_started_at=NOW - 10**6), rollout,
                  replicas("soo"), NOW)
    assert result.state.paused == "" and result.state.phase is Phase.WAITING_HEALTH


def test_a_rollback_that_fails_pauses_instead_of_rolling_forward() -> None:
    rollout = settings(failure_action=FailureAction.ROLLBACK)
    result = step(in_batch("foo", (0,), rollback_of=2), rollout, replicas("foo"), NOW)
    assert result.rollback == ""
    assert result.state.paused == "web/0 failed: exited with code 1"


def test_failure_with_continue_goes_on_to_the_next_batch() -> None:
    rollout = settings(failure_action=FailureAction.CONTINUE)
    result = step(in_batch("foo", (0,)), rollout, replicas("foo"), NOW)
    assert result.state.failed == (0,)
    assert result.replace_now == {1}
    assert result.events[0] == ("RolloutFailure", "web/0 failed: exited with code 1; "
                                "continuing (failureAction continue)")


def test_a_replica_that_ran_the_monitor_window_is_no_longer_watched() -> None:
    proven = step(in_batch("noo", (0,)), settings(), replicas("noo", since=NOW - MONITOR),
                  NOW)
    assert proven.state.proven == (0,)
    later = step(proven.state, settings(), replicas("foo"), NOW + 60)
    assert later.state.paused == "" and later.state.failed == ()


def test_complete_waits_for_the_last_batch_to_pass_the_monitor_window() -> None:
    last = in_batch("nnn", (2,), replaced=(0, 1, 2), proven=(0, 1), batch=3)
    running = step(last, settings(), replicas("nnn", since=NOW - 1), NOW)
    assert running.state.phase is Phase.WAITING_HEALTH
    done = step(running.state, settings(), replicas("nnn", since=NOW - 1), NOW + MONITOR)
    assert done.state.phase is Phase.COMPLETE
    assert done.state.finished_at == NOW + MONITOR


# -- the state survives a controller restart -------------------------------------------

def test_state_round_trips_through_the_store(tmp_path: Path) -> None:
    rollout = settings(delay=timedelta(seconds=10))
    mid = step(in_batch("noo", (0,)), rollout, replicas("noo", since=NOW - 1), NOW).state
    mid = replace(mid, failed=(2,), paused="", rollback_of=None)
    store = Store(tmp_path / "c.db")
    store.save_rollout(mid, NOW)
    store.close()
    reopened = Store(tmp_path / "c.db")
    loaded = reopened.load_rollouts()
    reopened.close()
    assert loaded == {"web": mid}
    # The restarted controller goes on where it was: the delay still counts from NOW.
    assert step(loaded["web"], rollout, replicas("noo"), NOW + 5).replace_now == frozenset()
    assert step(loaded["web"], rollout, replicas("noo"), NOW + 10).replace_now == {1}


def test_a_stored_rollout_that_no_longer_reads_is_left_out(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    store.save_rollout(state(), NOW)
    store.db.execute("UPDATE rollouts SET document = '{\"deployment\": \"web\"}'")
    assert store.load_rollouts() == {}
    store.close()


def test_document_round_trip() -> None:
    s = state(batch=2, batch_slots=(1, 2), surge_slots=(1,), batch_ready_at=NOW,
              replaced=(0, 1, 2), proven=(0,), failed=(2,), paused="why", rollback_of=3,
              rollback_reason="because", finished_at=None, phase=Phase.PAUSED, message="m")
    assert from_document(to_document(s)) == s


# -- the reconciler's side: paced template changes wait, failover never does ------------

def _reconcile_case(node_state: NodeState) -> list[object]:
    old = Deployment(name="web", container=Container(image="app:1"), replicas=1)
    new = Deployment(name="web", container=Container(image="app:2"), replicas=1)
    slot = SlotRecord(deployment="web", index=0, generation=4, revision=1,
                      template=template_of(old), node="n1")
    ready = node_state is NodeState.READY
    node = Node(name="n1", site="s1", epoch="e", online=ready, state=node_state,
                state_since=0.0, last_seen=0.0, unreachable_since=None if ready else 0.0)
    inst = wire.InstanceReport(deployment="web", slot=0, generation=4, revision=1,
                               state="running")
    return list(reconcile(
        Desired(deployments={"web": DeploymentRecord(spec=new, revision=2)},
                slots={slot.key: slot}),
        Observed(nodes={"n1": node}, instances={("n1", "web", 0): inst}), NOW,
        waiting={("web", 0): "waits for batch 2"}))


def test_a_paced_template_change_keeps_the_old_instance() -> None:
    assert _reconcile_case(NodeState.READY) == []


def test_failover_is_not_paced_by_the_rollout() -> None:
    actions = _reconcile_case(NodeState.LOST)
    assert len(actions) == 1 and isinstance(actions[0], Place)
    assert actions[0].generation == 5 and actions[0].prefer_node is None


def test_status_and_its_describe_line() -> None:
    paused = replace(state(), batch=1, batch_slots=(0,), failed=(0,), paused="web/0 failed: "
                     "exited with code 1", phase=Phase.PAUSED,
                     message="paused: web/0 failed: exited with code 1")
    shown = status(paused, replicas=3, updated=1)
    assert (shown["paused"], shown["failed"], shown["done"]) == (
        "web/0 failed: exited with code 1", 1, False)
    assert format_rollout(shown) == ("revision 1 -> 2, 1/3 updated, 1 failed: paused: web/0 "
                                     "failed: exited with code 1")
    back = replace(state(), rollback_of=2, rollback_reason="web/0 failed: restarted 1 time(s)",
                   from_revision=2, to_revision=3, phase=Phase.COMPLETE, message="done")
    assert format_rollout(status(back, replicas=3, updated=3)) == (
        "revision 2 -> 3 (revision 2 rolled back: web/0 failed: restarted 1 time(s)), "
        "3/3 updated: done")
    assert format_rollout({}) == "<none>"
