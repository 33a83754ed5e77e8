"""The native deployment model (``apiVersion: edgefed.io/v1``).

Frozen domain types plus the one conversion each way between them and the
native document (a plain dict as YAML or JSON gives it). Every other input
format (Kubernetes, Compose) is translated into a native document first, so
validation happens in exactly one place: :func:`deployment_from_document`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from policies.errors import FieldPath, PolicyError, Problems
from policies.quantity import QuantityError, format_cpu, format_memory, parse_cpu, parse_memory

API_VERSION = "edgefed.io/v1"
MAX_REPLICAS = 1000
# Names end up in MQTT topics, container names and URLs.
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[Port, ...] = ()
    resources: Resources = Resources()


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
        except ValueError:
            return False
        return number > bound if self.operator is Operator.GT else number < bound

    def describe(self) -> str:
        if self.operator in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
            return f"{self.key} {self.operator.value}"
        return f"{self.key} {self.operator.value} ({','.join(self.values)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Selector:
    """Labels that must match: exact pairs plus set-based requirements."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[LabelRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Placement:
    node_selector: Selector = Selector()
    site_selector: Selector = Selector()
    strategy: str = "two-phase"
    # Score weights by plugin name; plugins not named keep their default weight.
    weights: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    name: str
    container: Container
    replicas: int = 1
    labels: Mapping[str, str] = field(default_factory=dict)
    placement: Placement = Placement()
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS


STRATEGIES = ("two-phase",)
# The scheduler's score plugins, by the names a policy weights them with.
SCORE_NAMES = ("least-allocated", "spread-sites", "spread-nodes", "stay-put")


# -- document -> model ---------------------------------------------------------


class _Reader:
    """Typed field access that records a problem (with its path) instead of raising."""

    def __init__(self, problems: Problems) -> None:
        self.p = problems

    def mapping(self, value: Any, path: FieldPath, *, required: bool = False) -> dict[str, Any]:
        if value is None:
            if required:
                self.p.error(path, "is required (expected a mapping)")
            return {}
        if not isinstance(value, dict):
            self.p.error(path, f"expected a mapping, found {_kind(value)}")
            return {}
        return value

    def known(self, doc: Mapping[str, Any], path: FieldPath, allowed: set[str]) -> None:
        for key in doc:
            if key not in allowed:
                self.p.error(
                    (*path, str(key)),
                    f"unknown field (expected one of: {', '.join(sorted(allowed))})",
                )

    def string(self, value: Any, path: FieldPath, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                self.p.error(path, "is required (expected a string)")
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.p.error(path, f"expected a string, found {_kind(value)}")
            return None
        return str(value)

    def string_list(self, value: Any, path: FieldPath) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            self.p.error(path, f"expected a list of strings, found a string {value!r}")
            return ()
        if not isinstance(value, list):
            self.p.error(path, f"expected a list of strings, found {_kind(value)}")
            return ()
        out = []
        for i, item in enumerate(value):
            text = self.string(item, (*path, i), required=True)
            if text is not None:
                out.append(text)
        return tuple(out)

    def string_map(self, value: Any, path: FieldPath) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, item in self.mapping(value, path).items():
            text = self.string(item, (*path, str(key)), required=True)
            if text is not None:
                out[str(key)] = text
        return out

    def integer(
        self, value: Any, path: FieldPath, *, default: int, low: int, high: int
    ) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.p.error(path, f"expected an integer, found {_kind(value)} {value!r}")
            return default
        if not low <= value <= high:
            self.p.error(path, f"{value} is out of range (expected {low} to {high})")
            return default
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def deployment_from_document(doc: Any) -> Deployment:
    """Validate a native document and build the Deployment, or raise PolicyError
    listing every problem with its field path."""
    problems = Problems()
    deployment = _read_deployment(_Reader(problems), doc)
    if problems.errors or deployment is None:
        raise PolicyError(problems.errors)
    return deployment


def _read_deployment(r: _Reader, doc: Any) -> Deployment | None:
    top = r.mapping(doc, (), required=True)
    if not isinstance(doc, dict):
        return None  # reported above; every field below would only repeat it
    r.known(top, (), {"apiVersion", "kind", "metadata", "spec"})
    if top.get("apiVersion") != API_VERSION:
        r.p.error(("apiVersion",), f"found {top.get('apiVersion')!r}, expected {API_VERSION!r}")
    if top.get("kind") != "Deployment":
        r.p.error(("kind",), f"found {top.get('kind')!r}, expected 'Deployment'")
    meta = r.mapping(top.get("metadata"), ("metadata",), required=True)
    r.known(meta, ("metadata",), {"name", "labels"})
    name = r.string(meta.get("name"), ("metadata", "name"), required=True) or ""
    if name and not NAME_RE.match(name):
        r.p.error(("metadata", "name"), f"{name!r} is not a valid name "
                  "(expected lowercase letters, digits and '-', at most 63 characters)")
    labels = r.string_map(meta.get("labels"), ("metadata", "labels"))
    spec = r.mapping(top.get("spec"), ("spec",), required=True)
    r.known(spec, ("spec",), {"replicas", "container", "placement", "restartPolicy"})
    replicas = r.integer(spec.get("replicas"), ("spec", "replicas"),
                         default=1, low=0, high=MAX_REPLICAS)
    container = _read_container(r, spec.get("container"), ("spec", "container"))
    placement = _read_placement(r, spec.get("placement"), ("spec", "placement"))
    restart_raw = r.string(spec.get("restartPolicy"), ("spec", "restartPolicy"))
    restart = RestartPolicy.ALWAYS
    if restart_raw is not None:
        try:
            restart = RestartPolicy(restart_raw)
        except ValueError:
            r.p.error(("spec", "restartPolicy"), f"found {restart_raw!r}, expected one of "
                      + ", ".join(p.value for p in RestartPolicy))
    if container is None:
        return None
    return Deployment(name=name, labels=labels, replicas=replicas, container=container,
                      placement=placement, restart_policy=restart)


def _read_container(r: _Reader, value: Any, path: FieldPath) -> Container | None:
    doc = r.mapping(value, path, required=True)
    r.known(doc, path, {"image", "command", "args", "env", "ports", "resources"})
    # Required whenever the container is a mapping, empty ones included: an empty
    # container must not pass with no problem reported.
    image = r.string(doc.get("image"), (*path, "image"),
                     required=isinstance(value, dict) or value is None)
    if image == "":
        r.p.error((*path, "image"), "must not be empty (expected an image reference)")
        image = None
    ports = []
    port_list = doc.get("ports") or []
    if not isinstance(port_list, list):
        r.p.error((*path, "ports"), f"expected a list, found {_kind(port_list)}")
        port_list = []
    for i, item in enumerate(port_list):
        ppath = (*path, "ports", i)
        pdoc = r.mapping(item, ppath, required=True)
        if not isinstance(item, dict):
            continue  # reported above; "containerPort is required" would only repeat it
        r.known(pdoc, ppath, {"containerPort", "hostPort", "protocol"})
        cport = r.integer(pdoc.get("containerPort"), (*ppath, "containerPort"),
                          default=0, low=1, high=65535)
        if pdoc.get("containerPort") is None:
            r.p.error((*ppath, "containerPort"), "is required (expected a port number)")
        hport = r.integer(pdoc.get("hostPort"), (*ppath, "hostPort"), default=0, low=1, high=65535)
        proto = (r.string(pdoc.get("protocol"), (*ppath, "protocol")) or "tcp").lower()
        if proto not in ("tcp", "udp"):
            r.p.error((*ppath, "protocol"), f"found {proto!r}, expected tcp or udp")
        ports.append(Port(container_port=cport, host_port=hport or None, protocol=proto))
    res = r.mapping(doc.get("resources"), (*path, "resources"))
    r.known(res, (*path, "resources"), {"cpu", "memory"})
    cpu = mem = 0
    try:
        cpu = parse_cpu(res["cpu"]) if "cpu" in res else 0
    except QuantityError as exc:
        r.p.error((*path, "resources", "cpu"), str(exc))
    except OverflowError:  # digits beyond float range: parse_cpu cannot round infinity
        r.p.error((*path, "resources", "cpu"), "is too large to be a cpu quantity")
    try:
        mem = parse_memory(res["memory"]) if "memory" in res else 0
    except QuantityError as exc:
        r.p.error((*path, "resources", "memory"), str(exc))
    except OverflowError:
        r.p.error((*path, "resources", "memory"), "is too large to be a memory quantity")
    # Read before giving up on a missing image, so their problems are reported too.
    command = r.string_list(doc.get("command"), (*path, "command"))
    args = r.string_list(doc.get("args"), (*path, "args"))
    env = r.string_map(doc.get("env"), (*path, "env"))
    if image is None:
        return None
    return Container(
        image=image,
        command=command,
        args=args,
        env=env,
        ports=tuple(ports),
        resources=Resources(cpu_millis=cpu, memory_bytes=mem),
    )


def _read_selector(r: _Reader, value: Any, path: FieldPath) -> Selector:
    doc = r.mapping(value, path)
    r.known(doc, path, {"matchLabels", "matchExpressions"})
    exprs = []
    raw = doc.get("matchExpressions") or []
    if not isinstance(raw, list):
        r.p.error((*path, "matchExpressions"), f"expected a list, found {_kind(raw)}")
        raw = []
    for i, item in enumerate(raw):
        epath = (*path, "matchExpressions", i)
        edoc = r.mapping(item, epath, required=True)
        r.known(edoc, epath, {"key", "operator", "values"})
        key = r.string(edoc.get("key"), (*epath, "key"), required=True)
        op_raw = r.string(edoc.get("operator"), (*epath, "operator"), required=True)
        values = r.string_list(edoc.get("values"), (*epath, "values"))
        try:
            op = Operator(op_raw or "")
        except ValueError:
            if op_raw is not None:
                r.p.error((*epath, "operator"), f"found {op_raw!r}, expected one of "
                          + ", ".join(o.value for o in Operator))
            continue
        if op in (Operator.IN, Operator.NOT_IN) and not values:
            r.p.error((*epath, "values"), f"{op.value} needs at least one value")
        if op in (Operator.GT, Operator.LT) and (len(values) != 1
                                                 or not _is_number(values[0])):
            r.p.error((*epath, "values"), f"{op.value} needs exactly one numeric value")
        if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST) and values:
            r.p.error((*epath, "values"), f"{op.value} takes no values")
        if key is not None:
            exprs.append(LabelRequirement(key=key, operator=op, values=values))
    return Selector(match_labels=r.string_map(doc.get("matchLabels"), (*path, "matchLabels")),
                    match_expressions=tuple(exprs))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_finite(number: int | float) -> bool:
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def _read_placement(r: _Reader, value: Any, path: FieldPath) -> Placement:
    doc = r.mapping(value, path)
    r.known(doc, path, {"nodeSelector", "siteSelector", "strategy", "weights"})
    strategy = r.string(doc.get("strategy"), (*path, "strategy")) or "two-phase"
    if strategy not in STRATEGIES:
        r.p.error((*path, "strategy"), f"found {strategy!r}, expected one of "
                  + ", ".join(STRATEGIES))
    weights: dict[str, float] = {}
    for key, raw in r.mapping(doc.get("weights"), (*path, "weights")).items():
        # float() of a huge int raises and nan/inf would poison every score: both refused.
        if str(key) not in SCORE_NAMES:
            r.p.error((*path, "weights", str(key)), f"unknown score {key!r} (expected one of: "
                      f"{', '.join(SCORE_NAMES)})")
        elif (isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0
                or not _is_finite(raw)):
            r.p.error((*path, "weights", str(key)), f"expected a number >= 0, found {raw!r}")
        else:
            weights[str(key)] = float(raw)
    return Placement(
        node_selector=_read_selector(r, doc.get("nodeSelector"), (*path, "nodeSelector")),
        site_selector=_read_selector(r, doc.get("siteSelector"), (*path, "siteSelector")),
        strategy=strategy,
        weights=weights,
    )


# -- model -> document ---------------------------------------------------------


def deployment_to_document(d: Deployment) -> dict[str, Any]:
    """The native document; ``deployment_from_document`` of it gives ``d`` back."""
    c = d.container
    container: dict[str, Any] = {"image": c.image}
    if c.command:
        container["command"] = list(c.command)
    if c.args:
        container["args"] = list(c.args)
    if c.env:
        container["env"] = dict(c.env)
    if c.ports:
        container["ports"] = [_port_doc(p) for p in c.ports]
    res: dict[str, Any] = {}
    if c.resources.cpu_millis:
        res["cpu"] = format_cpu(c.resources.cpu_millis)
    if c.resources.memory_bytes:
        res["memory"] = format_memory(c.resources.memory_bytes)
    if res:
        container["resources"] = res
    spec: dict[str, Any] = {"replicas": d.replicas, "container": container}
    placement: dict[str, Any] = {}
    for key, sel in (("nodeSelector", d.placement.node_selector),
                     ("siteSelector", d.placement.site_selector)):
        if not sel.empty:
            placement[key] = _selector_doc(sel)
    if d.placement.strategy != "two-phase":
        placement["strategy"] = d.placement.strategy
    if d.placement.weights:
        placement["weights"] = dict(d.placement.weights)
    if placement:
        spec["placement"] = placement
    if d.restart_policy is not RestartPolicy.ALWAYS:
        spec["restartPolicy"] = d.restart_policy.value
    meta: dict[str, Any] = {"name": d.name}
    if d.labels:
        meta["labels"] = dict(d.labels)
    return {"apiVersion": API_VERSION, "kind": "Deployment", "metadata": meta, "spec": spec}


def _port_doc(p: Port) -> dict[str, Any]:
    out: dict[str, Any] = {"containerPort": p.container_port}
    if p.host_port:
        out["hostPort"] = p.host_port
    if p.protocol != "tcp":
        out["protocol"] = p.protocol
    return out


def _selector_doc(sel: Selector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sel.match_labels:
        out["matchLabels"] = dict(sel.match_labels)
    if sel.match_expressions:
        out["matchExpressions"] = [
            {"key": e.key, "operator": e.operator.value, **({"values": list(e.values)}
                                                             if e.values else {})}
            for e in sel.match_expressions
        ]
    return out
