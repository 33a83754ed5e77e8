"""The contract between the agent and a container runtime.

A runtime starts, stops, lists and reads logs of *instances*: one container (or
process) for one slot of a deployment at one generation. Every instance a
runtime creates carries its identity (deployment, slot, generation, node) in
labels or on disk, so an agent that restarts can adopt what already runs
instead of starting duplicates.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

# Keys of the labels every instance carries; the docker adapter uses them as
# container labels, the process adapter writes them to its instance file.
LABEL_MANAGED = "edgefed.managed"
LABEL_DEPLOYMENT = "edgefed.deployment"
LABEL_SLOT = "edgefed.slot"
LABEL_GENERATION = "edgefed.generation"
LABEL_REVISION = "edgefed.revision"
LABEL_NODE = "edgefed.node"

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


class InstanceState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"  # stopped by itself; exit_code says how
    FAILED = "failed"  # could not be started; reason says why
    STOPPED = "stopped"  # stopped on purpose by the agent


@dataclass(frozen=True, slots=True, kw_only=True)
class PortSpec:
    container_port: int
    host_port: int | None = None
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceSpec:
    """Everything a runtime needs to start one instance."""

    deployment: str
    slot: int
    generation: int
    revision: int
    node: str
    image: str
    command: tuple[str, ...] = ()  # replaces the image's entrypoint when given
    args: tuple[str, ...] = ()  # replaces the image's cmd when given
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PortSpec, ...] = ()
    cpu_millis: int = 0  # limit; 0 means none
    memory_bytes: int = 0  # limit; 0 means none
    labels: Mapping[str, str] = field(default_factory=dict)  # extra labels from the agent

    @property
    def name(self) -> str:
        """Runtime-unique name: several agents may share one engine."""
        raw = f"edgefed-{self.node}-{self.deployment}-{self.slot}-g{self.generation}"
        return _NAME_UNSAFE.sub("_", raw)

    def identity_labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_DEPLOYMENT: self.deployment,
            LABEL_SLOT: str(self.slot),
            LABEL_GENERATION: str(self.generation),
            LABEL_REVISION: str(self.revision),
            LABEL_NODE: self.node,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceStatus:
    """What the runtime says about one instance right now."""

    deployment: str
    slot: int
    generation: int
    revision: int
    node: str
    state: InstanceState
    runtime_id: str  # container id or pid-based handle; opaque to callers
    exit_code: int | None = None
    reason: str = ""
    started_at: float | None = None  # unix seconds

    @classmethod
    def from_labels(cls, labels: Mapping[str, str], **status: Any) -> InstanceStatus:
        """The inverse of :meth:`InstanceSpec.identity_labels`, plus the runtime's
        view (state, runtime_id, ...). KeyError/ValueError on malformed labels."""
        return cls(
            deployment=labels[LABEL_DEPLOYMENT],
            slot=int(labels[LABEL_SLOT]),
            generation=int(labels[LABEL_GENERATION]),
            revision=int(labels[LABEL_REVISION]),
            node=labels[LABEL_NODE],
            **status,
        )


class Runtime(Protocol):
    """A place instances run. All methods are safe to call from the event loop."""

    name: str

    async def start(self, spec: InstanceSpec) -> InstanceStatus:
        """Create and start the instance. Raises PermanentRuntimeError when it
        can never start as specified (e.g. image absent), TransientRuntimeError
        when the runtime is unavailable."""
        ...

    async def stop(self, runtime_id: str, *, grace: float = 5.0) -> None:
        """Stop (and remove) the instance; InstanceNotFound if it is gone."""
        ...

    async def list(self) -> list[InstanceStatus]:
        """Every instance this runtime holds for this node, running or not."""
        ...

    async def logs(self, runtime_id: str, *, tail: int = 100) -> str:
        """The last `tail` lines of the instance's output (stdout and stderr)."""
        ...

    # builtins.list: inside this class body, `list` names the method above.
    async def images(self) -> builtins.list[str]:
        """Image references present locally (empty for the process runtime)."""
        ...

    async def close(self) -> None: ...
