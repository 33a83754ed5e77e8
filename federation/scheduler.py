"""Two-phase placement: filter plugins remove nodes that cannot run a replica
(each with a reason), score plugins rank the rest, the best wins.

    request ─▶ filters (every node, every filter: all reasons recorded)
            ─▶ scores  (feasible nodes; 0..100 each, weighted by the policy)
            ─▶ select  (highest total; ties broken by a hash seeded per decision)
            ─▶ Decision(node, explanation)

The explanation is built from the very values that decided, never recomputed.
A :class:`Round` carries what earlier placements in the same reconcile pass
reserved, so a batch of replicas is spread and packed correctly.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from federation.inventory import Node, NodeState, site_labels
from policies.model import Selector
from policies.quantity import format_cpu, human_memory

# -- request and results -------------------------------------------------------


class Scope(StrEnum):
    """Where a required anti-affinity term counts replicas."""

    NODE = "node"
    SITE = "site"


@dataclass(frozen=True, slots=True, kw_only=True)
class Apart:
    """A required anti-affinity term: no replica of a deployment whose labels
    ``selector`` matches may run in the same ``scope`` (itself included)."""

    selector: Selector
    scope: Scope = Scope.NODE


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One replica to place."""

    deployment: str
    slot: int
    generation: int
    labels: Mapping[str, str] = field(default_factory=dict)  # the deployment's
    cpu_millis: int = 0
    memory_bytes: int = 0
    devices: Mapping[str, int] = field(default_factory=dict)  # device kind -> count
    host_ports: tuple[int, ...] = ()
    has_command: bool = False
    node_selector: Selector = field(default_factory=Selector)
    site_selector: Selector = field(default_factory=Selector)
    countries: tuple[str, ...] = ()  # residency: allowed `country` labels; () allows any
    regions: tuple[str, ...] = ()  # residency: allowed `region` labels; () allows any
    max_per_node: int = 0  # replicas of this deployment per node; 0: no limit
    max_per_site: int = 0
    apart: tuple[Apart, ...] = ()
    weights: Mapping[str, float] = field(default_factory=dict)
    current_node: str | None = None  # where the replica runs now, if it is being replaced

    @property
    def seed(self) -> str:
        return f"{self.deployment}/{self.slot}@{self.generation}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """Why one filter refused one node. ``reason`` is the phrase grouped in the
    histogram; ``need``/``free`` carry the numbers of resource reasons."""

    reason: str
    need: int | None = None
    free: int | None = None
    unit: str = ""  # "cpu" | "memory" | "count" (devices) when need/free are set


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
        text = f"{head}; chose {best.node} (site {best.site}) score {best.total:.1f} ({scores})"
        if len(self.ranked) > 1:
            runner = self.ranked[1]
            text += f"; runner-up {runner.node} {runner.total:.1f}"
        if self.rejections:
            text += f"; refused: {self.histogram()}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
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


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    request: Request
    node: str | None
    site: str | None
    explanation: Explanation


# -- the round: nodes plus what this pass has reserved -------------------------


@dataclass(slots=True, kw_only=True)
class Usage:
    cpu_millis: int = 0
    memory_bytes: int = 0
    host_ports: frozenset[int] = frozenset()
    devices: Mapping[str, int] = field(default_factory=dict)

    def plus(self, req: Request) -> Usage:
        """This usage with ``req``'s requests added."""
        devices = dict(self.devices)
        for kind, count in req.devices.items():
            devices[kind] = devices.get(kind, 0) + count
        return Usage(cpu_millis=self.cpu_millis + req.cpu_millis,
                     memory_bytes=self.memory_bytes + req.memory_bytes,
                     host_ports=self.host_ports | frozenset(req.host_ports), devices=devices)


@dataclass
class Round:
    """Candidate nodes and their committed usage for one scheduling pass.

    ``committed`` is what the controller has already assigned to each node
    (desired state), so capacity reports lagging behind commands do not let a
    node be over-committed. ``placed`` counts replicas per deployment and node;
    ``deployment_labels`` holds the labels anti-affinity matches.
    """

    nodes: Sequence[Node]
    committed: dict[str, Usage] = field(default_factory=dict)
    placed: dict[str, Counter[str]] = field(default_factory=dict)
    deployment_labels: dict[str, Mapping[str, str]] = field(default_factory=dict)
    # Reserved by placements in this round: always on top of what is already used.
    reserved: dict[str, Usage] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_name = {n.name: n for n in self.nodes}
        by_site: dict[str, list[Node]] = {}
        for n in self.nodes:
            by_site.setdefault(n.site, []).append(n)
        self.site_labels = {s: site_labels(s, members) for s, members in by_site.items()}
        self.node_labels = {n.name: n.labels for n in self.nodes}

    def usage(self, node: Node) -> Usage:
        """What is taken on ``node``: the larger of what the controller committed
        and what the agent reports, plus what this round reserved."""
        reported = node.capacity.used if node.capacity else None
        mine = self.committed.get(node.name, Usage())
        extra = self.reserved.get(node.name, Usage())
        cpu, mem = mine.cpu_millis, mine.memory_bytes
        if reported is not None:
            cpu, mem = max(cpu, reported.cpu_millis), max(mem, reported.memory_bytes)
        devices = dict(mine.devices)
        for kind, count in extra.devices.items():
            devices[kind] = devices.get(kind, 0) + count
        return Usage(cpu_millis=cpu + extra.cpu_millis, memory_bytes=mem + extra.memory_bytes,
                     host_ports=mine.host_ports | extra.host_ports, devices=devices)

    def free(self, node: Node) -> tuple[int, int]:
        used = self.usage(node)
        alloc = node.allocatable
        return alloc.cpu_millis - used.cpu_millis, alloc.memory_bytes - used.memory_bytes

    def free_devices(self, node: Node, kind: str) -> int:
        """Devices of ``kind`` the agent reports, less those slots hold. Agents do not
        report what their instances use, so the committed count is all there is."""
        reported = node.capacity.devices.get(kind, 0) if node.capacity else 0
        return reported - self.usage(node).devices.get(kind, 0)

    def reserve(self, request: Request, node: str) -> None:
        self.reserved[node] = self.reserved.get(node, Usage()).plus(request)
        self.placed.setdefault(request.deployment, Counter())[node] += 1
        self.deployment_labels.setdefault(request.deployment, request.labels)

    def count_on_site(self, deployment: str, site: str) -> int:
        counts = self.placed.get(deployment, Counter())
        return sum(c for n, c in counts.items() if n in self.by_name and self.by_name[n].site == site)

    def count_matching(self, selector: Selector, node: Node, scope: Scope) -> int:
        """Replicas on ``node`` (or its site) of deployments whose labels ``selector`` matches."""
        total = 0
        for deployment, counts in self.placed.items():
            if selector.first_mismatch(self.deployment_labels.get(deployment, {})) is not None:
                continue
            total += (counts[node.name] if scope is Scope.NODE
                      else self.count_on_site(deployment, node.site))
        return total


# -- filters -------------------------------------------------------------------

Filter = Callable[[Request, Node, Round], list[Rejection]]


def node_ready_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    if node.state is NodeState.READY:
        return []
    return [Rejection(reason=f"node {node.state.value}")]


def runtime_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    runtime = node.capacity.runtime if node.capacity else ""
    if runtime == "process" and not req.has_command:
        return [Rejection(reason="runtime is process, which needs a command")]
    return []


_ARCH_KEYS = ("arch", "os")


def platform_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    """arch and os requirements written as node-selector labels, with their own reason."""
    out = []
    labels = rnd.node_labels[node.name]
    for key in _ARCH_KEYS:
        want = req.node_selector.match_labels.get(key)
        if want is not None and labels.get(key) != want:
            out.append(Rejection(reason=f"{key} is {labels.get(key)} not {want}"))
    return out


def node_selector_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    sel = req.node_selector
    if sel.empty:
        return []
    rest = Selector(match_labels={k: v for k, v in sel.match_labels.items() if k not in _ARCH_KEYS},
                    match_expressions=sel.match_expressions)
    miss = rest.first_mismatch(rnd.node_labels[node.name])
    return [] if miss is None else [Rejection(reason=f"node selector unmatched ({miss})")]


def site_selector_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    if req.site_selector.empty:
        return []
    miss = req.site_selector.first_mismatch(rnd.site_labels[node.site])
    return [] if miss is None else [Rejection(reason=f"site selector unmatched ({miss})")]


_RESIDENCY_LABELS = ("country", "region")


def residency_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    """The node's ``country`` and ``region`` labels must be allowed (compared
    without case); a node without the label cannot prove where it is."""
    out = []
    labels = rnd.node_labels[node.name]
    for key, allowed in zip(_RESIDENCY_LABELS, (req.countries, req.regions), strict=True):
        if not allowed:
            continue
        have = labels.get(key)
        if have is None:
            out.append(Rejection(reason=f"no {key} label, residency requires one"))
        elif have.casefold() not in {a.casefold() for a in allowed}:
            out.append(Rejection(reason=f"{key} is {have}, residency allows {','.join(allowed)}"))
    return out


def resources_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    """Reports every dimension that does not fit, not only the first."""
    free_cpu, free_mem = rnd.free(node)
    out = []
    if req.cpu_millis > free_cpu:
        out.append(Rejection(reason="insufficient cpu", need=req.cpu_millis,
                             free=max(free_cpu, 0), unit="cpu"))
    if req.memory_bytes > free_mem:
        out.append(Rejection(reason="insufficient memory", need=req.memory_bytes,
                             free=max(free_mem, 0), unit="memory"))
    return out


def devices_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    """Every device kind that does not fit, like ``resources``."""
    out = []
    for kind, need in sorted(req.devices.items()):
        free = rnd.free_devices(node, kind)
        if need > free:
            out.append(Rejection(reason=f"insufficient {kind}", need=need, free=max(free, 0),
                                 unit="count"))
    return out


def host_port_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    if not req.host_ports:
        return []
    taken = rnd.usage(node).host_ports
    clash = sorted(set(req.host_ports) & taken)
    return [Rejection(reason=f"host port {clash[0]} in use")] if clash else []


def _replicas(count: int) -> str:
    return f"{count} replica{'' if count == 1 else 's'}"


def max_per_node_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    if req.max_per_node <= 0:
        return []
    count = rnd.placed.get(req.deployment, Counter())[node.name]
    if count < req.max_per_node:
        return []
    return [Rejection(reason=f"{_replicas(count)} already on the node, "
                             f"maxPerNode {req.max_per_node}")]


def max_per_site_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    if req.max_per_site <= 0:
        return []
    count = rnd.count_on_site(req.deployment, node.site)
    if count < req.max_per_site:
        return []
    return [Rejection(reason=f"{_replicas(count)} already on the site, "
                             f"maxPerSite {req.max_per_site}")]


def describe_selector(selector: Selector) -> str:
    """``app=web,tier In (a,b)``; ``any deployment`` for the empty selector."""
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    parts += [e.describe() for e in selector.match_expressions]
    return ",".join(parts) or "any deployment"


def anti_affinity_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    return [Rejection(reason=f"anti-affinity with {describe_selector(term.selector)} on the "
                             f"{term.scope.value}")
            for term in req.apart if rnd.count_matching(term.selector, node, term.scope)]


FILTERS: dict[str, Filter] = {
    "node-ready": node_ready_checker,
    "runtime": runtime_checker,
    "platform": platform_checker,
    "node-selector": node_selector_checker,
    "site-selector": site_selector_checker,
    "residency": residency_checker,
    "resources": resources_checker,
    "devices": devices_checker,
    "host-ports": host_port_checker,
    "max-per-node": max_per_node_checker,
    "max-per-site": max_per_site_checker,
    "anti-affinity": anti_affinity_checker,
}
# What a placed replica must still pass to stay where it runs, checked again on
# every pass: the rules on the node's labels, and the per-node and per-site limits
# (counted in slot order, so the highest slots move first). A replica that fails
# (its placement or a policy changed, or the node's labels) is placed again.
# Resources, ports and anti-affinity are checked only when a replica is placed.
STAY_FILTERS = ("platform", "node-selector", "site-selector", "residency", "max-per-node",
                "max-per-site")


def refusals(req: Request, node: Node, rnd: Round, names: Iterable[str] = FILTERS) -> list[Rejection]:
    """What the named filters (all by default) say against ``node``."""
    return [r for name in names for r in FILTERS[name](req, node, rnd)]

# -- scores (0..100, higher is better) -----------------------------------------

Score = Callable[[Request, Node, Round], float]


def least_allocated(req: Request, node: Node, rnd: Round) -> float:
    free_cpu, free_mem = rnd.free(node)
    alloc = node.allocatable
    parts = []
    if alloc.cpu_millis > 0:
        parts.append((free_cpu - req.cpu_millis) / alloc.cpu_millis)
    if alloc.memory_bytes > 0:
        parts.append((free_mem - req.memory_bytes) / alloc.memory_bytes)
    return 100.0 * max(0.0, sum(parts) / len(parts)) if parts else 0.0


def spread_sites(req: Request, node: Node, rnd: Round) -> float:
    return 100.0 / (1 + rnd.count_on_site(req.deployment, node.site))


def spread_nodes(req: Request, node: Node, rnd: Round) -> float:
    return 100.0 / (1 + rnd.placed.get(req.deployment, Counter())[node.name])


def stay_put(req: Request, node: Node, rnd: Round) -> float:
    """A replacement (new template) stays where its predecessor ran if it still fits."""
    return 100.0 if node.name == req.current_node else 0.0


SCORES: dict[str, Score] = {
    "least-allocated": least_allocated,
    "spread-sites": spread_sites,
    "spread-nodes": spread_nodes,
    "stay-put": stay_put,
}
DEFAULT_WEIGHTS: dict[str, float] = {
    "least-allocated": 1.0, "spread-sites": 2.0, "spread-nodes": 1.0, "stay-put": 10.0}


# -- compose -------------------------------------------------------------------


def _tie_break(seed: str, node: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}|{node}".encode(), digest_size=8).digest(), "big")


_UNIT_FORMATS: dict[str, Callable[[int], str]] = {
    "cpu": format_cpu, "memory": human_memory, "count": str}


def _resource_detail(rejections: list[Rejection]) -> str:
    need = max(r.need or 0 for r in rejections)
    free = max(r.free or 0 for r in rejections)
    fmt = _UNIT_FORMATS[rejections[0].unit]
    return f"(need {fmt(need)}, most free {fmt(free)})"


def place(req: Request, rnd: Round, *, keep: int = 3) -> Decision:
    """Filter, score and select a node for one replica; reserve it in ``rnd``."""
    rejections: Counter[str] = Counter()
    by_reason: dict[str, list[Rejection]] = {}
    feasible: list[Node] = []
    for node in rnd.nodes:
        refused = refusals(req, node, rnd)
        if not refused:
            feasible.append(node)
        for r in refused:
            rejections[r.reason] += 1
            by_reason.setdefault(r.reason, []).append(r)
    details = {reason: _resource_detail(rs) for reason, rs in by_reason.items() if rs[0].unit}
    weights = {**DEFAULT_WEIGHTS, **{k: v for k, v in req.weights.items() if k in SCORES}}
    if req.current_node is None:
        del weights["stay-put"]  # nothing to stay with: the plugin does not apply
    weight_sum = sum(weights.values()) or 1.0
    ranked = []
    for node in feasible:
        scores = {name: SCORES[name](req, node, rnd) for name in weights}
        total = sum(weights[name] * s for name, s in scores.items()) / weight_sum
        ranked.append(Ranked(node=node.name, site=node.site, total=total, scores=scores))
    ranked.sort(key=lambda r: (-r.total, _tie_break(req.seed, r.node)))
    explanation = Explanation(total_nodes=len(rnd.nodes), feasible=len(feasible),
                              rejections=dict(rejections), details=details,
                              ranked=tuple(ranked[:keep]))
    if not ranked:
        return Decision(request=req, node=None, site=None, explanation=explanation)
    best = ranked[0]
    rnd.reserve(req, best.node)
    return Decision(request=req, node=best.node, site=best.site, explanation=explanation)
