"""answer(command, current): idempotent by (slot, generation), fenced by generation."""

from __future__ import annotations

import pytest

from edge_agent.commands import Answer, LocalSlot, Verdict, Want, answer
from federation.wire import Command, CommandOp, WorkloadBody

WORKLOAD = WorkloadBody(image="busybox:1.36", command=("httpd", "-f"), cpu_millis=250)
OTHER_WORKLOAD = WorkloadBody(image="busybox:1.37")


def command(op: CommandOp, generation: int, *, revision: int = 1,
            workload: WorkloadBody | None = WORKLOAD) -> Command:
    return Command(op=op, command_id=f"{op.value}-{generation}", deployment="d", slot=0,
                   generation=generation, revision=revision,
                   workload=workload if op is CommandOp.RUN else None)


def run(generation: int, *, revision: int = 1,
        workload: WorkloadBody | None = WORKLOAD) -> Command:
    return command(CommandOp.RUN, generation, revision=revision, workload=workload)


def stop(generation: int) -> Command:
    return command(CommandOp.STOP, generation)


def local(generation: int, want: Want, *, revision: int = 1) -> LocalSlot:
    return LocalSlot(deployment="d", slot=0, generation=generation, revision=revision, want=want,
                     workload=WORKLOAD if want is Want.RUN else None)


RUNNING_2 = local(2, Want.RUN)
STOPPED_2 = local(2, Want.STOP)

CASES = [
    pytest.param(run(1), None,
                 Answer(verdict=Verdict.ACCEPT, slot=local(1, Want.RUN)), id="first-run"),
    pytest.param(run(2), RUNNING_2,
                 Answer(verdict=Verdict.DUPLICATE, slot=RUNNING_2), id="same-run-again"),
    pytest.param(run(2, workload=OTHER_WORKLOAD, revision=9), RUNNING_2,
                 Answer(verdict=Verdict.DUPLICATE, slot=RUNNING_2),
                 id="same-generation-is-the-key-not-the-workload"),
    pytest.param(run(1), RUNNING_2,
                 Answer(verdict=Verdict.REJECT,
                        reason="generation 1 of d/0 is older than generation 2 already seen"),
                 id="older-run"),
    pytest.param(run(1), STOPPED_2,
                 Answer(verdict=Verdict.REJECT,
                        reason="generation 1 of d/0 is older than generation 2 already seen"),
                 id="older-run-after-stop"),
    pytest.param(run(3, revision=2), RUNNING_2,
                 Answer(verdict=Verdict.ACCEPT, slot=local(3, Want.RUN, revision=2)),
                 id="newer-run"),
    pytest.param(run(3), STOPPED_2,
                 Answer(verdict=Verdict.ACCEPT, slot=local(3, Want.RUN)),
                 id="newer-run-after-stop"),
    pytest.param(run(2), STOPPED_2,
                 Answer(verdict=Verdict.REJECT, reason="generation 2 of d/0 was already stopped"),
                 id="run-of-a-stopped-generation"),
    pytest.param(run(1, workload=None), None,
                 Answer(verdict=Verdict.REJECT, reason="run command without a workload"),
                 id="run-without-workload"),
    pytest.param(run(2, workload=None), RUNNING_2,
                 Answer(verdict=Verdict.DUPLICATE, slot=RUNNING_2),
                 id="duplicate-needs-no-workload"),
    pytest.param(stop(2), RUNNING_2,
                 Answer(verdict=Verdict.ACCEPT,
                        slot=LocalSlot(deployment="d", slot=0, generation=2, revision=1,
                                       want=Want.STOP)),
                 id="stop-current-generation"),
    pytest.param(stop(2), STOPPED_2,
                 Answer(verdict=Verdict.DUPLICATE, slot=STOPPED_2), id="same-stop-again"),
    pytest.param(stop(1), RUNNING_2,
                 Answer(verdict=Verdict.DUPLICATE, slot=RUNNING_2,
                        reason="d/0 already runs generation 2"),
                 id="stop-of-a-replaced-generation-is-a-no-op"),
    pytest.param(stop(3), RUNNING_2,
                 Answer(verdict=Verdict.ACCEPT, slot=local(3, Want.STOP)),
                 id="stop-newer-generation-fences-it"),
    pytest.param(stop(5), None,
                 Answer(verdict=Verdict.ACCEPT, slot=local(5, Want.STOP)),
                 id="stop-of-an-unknown-slot-is-remembered"),
    pytest.param(command(CommandOp.LOGS, 2), RUNNING_2,
                 Answer(verdict=Verdict.REJECT, reason="logs changes no intent"), id="logs"),
    pytest.param(command(CommandOp.LOGS, 1), None,
                 Answer(verdict=Verdict.REJECT, reason="logs changes no intent"),
                 id="logs-of-an-unknown-slot"),
]


@pytest.mark.parametrize(("cmd", "current", "expected"), CASES)
def test_answer(cmd: Command, current: LocalSlot | None, expected: Answer) -> None:
    assert answer(cmd, current) == expected


def test_accepted_run_keeps_the_workload_and_revision() -> None:
    reply = answer(run(4, revision=3), None)
    assert reply.slot is not None
    assert (reply.slot.workload, reply.slot.revision, reply.slot.name) == (WORKLOAD, 3, "d/0")


def test_a_sequence_of_commands_is_fenced() -> None:
    """Feed each accepted intent back in, as the agent does, and read the verdicts."""
    current: LocalSlot | None = None
    verdicts = []
    for cmd in [run(1), run(1), run(2), run(1), stop(2), run(2), stop(1), run(3), stop(3)]:
        reply = answer(cmd, current)
        verdicts.append(reply.verdict)
        if reply.verdict is Verdict.ACCEPT:
            current = reply.slot
    assert verdicts == [Verdict.ACCEPT, Verdict.DUPLICATE, Verdict.ACCEPT, Verdict.REJECT,
                        Verdict.ACCEPT, Verdict.REJECT, Verdict.DUPLICATE, Verdict.ACCEPT,
                        Verdict.ACCEPT]
    assert current == local(3, Want.STOP)

