"""Desired and observed state as the reconciler sees them (pure types)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from federation.inventory import Node
from federation.wire import InstanceReport
from policies.model import Deployment, deployment_to_document

SlotKey = tuple[str, int]  # (deployment, slot index)

# Instance states that count as "live": the instance holds its slot.
LIVE_STATES = frozenset({"starting", "running"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentRecord:
    spec: Deployment
    revision: int
    deleted: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def template(self) -> str:
        return template_of(self.spec)


def template_of(spec: Deployment) -> str:
    """Fingerprint of what an instance runs (container and restart policy).

    Scaling or changing placement rules makes a new revision but the same
    template: running instances are left alone. A new template replaces them.
    """
    doc = deployment_to_document(spec)["spec"]
    material = {"container": doc["container"], "restartPolicy": doc.get("restartPolicy")}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotRecord:
    """One replica position and where the controller wants it to run."""

    deployment: str
    index: int
    generation: int  # bumped on every (re)placement; fences older instances
    revision: int  # the deployment revision whose template this slot's instance runs
    template: str = ""  # fingerprint of that template (see template_of)
    node: str | None = None  # None: not placed (yet, or unschedulable)
    assigned_at: float = 0.0
    explanation: Mapping[str, object] | None = None

    @property
    def key(self) -> SlotKey:
        return (self.deployment, self.index)

    @property
    def name(self) -> str:
        return f"{self.deployment}/{self.index}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Desired:
    deployments: Mapping[str, DeploymentRecord]
    slots: Mapping[SlotKey, SlotRecord]


class Op(StrEnum):
    RUN = "run"
    STOP = "stop"


CommandKey = tuple[str, Op, str, int, int]  # (node, op, deployment, slot, generation)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    nodes: Mapping[str, Node]
    # Latest report per (node, deployment, slot): what each agent runs.
    instances: Mapping[tuple[str, str, int], InstanceReport] = field(default_factory=dict)
    # Commands sent and not yet confirmed, with the time they were sent.
    inflight: Mapping[CommandKey, float] = field(default_factory=dict)

    def on_node(self, node: str, deployment: str, slot: int) -> InstanceReport | None:
        return self.instances.get((node, deployment, slot))
