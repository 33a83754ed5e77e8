"""Score plugins: each rates every node 0..100 (higher is better) as one float
vector. A plugin that does not apply to a request (no users declared, no node
holds the image, nothing to stay with) is left out of the weighted sum and of
the explanation, so it neither dilutes the others nor shows as noise.

Static plugins (user RTT, data and image locality, cost, PreferNoSchedule
taints) depend only on the request's spec and the round's nodes and are
computed once per deployment and round. Local plugins (least-allocated,
balanced, spread over nodes) change only on the node a replica is reserved on;
they, and each deployment's weighted sum of them and the static plugins, are
kept for the round and rewritten at the reserved rows only (see ``_kept``).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from federation.scheduling.columns import DATA_PREFIX, PRICE_LABEL, Bools, Floats, Ints, Round
from federation.scheduling.filters import tolerates
from federation.scheduling.request import Request, Scope
from policies.model import TaintEffect


def _lower_is_better(values: Floats) -> Floats:
    """100 for the lowest known value, 0 for the highest, linear between; 0 where
    unknown (nan)."""
    known = ~np.isnan(values)
    out = np.zeros(len(values))
    if not known.any():
        return out
    low, high = float(values[known].min()), float(values[known].max())
    if high > low:
        out[known] = 100.0 * (high - values[known]) / (high - low)
    else:
        out[known] = 100.0
    return out


# -- static --------------------------------------------------------------------------------


def user_rtt(req: Request, rnd: Round) -> Floats:
    """RTT from each user group, lower is better (scaled between the nearest and the
    farthest node that group has a measurement for), weighted by the groups' shares.
    An unknown RTT scores 0 for that group."""
    total = np.zeros(len(rnd.nodes))
    shares = sum(u.share for u in req.users) or 1.0
    for users in req.users:
        total += users.share * _lower_is_better(rnd.rtt_from(users.source))
    return total / shares


def data_locality(req: Request, rnd: Round) -> Floats:
    """Per data set: 100 where the node holds it (label ``data.edgefed.io/<name>``),
    50 where another node of its site does, averaged over the data sets."""
    total = np.zeros(len(rnd.nodes))
    for name in req.data_sets:
        here = rnd.codes(DATA_PREFIX + name).codes >= 0
        at_site = np.bincount(rnd.site_idx, weights=here, minlength=len(rnd.sites)) > 0
        total += np.where(here, 100.0, np.where(at_site[rnd.site_idx], 50.0, 0.0))
    return total / max(len(req.data_sets), 1)


def _has_image(req: Request, rnd: Round) -> Floats:
    cached = rnd.cache.get(("image", req.image))
    if cached is None:
        cached = np.array([req.image in images for images in rnd.images], dtype=np.float64)
        rnd.cache[("image", req.image)] = cached
    return cached


def image_locality(req: Request, rnd: Round) -> Floats:
    """100 where the node already has the image (no pull over a thin uplink)."""
    return 100.0 * _has_image(req, rnd)


def cost(req: Request, rnd: Round) -> Floats:
    """The ``price`` label (per hour; the node's, else its site's): the cheapest
    node 100, the dearest 0; a node without a price 0."""
    price = rnd.numbers(PRICE_LABEL)
    site_price = rnd.numbers(PRICE_LABEL, of="site")
    return _lower_is_better(np.where(np.isnan(price), site_price, price))


def _soft_taints(req: Request, rnd: Round) -> list[Floats]:
    return [mask.astype(np.float64) for taint, mask in rnd.taints.items()
            if taint.effect is TaintEffect.PREFER_NO_SCHEDULE
            and not tolerates(req.tolerations, taint)]


def prefer_no_schedule(req: Request, rnd: Round) -> Floats:
    """0 on nodes with a PreferNoSchedule taint the replica does not tolerate."""
    tainted = np.zeros(len(rnd.nodes))
    for mask in _soft_taints(req, rnd):
        tainted = np.maximum(tainted, mask)
    return 100.0 * (1.0 - tainted)


# -- dynamic ---------------------------------------------------------------------------------

Rows = Ints | slice


def _kept(rnd: Round, key: object, formula: Callable[[Rows], Floats],
          basis: tuple[object, ...] = ()) -> Floats:
    """A score that changes only on the node a replica is reserved on, kept for the
    round: ``formula`` over every row the first time (or when ``basis``, the objects
    the formula reads, are other objects), then only over the rows reserved since
    the last call: the same formula, so the same floats. The vector is the round's:
    read it, do not change it."""
    seen = len(rnd.touched)
    cached = rnd.cache.get(key)
    if cached is None or not _same(cached[2], basis):
        vector = formula(slice(None))
    else:
        vector, since, _ = cached
        if since == seen:
            return vector  # type: ignore[no-any-return]
        rows = _reserved_since(rnd, since)
        vector[rows] = formula(rows)
    rnd.cache[key] = (vector, seen, basis)
    return vector


def _same(kept: tuple[object, ...], basis: tuple[object, ...]) -> bool:
    return len(kept) == len(basis) and all(map(operator.is_, kept, basis))


def _reserved_since(rnd: Round, since: int) -> Ints:
    """The rows reserved since the ``since``-th reservation (the last answer is
    remembered: the vectors of one request usually ask the same)."""
    asked = (since, len(rnd.touched))
    cached = rnd.cache.get("reserved-since")
    if cached is None or cached[0] != asked:
        cached = (asked, np.array(rnd.touched[since:], dtype=np.int64))
        rnd.cache["reserved-since"] = cached
    return cached[1]


def least_allocated(req: Request, rnd: Round) -> Floats:
    """What stays free after the replica, as a share of allocatable, cpu and memory
    averaged."""
    key = ("least-allocated", req.cpu_millis, req.memory_bytes)
    need = rnd.cache.get(key)
    if need is None:
        need = req.cpu_millis * rnd.per_cpu + req.memory_bytes * rnd.per_mem
        rnd.cache[key] = need

    def formula(rows: Rows) -> Floats:
        return np.asarray(100.0 * np.maximum(rnd.room[rows] - need[rows], 0.0),
                          dtype=np.float64)
    return _kept(rnd, ("least-allocated", key), formula)


def headroom(req: Request, rnd: Round) -> Floats:
    """What stays free after the replica in the scarcer of cpu and memory, as a
    share of allocatable: a node left with 2% of its memory scores 2 however
    much cpu it has (the peak utilisation is what overloads a node); 0 where a
    dimension has no capacity."""
    cpu, mem, both = _capacity(rnd)

    def formula(rows: Rows) -> Floats:
        free_cpu = (rnd.free_cpu[rows] - req.cpu_millis) / cpu[rows]
        free_mem = (rnd.free_mem[rows] - req.memory_bytes) / mem[rows]
        share = np.maximum(np.minimum(free_cpu, free_mem), 0.0)
        return np.where(both[rows], 100.0 * share, 0.0)
    return _kept(rnd, ("headroom", req.cpu_millis, req.memory_bytes), formula)


def balanced(req: Request, rnd: Round) -> Floats:
    """cpu and memory used in the same proportion after the replica (no node left
    with memory but no cpu); 0 where a dimension has no capacity."""
    cpu, mem, both = _capacity(rnd)

    def formula(rows: Rows) -> Floats:
        used_cpu = (rnd.used_cpu[rows] + req.cpu_millis) / cpu[rows]
        used_mem = (rnd.used_mem[rows] + req.memory_bytes) / mem[rows]
        # 1 - |x| is never above 1: only the floor needs clipping.
        share = np.maximum(1.0 - np.abs(used_cpu - used_mem), 0.0)
        return np.where(both[rows], 100.0 * share, 0.0)
    return _kept(rnd, ("balanced", req.cpu_millis, req.memory_bytes), formula)


def _capacity(rnd: Round) -> tuple[Ints, Ints, Bools]:
    """Allocatable cpu and memory to divide by (1 where there is none: such a node
    scores 0 anyway), and which nodes have both."""
    cached = rnd.cache.get("capacity")
    if cached is None:
        cached = (np.maximum(rnd.alloc_cpu, 1), np.maximum(rnd.alloc_mem, 1),
                  (rnd.alloc_cpu > 0) & (rnd.alloc_mem > 0))
        rnd.cache["capacity"] = cached
    return cached


_SPREAD_LEVELS = (Scope.REGION, Scope.PROVIDER)


def spread_sites(req: Request, rnd: Round) -> Floats:
    """Fewer replicas of the deployment in the node's site is better; where sites
    carry ``region`` and ``provider`` labels, so is the same across regions and
    providers (averaged over the levels the node has). The score of each domain is
    kept with the replica counts (:class:`Counts`); it is summed per distinct
    (site, region, provider) and spread to the nodes with one gather."""
    spread = rnd.counts(req.deployment).spread_sites
    places, site, levels = _places(rnd)
    total = spread[Scope.SITE].take(site)
    for scope, index in levels.items():
        total += spread[scope].take(index)
    return (total * _inverse_levels(rnd)).take(places)


def _places(rnd: Round) -> tuple[Ints, Ints, dict[Scope, Ints]]:
    """Each node's place (its distinct site, region, provider), and per place its
    site and its region and provider domains."""
    cached = rnd.cache.get("places")
    if cached is None:
        columns = [rnd.site_idx] + [rnd.domain(scope)[0] for scope in _SPREAD_LEVELS]
        rows, places = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
        levels = {scope: rows[:, k + 1] for k, scope in enumerate(_SPREAD_LEVELS)}
        cached = (places.reshape(-1), rows[:, 0], levels)
        rnd.cache["places"] = cached
    return cached


def _inverse_levels(rnd: Round) -> Floats:
    """Per place: 1 / the number of levels (site, region, provider) it has labels for."""
    cached = rnd.cache.get("inverse-levels")
    if cached is None:
        _, site, levels = _places(rnd)
        count = np.ones(len(site))
        for scope, index in levels.items():
            count += index < rnd.domain(scope)[1]
        cached = 1.0 / count
        rnd.cache["inverse-levels"] = cached
    return cached


def spread_nodes(req: Request, rnd: Round) -> Floats:
    node = rnd.counts(req.deployment).node

    def formula(rows: Rows) -> Floats:
        return np.asarray(100.0 / (1.0 + node[rows]), dtype=np.float64)
    return _kept(rnd, ("spread-nodes", req.deployment), formula)


def stay_put(req: Request, rnd: Round) -> Floats:
    """A replacement (new template) stays where its predecessor ran if it still fits."""
    out = np.zeros(len(rnd.nodes))
    if req.current_node in rnd.index:
        out[rnd.index[req.current_node]] = 100.0
    return out


def topology_spread(req: Request, rnd: Round) -> Floats:
    """Preferred spread constraints: 100 in the emptiest domain, less the more the
    node's domain holds above it; 0 for nodes without the scope's label."""
    total = None
    preferred = [s for s in req.spread if not s.required]
    counts = rnd.counts(req.deployment)
    for spread in preferred:
        index, size = rnd.domain(spread.scope)
        per_domain = counts.node if spread.scope is Scope.NODE else counts.domains[spread.scope]
        if size == 0:
            continue
        held = per_domain[:size]
        # The last cell scores the nodes without the label: 0.
        cell = np.zeros(size + 1)
        np.divide(100.0, 1.0 + held - held.min(), out=cell[:size])
        vector = cell.take(index)
        if total is None:
            total = vector  # 0 + x is x: scores are never -0
        else:
            total += vector
    if total is None:
        return np.zeros(len(rnd.nodes))
    return total if len(preferred) == 1 else total / len(preferred)


def affinity(req: Request, rnd: Round) -> Floats:
    """Preferred affinity and anti-affinity terms: the share of the terms' weights
    the node satisfies."""
    total = np.zeros(len(rnd.nodes))
    weights = sum(p.weight for p in req.preferences) or 1
    for term in req.preferences:
        present = rnd.matching_in_domain(term.selector, term.scope) > 0
        # Whole weights: the sum is exact in any order and any float or int type.
        total += np.where(present, 0.0, float(term.weight)) if term.apart else \
            np.where(present, float(term.weight), 0.0)
    return 100.0 * total / weights


# -- registry ----------------------------------------------------------------------------------

Score = Callable[[Request, Round], Floats]
Applies = Callable[[Request, Round], bool]


@dataclass(frozen=True, slots=True)
class ScorePlugin:
    """``static``: depends only on the request's spec and the round's nodes.
    ``local``: changes only on the node a replica is reserved on."""

    name: str
    score: Score
    applies: Applies
    static: bool
    local: bool = False


def _always(req: Request, rnd: Round) -> bool:
    return True


_PLUGINS = [
    ScorePlugin("least-allocated", least_allocated, _always, False, local=True),
    ScorePlugin("headroom", headroom, _always, False, local=True),
    ScorePlugin("spread-sites", spread_sites, _always, False),
    ScorePlugin("spread-nodes", spread_nodes, _always, False, local=True),
    ScorePlugin("stay-put", stay_put, lambda req, rnd: req.current_node is not None, False),
    ScorePlugin("user-rtt", user_rtt, lambda req, rnd: bool(req.users), True),
    ScorePlugin("data-locality", data_locality, lambda req, rnd: bool(req.data_sets), True),
    ScorePlugin("image-locality", image_locality,
                lambda req, rnd: bool(req.image) and bool(_has_image(req, rnd).any()), True),
    ScorePlugin("balanced", balanced, _always, False, local=True),
    ScorePlugin("topology-spread", topology_spread,
                lambda req, rnd: any(not s.required for s in req.spread), False),
    ScorePlugin("affinity", affinity, lambda req, rnd: bool(req.preferences), False),
    ScorePlugin("cost", cost, lambda req, rnd: bool(
        (~np.isnan(rnd.numbers(PRICE_LABEL))).any()), True),
    ScorePlugin("prefer-no-schedule", prefer_no_schedule,
                lambda req, rnd: bool(_soft_taints(req, rnd)), True),
]
SCORES: dict[str, ScorePlugin] = {p.name: p for p in _PLUGINS}
# Weights when the policy names none. User RTT dominates whenever a deployment
# declares users: among the nodes that fit, being near the users matters more than
# spreading or packing. Least-allocated, headroom and balanced keep the busiest
# node's utilisation low (bench/quality.py, 60 instances per seed: within 1.5-2.4%
# of the optimum on average and 5.6-8.4% at p95 over seeds 1-5; docs/scheduling.md);
# spreading over nodes is left to least-allocated, and spreading over sites is a
# gentle nudge, since it pulls replicas away from their users.
DEFAULT_WEIGHTS: dict[str, float] = {
    "least-allocated": 4.0, "headroom": 2.0, "spread-sites": 1.0, "spread-nodes": 0.0,
    "stay-put": 10.0, "user-rtt": 20.0, "data-locality": 5.0, "image-locality": 1.0,
    "balanced": 2.0, "topology-spread": 2.0, "affinity": 2.0, "cost": 1.0,
    "prefer-no-schedule": 3.0,
}


def active_weights(req: Request, rnd: Round) -> dict[str, float]:
    """The plugins that score this request, with their weights, in registry order."""
    weights = {**DEFAULT_WEIGHTS, **{k: v for k, v in req.weights.items() if k in SCORES}}
    return {p.name: weights[p.name] for p in _PLUGINS
            if weights[p.name] > 0 and p.applies(req, rnd)}


@dataclass(frozen=True, slots=True)
class Plan:
    """How one deployment is scored in a round: the active plugins and weights, the
    static vectors and their weighted sum, computed once."""

    weights: dict[str, float]
    static: dict[str, Floats]
    static_total: Floats  # sum of the static vectors times their share of the weights
    local: list[tuple[str, Score, float]]  # plugin, its function, its share
    dynamic: list[tuple[str, Score, float]]  # the other plugins that are not static


def _plan_key(req: Request) -> tuple[object, ...]:
    return (req.users, req.data_sets, req.image, req.tolerations, req.spread, req.preferences,
            tuple(sorted(req.weights.items())), req.current_node is None)


def plan(req: Request, rnd: Round) -> Plan:
    key = ("plan", req.deployment, req.current_node is None)
    cached = rnd.cache.get(key)
    if cached is not None and cached[0] == _plan_key(req):
        return cached[1]  # type: ignore[no-any-return]
    weights = active_weights(req, rnd)
    weight_sum = sum(weights.values()) or 1.0
    static = {name: SCORES[name].score(req, rnd) for name in weights if SCORES[name].static}
    total = np.zeros(len(rnd.nodes))
    for name, vector in static.items():
        total += weights[name] / weight_sum * vector
    shares = [(name, SCORES[name].score, weights[name] / weight_sum) for name in weights
              if not SCORES[name].static]
    result = Plan(weights=weights, static=static, static_total=total,
                  local=[s for s in shares if SCORES[s[0]].local],
                  dynamic=[s for s in shares if not SCORES[s[0]].local])
    rnd.cache[key] = (_plan_key(req), result)
    return result


def score(req: Request, rnd: Round) -> tuple[Floats, dict[str, Floats]]:
    """The weighted total over every node, and each active plugin's vector (in the
    order of the weights) for the explanation. The static and local plugins' part
    of the total is kept for the round like the local vectors themselves (see
    :func:`_kept`); the other plugins are added to it on every call."""
    p = plan(req, rnd)
    vectors = dict(p.static)
    for name, function, _ in p.local:
        vectors[name] = function(req, rnd)

    def formula(rows: Rows) -> Floats:
        part = p.static_total[rows].copy()
        for name, _, share in p.local:
            part += share * vectors[name][rows]
        return part
    # Keyed by what the local plugins read besides the round; the basis makes sure.
    key = ("local-total", req.deployment, req.current_node is None, req.cpu_millis,
           req.memory_bytes)
    kept = _kept(rnd, key, formula, (p, *(vectors[name] for name, _, _ in p.local)))
    total = None
    for name, function, share in p.dynamic:
        vector = function(req, rnd)
        vectors[name] = vector
        if total is None:
            total = share * vector
            total += kept  # x + y is y + x, float for float
        else:
            total += share * vector
    return (kept.copy() if total is None else total), {name: vectors[name] for name in p.weights}
