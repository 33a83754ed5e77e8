"""How the agent answers a command, as a pure function of what it has seen.

Commands are idempotent, keyed by (slot, generation): a repeat of an accepted
command is acknowledged again, a command for an older generation than one
already seen for the slot is refused with the reason, a newer one wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from federation.wire import Command, CommandOp, WorkloadBody


class Want(StrEnum):
    RUN = "run"
    STOP = "stop"


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
