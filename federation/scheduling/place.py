"""One function composes the plugins: filter masks, score vectors, weighted sum,
select. The explanation is read off the same arrays that decided.

Strategies (``spec.placement.strategy``) share the filters and the histogram and
differ only in how they select among the nodes that fit: ``two-phase`` takes the
highest weighted score; the baselines take a seeded uniform pick (``random``),
the next node in name order (``round-robin``) or the least utilised node
(``least-load``). ``optimal`` is solved in batches elsewhere; one replica at a
time it is placed as ``two-phase``.
"""

from __future__ import annotations

import hashlib
import operator
from collections import Counter
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from federation.scheduling.columns import Bools, Floats, Round
from federation.scheduling.filters import Verdict, evaluate, tally
from federation.scheduling.request import Decision, Explanation, Ranked, Request
from federation.scheduling.scores import weigh
from policies.quantity import format_cpu, human_memory

Indices = NDArray[np.int64]


def feasible(req: Request, rnd: Round) -> Bools:
    """Which of ``rnd.node_names`` pass every filter for ``req``."""
    return evaluate(req, rnd).fits


# -- tie-break ----------------------------------------------------------------------------

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _seed(seed: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8).digest(),
                                    "big"))


def tie_keys(req: Request, rnd: Round, rows: Indices) -> NDArray[np.uint64]:
    """A hash of (decision seed, node name) per row: equal scores are ordered by it,
    the same way whatever the order of the nodes (splitmix64's finaliser)."""
    z = rnd.node_hash[rows] ^ _seed(req.seed)
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


# -- the histogram ---------------------------------------------------------------------------

_UNIT_FORMATS: dict[str, Callable[[int], str]] = {
    "cpu": format_cpu, "memory": human_memory, "disk": human_memory, "count": str}


def histogram(verdict: Verdict) -> tuple[dict[str, int], dict[str, str]]:
    """Nodes refused per reason (a node refused for three reasons counts thrice) and
    the numbers behind resource reasons."""
    counts, numbers = verdict.static_tally
    counts, numbers = dict(counts), dict(numbers)
    for refused in verdict.dynamic:
        tally(refused.explain(refused.mask), counts, numbers)
    details = {reason: f"(need {_UNIT_FORMATS[r.unit](r.need or 0)}, most free "
                       f"{_UNIT_FORMATS[r.unit](r.free or 0)})" for reason, r in numbers.items()}
    return counts, details


# -- selecting ---------------------------------------------------------------------------------


# From this many nodes the best are looked for among the nodes that fit, gathered
# first, rather than in every node's total with the others masked: on a big fleet,
# masking in place costs more than gathering (its stores follow an unpredictable mask).
_GATHER_FROM = 20_000


def _top(req: Request, rnd: Round, total: Floats, fits: Bools, keep: int, *,
         gather_from: int = _GATHER_FROM) -> tuple[Indices, list[float]]:
    """The ``keep`` best nodes that fit, and their totals: highest total first, equal
    totals in the order of the seeded hash. ``total`` is used up (the nodes that do
    not fit are set to -inf in it). ``keep + 1`` passes of argmax find the best
    totals: when they all differ (the usual case), the first ``keep`` are the
    answer; otherwise every node equal to the last kept total is found and hashed.
    On a big fleet the passes run over the totals of the nodes that fit, in row
    order, so each finds the same node."""
    nothing = -np.inf
    rows: Indices | None = None
    if len(total) >= gather_from:
        rows = np.flatnonzero(fits)
        total = total.take(rows)
        if not len(rows):
            return rows, []
    else:
        np.putmask(total, ~fits, nothing)
    picked: list[int] = []
    values: list[float] = []
    for _ in range(keep + 1):
        i = int(total.argmax())
        value = total.item(i)
        if value == nothing:
            break
        picked.append(i)
        values.append(value)
        total[i] = nothing
    if all(map(operator.gt, values, values[1:])):
        best = np.array(picked[:keep], dtype=np.int64)
        return (best if rows is None else rows.take(best)), values[:keep]  # best first
    return _tied(req, rnd, total, picked, values, keep, rows)


def _tied(req: Request, rnd: Round, total: Floats, picked: list[int], values: list[float],
          keep: int, rows: Indices | None) -> tuple[Indices, list[float]]:
    """``_top`` when totals tie: every node equal to the last kept total, ordered by
    the seeded hash. ``picked`` and ``total`` index ``rows`` when given, else nodes."""

    def nodes(at: Indices) -> Indices:
        return at if rows is None else rows.take(at)

    total[picked] = values  # back as they were
    bar = values[min(keep, len(values)) - 1]
    above = np.array([i for i, v in zip(picked, values, strict=True) if v > bar], dtype=np.int64)
    level = np.flatnonzero(total == bar)
    want = keep - len(above)
    if len(level) > want:  # many equal nodes: hash them, order only the first few
        level = level[np.argpartition(tie_keys(req, rnd, nodes(level)), want - 1)[:want]]
    at = np.concatenate((above, level))
    at = at[np.lexsort((tie_keys(req, rnd, nodes(at)), -total[at]))]
    return nodes(at), total.take(at).tolist()


def _two_phase(req: Request, rnd: Round, fits: Bools, keep: int) -> tuple[Ranked, ...]:
    scored = weigh(req, rnd)
    rows, totals = _top(req, rnd, scored.total, fits, keep)
    names, sites = rnd.node_names, rnd.node_sites
    return tuple(Ranked(node=names[i], site=sites[i], total=t, scores=scores)
                 for i, t, scores in zip(rows.tolist(), totals, scored.at(rows), strict=True))


def _pick(req: Request, rnd: Round, i: int, scores: dict[str, float]) -> tuple[Ranked, ...]:
    return (Ranked(node=rnd.node_names[i], site=rnd.node_sites[i], total=0.0, scores=scores),)


def _random(req: Request, rnd: Round, fits: Bools, keep: int) -> tuple[Ranked, ...]:
    rows = np.flatnonzero(fits)
    return _pick(req, rnd, int(rows[np.argmin(tie_keys(req, rnd, rows))]), {})


def _round_robin(req: Request, rnd: Round, fits: Bools, keep: int) -> tuple[Ranked, ...]:
    """The n-th replica of the deployment in the round goes to the n-th node that
    fits, in name order, wrapping around."""
    rows = np.flatnonzero(fits)
    order = rnd.cache.get("name-rank")
    if order is None:
        order = np.argsort(np.argsort(np.array(rnd.node_names, dtype=object)))
        rnd.cache["name-rank"] = order
    rows = rows[np.argsort(order[rows], kind="stable")]
    position = sum(rnd.placed.get(req.deployment, Counter()).values())
    return _pick(req, rnd, int(rows[position % len(rows)]), {})


def _least_load(req: Request, rnd: Round, fits: Bools, keep: int) -> tuple[Ranked, ...]:
    """Lowest cpu and memory utilisation now (averaged); a node without capacity
    counts as full."""
    rows = np.flatnonzero(fits)
    cpu, mem = rnd.alloc_cpu[rows], rnd.alloc_mem[rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        used = (np.where(cpu > 0, 1 - rnd.free_cpu[rows] / cpu, 1.0)
                + np.where(mem > 0, 1 - rnd.free_mem[rows] / mem, 1.0)) / 2
    best = rows[np.lexsort((tie_keys(req, rnd, rows), used))[0]]
    return _pick(req, rnd, int(best), {"utilisation": 100.0 * float(used[rows == best][0])})


Strategy = Callable[[Request, Round, Bools, int], tuple[Ranked, ...]]
STRATEGIES: dict[str, Strategy] = {
    "two-phase": _two_phase, "random": _random, "round-robin": _round_robin,
    "least-load": _least_load, "optimal": _two_phase,
}


def place(req: Request, rnd: Round, *, keep: int = 3) -> Decision:
    """Filter, score and select a node for one replica; reserve it in ``rnd``."""
    verdict = evaluate(req, rnd)
    rejections, details = histogram(verdict)
    fits = verdict.fits
    feasible_count = int(np.count_nonzero(fits))
    strategy = req.strategy if req.strategy in STRATEGIES else "two-phase"
    ranked = STRATEGIES[strategy](req, rnd, fits, keep) if feasible_count else ()
    explanation = Explanation(total_nodes=len(rnd.nodes), feasible=feasible_count,
                              rejections=rejections, details=details, ranked=ranked,
                              strategy="two-phase" if strategy == "optimal" else strategy)
    if not ranked:
        return Decision(request=req, node=None, site=None, explanation=explanation)
    best = ranked[0]
    rnd.reserve(req, best.node)
    return Decision(request=req, node=best.node, site=best.site, explanation=explanation)
