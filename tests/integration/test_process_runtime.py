"""ProcessRuntime with real processes, including ones that outlive their agent.

Each test has its own state directory and node name; whatever a test leaves
running is killed by the ``state_dir`` fixture.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from cloud_adapters.errors import InstanceNotFound, PermanentRuntimeError
from cloud_adapters.process_runtime import ProcessRuntime
from cloud_adapters.runtime import InstanceSpec, InstanceState, InstanceStatus
from tests.support import eventually

REPO = Path(__file__).resolve().parents[2]
TEST_LABELS = {"edgefed.test": "process-runtime"}




def records(state_dir: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in (state_dir / "instances").glob("*.json")}


def kill_group_if_ours(pid: int, create_time: float) -> None:
    with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
        if abs(psutil.Process(pid).create_time() - create_time) < 1.0:
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    yield state
    for record in records(state).values():
        kill_group_if_ours(record["pid"], record["create_time"])


@pytest.fixture
def node() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


def make_spec(node: str, *script: str, **fields: Any) -> InstanceSpec:
    """A spec running ``sh -c SCRIPT``."""
    base: dict[str, Any] = {
        "deployment": "worker",
        "slot": 0,
        "generation": 1,
        "revision": 1,
        "node": node,
        "image": "none",
        "command": ("sh", "-c"),
        "args": script,
        "labels": TEST_LABELS,
    }
    return InstanceSpec(**(base | fields))


def group_members(pid: int) -> list[psutil.Process]:
    wrapper = psutil.Process(pid)
    return [wrapper, *wrapper.children(recursive=True)]


def test_start_list_logs_stop_round_trip(node: str, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFED_AGENT_ONLY", "not for instances")
    spec = make_spec(
        node,
        "echo out; echo err >&2; env; exec sleep 300",
        env={"GREETING": "hello"},
        cpu_millis=500,  # accepted, not enforced
        memory_bytes=64 << 20,
    )

    async def scenario() -> None:
        runtime = ProcessRuntime(node, state_dir)
        status = await runtime.start(spec)
        assert (status.state, status.runtime_id) == (InstanceState.RUNNING, f"proc-{spec.name}")
        assert await runtime.list() == [status]

        async def logged() -> str:
            logs = await runtime.logs(status.runtime_id)
            return logs if "HOME=" in logs else ""

        logs = await eventually(logged)
        assert {"out", "err", "GREETING=hello"} <= set(logs.splitlines())
        assert "EDGEFED_AGENT_ONLY" not in logs
        assert len((await runtime.logs(status.runtime_id, tail=2)).splitlines()) == 2

        pid = records(state_dir)[status.runtime_id]["pid"]
        assert os.getsid(pid) == pid != os.getsid(0)  # its own session
        members = group_members(pid)
        assert len(members) == 2  # the wrapper and the command

        await runtime.stop(status.runtime_id, grace=5)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in members)
        assert await runtime.list() == []
        assert list((state_dir / "instances").iterdir()) == []
        assert list((state_dir / "logs").iterdir()) == []
        with pytest.raises(InstanceNotFound):
            await runtime.stop(status.runtime_id)
        with pytest.raises(InstanceNotFound):
            await runtime.logs(status.runtime_id)

    asyncio.run(scenario())


def test_start_is_idempotent(node: str, state_dir: Path) -> None:
    spec = make_spec(node, "exec sleep 300")

    async def scenario() -> None:
        runtime = ProcessRuntime(node, state_dir)
        first = await runtime.start(spec)
        pid = records(state_dir)[first.runtime_id]["pid"]
        racing = await asyncio.gather(*(runtime.start(spec) for _ in range(3)))
        assert {s.runtime_id for s in racing} == {first.runtime_id}
        assert records(state_dir)[first.runtime_id]["pid"] == pid
        assert len(await runtime.list()) == 1
        with pytest.raises(PermanentRuntimeError, match="labels that do not match"):
            await runtime.start(make_spec(node, "exec sleep 300", revision=2))

    asyncio.run(scenario())


AGENT = """
import asyncio, os, signal, sys
from pathlib import Path
from cloud_adapters.process_runtime import ProcessRuntime
from cloud_adapters.runtime import InstanceSpec

node, state_dir = sys.argv[1], Path(sys.argv[2])

async def main():
    runtime = ProcessRuntime(node, state_dir)
    for slot, script in enumerate(sys.argv[3:]):
        await runtime.start(InstanceSpec(
            deployment="worker", slot=slot, generation=1, revision=1, node=node,
            image="none", command=("sh", "-c", script), labels={"edgefed.test": "process-runtime"},
        ))

asyncio.run(main())
os.kill(os.getpid(), signal.SIGKILL)  # the agent dies without cleaning up
"""


def test_instances_outlive_their_agent_and_are_adopted(node: str, state_dir: Path) -> None:
    # The release file keeps slot 1 running until the agent is surely dead, so
    # its exit status can only have been recorded without the agent.
    release = state_dir.parent / "release"
    agent = subprocess.run(
        [
            sys.executable,
            "-c",
            AGENT,
            node,
            str(state_dir),
            "exec sleep 300",
            f"while [ ! -e {release} ]; do sleep 0.05; done; exit 7",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert agent.returncode == -signal.SIGKILL, agent.stderr

    async def scenario() -> None:
        runtime = ProcessRuntime(node, state_dir)
        adopted = await runtime.list()
        assert [(s.slot, s.state) for s in adopted] == [
            (0, InstanceState.RUNNING),
            (1, InstanceState.RUNNING),
        ]
        release.touch()

        async def slot1_exited() -> InstanceStatus | None:
            return next(
                (s for s in await runtime.list() if s.slot == 1 and s.state is InstanceState.EXITED),
                None,
            )

        ended = await eventually(slot1_exited)
        assert (ended.exit_code, ended.reason) == (7, "")
        for status in adopted:
            await runtime.stop(status.runtime_id, grace=2)
        assert await runtime.list() == []

    asyncio.run(scenario())


def test_exit_code_of_an_instance_that_ends_by_itself(node: str, state_dir: Path) -> None:
    spec = make_spec(node, "exit 3")

    async def scenario() -> None:
        runtime = ProcessRuntime(node, state_dir)

        async def exited() -> list[InstanceStatus]:
            return [s for s in await runtime.list() if s.state is InstanceState.EXITED]

        first = await runtime.start(spec)
        first_pid = records(state_dir)[first.runtime_id]["pid"]
        (status,) = await eventually(exited)
        assert (status.exit_code, status.reason) == (3, "")

        # Starting an ended instance again runs it afresh.
        await runtime.start(spec)
        assert records(state_dir)[first.runtime_id]["pid"] != first_pid
        (status,) = await eventually(exited)
        assert status.exit_code == 3

    asyncio.run(scenario())


def test_sigterm_to_the_group_is_recorded_as_the_exit_status(node: str, state_dir: Path) -> None:
    async def scenario() -> None:
        runtime = ProcessRuntime(node, state_dir)
        started = await runtime.start(make_spec(node, "exec sleep 300"))
        # Right away on purpose: once start() returned, the status is recorded.
        os.killpg(records(state_dir)[started.runtime_id]["pid"], signal.SIGTERM)

        async def exited() -> list[InstanceStatus]:
            return [s for s in await runtime.list() if s.state is InstanceState.EXITED]

        (status,) = await eventually(exited)
        assert status.exit_code == 128 + signal.SIGTERM

    asyncio.run(scenario())


def test_stop_kills_what_ignores_sigterm_after_the_grace(node: str, state_dir: Path) -> None:
    async def scenario() -> None:
        runtime = ProcessRuntime(node, state_dir)
        started = await runtime.start(make_spec(node, "trap '' TERM; echo ready; exec sleep 300"))
        await eventually(lambda: runtime.logs(started.runtime_id))  # the trap is set
        members = group_members(records(state_dir)[started.runtime_id]["pid"])
        began = time.monotonic()
        await runtime.stop(started.runtime_id, grace=0.5)
        assert 0.5 <= time.monotonic() - began < 5
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in members)

    asyncio.run(scenario())


def test_a_reused_pid_is_not_taken_for_the_instance(node: str, state_dir: Path) -> None:
    async def scenario() -> None:
        runtime = ProcessRuntime(node, state_dir)
        started = await runtime.start(make_spec(node, "exec sleep 300"))
        path = state_dir / "instances" / f"{started.runtime_id}.json"
        record = json.loads(path.read_text())
        path.write_text(json.dumps(record | {"create_time": record["create_time"] - 3600}))
        try:
            (status,) = await runtime.list()
            assert status.state is InstanceState.EXITED
            assert status.exit_code is None and "without recording an exit status" in status.reason
            await runtime.stop(started.runtime_id)  # forgets it, signals nothing
            assert psutil.Process(record["pid"]).status() != psutil.STATUS_ZOMBIE
        finally:
            kill_group_if_ours(record["pid"], record["create_time"])

    asyncio.run(scenario())


def test_logs_returns_the_last_lines(node: str, state_dir: Path) -> None:
    async def scenario() -> None:
        runtime = ProcessRuntime(node, state_dir)
        started = await runtime.start(make_spec(node, "seq 1 20000"))

        async def exited() -> list[InstanceStatus]:
            return [s for s in await runtime.list() if s.state is InstanceState.EXITED]

        await eventually(exited)
        assert await runtime.logs(started.runtime_id, tail=3) == "19998\n19999\n20000\n"
        assert await runtime.logs(started.runtime_id, tail=0) == ""

    asyncio.run(scenario())


def test_refuses_a_spec_without_a_command(node: str, state_dir: Path) -> None:
    async def scenario() -> None:
        runtime = ProcessRuntime(node, state_dir)
        with pytest.raises(PermanentRuntimeError) as failure:
            await runtime.start(make_spec(node, command=(), args=(), image="myapp:latest"))
        assert str(failure.value) == (
            "the process runtime needs a command; image myapp:latest has no command here"
        )
        with pytest.raises(PermanentRuntimeError, match="not an executable"):
            await runtime.start(make_spec(node, command=("edgefed-no-such-program",)))
        assert await runtime.list() == []
        assert await runtime.images() == []

    asyncio.run(scenario())
