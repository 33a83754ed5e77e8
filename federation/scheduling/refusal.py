"""What a filter answers: :class:`Refusal` groups, each a boolean mask of the
nodes refused plus how to word the reason for any subset of them, and the
vectorised label selectors most filters are made of."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from federation.scheduling.columns import Bools, Ints, Round
from federation.scheduling.request import Rejection
from policies.model import LabelRequirement, Operator, Selector

Explain = Callable[[Bools], list[tuple[Rejection, int]]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Nodes one requirement refuses (``mask``) and, for any subset of them, the
    reasons with their node counts (``explain``)."""

    mask: Bools
    explain: Explain


def fixed(mask: Bools, reason: str) -> Refusal:
    return Refusal(mask, lambda rows: [(Rejection(reason=reason), int(np.count_nonzero(rows)))])


def by_value(mask: Bools, values: Ints, phrase: Callable[[int], str]) -> Refusal:
    """Reasons that name each refused node's own value (its label, its count)."""
    def explain(rows: Bools) -> list[tuple[Rejection, int]]:
        found, counts = _value_counts(values.compress(rows))
        return [(Rejection(reason=phrase(v)), n) for v, n in zip(found, counts, strict=True)]
    return Refusal(mask, explain)


def by_domain(index: Ints, refused: Bools, values: Ints, sizes: Ints,
              phrase: Callable[[int], str]) -> Refusal:
    """Reasons that name the value of each refused node's domain (its replicas, its
    skew): ``refused`` and ``values`` per domain, ``index`` each node's domain and
    ``sizes`` the nodes in each. Explaining the whole refusal (the histogram)
    counts per domain, without a pass over the nodes."""
    mask = refused.take(index)

    def explain(rows: Bools) -> list[tuple[Rejection, int]]:
        if rows is not mask:
            return by_value(mask, values.take(index), phrase).explain(rows)
        nodes: dict[int, int] = {}
        for value, count in sorted(zip(values.compress(refused).tolist(),
                                       sizes.compress(refused).tolist(), strict=True)):
            nodes[value] = nodes.get(value, 0) + count
        return [(Rejection(reason=phrase(v)), n) for v, n in nodes.items()]
    return Refusal(mask, explain)


def _value_counts(values: Ints) -> tuple[list[int], list[int]]:
    """The distinct values in ascending order and how often each occurs. Values are
    codes and counts, a narrow range: counting beats sorting."""
    if len(values) == 0:
        return [], []
    low, high = int(values.min()), int(values.max())
    if low == high:  # one value (every refused node at the limit, say)
        return [low], [len(values)]
    if high - low > 4 * len(values) + 64:
        found, counts = np.unique(values, return_counts=True)
        return found.tolist(), counts.tolist()
    tally = np.bincount(values - low)
    present = np.flatnonzero(tally)
    return (present + low).tolist(), tally[present].tolist()


def resource(mask: Bools, reason: str, need: int, free: Ints, unit: str) -> Refusal:
    """Insufficient ``unit``: the numbers are the need and the most any refused node has."""
    def explain(rows: Bools) -> list[tuple[Rejection, int]]:
        most = max(int(free.compress(rows).max()), 0)
        return [(Rejection(reason=reason, need=need, free=most, unit=unit),
                 int(np.count_nonzero(rows)))]
    return Refusal(mask, explain)


def nonempty(refusals: Iterable[Refusal]) -> list[Refusal]:
    return [r for r in refusals if np.count_nonzero(r.mask)]


# -- selectors over label columns -------------------------------------------------------


def requirement_mask(rnd: Round, req: LabelRequirement, of: str) -> Bools:
    """Nodes whose (``of="site"``: site's) labels meet one set-based requirement."""
    if req.operator in (Operator.GT, Operator.LT):
        try:
            bound = float(req.values[0])
        except (ValueError, IndexError):
            return np.zeros(len(rnd.nodes), dtype=np.bool_)
        numbers = rnd.numbers(req.key, of=of)
        return numbers > bound if req.operator is Operator.GT else numbers < bound
    column = rnd.codes(req.key, of=of)
    if req.operator is Operator.EXISTS:
        return column.codes >= 0
    if req.operator is Operator.DOES_NOT_EXIST:
        return column.codes < 0
    found = np.isin(column.codes, [column.code(v) for v in req.values])
    return found if req.operator is Operator.IN else ~found


def selector_mask(rnd: Round, selector: Selector, of: str) -> Bools:
    """Nodes whose (``of="site"``: site's) labels ``selector`` matches, remembered
    for the round by the selector object."""
    key = ("selector-mask", of, id(selector))
    cached = rnd.cache.get(key)
    if cached is not None and cached[0] is selector:
        return np.asarray(cached[1], dtype=np.bool_)
    mask = np.ones(len(rnd.nodes), dtype=np.bool_)
    for label, want in selector.match_labels.items():
        column = rnd.codes(label, of=of)
        mask &= column.codes == column.code(want)
    for requirement in selector.match_expressions:
        mask &= requirement_mask(rnd, requirement, of)
    rnd.cache[key] = (selector, mask)
    return mask


def _label_phrase(key: str, values: list[str], word: Callable[[str], str]) -> Callable[[int], str]:
    def phrase(code: int) -> str:
        return word(f"{key}={values[code]}" if code >= 0 else f"no label {key}")
    return phrase


def selector_refusals(rnd: Round, selector: Selector, of: str,
                      word: Callable[[str], str], skip: Sequence[str] = ()) -> list[Refusal]:
    """Each node refused for the first requirement it misses, worded as
    :meth:`Selector.first_mismatch` words it."""
    passing = np.ones(len(rnd.nodes), dtype=np.bool_)
    out = []
    for key, want in selector.match_labels.items():
        if key in skip:
            continue
        column = rnd.codes(key, of=of)
        bad = passing & (column.codes != column.code(want))
        out.append(by_value(bad, column.codes, _label_phrase(key, column.values, word)))
        passing &= ~bad
    for requirement in selector.match_expressions:
        bad = passing & ~requirement_mask(rnd, requirement, of)
        out.append(fixed(bad, word(f"not {requirement.describe()}")))
        passing &= ~bad
    return nonempty(out)
