"""The native model (``apiVersion: edgefed.io/v1``): documents to frozen types and back.

The types live in :mod:`policies.spec` and are re-exported here. Every other
input format (Kubernetes, Compose) is translated into a native document first,
so validation happens in one place, one pass per document:

    document ──schema (structure)──┐
             ──reader (builds the model, parses quantities and durations,
                       selector operators)──┴─▶ problems, in document order
    model ──semantic checks (only when the above found no error)──▶ problems

:func:`validate_deployment` and :func:`validate_policy` return the model (or
None) with every problem, warnings included; :func:`deployment_from_document`
and :func:`policy_from_document` raise :class:`PolicyError` on errors. The
writers emit only what differs from the defaults (plus placement and failover
fields set explicitly, see :mod:`policies.writer`), so a document read back
gives an equal model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from policies.checks import deployment_problems, policy_problems
from policies.duration import DurationError, parse_duration
from policies.errors import FieldPath, PolicyError, Problem, Problems, kind_of
from policies.quantity import QuantityError, parse_cpu, parse_memory
from policies.schema import merge, schema_problems
from policies.spec import (
    API_VERSION,
    FAILOVER_FIELDS,
    LABEL_KEY_RE,
    MAX_REPLICAS,
    NAME_RE,
    PLACEMENT_FIELDS,
    ROLLOUT_FIELDS,
    SCORE_NAMES,
    STRATEGIES,
    AffinityTerm,
    Container,
    DataSet,
    Deployment,
    Failover,
    FailureAction,
    HealthCheck,
    HttpGet,
    LabelRequirement,
    OnReconnect,
    Operator,
    Placement,
    PlacementPolicy,
    Port,
    Residency,
    Resources,
    RestartPolicy,
    Rollout,
    Scope,
    Security,
    Selector,
    SplitGroup,
    SpreadConstraint,
    TaintEffect,
    TcpSocket,
    Toleration,
    TolerationOperator,
    UserGroup,
    Volume,
)
from policies.writer import deployment_to_document, policy_to_document

__all__ = [
    "API_VERSION", "LABEL_KEY_RE", "MAX_REPLICAS", "NAME_RE", "SCORE_NAMES", "STRATEGIES",
    "AffinityTerm", "Container", "DataSet", "Deployment", "Failover", "FailureAction",
    "HealthCheck", "HttpGet", "LabelRequirement", "OnReconnect", "Operator", "Placement",
    "PlacementPolicy", "Port", "Residency", "Resources", "RestartPolicy", "Rollout", "Scope",
    "Security", "Selector", "SplitGroup", "SpreadConstraint", "TaintEffect", "TcpSocket",
    "Toleration", "TolerationOperator", "UserGroup", "Volume",
    "deployment_from_document", "deployment_to_document", "policy_from_document",
    "policy_to_document", "validate_deployment", "validate_policy",
]

_kind = kind_of  # the name the translators import
_E = TypeVar("_E", bound=StrEnum)
_T = TypeVar("_T")


# -- entry points ----------------------------------------------------------------


def deployment_from_document(doc: Any) -> Deployment:
    """Validate a native document and build the Deployment, or raise PolicyError
    listing every error with its field path (warnings are dropped here; use
    :func:`validate_deployment` to see them)."""
    deployment, problems = validate_deployment(doc)
    return _or_raise(deployment, problems)


def policy_from_document(doc: Any) -> PlacementPolicy:
    policy, problems = validate_policy(doc)
    return _or_raise(policy, problems)


def validate_deployment(doc: Any) -> tuple[Deployment | None, list[Problem]]:
    """The Deployment (None when there is an error) and every problem found."""
    return _validate(doc, "Deployment", _read_deployment, deployment_problems)


def validate_policy(doc: Any) -> tuple[PlacementPolicy | None, list[Problem]]:
    return _validate(doc, "PlacementPolicy", _read_policy, policy_problems)


def _validate(doc: Any, kind: str, read: Callable[[_Reader, Any], _T | None],
              check: Callable[[_T], list[Problem]]) -> tuple[_T | None, list[Problem]]:
    reader = Problems()
    built = read(_Reader(reader), doc)
    problems = merge(schema_problems(doc, kind), reader.items)
    if built is not None and not any(not p.warning for p in problems):
        problems += check(built)
    problems = _in_document_order(doc, problems)
    if built is None or any(not p.warning for p in problems):
        return None, problems
    return built, problems


def _or_raise(built: _T | None, problems: list[Problem]) -> _T:
    errors = [p for p in problems if not p.warning]
    if errors or built is None:
        raise PolicyError(errors)
    return built


def _in_document_order(doc: Any, problems: list[Problem]) -> list[Problem]:
    """Problems sorted as their fields appear in ``doc``; a missing field sorts
    right after its parent."""
    order: dict[FieldPath, int] = {}

    def walk(value: Any, path: FieldPath) -> None:
        order[path] = len(order)
        if len(path) > 16:
            return  # deeper than any field of the format
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*path, str(key)))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, (*path, i))

    walk(doc, ())

    def position(problem: Problem) -> tuple[int, bool]:
        for cut in range(len(problem.path), -1, -1):
            if problem.path[:cut] in order:
                return order[problem.path[:cut]], cut < len(problem.path)
        return 0, True

    return sorted(problems, key=position)


# -- the reader --------------------------------------------------------------------


class _Reader:
    """Typed field access that records a problem (with its path) instead of raising.

    The schema judges structure first; these checks keep the reader total on
    any input and are what reports a problem the schema cannot see."""

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

    def items(self, value: Any, path: FieldPath, allowed: set[str]
              ) -> list[tuple[FieldPath, dict[str, Any]]]:
        """The mappings of a list of mappings, each with its path."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.p.error(path, f"expected a list, found {_kind(value)}")
            return []
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                self.p.error((*path, i), f"expected a mapping, found {_kind(item)}")
                continue
            self.known(item, (*path, i), allowed)
            out.append(((*path, i), item))
        return out

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

    def required_integer(self, value: Any, path: FieldPath, *, low: int, high: int,
                         what: str = "an integer") -> int | None:
        if value is None:
            self.p.error(path, f"is required (expected {what})")
            return None
        before = len(self.p.items)
        number = self.integer(value, path, default=low, low=low, high=high)
        return number if len(self.p.items) == before else None

    def boolean(self, value: Any, path: FieldPath, *, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.p.error(path, f"expected true or false, found {_kind(value)} {value!r}")
            return default
        return value

    def choice(self, value: Any, path: FieldPath, enum: type[_E], default: _T) -> _E | _T:
        text = self.string(value, path)
        if text is None:
            return default
        try:
            return enum(text)
        except ValueError:
            self.p.error(path, f"found {text!r}, expected one of "
                         + ", ".join(member.value for member in enum))
            return default

    def duration(self, value: Any, path: FieldPath, *, default: _T,
                 positive: bool = False) -> timedelta | _T:
        if value is None:
            return default
        try:
            duration = parse_duration(value)
        except DurationError as exc:
            self.p.error(path, str(exc))
            return default
        if positive and not duration:
            self.p.error(path, f"{value!r} is out of range (expected more than 0s)")
            return default
        return duration


# -- deployment --------------------------------------------------------------------

_DEPLOYMENT_SPEC = {"replicas", "container", "placement", "restartPolicy", "rollout", "failover"}
_CONTAINER = {"image", "command", "args", "env", "ports", "resources", "healthCheck",
              "volumes", "dataSets", "security"}


def _read_header(r: _Reader, doc: Any, kind: str) -> tuple[dict[str, Any], str, dict[str, str]]:
    """The document, checked as far as apiVersion, kind and metadata."""
    top = r.mapping(doc, (), required=True)
    r.known(top, (), {"apiVersion", "kind", "metadata", "spec"})
    if top.get("apiVersion") != API_VERSION:
        r.p.error(("apiVersion",), f"found {top.get('apiVersion')!r}, expected {API_VERSION!r}")
    if top.get("kind") != kind:
        r.p.error(("kind",), f"found {top.get('kind')!r}, expected {kind!r}")
    meta = r.mapping(top.get("metadata"), ("metadata",), required=True)
    r.known(meta, ("metadata",), {"name", "labels"})
    name = r.string(meta.get("name"), ("metadata", "name"), required=True) or ""
    if name and not NAME_RE.match(name):
        r.p.error(("metadata", "name"), f"{name!r} is not a valid name "
                  "(expected lowercase letters, digits and '-', at most 63 characters)")
    return top, name, r.string_map(meta.get("labels"), ("metadata", "labels"))


def _read_deployment(r: _Reader, doc: Any) -> Deployment | None:
    if not isinstance(doc, dict):
        r.mapping(doc, (), required=True)
        return None  # every field below would only repeat it
    top, name, labels = _read_header(r, doc, "Deployment")
    spec = r.mapping(top.get("spec"), ("spec",), required=True)
    r.known(spec, ("spec",), _DEPLOYMENT_SPEC)
    replicas = r.integer(spec.get("replicas"), ("spec", "replicas"),
                         default=1, low=0, high=MAX_REPLICAS)
    container = _read_container(r, spec.get("container"), ("spec", "container"))
    placement = _read_placement(r, spec.get("placement"), ("spec", "placement"))
    restart = r.choice(spec.get("restartPolicy"), ("spec", "restartPolicy"), RestartPolicy,
                       RestartPolicy.ALWAYS)
    rollout = _read_rollout(r, spec.get("rollout"), ("spec", "rollout"))
    failover = _read_failover(r, spec.get("failover"), ("spec", "failover"))
    if container is None:
        return None
    return Deployment(name=name, labels=labels, replicas=replicas, container=container,
                      placement=placement, restart_policy=restart, rollout=rollout,
                      failover=failover)


def _read_container(r: _Reader, value: Any, path: FieldPath) -> Container | None:
    doc = r.mapping(value, path, required=True)
    r.known(doc, path, _CONTAINER)
    # Required whenever the container is a mapping, empty ones included: an empty
    # container must not pass with no problem reported.
    image = r.string(doc.get("image"), (*path, "image"),
                     required=isinstance(value, dict) or value is None)
    if image == "":
        r.p.error((*path, "image"), "must not be empty (expected an image reference)")
        image = None
    # Read before giving up on a missing image, so their problems are reported too.
    ports = _read_ports(r, doc.get("ports"), (*path, "ports"))
    resources = _read_resources(r, doc.get("resources"), (*path, "resources"))
    command = r.string_list(doc.get("command"), (*path, "command"))
    args = r.string_list(doc.get("args"), (*path, "args"))
    env = r.string_map(doc.get("env"), (*path, "env"))
    health_check = _read_health_check(r, doc.get("healthCheck"), (*path, "healthCheck"))
    volumes = tuple(
        Volume(name=r.string(item.get("name"), (*ipath, "name"), required=True) or "",
               host_path=r.string(item.get("hostPath"), (*ipath, "hostPath"),
                                  required=True) or "",
               mount_path=r.string(item.get("mountPath"), (*ipath, "mountPath"),
                                   required=True) or "",
               read_only=r.boolean(item.get("readOnly"), (*ipath, "readOnly"), default=False))
        for ipath, item in r.items(doc.get("volumes"), (*path, "volumes"),
                                   {"name", "hostPath", "mountPath", "readOnly"}))
    data_sets = tuple(
        DataSet(name=r.string(item.get("name"), (*ipath, "name"), required=True) or "",
                mount_path=r.string(item.get("mountPath"), (*ipath, "mountPath"),
                                    required=True) or "",
                read_only=r.boolean(item.get("readOnly"), (*ipath, "readOnly"), default=True))
        for ipath, item in r.items(doc.get("dataSets"), (*path, "dataSets"),
                                   {"name", "mountPath", "readOnly"}))
    security = _read_security(r, doc.get("security"), (*path, "security"))
    if image is None:
        return None
    return Container(image=image, command=command, args=args, env=env, ports=ports,
                     resources=resources, health_check=health_check, volumes=volumes,
                     data_sets=data_sets, security=security)


def _read_ports(r: _Reader, value: Any, path: FieldPath) -> tuple[Port, ...]:
    ports = []
    for ppath, pdoc in r.items(value, path, {"containerPort", "hostPort", "protocol"}):
        cport = r.required_integer(pdoc.get("containerPort"), (*ppath, "containerPort"),
                                   low=1, high=65535, what="a port number")
        hport = r.integer(pdoc.get("hostPort"), (*ppath, "hostPort"), default=0, low=1,
                          high=65535)
        proto = (r.string(pdoc.get("protocol"), (*ppath, "protocol")) or "tcp").lower()
        if proto not in ("tcp", "udp"):
            r.p.error((*ppath, "protocol"), f"found {proto!r}, expected tcp or udp")
        ports.append(Port(container_port=cport or 0, host_port=hport or None, protocol=proto))
    return tuple(ports)


def _quantity(r: _Reader, res: Mapping[str, Any], path: FieldPath, key: str,
              parse: Callable[[object], int]) -> int:
    """``res[key]`` parsed (0 when absent); an error at ``path.key`` when it is not."""
    if res.get(key) is None:
        return 0
    try:
        return parse(res[key])
    except QuantityError as exc:
        r.p.error((*path, key), str(exc))
    except OverflowError:  # digits beyond float range: the parser cannot round infinity
        r.p.error((*path, key), f"is too large to be a {key} quantity")
    return 0


def _read_resources(r: _Reader, value: Any, path: FieldPath) -> Resources:
    res = r.mapping(value, path)
    r.known(res, path, {"cpu", "memory", "disk", "devices"})
    cpu = _quantity(r, res, path, "cpu", parse_cpu)
    mem = _quantity(r, res, path, "memory", parse_memory)
    disk = _quantity(r, res, path, "disk", parse_memory)
    devices: dict[str, int] = {}
    for kind, count in r.mapping(res.get("devices"), (*path, "devices")).items():
        number = r.required_integer(count, (*path, "devices", str(kind)), low=1, high=1000)
        if number is not None:
            devices[str(kind)] = number
    return Resources(cpu_millis=cpu, memory_bytes=mem, disk_bytes=disk, devices=devices)


_PROBES = ("command", "httpGet", "tcpSocket")


def _read_health_check(r: _Reader, value: Any, path: FieldPath) -> HealthCheck | None:
    if value is None:
        return None
    doc = r.mapping(value, path)
    r.known(doc, path, {*_PROBES, "interval", "timeout", "retries", "startPeriod"})
    given = [k for k in _PROBES if doc.get(k) is not None]
    if isinstance(value, dict) and len(given) != 1:
        r.p.error(path, f"found {' and '.join(given) or 'none of them'}, expected exactly "
                  f"one of {', '.join(_PROBES)}")
    command = r.string_list(doc.get("command"), (*path, "command"))
    if doc.get("command") is not None and not command:
        r.p.error((*path, "command"), "must not be empty (expected a list of strings)")
    http_get = tcp_socket = None
    if doc.get("httpGet") is not None:
        hpath = (*path, "httpGet")
        hdoc = r.mapping(doc["httpGet"], hpath)
        r.known(hdoc, hpath, {"path", "port"})
        port = r.required_integer(hdoc.get("port"), (*hpath, "port"), low=1, high=65535,
                                  what="a port number")
        url_path = r.string(hdoc.get("path"), (*hpath, "path"))
        http_get = None if port is None else HttpGet(
            port=port, path="/" if url_path is None else url_path)
    if doc.get("tcpSocket") is not None:
        tpath = (*path, "tcpSocket")
        tdoc = r.mapping(doc["tcpSocket"], tpath)
        r.known(tdoc, tpath, {"port"})
        port = r.required_integer(tdoc.get("port"), (*tpath, "port"), low=1, high=65535,
                                  what="a port number")
        tcp_socket = TcpSocket(port=port) if port is not None else None
    defaults = HealthCheck()
    return HealthCheck(
        command=command, http_get=http_get, tcp_socket=tcp_socket,
        interval=r.duration(doc.get("interval"), (*path, "interval"),
                            default=defaults.interval, positive=True),
        timeout=r.duration(doc.get("timeout"), (*path, "timeout"),
                           default=defaults.timeout, positive=True),
        retries=r.integer(doc.get("retries"), (*path, "retries"), default=defaults.retries,
                          low=1, high=100),
        start_period=r.duration(doc.get("startPeriod"), (*path, "startPeriod"),
                                default=defaults.start_period),
    )


def _read_security(r: _Reader, value: Any, path: FieldPath) -> Security:
    doc = r.mapping(value, path)
    r.known(doc, path, {"runAsUser", "readOnlyRootFilesystem", "privileged", "capabilities"})
    caps = r.mapping(doc.get("capabilities"), (*path, "capabilities"))
    r.known(caps, (*path, "capabilities"), {"add", "drop"})
    user = doc.get("runAsUser")
    return Security(
        run_as_user=None if user is None else r.integer(
            user, (*path, "runAsUser"), default=0, low=0, high=2**32 - 2),
        read_only_root_filesystem=r.boolean(doc.get("readOnlyRootFilesystem"),
                                            (*path, "readOnlyRootFilesystem"), default=False),
        privileged=r.boolean(doc.get("privileged"), (*path, "privileged"), default=False),
        cap_add=r.string_list(caps.get("add"), (*path, "capabilities", "add")),
        cap_drop=r.string_list(caps.get("drop"), (*path, "capabilities", "drop")),
    )


# -- selectors and placement ------------------------------------------------------


def _read_selector(r: _Reader, value: Any, path: FieldPath, *,
                   required: bool = False) -> Selector:
    doc = r.mapping(value, path, required=required)
    r.known(doc, path, {"matchLabels", "matchExpressions"})
    exprs = []
    for epath, edoc in r.items(doc.get("matchExpressions"), (*path, "matchExpressions"),
                               {"key", "operator", "values"}):
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
    r.known(doc, path, set(PLACEMENT_FIELDS))
    strategy = r.string(doc.get("strategy"), (*path, "strategy")) or "two-phase"
    if strategy not in STRATEGIES:
        r.p.error((*path, "strategy"), f"found {strategy!r}, expected one of "
                  + ", ".join(STRATEGIES))
    return Placement(
        node_selector=_read_selector(r, doc.get("nodeSelector"), (*path, "nodeSelector")),
        site_selector=_read_selector(r, doc.get("siteSelector"), (*path, "siteSelector")),
        strategy=strategy,
        weights=_read_weights(r, doc.get("weights"), (*path, "weights")),
        affinity=_read_affinity(r, doc.get("affinity"), (*path, "affinity")),
        anti_affinity=_read_affinity(r, doc.get("antiAffinity"), (*path, "antiAffinity")),
        spread=tuple(
            SpreadConstraint(
                scope=r.choice(item.get("scope"), (*ipath, "scope"), Scope, Scope.SITE),
                max_skew=r.integer(item.get("maxSkew"), (*ipath, "maxSkew"), default=1,
                                   low=1, high=1000),
                required=r.boolean(item.get("required"), (*ipath, "required"), default=False))
            for ipath, item in r.items(doc.get("spread"), (*path, "spread"),
                                       {"scope", "maxSkew", "required"})),
        max_per_node=r.integer(doc.get("maxPerNode"), (*path, "maxPerNode"), default=0,
                               low=0, high=MAX_REPLICAS),
        max_per_site=r.integer(doc.get("maxPerSite"), (*path, "maxPerSite"), default=0,
                               low=0, high=MAX_REPLICAS),
        split=tuple(
            SplitGroup(sites=_read_selector(r, item.get("sites"), (*ipath, "sites"),
                                            required=True),
                       weight=r.required_integer(item.get("weight"), (*ipath, "weight"),
                                                 low=0, high=100) or 0)
            for ipath, item in r.items(doc.get("split"), (*path, "split"), {"sites", "weight"})),
        users=_read_users(r, doc.get("users"), (*path, "users")),
        residency=_read_residency(r, doc.get("residency"), (*path, "residency")),
        tolerations=_read_tolerations(r, doc.get("tolerations"), (*path, "tolerations")),
        set_fields=_given(doc, PLACEMENT_FIELDS),
    )


def _given(doc: Mapping[str, Any], fields: Mapping[str, str]) -> frozenset[str]:
    return frozenset(attr for key, attr in fields.items() if doc.get(key) is not None)


def _read_weights(r: _Reader, value: Any, path: FieldPath) -> dict[str, float]:
    weights: dict[str, float] = {}
    for key, raw in r.mapping(value, path).items():
        # float() of a huge int raises and nan/inf would poison every score: both refused.
        if str(key) not in SCORE_NAMES:
            r.p.error((*path, str(key)), f"found {key!r}, expected one of "
                      f"{', '.join(SCORE_NAMES)}")
        elif (isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0
                or not _is_finite(raw)):
            r.p.error((*path, str(key)), f"expected a number >= 0, found {raw!r}")
        else:
            weights[str(key)] = float(raw)
    return weights


def _read_affinity(r: _Reader, value: Any, path: FieldPath) -> tuple[AffinityTerm, ...]:
    return tuple(
        AffinityTerm(
            selector=_read_selector(r, item.get("selector"), (*ipath, "selector"),
                                    required=True),
            scope=r.choice(item.get("scope"), (*ipath, "scope"), Scope, Scope.NODE),
            required=r.boolean(item.get("required"), (*ipath, "required"), default=False),
            weight=r.integer(item.get("weight"), (*ipath, "weight"), default=100, low=1,
                             high=100))
        for ipath, item in r.items(value, path, {"selector", "scope", "required", "weight"}))


def _read_users(r: _Reader, value: Any, path: FieldPath) -> tuple[UserGroup, ...]:
    users = []
    for ipath, item in r.items(value, path, {"name", "site", "landmark", "share", "maxRtt"}):
        given = [k for k in ("site", "landmark") if item.get(k) is not None]
        if len(given) != 1:
            r.p.error(ipath, f"found {' and '.join(given) or 'none of them'}, expected "
                      "exactly one of site, landmark")
        share = item.get("share")
        if share is None:
            share = 1.0
        elif (isinstance(share, bool) or not isinstance(share, int | float)
                or not 0 < share <= 1):
            r.p.error((*ipath, "share"), f"{share!r} is out of range (expected more than 0 "
                      "and at most 1)")
            share = 1.0
        users.append(UserGroup(
            name=r.string(item.get("name"), (*ipath, "name"), required=True) or "",
            site=r.string(item.get("site"), (*ipath, "site")),
            landmark=r.string(item.get("landmark"), (*ipath, "landmark")),
            share=float(share),
            max_rtt=r.duration(item.get("maxRtt"), (*ipath, "maxRtt"), default=None)))
    return tuple(users)


def _read_residency(r: _Reader, value: Any, path: FieldPath) -> Residency:
    doc = r.mapping(value, path)
    r.known(doc, path, {"countries", "regions"})
    return Residency(countries=r.string_list(doc.get("countries"), (*path, "countries")),
                     regions=r.string_list(doc.get("regions"), (*path, "regions")))


def _read_tolerations(r: _Reader, value: Any, path: FieldPath) -> tuple[Toleration, ...]:
    return tuple(
        Toleration(
            key=r.string(item.get("key"), (*ipath, "key")) or "",
            operator=r.choice(item.get("operator"), (*ipath, "operator"), TolerationOperator,
                              TolerationOperator.EQUAL),
            value=r.string(item.get("value"), (*ipath, "value")) or "",
            effect=r.choice(item.get("effect"), (*ipath, "effect"), TaintEffect, None))
        for ipath, item in r.items(value, path, {"key", "operator", "value", "effect"}))


def _read_rollout(r: _Reader, value: Any, path: FieldPath) -> Rollout:
    doc = r.mapping(value, path)
    r.known(doc, path, set(ROLLOUT_FIELDS))
    return Rollout(
        parallelism=r.integer(doc.get("parallelism"), (*path, "parallelism"), default=1,
                              low=1, high=MAX_REPLICAS),
        delay=r.duration(doc.get("delay"), (*path, "delay"), default=timedelta(0)),
        health_gated=r.boolean(doc.get("healthGated"), (*path, "healthGated"), default=False),
        failure_action=r.choice(doc.get("failureAction"), (*path, "failureAction"),
                                FailureAction, FailureAction.PAUSE),
        max_surge=r.integer(doc.get("maxSurge"), (*path, "maxSurge"), default=0, low=0,
                            high=MAX_REPLICAS),
        max_unavailable=r.integer(doc.get("maxUnavailable"), (*path, "maxUnavailable"),
                                  default=1, low=0, high=MAX_REPLICAS),
        progress_deadline=r.duration(doc.get("progressDeadline"), (*path, "progressDeadline"),
                                     default=Rollout().progress_deadline),
    )


def _read_failover(r: _Reader, value: Any, path: FieldPath) -> Failover:
    doc = r.mapping(value, path)
    r.known(doc, path, set(FAILOVER_FIELDS))
    defaults = Failover()
    return Failover(
        grace=r.duration(doc.get("grace"), (*path, "grace"), default=defaults.grace),
        disconnect_tolerance=r.duration(doc.get("disconnectTolerance"),
                                        (*path, "disconnectTolerance"),
                                        default=defaults.disconnect_tolerance),
        on_reconnect=r.choice(doc.get("onReconnect"), (*path, "onReconnect"), OnReconnect,
                              defaults.on_reconnect),
        singleton=r.boolean(doc.get("singleton"), (*path, "singleton"), default=False),
        set_fields=_given(doc, FAILOVER_FIELDS),
    )


# -- placement policy --------------------------------------------------------------


def _read_policy(r: _Reader, doc: Any) -> PlacementPolicy | None:
    if not isinstance(doc, dict):
        r.mapping(doc, (), required=True)
        return None
    top, name, labels = _read_header(r, doc, "PlacementPolicy")
    spec = r.mapping(top.get("spec"), ("spec",), required=True)
    r.known(spec, ("spec",), {"selector", "priority", "placement", "failover"})
    return PlacementPolicy(
        name=name, labels=labels,
        selector=_read_selector(r, spec.get("selector"), ("spec", "selector"), required=True),
        priority=r.integer(spec.get("priority"), ("spec", "priority"), default=0, low=-1000,
                           high=1000),
        placement=_read_placement(r, spec.get("placement"), ("spec", "placement")),
        failover=_read_failover(r, spec.get("failover"), ("spec", "failover")),
    )
