"""The reference for ``bench/scheduler.py``: the scheduler's filters and scores
written as a plain Python loop over nodes, one node and one rule at a time, as
the scheduler was before it worked on arrays. Same rules, same formulas, same
tie-break hash; no numpy on the hot path, no caching between placements.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from federation.inventory import Node, NodeState, site_labels
from federation.scheduler import DEFAULT_WEIGHTS, Apart, Request, RttSource, Scope
from policies.model import Selector, TaintEffect, Toleration, TolerationOperator

MASK = (1 << 64) - 1
TAINT = "taint.edgefed.io/"


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _tie(seed: int, node_hash: int) -> int:
    z = node_hash ^ seed
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def _tolerates(tolerations: Sequence[Toleration], key: str, value: str,
               effect: TaintEffect) -> bool:
    for t in tolerations:
        if t.effect is not None and t.effect is not effect:
            continue
        if t.operator is TolerationOperator.EXISTS and (not t.key or t.key == key):
            return True
        if t.operator is TolerationOperator.EQUAL and t.key == key and t.value == value:
            return True
    return False


def _taints(labels: Mapping[str, str]) -> list[tuple[str, str, TaintEffect]]:
    out = []
    for k, v in labels.items():
        value, sep, effect = v.rpartition(":")
        if k.startswith(TAINT) and sep and effect in TaintEffect.__members__.values():
            out.append((k[len(TAINT):], value, TaintEffect(effect)))
    return out


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


class LoopRound:
    def __init__(self, nodes: Sequence[Node], rtt: RttSource | None) -> None:
        self.nodes = list(nodes)
        self.rtt = rtt
        by_site: dict[str, list[Node]] = {}
        for n in self.nodes:
            by_site.setdefault(n.site, []).append(n)
        self.site_labels = {s: site_labels(s, m) for s, m in by_site.items()}
        self.labels = {n.name: n.labels for n in self.nodes}
        self.free: dict[str, list[int]] = {}
        for n in self.nodes:
            used = n.capacity.used if n.capacity else None
            alloc = n.allocatable
            self.free[n.name] = [alloc.cpu_millis - (used.cpu_millis if used else 0),
                                 alloc.memory_bytes - (used.memory_bytes if used else 0)]
        self.ports: dict[str, set[int]] = {n.name: set() for n in self.nodes}
        self.placed: dict[str, Counter[str]] = {}
        self.deployment_labels: dict[str, Mapping[str, str]] = {}
        self.deployment_apart: dict[str, tuple[Apart, ...]] = {}
        self.node_hash = {n.name: _hash(n.name) for n in self.nodes}
        self.by_name = {n.name: n for n in self.nodes}
        self.by_domain: dict[tuple[str, Scope, str], int] = {}
        self.rtt_now: dict[str, dict[str, float]] = {}

    def domain(self, node: Node, scope: Scope) -> str | None:
        if scope is Scope.NODE:
            return node.name
        if scope is Scope.SITE:
            return node.site
        return self.labels[node.name].get(scope.value)

    def count(self, deployment: str, node: Node, scope: Scope) -> int:
        want = self.domain(node, scope)
        if want is None:
            return 0
        return self.by_domain.get((deployment, scope, want), 0)

    def matching(self, selector: Selector, node: Node, scope: Scope) -> int:
        return sum(self.count(d, node, scope) for d in self.placed
                   if selector.matches(self.deployment_labels.get(d, {})))

    def rtt_of(self, source: str, node: Node) -> float:
        """Asked of the source once per source and placement (``loop_place`` clears it)."""
        if self.rtt is None:
            return math.nan
        if source not in self.rtt_now:
            values = self.rtt.rtt_from(source, [n.name for n in self.nodes])
            self.rtt_now[source] = {n.name: float(v) for n, v in zip(self.nodes, values,
                                                                      strict=True)}
        return self.rtt_now[source][node.name]

    def reserve(self, req: Request, node: Node) -> None:
        self.free[node.name][0] -= req.cpu_millis
        self.free[node.name][1] -= req.memory_bytes
        self.ports[node.name] |= set(req.host_ports)
        self.placed.setdefault(req.deployment, Counter())[node.name] += 1
        self.deployment_labels.setdefault(req.deployment, req.labels)
        if req.apart:
            self.deployment_apart.setdefault(req.deployment, req.apart)
        for scope in Scope:
            domain = self.domain(node, scope)
            if domain is not None:
                key = (req.deployment, scope, domain)
                self.by_domain[key] = self.by_domain.get(key, 0) + 1


def _refused(req: Request, node: Node, rnd: LoopRound) -> bool:
    """Every filter but spread; True if any refuses."""
    labels = rnd.labels[node.name]
    site = rnd.site_labels[node.site]
    cap = node.capacity
    if node.state is not NodeState.READY:
        return True
    if cap is not None and cap.runtime == "process" and not req.has_command:
        return True
    for key in ("arch", "os"):
        want = req.node_selector.match_labels.get(key)
        if want is not None and labels.get(key) != want:
            return True
    rest = Selector(match_labels={k: v for k, v in req.node_selector.match_labels.items()
                                  if k not in ("arch", "os")},
                    match_expressions=req.node_selector.match_expressions)
    if not rest.matches(labels) or not req.site_selector.matches(site):
        return True
    for key, allowed in (("country", req.countries), ("region", req.regions)):
        if allowed and (labels.get(key) or "\0").casefold() not in {a.casefold() for a in allowed}:
            return True
    for key, value, effect in _taints(labels) + _taints(site):
        if effect is not TaintEffect.PREFER_NO_SCHEDULE and not _tolerates(
                req.tolerations, key, value, effect):
            return True
    for users in req.users:
        if users.max_rtt_ms is not None:
            rtt = rnd.rtt_of(users.source, node)
            if math.isnan(rtt) or rtt > users.max_rtt_ms:
                return True
    free_cpu, free_mem = rnd.free[node.name]
    if req.cpu_millis > free_cpu or req.memory_bytes > free_mem:
        return True
    if set(req.host_ports) & rnd.ports[node.name]:
        return True
    placed = rnd.placed.get(req.deployment, Counter())
    if req.max_per_node and placed[node.name] >= req.max_per_node:
        return True
    if req.max_per_site and rnd.count(req.deployment, node, Scope.SITE) >= req.max_per_site:
        return True
    for term in req.apart:
        if rnd.matching(term.selector, node, term.scope):
            return True
    for other, terms in rnd.deployment_apart.items():  # what shuns this replica
        if other != req.deployment and any(term.selector.matches(req.labels)
                                           and rnd.count(other, node, term.scope) for term in terms):
            return True
    for near in req.near:
        anywhere = any(rnd.placed.get(d) for d in rnd.placed
                       if near.selector.matches(rnd.deployment_labels.get(d, {})))
        if not anywhere and near.selector.matches(req.labels):
            continue
        if not rnd.matching(near.selector, node, near.scope):
            return True
    return False


def _spread_lows(req: Request, rnd: LoopRound, fits: list[Node]) -> dict[int, int]:
    """Per required constraint: replicas in the emptiest domain with a node that fits."""
    lows = {}
    for k, spread in enumerate(req.spread):
        if spread.required:
            counts = [rnd.count(req.deployment, n, spread.scope) for n in fits
                      if rnd.domain(n, spread.scope) is not None]
            if counts:
                lows[k] = min(counts)
    return lows


def _spread_ok(req: Request, node: Node, rnd: LoopRound, lows: dict[int, int]) -> bool:
    for k, spread in enumerate(req.spread):
        if not spread.required:
            continue
        if rnd.domain(node, spread.scope) is None:
            return False
        if k in lows and rnd.count(req.deployment, node, spread.scope) + 1 - lows[k] > \
                spread.max_skew:
            return False
    return True


def _lower_is_better(values: dict[str, float]) -> dict[str, float]:
    known = [v for v in values.values() if not math.isnan(v)]
    if not known:
        return dict.fromkeys(values, 0.0)
    low, high = min(known), max(known)
    return {k: 0.0 if math.isnan(v) else (100.0 * (high - v) / (high - low) if high > low
                                         else 100.0) for k, v in values.items()}


def _scores(req: Request, node: Node, rnd: LoopRound, ctx: dict[str, Any]) -> dict[str, float]:
    labels = rnd.labels[node.name]
    alloc = node.allocatable
    free_cpu, free_mem = rnd.free[node.name]
    out: dict[str, float] = {}
    parts = [(free_cpu - req.cpu_millis) / alloc.cpu_millis] if alloc.cpu_millis > 0 else []
    if alloc.memory_bytes > 0:
        parts.append((free_mem - req.memory_bytes) / alloc.memory_bytes)
    out["least-allocated"] = 100.0 * max(0.0, sum(parts) / len(parts)) if parts else 0.0
    out["headroom"] = 100.0 * max(0.0, min(parts)) if len(parts) == 2 else 0.0
    levels, total = 1, 100.0 / (1 + rnd.count(req.deployment, node, Scope.SITE))
    for scope in (Scope.REGION, Scope.PROVIDER):
        if labels.get(scope.value) is not None:
            levels += 1
            total += 100.0 / (1 + rnd.count(req.deployment, node, scope))
    out["spread-sites"] = total / levels
    out["spread-nodes"] = 100.0 / (1 + rnd.placed.get(req.deployment, Counter())[node.name])
    if req.current_node is not None:
        out["stay-put"] = 100.0 if node.name == req.current_node else 0.0
    if req.users:
        shares = sum(u.share for u in req.users) or 1.0
        out["user-rtt"] = sum(u.share * ctx["rtt"][u.name][node.name] for u in req.users) / shares
    if req.data_sets:
        total = 0.0
        for name in req.data_sets:
            key = "data.edgefed.io/" + name
            total += 100.0 if key in labels else (50.0 if node.site in ctx["data"][name] else 0.0)
        out["data-locality"] = total / len(req.data_sets)
    if ctx["image"]:
        out["image-locality"] = 100.0 if node.capacity and req.image in node.capacity.images \
            else 0.0
    if alloc.cpu_millis > 0 and alloc.memory_bytes > 0:
        used_cpu = (alloc.cpu_millis - free_cpu + req.cpu_millis) / alloc.cpu_millis
        used_mem = (alloc.memory_bytes - free_mem + req.memory_bytes) / alloc.memory_bytes
        out["balanced"] = 100.0 * min(1.0, max(0.0, 1.0 - abs(used_cpu - used_mem)))
    else:
        out["balanced"] = 0.0
    preferred = [s for s in req.spread if not s.required]
    if preferred:
        total = 0.0
        for spread in preferred:
            if rnd.domain(node, spread.scope) is not None:
                low = ctx["low"][spread.scope]
                total += 100.0 / (1 + rnd.count(req.deployment, node, spread.scope) - low)
        out["topology-spread"] = total / len(preferred)
    if req.preferences:
        weights = sum(p.weight for p in req.preferences) or 1
        got = sum(p.weight for p in req.preferences
                  if (rnd.matching(p.selector, node, p.scope) > 0) != p.apart)
        out["affinity"] = 100.0 * got / weights
    if ctx["cost"] is not None:
        out["cost"] = ctx["cost"][node.name]
    if ctx["soft"]:
        soft = any(e is TaintEffect.PREFER_NO_SCHEDULE and not _tolerates(req.tolerations, k, v, e)
                   for k, v, e in _taints(labels) + _taints(rnd.site_labels[node.site]))
        out["prefer-no-schedule"] = 0.0 if soft else 100.0
    return out


def _context(req: Request, rnd: LoopRound) -> dict[str, Any]:
    """What scores compare across nodes: RTT and price ranges, data set sites,
    the emptiest spread domains."""
    ctx: dict[str, Any] = {
        "rtt": {u.name: _lower_is_better({n.name: rnd.rtt_of(u.source, n) for n in rnd.nodes})
                for u in req.users},
        "data": {d: {n.site for n in rnd.nodes if "data.edgefed.io/" + d in rnd.labels[n.name]}
                 for d in req.data_sets},
        "image": bool(req.image) and any(n.capacity and req.image in n.capacity.images
                                         for n in rnd.nodes),
    }
    prices = {n.name: _number(rnd.labels[n.name].get("price")) for n in rnd.nodes}
    ctx["cost"] = _lower_is_better(prices) if any(not math.isnan(p) for p in prices.values()) \
        else None
    ctx["soft"] = any(e is TaintEffect.PREFER_NO_SCHEDULE for n in rnd.nodes
                      for _, _, e in _taints(rnd.labels[n.name])
                      + _taints(rnd.site_labels[n.site]))
    low: dict[Scope, int] = {}
    for spread in req.spread:
        domains: dict[str, Node] = {}
        for n in rnd.nodes:
            d = rnd.domain(n, spread.scope)
            if d is not None:
                domains.setdefault(d, n)
        low[spread.scope] = min((rnd.count(req.deployment, n, spread.scope)
                                 for n in domains.values()), default=0)
    ctx["low"] = low
    return ctx


def loop_place(req: Request, rnd: LoopRound) -> str | None:
    """Filter every node, score the ones that fit, take the best, reserve it."""
    rnd.rtt_now = {}
    fits = [n for n in rnd.nodes if not _refused(req, n, rnd)]
    lows = _spread_lows(req, rnd, fits)
    fits = [n for n in fits if _spread_ok(req, n, rnd, lows)]
    if not fits:
        return None
    weights = {**DEFAULT_WEIGHTS, **req.weights}
    ctx = _context(req, rnd)
    seed = _hash(req.seed)
    best: tuple[float, int, Node] | None = None
    for node in fits:
        scores = {k: v for k, v in _scores(req, node, rnd, ctx).items() if weights[k] > 0}
        weight_sum = sum(weights[k] for k in scores) or 1.0
        total = sum(weights[k] * v for k, v in scores.items()) / weight_sum
        key = (-total, _tie(seed, rnd.node_hash[node.name]), node)
        if best is None or key[:2] < best[:2]:
            best = key
    assert best is not None
    rnd.reserve(req, best[2])
    return best[2].name
