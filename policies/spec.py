"""The frozen types a deployment and a placement policy are made of.

Defaults here are the defaults of the native format (``docs/policy-format.md``,
``policies/deployment.schema.json``): a field left out of a document takes
exactly the value its dataclass field defaults to. Durations are
:class:`~datetime.timedelta` in whole milliseconds.

:class:`Placement` and :class:`Failover` remember which of their fields were
set (``set_fields``): written in the document, even at the default value, or
different from the default. Placement policies fill in only the fields a
deployment did not set (:mod:`policies.merge`), so "set to the default" and
"left out" must stay distinguishable.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

API_VERSION = "edgefed.io/v1"
MAX_REPLICAS = 1000
# Names end up in MQTT topics, container names and URLs.
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$")

STRATEGIES = ("two-phase", "random", "round-robin", "least-load", "optimal")
# The scheduler's score plugins, by the names a policy weights them with.
SCORE_NAMES = ("least-allocated", "headroom", "spread-sites", "spread-nodes", "stay-put",
               "user-rtt", "data-locality", "image-locality", "balanced", "topology-spread",
               "affinity", "cost", "prefer-no-schedule")
# The node and site labels residency rules are checked against.
COUNTRY_LABEL = "country"
REGION_LABEL = "region"


class RestartPolicy(StrEnum):
    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"
    GT = "Gt"
    LT = "Lt"


class Scope(StrEnum):
    """The topology level an affinity or spread rule counts replicas at."""

    NODE = "node"
    SITE = "site"
    REGION = "region"
    PROVIDER = "provider"


class TolerationOperator(StrEnum):
    EQUAL = "Equal"
    EXISTS = "Exists"


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class FailureAction(StrEnum):
    PAUSE = "pause"
    CONTINUE = "continue"
    ROLLBACK = "rollback"


class OnReconnect(StrEnum):
    """Which instance of a slot survives when a node thought lost comes back."""

    KEEP_REPLACEMENT = "keep-replacement"
    KEEP_ORIGINAL = "keep-original"


# -- container -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Port:
    container_port: int
    host_port: int | None = None
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """Requests: what the scheduler reserves and the runtime limits to."""

    cpu_millis: int = 0
    memory_bytes: int = 0
    # Scratch space on the node's disk; reserved by the scheduler, not limited by the runtime.
    disk_bytes: int = 0
    # Device kind (``nvidia.com/gpu``) -> how many the replica needs.
    devices: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpGet:
    port: int
    path: str = "/"


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpSocket:
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    """Exactly one probe: ``command``, ``http_get`` or ``tcp_socket``."""

    command: tuple[str, ...] = ()
    http_get: HttpGet | None = None
    tcp_socket: TcpSocket | None = None
    interval: timedelta = timedelta(seconds=10)
    timeout: timedelta = timedelta(seconds=2)
    retries: int = 3
    start_period: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    """A host path mounted into the container."""

    name: str
    host_path: str
    mount_path: str
    read_only: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DataSet:
    """A named data set the workload reads; nodes that hold it are preferred."""

    name: str
    mount_path: str
    read_only: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Security:
    run_as_user: int | None = None
    read_only_root_filesystem: bool = False
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    resources: Resources = Resources()
    health_check: HealthCheck | None = None
    volumes: tuple[Volume, ...] = ()
    data_sets: tuple[DataSet, ...] = ()
    security: Security = Security()


# -- selectors -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelRequirement:
    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator is Operator.EXISTS:
            return value is not None
        if self.operator is Operator.DOES_NOT_EXIST:
            return value is None
        if self.operator is Operator.IN:
            return value is not None and value in self.values
        if self.operator is Operator.NOT_IN:
            return value is None or value not in self.values
        if value is None:
            return False
        try:
            number, bound = float(value), float(self.values[0])
        except (ValueError, IndexError):
            return False
        return number > bound if self.operator is Operator.GT else number < bound

    def describe(self) -> str:
        if self.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            return f"{self.key} {self.operator.value}"
        return f"{self.key} {self.operator.value} ({','.join(self.values)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Selector:
    """Labels that must match: exact pairs plus set-based requirements. An empty
    selector matches everything."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.first_mismatch(labels) is None

    def first_mismatch(self, labels: Mapping[str, str]) -> str | None:
        """A human description of the first unmet requirement, or None if all match."""
        for key, want in self.match_labels.items():
            have = labels.get(key)
            if have != want:
                return f"{key}={have}" if have is not None else f"no label {key}"
        for req in self.match_expressions:
            if not req.matches(labels):
                return f"not {req.describe()}"
        return None


# -- placement -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AffinityTerm:
    """Run near (affinity) or away from (anti-affinity) replicas whose
    deployment labels match ``selector``, counted per ``scope``."""

    selector: Selector
    scope: Scope = Scope.NODE
    required: bool = False  # False: a preference, scored by weight
    weight: int = 100  # 1..100, for preferences


@dataclass(frozen=True, slots=True, kw_only=True)
class SpreadConstraint:
    scope: Scope = Scope.SITE
    max_skew: int = 1
    required: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SplitGroup:
    """A share of the replicas (``weight`` percent) for the sites ``sites`` selects."""

    sites: Selector
    weight: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UserGroup:
    """Where a group of users is (a site or an RTT landmark), its share of the
    traffic and the round-trip time it tolerates (None: no bound, only scored)."""

    name: str
    site: str | None = None
    landmark: str | None = None
    share: float = 1.0
    max_rtt: timedelta | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Residency:
    """Where the data may be processed; empty tuples allow anywhere."""

    countries: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.countries and not self.regions


@dataclass(frozen=True, slots=True, kw_only=True)
class Toleration:
    """Lets replicas run on nodes with a matching taint. An empty key with
    operator Exists tolerates every taint; no effect matches every effect."""

    key: str = ""
    operator: TolerationOperator = TolerationOperator.EQUAL
    value: str = ""
    effect: TaintEffect | None = None


def _normalize_set_fields(instance: Any) -> None:
    """Add every field that differs from its default to ``set_fields``."""
    changed = set(instance.set_fields)
    for f in dataclasses.fields(instance):
        if f.name == "set_fields" or f.name in changed:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING \
            else f.default
        if getattr(instance, f.name) != default:
            changed.add(f.name)
    object.__setattr__(instance, "set_fields", frozenset(changed))


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    node_selector: Selector = Selector()
    site_selector: Selector = Selector()
    strategy: str = "two-phase"
    # Score weights by plugin name; plugins not named keep their default weight.
    weights: Mapping[str, float] = field(default_factory=dict)
    affinity: tuple[AffinityTerm, ...] = ()
    anti_affinity: tuple[AffinityTerm, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()
    max_per_node: int = 0  # 0: no limit
    max_per_site: int = 0  # 0: no limit
    split: tuple[SplitGroup, ...] = ()
    users: tuple[UserGroup, ...] = ()
    residency: Residency = Residency()
    tolerations: tuple[Toleration, ...] = ()
    # Attribute names of the fields set; always includes every non-default one.
    set_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _normalize_set_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    parallelism: int = 1  # instances replaced at once
    delay: timedelta = timedelta(0)  # between batches
    health_gated: bool = False  # a batch waits for its health checks
    failure_action: FailureAction = FailureAction.PAUSE
    max_surge: int = 0  # extra instances during a rollout
    max_unavailable: int = 1
    # A batch not ready this long after it started is a failed update (0: no deadline).
    progress_deadline: timedelta = timedelta(minutes=10)


@dataclass(frozen=True, slots=True, kw_only=True)
class Failover:
    grace: timedelta = timedelta(seconds=10)  # Suspect this long before Lost and replaced
    disconnect_tolerance: timedelta = timedelta(0)  # keep a disconnected node's replicas
    on_reconnect: OnReconnect = OnReconnect.KEEP_REPLACEMENT
    singleton: bool = False  # never two instances, even across a partition
    # Attribute names of the fields set; always includes every non-default one.
    set_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _normalize_set_fields(self)


# -- documents -------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    name: str
    container: Container
    replicas: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    placement: Placement = Placement()
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    rollout: Rollout = Rollout()
    failover: Failover = Failover()


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementPolicy:
    """Placement and failover rules for every deployment whose labels ``selector``
    matches; only the fields set in ``placement`` and ``failover`` apply."""

    name: str
    selector: Selector
    priority: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    placement: Placement = Placement()
    failover: Failover = Failover()


# Document key -> attribute, in the order documents are written.
PLACEMENT_FIELDS = {
    "strategy": "strategy", "nodeSelector": "node_selector", "siteSelector": "site_selector",
    "affinity": "affinity", "antiAffinity": "anti_affinity", "spread": "spread",
    "maxPerNode": "max_per_node", "maxPerSite": "max_per_site", "split": "split",
    "users": "users", "residency": "residency", "tolerations": "tolerations",
    "weights": "weights",
}
FAILOVER_FIELDS = {"grace": "grace", "disconnectTolerance": "disconnect_tolerance",
                   "onReconnect": "on_reconnect", "singleton": "singleton"}
ROLLOUT_FIELDS = {"parallelism": "parallelism", "delay": "delay", "healthGated": "health_gated",
                  "failureAction": "failure_action", "maxSurge": "max_surge",
                  "maxUnavailable": "max_unavailable", "progressDeadline": "progress_deadline"}
