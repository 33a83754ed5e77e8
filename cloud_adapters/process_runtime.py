"""Plain host processes as a :class:`~cloud_adapters.runtime.Runtime`.

For hosts without a container engine, in the spirit of Nomad's ``raw_exec``:
``spec.command + spec.args`` runs as a child process of the agent, with no
isolation. The image is not used (only named in errors), ports are not mapped
(the process binds what it binds), and **cpu and memory limits are accepted
but not enforced**.

Instances outlive the agent. Each one runs in its own session (so it is not
signalled with the agent's process group and is re-parented when the agent
dies), under a small ``/bin/sh`` wrapper that records the command's exit status
in a file. Its record (identity labels, pid, process create time, paths) is a
JSON file, so a new agent lists, adopts and stops what an earlier one started:

    state_dir/instances/proc-<name>.json   record
    state_dir/instances/proc-<name>.exit   exit status, written by the wrapper
    state_dir/logs/proc-<name>.log         stdout and stderr, appended

A pid counts as ours only while its create time matches the record, so a pid
reused after a reboot is never signalled. The command gets only PATH and HOME
from the agent plus ``spec.env``, and runs in ``/``.

Limits, honestly: log files are not rotated; an agent killed between spawning
a process and writing its record leaves that process unknown; and a service
manager that kills the agent's whole cgroup (systemd's default
``KillMode=control-group``) takes the instances with it, so the agent's unit
needs ``KillMode=process``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

from cloud_adapters.errors import InstanceNotFound, PermanentRuntimeError, TransientRuntimeError
from cloud_adapters.runtime import (
    LABEL_NODE,
    InstanceSpec,
    InstanceState,
    InstanceStatus,
)

log = logging.getLogger("edgefed.runtime.process")

# Runs "$@" in the background so that a SIGTERM to the process group (which
# reaches the command too) lets the wrapper wait for the command's real status
# and write it down. The trap is set only after the fork: a child that inherited
# the shell's handler could swallow a SIGTERM arriving before its exec; start()
# returns once the trap is set (see _await_trap). Like any background job of a
# non-interactive shell, the command starts with SIGINT and SIGQUIT ignored;
# SIGTERM is the way to stop it.
_WRAPPER = """\
exit_file=$1; shift
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
while :; do
    wait "$child"; code=$?
    kill -0 "$child" 2>/dev/null || break
done
echo "$code" > "$exit_file"
exit "$code"
"""

# How far create times read at different moments may drift (the kernel's boot
# time moves when the wall clock is stepped); a reused pid differs by far more.
_CREATE_TIME_SLACK = 1.0

# How long a SIGKILLed process may take to go (uninterruptible I/O) before stop gives up.
_KILL_WAIT = 10.0

_VANISHED = "process ended without recording an exit status (killed, or the host rebooted)"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Record:
    runtime_id: str
    labels: dict[str, str]
    pid: int
    create_time: float
    started_at: float
    log_path: str
    exit_path: str


class ProcessRuntime:
    """Instances as host processes; see the module docstring for the limits."""

    name = "process"

    def __init__(self, node: str, state_dir: Path) -> None:
        self.node = node
        self._instances = Path(state_dir) / "instances"
        self._logs = Path(state_dir) / "logs"
        self._instances.mkdir(parents=True, exist_ok=True)
        self._logs.mkdir(parents=True, exist_ok=True)
        # One start or stop per instance at a time; others proceed meanwhile.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # ours, to reap

    async def start(self, spec: InstanceSpec) -> InstanceStatus:
        if not spec.command:
            raise PermanentRuntimeError(
                f"the process runtime needs a command; image {spec.image} has no command here"
            )
        runtime_id = f"proc-{spec.name}"
        async with self._locks[runtime_id]:
            record = self._read(runtime_id)
            if record is not None:
                if self._alive(record):
                    if record.labels == self._labels(spec):
                        return self._status(record)  # a repeated start: already done
                    raise PermanentRuntimeError(
                        f"{runtime_id} runs with labels that do not match this instance"
                    )
                self._forget(record)  # ended: start afresh
            record = await asyncio.to_thread(self._spawn, runtime_id, spec)
            return self._status(record)

    async def stop(self, runtime_id: str, *, grace: float = 5.0) -> None:
        async with self._locks[runtime_id]:
            record = self._read(runtime_id)
            if record is None:
                raise InstanceNotFound(f"no process instance {runtime_id}")
            if self._alive(record) and not await asyncio.to_thread(self._terminate, record, grace):
                raise TransientRuntimeError(f"{runtime_id} survived SIGKILL (pid {record.pid})")
            self._forget(record)

    async def list(self) -> list[InstanceStatus]:
        return await asyncio.to_thread(self._list)

    async def logs(self, runtime_id: str, *, tail: int = 100) -> str:
        record = self._read(runtime_id)
        if record is None:
            raise InstanceNotFound(f"no process instance {runtime_id}")
        return await asyncio.to_thread(_tail, Path(record.log_path), tail)

    async def images(self) -> builtins.list[str]:
        return []

    async def close(self) -> None:
        self._reap()  # instances keep running; only zombies are collected

    def _labels(self, spec: InstanceSpec) -> dict[str, str]:
        return {**spec.labels, **spec.identity_labels()}

    def _spawn(self, runtime_id: str, spec: InstanceSpec) -> _Record:
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            **spec.env,
        }
        program = spec.command[0]
        if shutil.which(program, path=env["PATH"]) is None:
            raise PermanentRuntimeError(f"command {program} is not an executable on this host")
        exit_path = self._instances / f"{runtime_id}.exit"
        log_path = self._logs / f"{runtime_id}.log"
        argv = ["/bin/sh", "-c", _WRAPPER, runtime_id, str(exit_path), *spec.command, *spec.args]
        exit_path.unlink(missing_ok=True)  # a stale one would be taken for this run's
        with open(log_path, "ab") as log_file:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=env,
                cwd="/",
                start_new_session=True,  # survives the agent; killable as a group
            )
        self._children[child.pid] = child
        _await_trap(child.pid)
        try:
            create_time = psutil.Process(child.pid).create_time()
        except psutil.NoSuchProcess:
            create_time = 0.0  # already gone; the exit file tells how it ended
        record = _Record(
            runtime_id=runtime_id,
            labels=self._labels(spec),
            pid=child.pid,
            create_time=create_time,
            started_at=time.time(),
            log_path=str(log_path),
            exit_path=str(exit_path),
        )
        tmp = self._instances / f"{runtime_id}.json.tmp"
        tmp.write_text(json.dumps(dataclasses.asdict(record)))
        tmp.replace(self._instances / f"{runtime_id}.json")
        return record

    def _terminate(self, record: _Record, grace: float) -> bool:
        """SIGTERM, then after ``grace`` SIGKILL, to the group; whether it died."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGTERM)
        if not self._ended_within(record, grace):
            log.info("%s ignored SIGTERM for %.1fs; killing it", record.runtime_id, grace)
        # Also kills whatever the command left behind in its group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGKILL)
        return self._ended_within(record, _KILL_WAIT)

    def _ended_within(self, record: _Record, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self._alive(record):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _list(self) -> builtins.list[InstanceStatus]:
        statuses = []
        for path in sorted(self._instances.glob("*.json")):
            record = self._read(path.stem)
            if record is not None and record.labels.get(LABEL_NODE) == self.node:
                statuses.append(self._status(record))
        return statuses

    def _status(self, record: _Record) -> InstanceStatus:
        labels = record.labels
        state, exit_code, reason = InstanceState.RUNNING, None, ""
        if not self._alive(record):
            state, exit_code = InstanceState.EXITED, _read_exit(Path(record.exit_path))
            reason = "" if exit_code is not None else _VANISHED
        return InstanceStatus.from_labels(
            labels,
            state=state,
            runtime_id=record.runtime_id,
            exit_code=exit_code,
            reason=reason,
            started_at=record.started_at,
        )

    def _alive(self, record: _Record) -> bool:
        """Whether the record's wrapper still runs (and is really ours)."""
        self._reap()
        try:
            process = psutil.Process(record.pid)
            if abs(process.create_time() - record.create_time) > _CREATE_TIME_SLACK:
                return False  # the pid was reused by something else
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def _reap(self) -> None:
        for pid, child in list(self._children.items()):
            if child.poll() is not None:
                self._children.pop(pid, None)

    def _read(self, runtime_id: str) -> _Record | None:
        try:
            raw: dict[str, Any] = json.loads((self._instances / f"{runtime_id}.json").read_text())
            return _Record(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def _forget(self, record: _Record) -> None:
        for path in (
            self._instances / f"{record.runtime_id}.json",
            Path(record.exit_path),
            Path(record.log_path),
        ):
            path.unlink(missing_ok=True)


def _await_trap(pid: int, *, within: float = 2.0) -> None:
    """Wait until the wrapper catches SIGTERM (Linux ``SigCgt``), so that a
    SIGTERM once start() has returned always leaves an exit status behind."""
    term = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
            if fields["State"].strip().startswith("Z") or int(fields["SigCgt"], 16) & term:
                return
        except (OSError, KeyError, ValueError):
            return  # gone already, or no Linux /proc: nothing to wait for
        time.sleep(0.002)


def _read_exit(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a file, reading only as much as needed."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            chunk, data = 8192, b""
            while end > 0 and data.count(b"\n") <= lines:
                step = min(chunk, end)
                end -= step
                f.seek(end)
                data = f.read(step) + data
    except FileNotFoundError:
        return ""
    return b"".join(data.splitlines(keepends=True)[-lines:]).decode("utf-8", errors="replace")
