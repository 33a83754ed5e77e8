"""How the agent answers a command, as a pure function of what it has seen.

Commands are idempotent, keyed by (slot, generation): a repeat of an accepted
command is acknowledged again, a command for an older generation than one
already seen for the slot is refused with the reason, a newer one wins.

A singleton the agent stopped itself after too long without the broker
(``Want.FENCED``, see :func:`fence`) runs again only when the controller sends
its run command again: the controller knows whether it was replaced meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from federation.wire import Command, CommandOp, WorkloadBody


class Want(StrEnum):
    RUN = "run"
    STOP = "stop"
    FENCED = "fenced"  # a singleton stopped by the agent itself while cut off


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalSlot:
    """The agent's durable intent for one slot (its fencing memory too)."""

    deployment: str
    slot: int
    generation: int
    revision: int
    want: Want
    workload: WorkloadBody | None = None

    @property
    def name(self) -> str:
        return f"{self.deployment}/{self.slot}"

    @property
    def fence_after(self) -> float | None:
        """Seconds without the broker after which this singleton stops; None otherwise."""
        return self.workload.fence_after if self.workload is not None else None


class Verdict(StrEnum):
    ACCEPT = "accept"  # new intent: persist it, then act
    DUPLICATE = "duplicate"  # already accepted: acknowledge again, change nothing
    REJECT = "reject"  # refused: answer with the reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    verdict: Verdict
    reason: str = ""
    slot: LocalSlot | None = None  # the new intent when accepted


def answer(command: Command, current: LocalSlot | None) -> Answer:
    name = f"{command.deployment}/{command.slot}"
    gen = command.generation
    if command.op is CommandOp.RUN:
        if current is not None and gen < current.generation:
            return Answer(verdict=Verdict.REJECT, reason=(
                f"generation {gen} of {name} is older than generation "
                f"{current.generation} already seen"))
        if current is not None and gen == current.generation:
            if current.want is Want.RUN:
                return Answer(verdict=Verdict.DUPLICATE, slot=current)
            if current.want is Want.FENCED:
                # The controller still wants it here after the partition: run it again.
                return Answer(verdict=Verdict.ACCEPT, slot=LocalSlot(
                    deployment=command.deployment, slot=command.slot, generation=gen,
                    revision=command.revision, want=Want.RUN,
                    workload=command.workload or current.workload))
            return Answer(verdict=Verdict.REJECT,
                          reason=f"generation {gen} of {name} was already stopped")
        if command.workload is None:
            return Answer(verdict=Verdict.REJECT, reason="run command without a workload")
        return Answer(verdict=Verdict.ACCEPT, slot=LocalSlot(
            deployment=command.deployment, slot=command.slot, generation=gen,
            revision=command.revision, want=Want.RUN, workload=command.workload))
    if command.op is CommandOp.STOP:
        if current is not None and gen < current.generation:
            # Fencing: the stop names an instance already replaced here; nothing to do.
            return Answer(verdict=Verdict.DUPLICATE, slot=current,
                          reason=f"{name} already runs generation {current.generation}")
        if current is not None and gen == current.generation and current.want is Want.STOP:
            return Answer(verdict=Verdict.DUPLICATE, slot=current)
        return Answer(verdict=Verdict.ACCEPT, slot=LocalSlot(
            deployment=command.deployment, slot=command.slot, generation=gen,
            revision=command.revision, want=Want.STOP))
    return Answer(verdict=Verdict.REJECT, reason=f"{command.op.value} changes no intent")


def to_fence(slots: Iterable[LocalSlot], offline_for: float) -> list[LocalSlot]:
    """The singletons to stop now, ``offline_for`` seconds after the last contact with
    the broker: those whose fence time has passed. Never any other workload."""
    return [s for s in slots if s.want is Want.RUN and s.fence_after is not None
            and offline_for >= s.fence_after]


def fence(slot: LocalSlot) -> LocalSlot:
    """``slot`` after its agent stopped it itself."""
    return replace(slot, want=Want.FENCED)
