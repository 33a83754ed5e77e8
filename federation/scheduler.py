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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from federation.inventory import Node, NodeState, site_labels
from policies.model import Selector
from policies.quantity import format_cpu, human_memory

# -- request and results -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One replica to place."""

    deployment: str
    slot: int
    generation: int
    cpu_millis: int = 0
    memory_bytes: int = 0
    host_ports: tuple[int, ...] = ()
    has_command: bool = False
    node_selector: Selector = field(default_factory=Selector)
    site_selector: Selector = field(default_factory=Selector)
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
    unit: str = ""  # "cpu" | "memory" when need/free are set


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


@dataclass
class Round:
    """Candidate nodes and their committed usage for one scheduling pass.

    ``committed`` is what the controller has already assigned to each node
    (desired state), so capacity reports lagging behind commands do not let a
    node be over-committed. ``placed`` counts replicas per deployment and node.
    """

    nodes: Sequence[Node]
    committed: dict[str, Usage] = field(default_factory=dict)
    placed: dict[str, Counter[str]] = field(default_factory=dict)
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
        return Usage(cpu_millis=cpu + extra.cpu_millis, memory_bytes=mem + extra.memory_bytes,
                     host_ports=mine.host_ports | extra.host_ports)

    def free(self, node: Node) -> tuple[int, int]:
        used = self.usage(node)
        alloc = node.allocatable
        return alloc.cpu_millis - used.cpu_millis, alloc.memory_bytes - used.memory_bytes

    def reserve(self, request: Request, node: str) -> None:
        cur = self.reserved.get(node, Usage())
        self.reserved[node] = Usage(
            cpu_millis=cur.cpu_millis + request.cpu_millis,
            memory_bytes=cur.memory_bytes + request.memory_bytes,
            host_ports=cur.host_ports | frozenset(request.host_ports),
        )
        self.placed.setdefault(request.deployment, Counter())[node] += 1

    def count_on_site(self, deployment: str, site: str) -> int:
        counts = self.placed.get(deployment, Counter())
        return sum(c for n, c in counts.items() if n in self.by_name and self.by_name[n].site == site)


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


def host_port_checker(req: Request, node: Node, rnd: Round) -> list[Rejection]:
    if not req.host_ports:
        return []
    taken = rnd.usage(node).host_ports
    clash = sorted(set(req.host_ports) & taken)
    return [Rejection(reason=f"host port {clash[0]} in use")] if clash else []


FILTERS: dict[str, Filter] = {
    "node-ready": node_ready_checker,
    "runtime": runtime_checker,
    "platform": platform_checker,
    "node-selector": node_selector_checker,
    "site-selector": site_selector_checker,
    "resources": resources_checker,
    "host-ports": host_port_checker,
}

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


def _resource_detail(rejections: list[Rejection]) -> str:
    need = max(r.need or 0 for r in rejections)
    free = max(r.free or 0 for r in rejections)
    fmt = format_cpu if rejections[0].unit == "cpu" else human_memory
    return f"(need {fmt(need)}, most free {fmt(free)})"


def place(req: Request, rnd: Round, *, keep: int = 3) -> Decision:
    """Filter, score and select a node for one replica; reserve it in ``rnd``."""
    rejections: Counter[str] = Counter()
    by_reason: dict[str, list[Rejection]] = {}
    feasible: list[Node] = []
    for node in rnd.nodes:
        refused = [r for check in FILTERS.values() for r in check(req, node, rnd)]
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
