"""Paced rollouts: which replicas of a deployment may get its new template now.

Pure: the controller passes in the rollout settings, what each replica runs
and whether it serves, and ``now``; :func:`step` answers with the replicas
whose replacement may be placed now, the new :class:`RolloutState` (stored,
so a controller restart resumes the rollout where it was) and what to record.

    apply (new template) ──▶ begin ──▶ batch 1 ──▶ ready ──▶ delay ──▶ batch 2 ... ──▶ complete
                                        │ a new instance fails within the monitor window
                                        ▼
                         pause (reason in describe) | continue | roll back to the previous revision

Rules, as Docker Swarm's updater applies ``update_config``:

* A batch replaces at most ``parallelism`` replicas. Of those, up to
  ``max_surge`` are started before their old instance stops (surge); the rest
  stop first and each makes its replica unavailable, so they are limited to
  ``max_unavailable`` minus the replicas already down.
* A batch is ready when each of its new instances runs; with ``health_gated``
  it must also have run ``monitor`` seconds without failing or restarting.
  Agents run no health checks yet: "healthy" means running and not restarted.
* The next batch starts ``delay`` after the previous one became ready.
* A new instance that fails (start refused, exits non-zero, or restarts)
  before it has run ``monitor`` seconds is a failed update, and
  ``failure_action`` decides: pause (the reason shows in ``describe``),
  continue, or roll back to the revision before the rollout. The rollback is
  itself a rollout paced by the same settings (Swarm has a separate
  ``rollback_config``; edgefed keeps one set); a rollback that fails pauses
  rather than rolling forward again.
* A replica whose old instance serves nothing (crashed, still starting) is
  replaced at once: replacing it cannot make the deployment less available.
* Replicas on a node that is not Ready are failover's business, never paced
  here: the reconciler replaces an unreachable node's replicas by the failover
  rules, whatever the rollout is doing.

Invariant (generation fencing): a slot has at most one *serving* instance,
except a surge slot of the current batch while its new instance (placed on
another node) is not running yet: the controller holds back the stop of the
old instance (:attr:`Step.hold`) until then. On the same node the agent
replaces the instance in place (stop, then start) whatever the surge says.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from policies.model import FailureAction, Rollout

# Seconds a new instance must run without failing to count as healthy, and the
# window in which a failure counts against the rollout (Swarm's monitor default).
MONITOR = 5.0


class Phase(StrEnum):
    PROGRESSING = "progressing"  # a batch is being replaced
    WAITING_HEALTH = "waiting for health"  # its new instances do not all run (long enough) yet
    WAITING_DELAY = "waiting for delay"  # ready; the next batch starts after the delay
    WAITING_BUDGET = "waiting for availability"  # too many replicas down to stop another
    PAUSED = "paused"
    COMPLETE = "complete"


@dataclass(frozen=True, slots=True, kw_only=True)
class Replica:
    """One slot of the deployment as the rollout sees it."""

    index: int
    updated: bool  # the slot is at the rollout's template (placed or being placed)
    serving: bool  # the instance at the slot's node and generation is running
    failed: str = ""  # why that instance failed ("" if it did not)
    running_since: float | None = None  # when that instance was first seen running
    movable: bool = True  # its node is Ready (else failover decides, not the rollout)


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutState:
    """One deployment's rollout; stored as a document (see :func:`to_document`)."""

    deployment: str
    from_revision: int  # the revision before the rollout (what a rollback returns to)
    to_revision: int
    target: str  # the template fingerprint being rolled out
    started_at: float
    total: int  # replicas it had to replace when it began
    batch: int = 0  # number of the current batch, 1-based; 0 before the first
    batch_slots: tuple[int, ...] = ()
    surge_slots: tuple[int, ...] = ()  # of batch_slots: old instance stops after the new runs
    batch_started_at: float | None = None
    batch_ready_at: float | None = None  # the delay to the next batch counts from here
    replaced: tuple[int, ...] = ()  # slots this rollout replaced, in order
    proven: tuple[int, ...] = ()  # of those: ran ``monitor`` seconds without failing
    failed: tuple[int, ...] = ()
    paused: str = ""  # why the rollout stopped ("" while it goes on)
    rollback_of: int | None = None  # this rollout undoes that revision, automatically
    rollback_reason: str = ""
    finished_at: float | None = None
    overdue_batch: int = 0  # the batch that missed the progress deadline (counted once)
    phase: Phase = Phase.PROGRESSING
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    state: RolloutState
    replace_now: frozenset[int]  # slots not at the target whose replacement may go now
    waiting: Mapping[int, str]  # the other slots not at the target, with why they wait
    hold: frozenset[int]  # surge slots whose old instance must keep running for now
    events: tuple[tuple[str, str], ...] = ()  # (kind, message) for the event log
    rollback: str = ""  # non-empty: the rollout failed; roll back, for this reason


def begin(*, deployment: str, from_revision: int, to_revision: int, target: str,
          replicas: Sequence[Replica], now: float, rollback_of: int | None = None,
          rollback_reason: str = "") -> RolloutState:
    return RolloutState(deployment=deployment, from_revision=from_revision,
                        to_revision=to_revision, target=target, started_at=now,
                        total=sum(1 for r in replicas if not r.updated),
                        rollback_of=rollback_of, rollback_reason=rollback_reason)


def batch_size(settings: Rollout) -> int:
    """Replicas a batch replaces when none is down."""
    return max(1, min(settings.parallelism, settings.max_surge + settings.max_unavailable))


def step(state: RolloutState, settings: Rollout, replicas: Sequence[Replica], now: float, *,
         monitor: float = MONITOR) -> Step:
    by_index = {r.index: r for r in replicas}
    events: list[tuple[str, str]] = []
    name = state.deployment

    # Watch the replicas this rollout replaced until each has proven itself.
    proven, failed = list(state.proven), list(state.failed)
    new_failures: list[str] = []
    for index in state.replaced:
        r = by_index.get(index)
        if r is None or not r.updated or index in proven or index in failed:
            continue
        if r.failed:
            failed.append(index)
            new_failures.append(f"{name}/{index} failed: {r.failed}")
        elif r.serving and r.running_since is not None and now - r.running_since >= monitor:
            proven.append(index)
    state = replace(state, proven=tuple(proven), failed=tuple(failed))
    deadline = settings.progress_deadline.total_seconds()
    if (deadline > 0 and state.batch and state.batch_started_at is not None
            and state.overdue_batch != state.batch
            and now - state.batch_started_at >= deadline
            and not _batch_ready(state, settings, by_index, monitor)):
        state = replace(state, overdue_batch=state.batch)
        new_failures.append(f"batch {state.batch} not ready within the progress deadline of "
                            f"{deadline:g}s")

    rollback = ""
    if new_failures and not state.paused:
        why = "; ".join(new_failures)
        action = settings.failure_action
        if action is FailureAction.ROLLBACK and state.rollback_of is not None:
            action = FailureAction.PAUSE  # never roll forward to the revision that failed
        if action is FailureAction.ROLLBACK:
            rollback = why
            events.append(("RolloutFailed", f"revision {state.to_revision} failed ({why}); "
                           f"rolling back to revision {state.from_revision}"))
        elif action is FailureAction.PAUSE:
            state = replace(state, paused=why)
            events.append(("RolloutPaused", f"rollout to revision {state.to_revision} paused: "
                           f"{why}"))
        else:
            events.append(("RolloutFailure", f"{why}; continuing (failureAction continue)"))

    pending = sorted((r for r in replicas if not r.updated and r.movable),
                     key=lambda r: r.index)
    # Replacing a replica that serves nothing costs no availability: at once.
    at_once = {r.index for r in pending if not r.serving}
    at_once |= {i for i in state.batch_slots if i in {r.index for r in pending}}
    serving_pending = [r for r in pending if r.serving and r.index not in at_once]
    hold = frozenset(i for i in state.surge_slots if i in state.batch_slots
                     and (r := by_index.get(i)) is not None and r.updated and not r.serving
                     and not r.failed)

    if state.paused or rollback:
        # Paused, nothing moves: a replica that goes down meanwhile is restarted by its
        # agent at its old template, never replaced with the one that failed.
        if state.paused:
            state = replace(state, phase=Phase.PAUSED, message=f"paused: {state.paused}")
        return _done(state, pending, frozenset(),
                     "the rollout is paused" if state.paused else "rolling back", hold,
                     events, rollback)
    # What is replaced at once is watched like a batch (a failure there counts too).
    state = replace(state, replaced=state.replaced + tuple(
        sorted(i for i in at_once if i not in state.replaced)))

    ready = _batch_ready(state, settings, by_index, monitor)
    if ready and state.batch and state.batch_ready_at is None:
        state = replace(state, batch_ready_at=now)
        events.append(("RolloutBatchReady", f"batch {state.batch} ready: "
                       + ", ".join(f"{name}/{i}" for i in state.batch_slots)))
    batches = state.batch + math.ceil(len(serving_pending) / batch_size(settings))

    if not serving_pending:
        unproven = [i for i in state.replaced if i in by_index and i not in proven
                    and i not in failed]
        if ready and not at_once and not unproven:
            if state.finished_at is None:
                state = replace(state, finished_at=now)
                events.append(("RolloutComplete", _summary(state)))
            return _done(replace(state, phase=Phase.COMPLETE, message=_summary(state)),
                         pending, frozenset(), "", hold, events, rollback)
        return _done(replace(state, phase=Phase.WAITING_HEALTH, message=(
            f"batch {state.batch}/{batches}: " + (
                f"watching the new instances for the {monitor:g}s monitor window"
                if ready and not at_once else "waiting for the new instances to run"))),
            pending, frozenset(at_once), "", hold, events, rollback)
    if not ready:
        return _done(replace(state, phase=Phase.WAITING_HEALTH, message=(
            f"batch {state.batch}/{batches}: waiting for "
            + ", ".join(f"{name}/{i}" for i in state.batch_slots) + " to run"
            + (f" {monitor:g}s" if settings.health_gated else ""))),
            pending, frozenset(at_once), f"waits for batch {state.batch} to be ready", hold,
            events, rollback)
    delay = settings.delay.total_seconds()
    if state.batch_ready_at is not None and now < state.batch_ready_at + delay:
        left = state.batch_ready_at + delay - now
        return _done(replace(state, phase=Phase.WAITING_DELAY, message=(
            f"batch {state.batch}/{batches} ready; next batch in {left:.0f}s (delay "
            f"{delay:g}s)")), pending, frozenset(at_once), f"waits {left:.0f}s for the delay",
            hold, events, rollback)

    # Start the next batch: surge first, then as many stops as availability allows.
    down = sum(1 for r in replicas if not r.serving and r.index not in failed)
    stop_first = max(0, settings.max_unavailable - down)
    size = min(settings.parallelism, len(serving_pending), settings.max_surge + stop_first)
    if size <= 0:
        return _done(replace(state, phase=Phase.WAITING_BUDGET, message=(
            f"batch {state.batch}/{batches}: {down} replica(s) unavailable, maxUnavailable "
            f"{settings.max_unavailable}")), pending, frozenset(at_once),
            f"waits: {down} replica(s) unavailable", hold, events, rollback)
    chosen = tuple(r.index for r in serving_pending[:size])
    surge = chosen[:min(settings.max_surge, size)]
    state = replace(state, batch=state.batch + 1, batch_slots=chosen, surge_slots=surge,
                    batch_started_at=now, batch_ready_at=None,
                    replaced=state.replaced + tuple(i for i in chosen if i not in state.replaced))
    events.append(("RolloutBatch", f"batch {state.batch}/{batches}: replacing "
                   + ", ".join(f"{name}/{i}" + (" (surge)" if i in surge else "")
                               for i in chosen)
                   + f" with revision {state.to_revision}"))
    hold = frozenset(surge) | hold
    at_once |= set(chosen)
    return _done(replace(state, phase=Phase.PROGRESSING, message=(
        f"batch {state.batch}/{batches}: replacing "
        + ", ".join(f"{name}/{i}" for i in chosen))),
        pending, frozenset(at_once), f"waits for batch {state.batch + 1}", hold, events,
        rollback)


def _done(state: RolloutState, pending: Sequence[Replica], replace_now: frozenset[int],
          why: str, hold: frozenset[int], events: list[tuple[str, str]],
          rollback: str) -> Step:
    waiting = {r.index: why for r in pending if r.index not in replace_now}
    return Step(state=state, replace_now=replace_now, waiting=waiting, hold=hold,
                events=tuple(events), rollback=rollback)


def _batch_ready(state: RolloutState, settings: Rollout, by_index: Mapping[int, Replica],
                 monitor: float) -> bool:
    for index in state.batch_slots:
        r = by_index.get(index)
        if r is None or index in state.failed:
            continue  # scaled away, or failed and the rollout goes on anyway
        if not r.updated or not r.serving:
            return False
        if settings.health_gated and index not in state.proven:
            return False
    return True


def _summary(state: RolloutState) -> str:
    what = (f"revision {state.rollback_of} rolled back as revision {state.to_revision} "
            f"({state.rollback_reason})" if state.rollback_of is not None
            else f"revision {state.to_revision} rolled out")
    batches = f" in {state.batch} batch(es)" if state.batch else ""
    failed = f", {len(state.failed)} failed" if state.failed else ""
    return f"{what}: {len(state.replaced)} replica(s){batches}{failed}"


# -- storage and display --------------------------------------------------------------


def to_document(state: RolloutState) -> dict[str, Any]:
    return {
        "deployment": state.deployment, "from_revision": state.from_revision,
        "to_revision": state.to_revision, "target": state.target,
        "started_at": state.started_at, "total": state.total, "batch": state.batch,
        "batch_slots": list(state.batch_slots), "surge_slots": list(state.surge_slots),
        "batch_started_at": state.batch_started_at, "batch_ready_at": state.batch_ready_at,
        "replaced": list(state.replaced), "proven": list(state.proven),
        "failed": list(state.failed), "paused": state.paused,
        "rollback_of": state.rollback_of, "rollback_reason": state.rollback_reason,
        "finished_at": state.finished_at, "overdue_batch": state.overdue_batch,
        "phase": state.phase.value,
        "message": state.message,
    }


def from_document(doc: Mapping[str, Any]) -> RolloutState:
    """The state :func:`to_document` wrote; raises KeyError/ValueError/TypeError if not."""
    def opt(key: str) -> float | None:
        value = doc.get(key)
        return None if value is None else float(value)

    def ints(key: str) -> tuple[int, ...]:
        return tuple(int(i) for i in doc.get(key, ()))

    rollback_of = doc.get("rollback_of")
    return RolloutState(
        deployment=str(doc["deployment"]), from_revision=int(doc["from_revision"]),
        to_revision=int(doc["to_revision"]), target=str(doc["target"]),
        started_at=float(doc["started_at"]), total=int(doc["total"]),
        batch=int(doc.get("batch", 0)), batch_slots=ints("batch_slots"),
        surge_slots=ints("surge_slots"), batch_started_at=opt("batch_started_at"),
        batch_ready_at=opt("batch_ready_at"), replaced=ints("replaced"), proven=ints("proven"),
        failed=ints("failed"), paused=str(doc.get("paused", "")),
        rollback_of=None if rollback_of is None else int(rollback_of),
        rollback_reason=str(doc.get("rollback_reason", "")), finished_at=opt("finished_at"),
        overdue_batch=int(doc.get("overdue_batch", 0)),
        phase=Phase(doc.get("phase", Phase.PROGRESSING.value)),
        message=str(doc.get("message", "")))


def status(state: RolloutState, replicas: int, updated: int) -> dict[str, Any]:
    """What ``GET /api/v1/deployments/NAME`` and ``describe`` show of a rollout."""
    return {
        "from_revision": state.from_revision, "to_revision": state.to_revision,
        "phase": state.phase.value, "message": state.message, "batch": state.batch,
        "batch_slots": [f"{state.deployment}/{i}" for i in state.batch_slots],
        "updated": updated, "replicas": replicas, "failed": len(state.failed),
        "paused": state.paused,
        "rolled_back": (f"revision {state.rollback_of} rolled back: {state.rollback_reason}"
                        if state.rollback_of is not None else ""),
        "started_at": state.started_at, "finished_at": state.finished_at,
        "done": state.phase is Phase.COMPLETE,
    }
