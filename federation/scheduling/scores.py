"""Score plugins: each rates every node 0..100 (higher is better) as one float
vector. A plugin that does not apply to a request (no users declared, no node
holds the image, nothing to stay with) is left out of the weighted sum and of
the explanation, so it neither dilutes the others nor shows as noise.

Static plugins (user RTT, data and image locality, cost, PreferNoSchedule
taints) depend only on the request's spec and the round's nodes and are
computed once per deployment and round. Local plugins (least-allocated,
headroom, balanced, spread over nodes) change only on the node a replica is reserved on;
they, and each deployment's weighted sum of them and the static plugins, are
kept for the round and rewritten at the reserved rows only, one row at a time
by each plugin's formula of one row (see ``_local_part``). Spread over sites
and topology spread over sites, regions and providers depend on the node only
through its place (its site, region and provider): they are computed and
weighted per place and gathered to the nodes once (see ``_places``). The
explanation reads each plugin's score at the few ranked rows only
(:class:`Scored`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from federation.scheduling.columns import DATA_PREFIX, PRICE_LABEL, Bools, Floats, Ints, Round, Row
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
Formula = Callable[[Rows], Floats]
# The same score of one row (its index, and its resource columns as read after the
# last reservation there), in Python floats: the same operations in the same order
# as the formula, so the same float (kept scores are caught up with it at the few
# rows reserved since, where numpy's cost per call would dominate).
One = Callable[[int, Row], float]


def _kept(rnd: Round, key: object, formula: Formula) -> Floats:
    """A score that changes only on the node a replica is reserved on, kept for the
    round: ``formula`` over every row the first time, then only over the rows
    reserved since the last call: the same formula, so the same floats. The vector
    is the round's: read it, do not change it."""
    seen = len(rnd.touched)
    cached = rnd.cache.get(key)
    if cached is None:
        vector = formula(slice(None))
    else:
        vector, since = cached
        if since == seen:
            return vector  # type: ignore[no-any-return]
        rows = _reserved_since(rnd, since)
        vector[rows] = formula(rows)
    rnd.cache[key] = (vector, seen)
    return vector


def _reserved_since(rnd: Round, since: int) -> Ints:
    """The rows reserved since the ``since``-th reservation (the last answer is
    remembered: the vectors of one request usually ask the same)."""
    asked = (since, len(rnd.touched))
    cached = rnd.cache.get("reserved-since")
    if cached is None or cached[0] != asked:
        cached = (asked, np.array(rnd.touched[since:], dtype=np.int64))
        rnd.cache["reserved-since"] = cached
    return cached[1]


def _least_allocated(req: Request, rnd: Round) -> Formula:
    key = ("least-allocated-need", req.cpu_millis, req.memory_bytes)
    need = rnd.cache.get(key)
    if need is None:
        need = req.cpu_millis * rnd.per_cpu + req.memory_bytes * rnd.per_mem
        rnd.cache[key] = need

    def formula(rows: Rows) -> Floats:
        return np.asarray(100.0 * np.maximum(rnd.room[rows] - need[rows], 0.0),
                          dtype=np.float64)
    return formula


def _least_allocated_one(req: Request, rnd: Round) -> One:
    c, m = req.cpu_millis, req.memory_bytes

    def one(i: int, row: Row) -> float:
        return 100.0 * max(row.room - (c * row.per_cpu + m * row.per_mem), 0.0)
    return one


def least_allocated(req: Request, rnd: Round) -> Floats:
    """What stays free after the replica, as a share of allocatable, cpu and memory
    averaged."""
    return _kept(rnd, ("least-allocated", req.cpu_millis, req.memory_bytes),
                 _least_allocated(req, rnd))


def _headroom(req: Request, rnd: Round) -> Formula:
    cpu, mem, both = _capacity(rnd)

    def formula(rows: Rows) -> Floats:
        free_cpu = (rnd.free_cpu[rows] - req.cpu_millis) / cpu[rows]
        free_mem = (rnd.free_mem[rows] - req.memory_bytes) / mem[rows]
        share = np.maximum(np.minimum(free_cpu, free_mem), 0.0)
        return np.where(both[rows], 100.0 * share, 0.0)
    return formula


def _headroom_one(req: Request, rnd: Round) -> One:
    c, m = req.cpu_millis, req.memory_bytes

    def one(i: int, row: Row) -> float:
        if row.alloc_cpu <= 0 or row.alloc_mem <= 0:  # as _capacity's ``both``
            return 0.0
        return 100.0 * max(min((row.free_cpu - c) / row.alloc_cpu,
                               (row.free_mem - m) / row.alloc_mem), 0.0)
    return one


def headroom(req: Request, rnd: Round) -> Floats:
    """What stays free after the replica in the scarcer of cpu and memory, as a
    share of allocatable: a node left with 2% of its memory scores 2 however
    much cpu it has (the peak utilisation is what overloads a node); 0 where a
    dimension has no capacity."""
    return _kept(rnd, ("headroom", req.cpu_millis, req.memory_bytes), _headroom(req, rnd))


def _balanced(req: Request, rnd: Round) -> Formula:
    cpu, mem, both = _capacity(rnd)

    def formula(rows: Rows) -> Floats:
        used_cpu = (rnd.used_cpu[rows] + req.cpu_millis) / cpu[rows]
        used_mem = (rnd.used_mem[rows] + req.memory_bytes) / mem[rows]
        # 1 - |x| is never above 1: only the floor needs clipping.
        share = np.maximum(1.0 - np.abs(used_cpu - used_mem), 0.0)
        return np.where(both[rows], 100.0 * share, 0.0)
    return formula


def _balanced_one(req: Request, rnd: Round) -> One:
    c, m = req.cpu_millis, req.memory_bytes

    def one(i: int, row: Row) -> float:
        if row.alloc_cpu <= 0 or row.alloc_mem <= 0:  # as _capacity's ``both``
            return 0.0
        return 100.0 * max(1.0 - abs((row.used_cpu + c) / row.alloc_cpu
                                     - (row.used_mem + m) / row.alloc_mem), 0.0)
    return one


def balanced(req: Request, rnd: Round) -> Floats:
    """cpu and memory used in the same proportion after the replica (no node left
    with memory but no cpu); 0 where a dimension has no capacity."""
    return _kept(rnd, ("balanced", req.cpu_millis, req.memory_bytes), _balanced(req, rnd))


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
_PLACE_SCOPES = (Scope.SITE, *_SPREAD_LEVELS)


def _places(rnd: Round) -> tuple[Ints, dict[Scope, Ints]]:
    """Each node's place (its distinct site, region, provider), and per place its
    domain index at each of those scopes (as :meth:`Round.domain` numbers them).
    A score that depends on the node only through these domains is computed per
    place, a few hundred cells, and gathered to the nodes."""
    cached = rnd.cache.get("places")
    if cached is None:
        columns = [rnd.domain(scope)[0] for scope in _PLACE_SCOPES]
        rows, places = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
        cached = (places.reshape(-1), {scope: rows[:, k] for k, scope in enumerate(_PLACE_SCOPES)})
        rnd.cache["places"] = cached
    return cached


def _inverse_levels(rnd: Round) -> Floats:
    """Per place: 1 / the number of levels (site, region, provider) it has labels for."""
    cached = rnd.cache.get("inverse-levels")
    if cached is None:
        _, domains = _places(rnd)
        count = np.ones(len(domains[Scope.SITE]))
        for scope in _SPREAD_LEVELS:
            count += domains[scope] < rnd.domain(scope)[1]
        cached = 1.0 / count
        rnd.cache["inverse-levels"] = cached
    return cached


def spread_sites_by_place(req: Request, rnd: Round) -> Floats:
    """:func:`spread_sites` per place. The score of each domain is kept with the
    replica counts (:class:`Counts`)."""
    spread = rnd.counts(req.deployment).spread_sites
    (site, site_domains), *levels = _place_levels(rnd)
    total = spread[site].take(site_domains)
    for scope, domains in levels:
        total += spread[scope].take(domains)
    return total * _inverse_levels(rnd)


def _place_levels(rnd: Round) -> list[tuple[Scope, Ints]]:
    """Each place's domain index at the site scope, then at each spread level."""
    cached = rnd.cache.get("place-levels")
    if cached is None:
        _, domains = _places(rnd)
        cached = [(scope, domains[scope]) for scope in (Scope.SITE, *_SPREAD_LEVELS)]
        rnd.cache["place-levels"] = cached
    return cached


def spread_sites(req: Request, rnd: Round) -> Floats:
    """Fewer replicas of the deployment in the node's site is better; where sites
    carry ``region`` and ``provider`` labels, so is the same across regions and
    providers (averaged over the levels the node has)."""
    return spread_sites_by_place(req, rnd).take(_places(rnd)[0])


def _spread_nodes(req: Request, rnd: Round) -> Formula:
    node = rnd.counts(req.deployment).node

    def formula(rows: Rows) -> Floats:
        return np.asarray(100.0 / (1.0 + node[rows]), dtype=np.float64)
    return formula


def _spread_nodes_one(req: Request, rnd: Round) -> One:
    node = rnd.counts(req.deployment).node

    def one(i: int, row: Row) -> float:
        return 100.0 / (1.0 + node.item(i))
    return one


def spread_nodes(req: Request, rnd: Round) -> Floats:
    return _kept(rnd, ("spread-nodes", req.deployment), _spread_nodes(req, rnd))


def stay_put(req: Request, rnd: Round) -> Floats:
    """A replacement (new template) stays where its predecessor ran if it still fits."""
    out = np.zeros(len(rnd.nodes))
    if req.current_node in rnd.index:
        out[rnd.index[req.current_node]] = 100.0
    return out


def _topology_spread(req: Request, rnd: Round, domains: Callable[[Scope], Ints],
                     size: int) -> Floats:
    """The topology-spread score of ``size`` rows (nodes or places) whose domain
    index at each scope ``domains`` gives."""
    total = None
    preferred = [s for s in req.spread if not s.required]
    counts = rnd.counts(req.deployment)
    for spread in preferred:
        _, count = rnd.domain(spread.scope)
        per_domain = counts.node if spread.scope is Scope.NODE else counts.domains[spread.scope]
        if count == 0:
            continue
        held = per_domain[:count]
        # The last cell scores the nodes without the label: 0.
        cell = np.zeros(count + 1)
        np.divide(100.0, 1.0 + held - held.min(), out=cell[:count])
        vector = cell.take(domains(spread.scope))
        if total is None:
            total = vector  # 0 + x is x: scores are never -0
        else:
            total += vector
    if total is None:
        return np.zeros(size)
    return total if len(preferred) == 1 else total / len(preferred)


def topology_spread_by_place(req: Request, rnd: Round) -> Floats | None:
    """:func:`topology_spread` per place; None when a constraint spreads over nodes."""
    if any(s.scope is Scope.NODE for s in req.spread if not s.required):
        return None
    _, domains = _places(rnd)
    return _topology_spread(req, rnd, domains.__getitem__, len(domains[Scope.SITE]))


def topology_spread(req: Request, rnd: Round) -> Floats:
    """Preferred spread constraints: 100 in the emptiest domain, less the more the
    node's domain holds above it; 0 for nodes without the scope's label."""
    by_place = topology_spread_by_place(req, rnd)
    if by_place is not None:
        return by_place.take(_places(rnd)[0])
    return _topology_spread(req, rnd, lambda scope: rnd.domain(scope)[0], len(rnd.nodes))


def affinity(req: Request, rnd: Round) -> Floats:
    """Preferred affinity and anti-affinity terms: the share of the terms' weights
    the node satisfies."""
    total = None
    weights = sum(p.weight for p in req.preferences) or 1
    for term in req.preferences:
        # Whole weights: the sum is exact in any order and any float or int type.
        weight = float(term.weight)
        met, unmet = (0.0, weight) if term.apart else (weight, 0.0)
        if term.scope is Scope.NODE:
            vector = np.where(rnd.matching_in_domain(term.selector, Scope.NODE) > 0, met, unmet)
        else:  # worked out per domain, then given to the nodes in one gather
            vector = np.where(rnd.matching_per_domain(term.selector, term.scope) > 0, met,
                              unmet).take(rnd.domain(term.scope)[0])
        if total is None:
            total = vector  # 0 + x is x: the weights are never -0
        else:
            total += vector
    if total is None:
        return np.zeros(len(rnd.nodes))
    return 100.0 * total / weights


# -- registry ----------------------------------------------------------------------------------

Score = Callable[[Request, Round], Floats]
Applies = Callable[[Request, Round], bool]
Local = Callable[[Request, Round], Formula]
LocalOne = Callable[[Request, Round], One]
ByPlace = Callable[[Request, Round], Floats | None]


@dataclass(frozen=True, slots=True)
class ScorePlugin:
    """``static``: depends only on the request's spec and the round's nodes.
    ``local``: changes only on the node a replica is reserved on; the score at any
    rows, and ``one``, the same score of one row. ``by_place``: the score per
    place (see :func:`_places`), or None where it is not a function of the place
    for this request."""

    name: str
    score: Score
    applies: Applies
    static: bool
    local: Local | None = None
    one: LocalOne | None = None
    by_place: ByPlace | None = None


def _always(req: Request, rnd: Round) -> bool:
    return True


_PLUGINS = [
    ScorePlugin("least-allocated", least_allocated, _always, False, local=_least_allocated,
                one=_least_allocated_one),
    ScorePlugin("headroom", headroom, _always, False, local=_headroom, one=_headroom_one),
    ScorePlugin("spread-sites", spread_sites, _always, False, by_place=spread_sites_by_place),
    ScorePlugin("spread-nodes", spread_nodes, _always, False, local=_spread_nodes,
                one=_spread_nodes_one),
    ScorePlugin("stay-put", stay_put, lambda req, rnd: req.current_node is not None, False),
    ScorePlugin("user-rtt", user_rtt, lambda req, rnd: bool(req.users), True),
    ScorePlugin("data-locality", data_locality, lambda req, rnd: bool(req.data_sets), True),
    ScorePlugin("image-locality", image_locality,
                lambda req, rnd: bool(req.image) and bool(_has_image(req, rnd).any()), True),
    ScorePlugin("balanced", balanced, _always, False, local=_balanced, one=_balanced_one),
    ScorePlugin("topology-spread", topology_spread,
                lambda req, rnd: any(not s.required for s in req.spread), False,
                by_place=topology_spread_by_place),
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
    static vectors (the columns of one matrix) and their weighted sum, computed once."""

    weights: dict[str, float]
    static: dict[str, Floats]
    static_columns: Floats  # node by static plugin, in the order of ``static``
    static_total: Floats  # sum of the static vectors times their share of the weights
    local: list[tuple[str, Local, float]]  # plugin, its formula, its share
    dynamic: list[tuple[ScorePlugin, float]]  # the other plugins that are not static
    # Where each plugin of ``weights`` is among the static, local and dynamic ones,
    # in that order (the order of a weighed request's score columns).
    order: list[int]


def _plan_key(req: Request) -> tuple[object, ...]:
    return (req.users, req.data_sets, req.image, req.tolerations, req.spread, req.preferences,
            req.weights, req.current_node is None)


def plan(req: Request, rnd: Round) -> Plan:
    key = ("plan", req.deployment, req.current_node is None)
    cached = rnd.cache.get(key)
    if cached is not None and cached[0] == _plan_key(req):
        return cached[1]  # type: ignore[no-any-return]
    weights = active_weights(req, rnd)
    weight_sum = sum(weights.values()) or 1.0
    names = [name for name in weights if SCORES[name].static]
    columns = np.empty((len(rnd.nodes), len(names)))
    for k, name in enumerate(names):
        columns[:, k] = SCORES[name].score(req, rnd)
    static = {name: columns[:, k] for k, name in enumerate(names)}
    total = np.zeros(len(rnd.nodes))
    for name, vector in static.items():
        total += weights[name] / weight_sum * vector
    shares = [(SCORES[name], weights[name] / weight_sum) for name in weights
              if not SCORES[name].static]
    local = [(p.name, p.local, share) for p, share in shares if p.local]
    dynamic = [(p, share) for p, share in shares if not p.local]
    found = [*names, *(name for name, _, _ in local), *(p.name for p, _ in dynamic)]
    result = Plan(weights=weights, static=static, static_columns=columns, static_total=total,
                  local=local, dynamic=dynamic, order=[found.index(name) for name in weights])
    rnd.cache[key] = (_plan_key(req), result)
    return result


@dataclass(slots=True)
class _LocalPart:
    """A deployment's static and local scores (a matrix, node by plugin: the plan's
    static plugins, then its local plugins) and the static and local plugins' part
    of its total, as of the ``since``-th reservation of the round. A node's scores
    are one row of the matrix: caught up at a reserved node, they are written side
    by side."""

    plan: Plan
    ones: list[tuple[One, float]]  # each local plugin's formula of one row, its share
    scores: Floats  # the static columns are copied once; the local ones are kept
    part: Floats
    since: int
    # The same memory as flat sequences of Python floats: a cell is read or written
    # at a third of numpy's cost per call.
    cells: memoryview[float]
    part_cells: memoryview[float]
    static_cells: memoryview[float]  # the plan's static total


def _local_part(req: Request, rnd: Round, p: Plan) -> _LocalPart:
    """The static and local plugins' part of the total, kept for the round: every
    row the first time (the plugins' formulas over all rows), then only the rows
    reserved since, one row at a time (the plugins' formulas of one row: the same
    floats), each plugin computed once for its score and the part both."""
    # Keyed by what the local plugins read besides the round; the plan makes sure.
    key = ("local-part", req.deployment, req.current_node is None, req.cpu_millis,
           req.memory_bytes)
    seen = len(rnd.touched)
    kept: _LocalPart | None = rnd.cache.get(key)
    first = len(p.static)
    if kept is None or kept.plan is not p:
        scores = np.empty((len(rnd.nodes), first + len(p.local)))
        scores[:, :first] = p.static_columns
        for k, (_, local, _) in enumerate(p.local):
            scores[:, first + k] = local(req, rnd)(slice(None))
        part = _part(p, slice(None), list(scores[:, first:].T))
        kept = _LocalPart(plan=p, ones=[(_one_row(name)(req, rnd), share)
                                        for name, _, share in p.local],
                          scores=scores, part=part, since=seen,
                          cells=_cells(scores), part_cells=_cells(part),
                          static_cells=_cells(p.static_total))
        rnd.cache[key] = kept
    elif kept.since != seen:
        static, cells, sums, ones = kept.static_cells, kept.cells, kept.part_cells, kept.ones
        width = kept.scores.shape[1]
        for i in rnd.touched[kept.since:]:
            row = rnd.row(i)
            total = static[i]
            at = i * width + first
            for one, share in ones:
                value = one(i, row)
                cells[at] = value
                at += 1
                total += share * value  # as _part adds them
            sums[i] = total
        kept.since = seen
    return kept


def _cells(array: Floats) -> memoryview[float]:
    """The memory of ``array`` (C order, as built here) as one flat sequence of
    Python floats: writing a cell writes the array."""
    assert array.flags.c_contiguous
    return array.reshape(-1).data  # type: ignore[return-value]


def _one_row(name: str) -> LocalOne:
    one = SCORES[name].one
    assert one is not None, f"local plugin {name} has no formula of one row"
    return one


def _part(p: Plan, rows: Rows, local: list[Floats]) -> Floats:
    """The static total plus each local plugin's share of its score, at ``rows``."""
    part = p.static_total[rows].copy()
    for (_, _, share), values in zip(p.local, local, strict=True):
        part += share * values
    return part


@dataclass(frozen=True, slots=True)
class Scored:
    """The weighted total of every node, and the active plugins' scores: the kept
    matrix (a row per node, a column per static and local plugin) and one vector per
    other plugin, over the nodes or, with a place index, over the places. They are
    read at a few rows for the explanation and never spread to every node."""

    total: Floats
    names: list[str]  # the active plugins in the order of the weights
    order: list[int]  # where each of ``names`` is among the columns, then the vectors
    matrix: Floats
    vectors_by: list[tuple[Floats, Ints | None]]  # per other plugin: scores, place index

    def at(self, rows: Ints) -> list[dict[str, float]]:
        """Per row of ``rows``, each plugin's score, in the order of the weights."""
        if not self.names:
            return [{} for _ in rows]
        found = self.matrix.take(rows, axis=0).tolist()
        picked = rows.tolist()
        for vector, index in self.vectors_by:
            for values, i in zip(found, picked, strict=True):
                values.append(vector.item(i if index is None else index.item(i)))
        names, order = self.names, self.order
        if len(order) == 1:  # itemgetter of one index answers the value, not a tuple
            return [{names[0]: values[order[0]]} for values in found]
        pick = operator.itemgetter(*order)
        return [dict(zip(names, pick(values), strict=True)) for values in found]

    def vectors(self) -> dict[str, Floats]:
        """Each plugin's score of every node, in the order of the weights."""
        columns = [*self.matrix.T, *(vector if index is None else vector[index]
                                     for vector, index in self.vectors_by)]
        return {name: columns[k] for name, k in zip(self.names, self.order, strict=True)}


def weigh(req: Request, rnd: Round) -> Scored:
    """The weighted total over every node. The static and local plugins' part is
    kept for the round (see :func:`_local_part`); the other plugins are added to it
    on every call, in the order of the weights, each as one gather of its share per
    place where it has one (a share times a score is the same float per place as
    per node)."""
    p = plan(req, rnd)
    kept = _local_part(req, rnd, p)
    vectors_by: list[tuple[Floats, Ints | None]] = []
    total = None
    for plugin, share in p.dynamic:
        by_place = plugin.by_place(req, rnd) if plugin.by_place else None
        if by_place is None:
            vector = plugin.score(req, rnd)
            vectors_by.append((vector, None))
            weighted = share * vector
        else:
            places = _places(rnd)[0]
            vectors_by.append((by_place, places))
            weighted = (share * by_place).take(places)
        if total is None:
            total = weighted
            total += kept.part  # x + y is y + x, float for float
        else:
            total += weighted
    return Scored(total=kept.part.copy() if total is None else total, names=list(p.weights),
                  order=p.order, matrix=kept.scores, vectors_by=vectors_by)


def score(req: Request, rnd: Round) -> tuple[Floats, dict[str, Floats]]:
    """The weighted total over every node, and each active plugin's vector (in the
    order of the weights)."""
    scored = weigh(req, rnd)
    return scored.total, scored.vectors()
