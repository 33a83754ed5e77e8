"""The drill file: a topology, workloads, a fault timeline and the assertions
checked afterwards. Pure dataclasses plus a loader that reports every problem at
file:line:column with the field path, like the policy loader (whose bounded YAML
reader it shares)::

    apiVersion: edgefed.io/v1
    kind: Drill
    metadata: {name: node-crash}
    spec:
      duration: 20s             # run time after the workloads first converge
      controller: {lostAfter: 3s}
      agents: {reportInterval: 0.5s}
      topology:
        sites:
          - {name: a, nodes: 2, labels: {region: eu}, link: {latency: 20ms}}
      workloads:
        - native: {apiVersion: edgefed.io/v1, kind: Deployment, ...}
      faults:
        - {at: 2s, action: kill-node, node: a-1}
      assertions: {maxDetection: 2s, maxRecovery: 10s, lostSlots: 0, ...}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from policies.errors import FieldPath, PolicyError, Problem, Problems, format_path, kind_of
from policies.loader import (
    MAX_FILE_BYTES,
    Position,
    _Builder,
    _compose_all,
    _locate,
    _measure,
    _position,
    _Refused,
    _syntax_message,
)

API_VERSION = "edgefed.io/v1"
KIND = "Drill"
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$")
MAX_DURATION = 600.0
# A fault's node or site may be "@web/0": where that slot runs when the first fault
# naming it is injected (the same node or site for every later fault naming it).
SLOT_REF_RE = re.compile(r"^@[a-z0-9]([a-z0-9-]*[a-z0-9])?/[0-9]+$")

# What each fault action needs besides ``at``; the harness maps each to a mechanism.
NODE_ACTIONS = ("kill-node", "hang-node", "resume-node", "restart-node")
LINK_ACTIONS = ("cut-link", "restore-link", "degrade-link", "flap-link", "reset-link")
PROCESS_ACTIONS = ("restart-broker", "crash-broker", "restart-controller", "crash-controller")
WORKLOAD_ACTIONS = ("scale",)  # not a fault: makes commands flow while faults are on
ACTIONS = NODE_ACTIONS + LINK_ACTIONS + PROCESS_ACTIONS + WORKLOAD_ACTIONS
WORKLOAD_KINDS = ("native", "kubernetes", "compose")


class DrillError(PolicyError):
    """A drill file that cannot be run; ``problems`` say where and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """A site's link to the broker. Zero means "as the machine gives it"."""

    latency: float = 0.0  # seconds, one way
    jitter: float = 0.0  # seconds
    loss: float = 0.0  # 0..1: share of chunks that stall (TCP hides real loss as delay)
    bandwidth: int = 0  # bytes per second; 0 = unlimited

    @property
    def shaped(self) -> bool:
        return bool(self.latency or self.jitter or self.loss or self.bandwidth)


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteSpec:
    name: str
    nodes: int
    labels: dict[str, str] = field(default_factory=dict)
    link: Link = field(default_factory=Link)

    def node_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(1, self.nodes + 1)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    kind: str  # native | kubernetes | compose
    text: str  # the document, as YAML, for the policy loader
    where: str  # file:line it came from, for errors at apply time


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    at: float  # seconds after the workloads first converged
    action: str
    node: str = ""
    site: str = ""
    link: Link = field(default_factory=Link)
    down: float = 0.0  # restart-*: seconds the process stays down
    period: float = 0.0  # flap-link: seconds per cut and per restore
    times: int = 0  # flap-link: how many cuts
    fresh_database: bool = False  # restart-controller: on an empty database (state lost)
    deployment: str = ""  # scale: which workload
    replicas: int = 0  # scale: to how many

    @property
    def target(self) -> str:
        if self.deployment:
            return f"deployment {self.deployment}"
        if self.node:
            return f"node {self.node}"
        if self.site:
            return f"site {self.site}"
        return self.action.split("-", 1)[1]

    @property
    def ends_at(self) -> float:
        if self.action == "flap-link":
            return self.at + 2 * self.period * self.times
        return self.at + self.down


@dataclass(frozen=True, slots=True, kw_only=True)
class Assertions:
    """Bounds checked from the log after the run; None = not checked."""

    max_detection: float | None = None
    max_recovery: float | None = None
    lost_slots: int | None = 0
    duplicate_live_instances: int | None = 0
    max_reschedules: int | None = None
    max_command_latency: float | None = None
    # Deployments that must never have two live instances, even across a partition
    # (singletons): their out-of-contact instances count too.
    singletons: tuple[str, ...] = ()
    # Overlaps this short of a node trusted again while its agent stops what was
    # superseded are measured and reported, not violations (never for singletons).
    duplicate_tolerance: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Drill:
    name: str
    description: str = ""
    duration: float
    lost_after: float = 3.0
    controller_args: tuple[str, ...] = ()
    report_interval: float = 0.5
    sites: tuple[SiteSpec, ...]
    workloads: tuple[Workload, ...]
    faults: tuple[Fault, ...]
    assertions: Assertions = field(default_factory=Assertions)
    source: str = ""

    def nodes(self) -> dict[str, SiteSpec]:
        return {node: site for site in self.sites for node in site.node_names()}


# -- values --------------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m)?\s*$")
_RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(bit|kbit|mbit|gbit|b|kb|mb|gb)?\s*$",
                      re.IGNORECASE)
_RATE_UNITS = {"bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
               "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9}


def parse_duration(value: Any) -> float:
    """``2s``, ``500ms``, ``1m`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 2s or 500ms, found {kind_of(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m[2]]
    else:
        raise ValueError(f"expected a duration like 2s or 500ms, found {value!r}")
    if seconds < 0 or seconds > MAX_DURATION:
        raise ValueError(f"{value!r} is outside 0..{MAX_DURATION:g} s")
    return seconds


def parse_rate(value: Any) -> int:
    """``1mbit``, ``64kb`` (bytes) or a number of bytes per second."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _RATE_RE.match(value)):
        return int(float(m[1]) * _RATE_UNITS[(m[2] or "b").lower()])
    raise ValueError(f"expected a rate like 1mbit or 64kb, found {value!r}")


class _Reader:
    """Typed access to one mapping of the document; problems go to ``found``."""

    def __init__(self, value: Any, path: FieldPath, found: Problems,
                 known: tuple[str, ...]) -> None:
        self.path = path
        self.found = found
        self.value: dict[str, Any] = value if isinstance(value, dict) else {}
        if not isinstance(value, dict):
            found.error(path, f"expected a mapping, found {kind_of(value)}")
        for key in self.value:
            if key not in known:
                found.error((*path, key), f"unknown field; expected one of {', '.join(known)}")

    def get(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        if key not in self.value:
            if required:
                self.found.error((*self.path, key), "is required")
            return default
        return self.value[key]

    def convert(self, key: str, parse: Any, default: Any, *, required: bool = False) -> Any:
        raw = self.get(key, None, required=required)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            self.found.error((*self.path, key), str(exc))
            return default

    def text(self, key: str, default: str = "", *, required: bool = False) -> str:
        raw = self.get(key, None, required=required)
        if raw is None:
            return default
        if not isinstance(raw, str):
            self.found.error((*self.path, key), f"expected a string, found {kind_of(raw)}")
            return default
        return raw

    def count(self, key: str, default: int, *, low: int, high: int) -> int:
        raw = self.get(key, None)
        if raw is None:
            return default
        if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
            self.found.error((*self.path, key), f"expected an integer {low}..{high}, "
                             f"found {raw!r}")
            return default
        return raw

    def items(self, key: str, *, required: bool = False) -> list[Any]:
        raw = self.get(key, None, required=required)
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.found.error((*self.path, key), f"expected a list, found {kind_of(raw)}")
            return []
        return raw


def _fraction(value: Any) -> float:
    if isinstance(value, str) and value.strip().endswith("%"):
        value = float(value.strip()[:-1]) / 100
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"expected a share 0..1 or a percentage, found {value!r}")
    return float(value)


def _link(value: Any, path: FieldPath, found: Problems) -> Link:
    r = _Reader(value, path, found, ("latency", "jitter", "loss", "bandwidth"))
    return Link(latency=r.convert("latency", parse_duration, 0.0),
                jitter=r.convert("jitter", parse_duration, 0.0),
                loss=r.convert("loss", _fraction, 0.0),
                bandwidth=r.convert("bandwidth", parse_rate, 0))


def _sites(r: _Reader, found: Problems) -> tuple[SiteSpec, ...]:
    sites = []
    seen: set[str] = set()
    for i, item in enumerate(r.items("sites", required=True)):
        path = (*r.path, "sites", i)
        s = _Reader(item, path, found, ("name", "nodes", "labels", "link"))
        name = s.text("name", required=True)
        if name and not NAME_RE.match(name):
            found.error((*path, "name"), f"{name!r} must be lower-case letters, digits and '-'")
        elif name in seen:
            found.error((*path, "name"), f"site {name!r} is declared twice")
        seen.add(name)
        labels = s.get("labels", {}) or {}
        if not isinstance(labels, dict) or not all(isinstance(v, str | int | float)
                                                   for v in labels.values()):
            found.error((*path, "labels"), "expected a mapping of label to value")
            labels = {}
        sites.append(SiteSpec(name=name, nodes=s.count("nodes", 1, low=1, high=20),
                              labels={str(k): str(v) for k, v in labels.items()},
                              link=_link(s.get("link", {}) or {}, (*path, "link"), found)))
    if not sites and "sites" in r.value:
        found.error((*r.path, "sites"), "at least one site is needed")
    return tuple(sites)


def _workloads(r: _Reader, found: Problems, file: str,
               positions: dict[FieldPath, Position]) -> tuple[Workload, ...]:
    out = []
    for i, item in enumerate(r.items("workloads", required=True)):
        path = (*r.path, "workloads", i)
        w = _Reader(item, path, found, WORKLOAD_KINDS)
        given = [k for k in WORKLOAD_KINDS if k in w.value]
        if len(given) != 1:
            found.error(path, f"give exactly one of {', '.join(WORKLOAD_KINDS)}")
            continue
        kind = given[0]
        document = w.value[kind]
        if not isinstance(document, dict):
            found.error((*path, kind), f"expected the {kind} document as a mapping, "
                        f"found {kind_of(document)}")
            continue
        line, _ = _locate((*path, kind), positions)
        out.append(Workload(kind=kind, text=yaml.safe_dump(document, sort_keys=False),
                            where=f"{file}:{line}"))
    return tuple(out)


def _fault(item: Any, path: FieldPath, found: Problems, nodes: set[str],
           sites: set[str]) -> Fault | None:
    f = _Reader(item, path, found, ("at", "action", "node", "site", "latency", "jitter",
                                    "loss", "bandwidth", "down", "period", "times",
                                    "freshDatabase", "deployment", "replicas"))
    action = f.text("action", required=True)
    if action and action not in ACTIONS:
        found.error((*path, "action"), f"unknown action {action!r}; expected one of "
                    f"{', '.join(ACTIONS)}")
        return None
    node, site = f.text("node"), f.text("site")
    if action in NODE_ACTIONS:
        if not node:
            found.error((*path, "node"), f"{action} needs the node it acts on")
        elif node not in nodes and not SLOT_REF_RE.match(node):
            found.error((*path, "node"), f"no node {node!r} in the topology "
                        f"(nodes: {', '.join(sorted(nodes))}; or @DEPLOYMENT/SLOT)")
    if action in LINK_ACTIONS:
        if not site:
            found.error((*path, "site"), f"{action} needs the site whose link it acts on")
        elif site not in sites and not SLOT_REF_RE.match(site):
            found.error((*path, "site"), f"no site {site!r} in the topology "
                        f"(sites: {', '.join(sorted(sites))}; or @DEPLOYMENT/SLOT)")
    shaping = {k: f.value[k] for k in ("latency", "jitter", "loss", "bandwidth")
               if k in f.value}
    if shaping and action != "degrade-link":
        found.error((*path, next(iter(shaping))), "only degrade-link takes link properties")
    link = _link(shaping, path, found)
    if action == "degrade-link" and not link.shaped:
        found.error(path, "degrade-link needs at least one of latency, jitter, loss, bandwidth")
    fault = Fault(at=f.convert("at", parse_duration, 0.0, required=True), action=action,
                  node=node, site=site, link=link,
                  down=f.convert("down", parse_duration, 0.0),
                  period=f.convert("period", parse_duration, 0.0),
                  times=f.count("times", 0, low=0, high=50),
                  fresh_database=f.get("freshDatabase", False) is True,
                  deployment=f.text("deployment", required=action == "scale"),
                  replicas=f.count("replicas", 0, low=0, high=1000))
    if action == "scale" and "replicas" not in f.value:
        found.error((*path, "replicas"), "scale needs the number of replicas")
    if "freshDatabase" in f.value and action != "restart-controller":
        found.error((*path, "freshDatabase"), "only restart-controller takes freshDatabase")
    if action == "flap-link" and (fault.period <= 0 or fault.times < 1):
        found.error(path, "flap-link needs period (> 0) and times (>= 1)")
    return fault


def _assertions(value: Any, path: FieldPath, found: Problems) -> Assertions:
    r = _Reader(value, path, found, ("maxDetection", "maxRecovery", "lostSlots",
                                     "duplicateLiveInstances", "maxReschedules",
                                     "maxCommandLatency", "singletons", "duplicateTolerance"))
    singletons = r.items("singletons")
    if not all(isinstance(n, str) for n in singletons):
        found.error((*path, "singletons"), "expected a list of deployment names")
    return Assertions(max_detection=r.convert("maxDetection", parse_duration, None),
                      max_recovery=r.convert("maxRecovery", parse_duration, None),
                      lost_slots=r.count("lostSlots", 0, low=0, high=10_000),
                      duplicate_live_instances=r.count("duplicateLiveInstances", 0,
                                                       low=0, high=10_000),
                      max_reschedules=r.count("maxReschedules", -1, low=0, high=10_000)
                      if "maxReschedules" in r.value else None,
                      max_command_latency=r.convert("maxCommandLatency", parse_duration, None),
                      singletons=tuple(str(n) for n in singletons),
                      duplicate_tolerance=r.convert("duplicateTolerance", parse_duration, 0.0))


def drill_from_value(value: Any, found: Problems, *, file: str,
                     positions: dict[FieldPath, Position]) -> Drill | None:
    top = _Reader(value, (), found, ("apiVersion", "kind", "metadata", "spec"))
    if top.get("apiVersion", required=True) not in (None, API_VERSION):
        found.error(("apiVersion",), f"expected {API_VERSION}, found {top.value['apiVersion']!r}")
    if top.get("kind", required=True) not in (None, KIND):
        found.error(("kind",), f"expected {KIND}, found {top.value['kind']!r}")
    meta = _Reader(top.get("metadata", {}, required=True), ("metadata",), found,
                   ("name", "description"))
    name = meta.text("name", required=True)
    if name and not NAME_RE.match(name):
        found.error(("metadata", "name"), f"{name!r} must be lower-case letters, digits and '-'")
    spec = _Reader(top.get("spec", {}, required=True), ("spec",), found,
                   ("duration", "controller", "agents", "topology", "workloads", "faults",
                    "assertions"))
    ctl = _Reader(spec.get("controller", {}) or {}, ("spec", "controller"), found,
                  ("lostAfter", "args"))
    args = ctl.items("args")
    if not all(isinstance(a, str) for a in args):
        found.error(("spec", "controller", "args"), "expected a list of strings")
    agents = _Reader(spec.get("agents", {}) or {}, ("spec", "agents"), found,
                     ("reportInterval",))
    topo = _Reader(spec.get("topology", {}, required=True), ("spec", "topology"), found,
                   ("sites",))
    sites = _sites(topo, found)
    nodes = {n for s in sites for n in s.node_names()}
    faults = []
    for i, item in enumerate(spec.items("faults")):
        fault = _fault(item, ("spec", "faults", i), found, nodes, {s.name for s in sites})
        if fault is not None:
            faults.append(fault)
    duration = spec.convert("duration", parse_duration, None, required=True)
    for i, fault in enumerate(faults):
        if duration is not None and fault.ends_at > duration:
            found.error(("spec", "faults", i), f"ends at {fault.ends_at:g} s, after the drill's "
                        f"duration ({duration:g} s)")
    drill = Drill(
        name=name, description=meta.text("description"), duration=duration or 0.0,
        lost_after=ctl.convert("lostAfter", parse_duration, 3.0),
        controller_args=tuple(str(a) for a in args),
        report_interval=agents.convert("reportInterval", parse_duration, 0.5),
        sites=sites, workloads=_workloads(spec, found, file, positions),
        faults=tuple(sorted(faults, key=lambda f: f.at)),
        assertions=_assertions(spec.get("assertions", {}) or {}, ("spec", "assertions"), found),
        source=file,
    )
    return None if found.errors else drill


def load_drill_text(text: str, *, filename: str = "<input>") -> Drill:
    """The one drill in ``text``, or :class:`DrillError` with every problem placed."""
    problems: list[Problem] = []

    def fail(message: str, position: Position | None) -> DrillError:
        line, column = position or (None, None)
        return DrillError([Problem(message=message, file=filename, line=line, column=column)])

    if len(text.encode("utf-8", "replace")) > MAX_FILE_BYTES:
        raise fail(f"larger than {MAX_FILE_BYTES} bytes", (1, 1))
    try:
        roots = list(_compose_all(text))
        if len(roots) != 1:
            raise fail(f"expected one Drill document, found {len(roots)}", (1, 1))
        positions: dict[FieldPath, Position] = {}
        found = Problems()
        _measure(roots[0], 0, {}, set())
        value = _Builder(found, positions).build(roots[0], ())
    except _Refused as exc:
        raise fail(exc.message, exc.position) from None
    except yaml.MarkedYAMLError as exc:
        raise fail(_syntax_message(exc), _position(exc.problem_mark)) from None
    drill = drill_from_value(value, found, file=filename, positions=positions)
    for p in found.items:
        line, column = (p.line, p.column) if p.line is not None else _locate(p.path, positions)
        problems.append(Problem(message=p.message, path=p.path, warning=p.warning,
                                file=filename, line=line, column=column))
    if drill is None or any(not p.warning for p in problems):
        raise DrillError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0)))
    return drill


BUILTIN_DIR = Path(__file__).with_name("builtin")


def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def load_drill(name_or_path: str) -> Drill:
    """A drill file, or a built-in drill by name (``edgefed drill list``)."""
    path = Path(name_or_path)
    filename = str(path)
    if not path.exists() and (BUILTIN_DIR / f"{name_or_path}.yaml").exists():
        path = BUILTIN_DIR / f"{name_or_path}.yaml"
        filename = f"federation/drill/builtin/{path.name}"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        known = ", ".join(builtin_names())
        raise DrillError([Problem(message=f"cannot read: {exc.strerror or exc} (built-in "
                                  f"drills: {known})", file=str(path))]) from None
    except UnicodeDecodeError as exc:
        raise DrillError([Problem(message=f"not UTF-8 text: {exc.reason}",
                                  file=str(path))]) from None
    return load_drill_text(text, filename=filename)


__all__ = ["Assertions", "Drill", "DrillError", "Fault", "Link", "SiteSpec", "Workload",
           "builtin_names", "format_path", "load_drill", "load_drill_text", "parse_duration"]
