"""What the scheduler is asked (one replica) and what it answers (a decision
that explains itself)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from policies.model import Selector, Toleration


class RttSource(Protocol):
    """Round-trip times from where a group of users is (a site or a landmark name)
    to nodes: float64 milliseconds in the order of ``nodes``, ``nan`` where unknown."""

    def rtt_from(self, source: str, nodes: Sequence[str]) -> NDArray[np.float64]: ...


class Scope(StrEnum):
    """Where an affinity, anti-affinity or spread rule counts replicas. Region and
    provider are the ``region`` and ``provider`` labels of a node's site."""

    NODE = "node"
    SITE = "site"
    REGION = "region"
    PROVIDER = "provider"


@dataclass(frozen=True, slots=True, kw_only=True)
class Apart:
    """A required anti-affinity term: no replica of a deployment whose labels
    ``selector`` matches may run in the same ``scope`` (itself included)."""

    selector: Selector
    scope: Scope = Scope.NODE


@dataclass(frozen=True, slots=True, kw_only=True)
class Near:
    """A required affinity term: run only where a replica of a deployment whose
    labels ``selector`` matches already runs in the same ``scope``. While none runs
    anywhere, a replica the selector itself matches may start the group."""

    selector: Selector
    scope: Scope = Scope.NODE


@dataclass(frozen=True, slots=True, kw_only=True)
class Preference:
    """A preferred (anti-)affinity term: ``weight`` (1..100) counts for nodes with
    (``apart``: without) matching replicas in the same ``scope``."""

    selector: Selector
    scope: Scope = Scope.NODE
    weight: int = 100
    apart: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Share:
    """A split group: ``weight`` percent of the deployment's replicas go to the sites
    ``sites`` selects."""

    sites: Selector
    weight: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Spread:
    """Replicas of the deployment even over the domains of ``scope``: a domain may
    hold at most ``max_skew`` more than the emptiest domain that can still take one.
    Required: a filter; preferred: the topology-spread score."""

    scope: Scope = Scope.SITE
    max_skew: int = 1
    required: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Users:
    """A group of users at ``source`` (a site or landmark name) with its share of the
    traffic and the RTT it tolerates in milliseconds (None: scored, not filtered)."""

    name: str
    source: str
    share: float = 1.0
    max_rtt_ms: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One replica to place."""

    deployment: str
    slot: int
    generation: int
    labels: Mapping[str, str] = field(default_factory=dict)  # the deployment's
    cpu_millis: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)  # device kind -> count
    host_ports: tuple[int, ...] = ()
    has_command: bool = False
    image: str = ""
    node_selector: Selector = field(default_factory=Selector)
    site_selector: Selector = field(default_factory=Selector)
    countries: tuple[str, ...] = ()  # residency: allowed `country` labels; () allows any
    regions: tuple[str, ...] = ()  # residency: allowed `region` labels; () allows any
    tolerations: tuple[Toleration, ...] = ()
    users: tuple[Users, ...] = ()
    data_sets: tuple[str, ...] = ()
    max_per_node: int = 0  # replicas of this deployment per node; 0: no limit
    max_per_site: int = 0
    apart: tuple[Apart, ...] = ()
    near: tuple[Near, ...] = ()
    preferences: tuple[Preference, ...] = ()
    spread: tuple[Spread, ...] = ()
    split: tuple[Share, ...] = ()  # weighted split over site groups (of ``replicas``)
    replicas: int = 0  # the deployment's replicas; what ``split`` divides
    strategy: str = "two-phase"
    weights: Mapping[str, float] = field(default_factory=dict)
    current_node: str | None = None  # where the replica runs now, if it is being replaced

    @property
    def seed(self) -> str:
        """Names the decision: the tie-break (and the random strategy) hash it, so
        the same request over the same round decides the same way."""
        return f"{self.deployment}/{self.slot}@{self.generation}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """Why one filter refused one node (or, in a histogram, a group of nodes).
    ``reason`` is the phrase grouped in the histogram; ``need``/``free`` carry the
    numbers of resource reasons (``free``: the most any refused node has)."""

    reason: str
    need: int | None = None
    free: int | None = None
    unit: str = ""  # "cpu" | "memory" | "disk" | "count" (devices) when need/free are set


@dataclass(frozen=True, slots=True, kw_only=True)
class Ranked:
    node: str
    site: str
    total: float
    scores: Mapping[str, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    total_nodes: int
    feasible: int
    rejections: Mapping[str, int]  # reason phrase -> nodes refused for it
    details: Mapping[str, str]  # reason phrase -> "(need 512Mi, most free 256Mi)"
    ranked: tuple[Ranked, ...]  # best first, at most a few
    strategy: str = "two-phase"

    def histogram(self) -> str:
        parts = []
        for reason, count in sorted(self.rejections.items(), key=lambda kv: (-kv[1], kv[0])):
            detail = self.details.get(reason, "")
            parts.append(f"{count} {reason}{' ' + detail if detail else ''}")
        return ", ".join(parts)

    @property
    def message(self) -> str:
        head = f"{self.feasible}/{self.total_nodes} nodes fit"
        if self.feasible == 0:
            return f"{head}: {self.histogram()}" if self.rejections else f"{head}: no nodes"
        best = self.ranked[0]
        scores = ", ".join(f"{k} {v:.0f}" for k, v in best.scores.items())
        if self.strategy == "two-phase":
            text = f"{head}; chose {best.node} (site {best.site}) score {best.total:.1f} ({scores})"
            if len(self.ranked) > 1:
                runner = self.ranked[1]
                text += f"; runner-up {runner.node} {runner.total:.1f}"
        else:
            text = f"{head}; chose {best.node} (site {best.site}) by {self.strategy}"
            text += f" ({scores})" if scores else ""
        if self.rejections:
            text += f"; refused: {self.histogram()}"
        return text

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "message": self.message,
            "total_nodes": self.total_nodes,
            "feasible": self.feasible,
            "rejections": dict(self.rejections),
            "details": dict(self.details),
            "ranked": [
                {"node": r.node, "site": r.site, "total": round(r.total, 2),
                 "scores": {k: round(v, 2) for k, v in r.scores.items()}}
                for r in self.ranked
            ],
        }
        if self.strategy != "two-phase":
            out["strategy"] = self.strategy
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    request: Request
    node: str | None
    site: str | None
    explanation: Explanation


@dataclass(slots=True, kw_only=True)
class Usage:
    cpu_millis: int = 0
    memory_bytes: int = 0
    host_ports: frozenset[int] = frozenset()
    devices: Mapping[str, int] = field(default_factory=dict)
    disk_bytes: int = 0

    def plus(self, req: Request) -> Usage:
        """This usage with ``req``'s requests added (what ``req`` does not ask for is
        shared with this usage, never changed: usages are replaced, not updated)."""
        devices = self.devices
        if req.devices:
            devices = dict(devices)
            for kind, count in req.devices.items():
                devices[kind] = devices.get(kind, 0) + count
        return Usage(cpu_millis=self.cpu_millis + req.cpu_millis,
                     memory_bytes=self.memory_bytes + req.memory_bytes,
                     host_ports=self.host_ports | frozenset(req.host_ports) if req.host_ports
                     else self.host_ports, devices=devices,
                     disk_bytes=self.disk_bytes + req.disk_bytes)

    def minus(self, req: Request) -> Usage:
        """This usage with ``req``'s requests taken out again (a host port is held by
        one replica per node: the host-port filter sees to that)."""
        devices = dict(self.devices)
        for kind, count in req.devices.items():
            devices[kind] = devices.get(kind, 0) - count
        return Usage(cpu_millis=self.cpu_millis - req.cpu_millis,
                     memory_bytes=self.memory_bytes - req.memory_bytes,
                     host_ports=self.host_ports - frozenset(req.host_ports),
                     devices={k: v for k, v in devices.items() if v},
                     disk_bytes=self.disk_bytes - req.disk_bytes)
