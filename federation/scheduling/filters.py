"""Filter plugins: each says, for every node at once, which nodes it refuses and
why. A filter returns :class:`Refusal` groups: a boolean mask of the nodes
refused plus how to word the reason for any subset of them, so the histogram
and the per-node answer come from the very masks that decided.

Static filters depend only on the request's spec and the round's nodes; their
masks are computed once per deployment and round and reused for every replica.
The others (resources, ports, limits, affinity, spread) read the columns the
round updates on every reservation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from federation.inventory import Node
from federation.scheduling.columns import Bools, Floats, Ints, Round, Taint
from federation.scheduling.refusal import (
    Refusal,
    by_domain,
    by_value,
    fixed,
    nonempty,
    resource,
    selector_mask,
    selector_refusals,
)
from federation.scheduling.request import Apart, Rejection, Request, Scope
from policies.model import Selector, TaintEffect, Toleration, TolerationOperator

# -- static filters ----------------------------------------------------------------------


def node_ready_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    bad = ~rnd.ready
    if not bad.any():
        return []
    cached = rnd.cache.get("state-codes")  # the same for every deployment of the round
    if cached is None:
        states = sorted(set(rnd.states))
        codes = np.array([states.index(s) for s in rnd.states], dtype=np.int64)
        cached = rnd.cache["state-codes"] = (states, codes)
    states, codes = cached
    return [by_value(bad, codes, lambda c: f"node {states[c]}")]


def runtime_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    if req.has_command:
        return []
    return nonempty([fixed(rnd.process_runtime, "runtime is process, which needs a command")])


_ARCH_KEYS = ("arch", "os")


def _platform_phrase(key: str, want: str, values: list[str]) -> Callable[[int], str]:
    def phrase(code: int) -> str:
        return f"{key} is {values[code] if code >= 0 else None} not {want}"
    return phrase


def platform_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """arch and os requirements written as node-selector labels, with their own reason."""
    out = []
    for key in _ARCH_KEYS:
        want = req.node_selector.match_labels.get(key)
        if want is None:
            continue
        column = rnd.codes(key)
        bad = column.codes != column.code(want)
        out.append(by_value(bad, column.codes, _platform_phrase(key, want, column.values)))
    return nonempty(out)


def node_selector_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    return selector_refusals(rnd, req.node_selector, "node",
                             lambda miss: f"node selector unmatched ({miss})", skip=_ARCH_KEYS)


def site_selector_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    return selector_refusals(rnd, req.site_selector, "site",
                             lambda miss: f"site selector unmatched ({miss})")


_RESIDENCY_LABELS = ("country", "region")


def _residency_phrase(key: str, allowed: Sequence[str],
                      values: list[str]) -> Callable[[int], str]:
    def phrase(code: int) -> str:
        return f"{key} is {values[code]}, residency allows {','.join(allowed)}"
    return phrase


def residency_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """The node's ``country`` and ``region`` labels must be allowed (compared
    without case); a node without the label cannot prove where it is."""
    out = []
    for key, allowed in zip(_RESIDENCY_LABELS, (req.countries, req.regions), strict=True):
        if not allowed:
            continue
        folded = rnd.codes(key, fold=True)
        raw = rnd.codes(key)
        ok = np.isin(folded.codes, [folded.code(a.casefold()) for a in allowed])
        missing = raw.codes < 0
        out.append(fixed(missing, f"no {key} label, residency requires one"))
        out.append(by_value(~ok & ~missing, raw.codes,
                            _residency_phrase(key, allowed, raw.values)))
    return nonempty(out)


def tolerates(tolerations: Sequence[Toleration], taint: Taint) -> bool:
    for t in tolerations:
        if t.effect is not None and t.effect is not taint.effect:
            continue
        if t.operator is TolerationOperator.EXISTS and (not t.key or t.key == taint.key):
            return True
        if t.operator is TolerationOperator.EQUAL and t.key == taint.key and \
                t.value == taint.value:
            return True
    return False


def _untolerated(req: Request, rnd: Round, effect: TaintEffect) -> list[Refusal]:
    return [fixed(mask, f"untolerated taint {taint.describe()}")
            for taint, mask in sorted(rnd.taints.items(), key=lambda kv: kv[0].describe())
            if taint.effect is effect and not tolerates(req.tolerations, taint)]


def taint_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """NoSchedule taints the replica does not tolerate, one reason each
    (PreferNoSchedule only scores down)."""
    return _untolerated(req, rnd, TaintEffect.NO_SCHEDULE)


def no_execute_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """NoExecute taints the replica does not tolerate: a filter like NoSchedule, and
    also a reason for a running replica to leave (it is one of the STAY_FILTERS)."""
    return _untolerated(req, rnd, TaintEffect.NO_EXECUTE)


def format_ms(ms: float) -> str:
    return f"{ms:.0f}ms" if ms >= 10 or float(ms).is_integer() else f"{ms:.1f}ms"


def _rtt_over(mask: Bools, rtt: Floats, name: str, bound: float) -> Refusal:
    """The number shown is the lowest RTT among the refused nodes: how close the
    nearest of them comes."""
    def explain(rows: Bools) -> list[tuple[Rejection, int]]:
        best = float(rtt[rows].min())
        return [(Rejection(reason=f"rtt from {name} {format_ms(best)} > {format_ms(bound)}"),
                 int(np.count_nonzero(rows)))]
    return Refusal(mask, explain)


def latency_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """Every user group with a ``maxRtt`` must reach the node within it; an unknown
    RTT cannot prove that."""
    out = []
    for users in req.users:
        if users.max_rtt_ms is None:
            continue
        rtt = rnd.rtt_from(users.source)
        unknown = np.isnan(rtt)
        out.append(fixed(unknown, f"rtt from {users.name} unknown"))
        with np.errstate(invalid="ignore"):
            over = rtt > users.max_rtt_ms
        out.append(_rtt_over(over, rtt, users.name, users.max_rtt_ms))
    return nonempty(out)


# -- filters that read what the round reserved -----------------------------------------------


def resources_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """Reports every dimension that does not fit, not only the first."""
    dimensions = [(req.cpu_millis, rnd.free_cpu, "cpu"), (req.memory_bytes, rnd.free_mem, "memory")]
    if req.disk_bytes:
        dimensions.append((req.disk_bytes, rnd.free_disk, "disk"))
    out = []
    for need, free, unit in dimensions:
        short, count = _short(rnd, need, free, unit)
        if count:  # what ``nonempty`` keeps, without wording the others
            out.append(resource(short, f"insufficient {unit}", need, free, unit))
    return out


@dataclass(slots=True)
class _Short:
    """The nodes short of one resource for one request size, and how many, as of the
    ``since``-th reservation of the round."""

    mask: Bools
    count: int
    since: int
    # The mask's and the free column's memory as Python bools and ints (a cell is
    # read or written at a third of numpy's cost per call).
    cells: memoryview[bool]
    free: memoryview[int]


def _short(rnd: Round, need: int, free: Ints, unit: str) -> tuple[Bools, int]:
    """The nodes with less than ``need`` of ``free``, and how many, kept for the
    round: compared over every node the first time, then at the rows reserved
    since (a reservation changes only its own row). The mask is the round's: read
    it, do not change it."""
    seen = len(rnd.touched)
    key = ("short", unit, need)
    kept: _Short | None = rnd.cache.get(key)
    if kept is None:
        mask = need > free
        kept = rnd.cache[key] = _Short(mask, int(np.count_nonzero(mask)), seen,
                                       mask.data, free.data)  # type: ignore[arg-type]
    elif kept.since != seen:
        cells, cells_free, count = kept.cells, kept.free, kept.count
        for i in rnd.touched[kept.since:]:
            now = need > cells_free[i]
            if now is not cells[i]:
                cells[i] = now
                count += 1 if now else -1
        kept.count, kept.since = count, seen
    return kept.mask, kept.count


def devices_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """Every device kind that does not fit, like ``resources``. Agents do not report
    what their instances use, so the committed count is all there is."""
    out = []
    for kind, need in sorted(req.devices.items()):
        free = rnd.devices.get(kind)
        if free is None:
            free = np.zeros(len(rnd.nodes), dtype=np.int64)
        out.append(resource(need > free, f"insufficient {kind}", need, free, "count"))
    return nonempty(out)


def host_port_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """Names the lowest clashing port of each node."""
    if not req.host_ports:
        return []
    passing: Bools | None = None  # None: every node so far
    out = []
    for port in sorted(set(req.host_ports)):
        taken = rnd.ports.get(port)
        if taken is None:
            continue
        bad = taken.copy() if passing is None else passing & taken
        out.append(fixed(bad, f"host port {port} in use"))
        passing = ~bad if passing is None else passing & ~bad
    return nonempty(out)


def _replicas(count: int) -> str:
    return f"{count} replica{'' if count == 1 else 's'}"


def max_per_node_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    if req.max_per_node <= 0:
        return []
    counts = rnd.counts(req.deployment).node
    return nonempty([by_value(counts >= req.max_per_node, counts, lambda c: (
        f"{_replicas(c)} already on the node, maxPerNode {req.max_per_node}"))])


def max_per_site_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    if req.max_per_site <= 0:
        return []
    index, size = rnd.domain(Scope.SITE)
    counts = rnd.counts(req.deployment).domains[Scope.SITE]
    full = counts >= req.max_per_site
    full[size:] = False  # every node has a site: the unlabelled bucket is empty
    if not np.count_nonzero(full):
        return []  # no site is full: no need to spread the answer to the nodes
    return nonempty([by_domain(index, full, counts, _domain_sizes(rnd, Scope.SITE), lambda c: (
        f"{_replicas(c)} already on the site, maxPerSite {req.max_per_site}"))])


def _domain_sizes(rnd: Round, scope: Scope) -> Ints:
    """Nodes per domain of ``scope`` (the last cell: nodes without the label)."""
    cached = rnd.cache.get(("domain-sizes", scope))
    if cached is None:
        index, size = rnd.domain(scope)
        cached = np.bincount(index, minlength=size + 1)
        rnd.cache[("domain-sizes", scope)] = cached
    return cached


def describe_selector(selector: Selector) -> str:
    """``app=web,tier In (a,b)``; ``any deployment`` for the empty selector."""
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    parts += [e.describe() for e in selector.match_expressions]
    return ",".join(parts) or "any deployment"


def anti_affinity_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """The replica's own required anti-affinity terms, and those of the other
    deployments in the round that shun it: no replica lands in a domain holding
    one it shuns or one that shuns it (as Kubernetes checks existing pods' terms
    against an incoming pod)."""
    own = [fixed(rnd.matching_in_domain(term.selector, term.scope) > 0,
                 f"anti-affinity with {describe_selector(term.selector)} on the {term.scope.value}")
           for term in req.apart]
    theirs = [fixed(rnd.in_domain(other, term.scope) > 0,
                    f"{other}'s anti-affinity with {describe_selector(term.selector)} on the "
                    f"{term.scope.value}")
              for other, term in shunned_by(req, rnd) if rnd.placed.get(other)]
    return nonempty(own + theirs)


def shunned_by(req: Request, rnd: Round) -> list[tuple[str, Apart]]:
    """The required anti-affinity terms of other deployments in the round that match
    the replica's labels (its own terms are its own filter's). Remembered until a
    deployment with terms joins the round."""
    key = ("shunned-by", req.deployment)
    joined = len(rnd.deployment_apart)
    cached = rnd.cache.get(key)
    if cached is not None and cached[0] == joined and cached[1] == req.labels:
        return cached[2]  # type: ignore[no-any-return]
    found = [(other, term) for other, terms in rnd.deployment_apart.items()
             if other != req.deployment for term in terms if term.selector.matches(req.labels)]
    rnd.cache[key] = (joined, req.labels, found)
    return found


def affinity_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """Required affinity; the first replica of a group the selector matches itself
    may go anywhere (nothing to be near yet)."""
    out = []
    for term in req.near:
        counts = rnd.matching_in_domain(term.selector, term.scope)
        if not any(rnd.placed.get(d) for d in rnd.matching(term.selector)) and \
                term.selector.matches(req.labels):
            continue
        out.append(fixed(counts == 0, f"affinity with {describe_selector(term.selector)}: "
                                      f"none on the {term.scope.value}"))
    return nonempty(out)


def split_targets(weights: Sequence[int], replicas: int) -> list[int]:
    """Replicas per split group: each weight's share of ``replicas``, rounded down,
    the rest one each to the largest remainders (the first group on a tie)."""
    total = sum(weights)
    if total <= 0 or replicas <= 0:
        return [0] * len(weights)
    exact = [w * replicas / total for w in weights]
    out = [int(e) for e in exact]
    by_remainder = sorted(range(len(weights)), key=lambda g: (out[g] - exact[g], g))
    for g in by_remainder[:replicas - sum(out)]:
        out[g] += 1
    return out


def split_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """A weighted split over site groups: the replica goes to the group furthest
    below its share that still has a node passing the other filters. A site in two
    groups counts for both. Once every share is met (more replicas than the split
    divides, while a rollout surges), any group will do."""
    if not req.split:
        return []
    masks = [selector_mask(rnd, share.sites, "site") for share in req.split]
    counts = rnd.counts(req.deployment).node
    targets = split_targets([share.weight for share in req.split], req.replicas)
    placed = [int(counts.compress(mask).sum()) for mask in masks]
    short = sorted((g for g in range(len(masks)) if placed[g] < targets[g]),
                   key=lambda g: (placed[g] - targets[g], g))
    if not short:
        return []
    group = next((g for g in short if np.count_nonzero(fits & masks[g])), short[0])
    share = req.split[group]
    return nonempty([fixed(~masks[group], (
        f"site not in split group {group + 1} ({describe_selector(share.sites)}, "
        f"{share.weight}%: {placed[group]} of {targets[group]} placed)"))])


def _skew_phrase(scope: Scope, max_skew: int) -> Callable[[int], str]:
    def phrase(skew: int) -> str:
        return f"{scope.value} spread skew {skew} > maxSkew {max_skew}"
    return phrase


def spread_checker(req: Request, rnd: Round, fits: Bools) -> list[Refusal]:
    """Required topology spread. Must run last: the skew is measured against the
    emptiest domain that still has a node passing every other filter, so a domain
    that cannot take another replica does not hold the others back."""
    out = []
    for spread in req.spread:
        if not spread.required:
            continue
        index, size = rnd.domain(spread.scope)
        labelled, unlabelled = _labelled(rnd, spread.scope)
        out.append(fixed(unlabelled, f"no {spread.scope.value} label, spread requires one"))
        counts = rnd.counts(req.deployment)
        per_domain = counts.node if spread.scope is Scope.NODE else counts.domains[spread.scope]
        open_nodes = fits & labelled
        if not np.count_nonzero(open_nodes):
            continue
        skew = per_domain + 1 - _emptiest_open(rnd, spread.scope, per_domain, open_nodes)
        over = skew > spread.max_skew
        over[size:] = False  # nodes without the label are refused above
        if not np.count_nonzero(over):
            continue
        out.append(by_domain(index, over, skew, _domain_sizes(rnd, spread.scope),
                             _skew_phrase(spread.scope, spread.max_skew)))
    return nonempty(out)


def _labelled(rnd: Round, scope: Scope) -> tuple[Bools, Bools]:
    """Which nodes have the scope's label, and which do not."""
    cached = rnd.cache.get(("labelled", scope))
    if cached is None:
        labelled = rnd.has_domain(scope)
        cached = (labelled, ~labelled)
        rnd.cache[("labelled", scope)] = cached
    return cached


_EMPTIEST_TRIED = 3  # domains looked at one by one before every domain is
_SORTED_IN_PYTHON = 64  # domains: fewer are ordered by Python's sort (numpy's costs more)


def _emptiest_open(rnd: Round, scope: Scope, per_domain: Ints, open_nodes: Bools) -> int:
    """The fewest replicas in a domain with an open node. The emptiest domains are
    looked at first, one by one (usually the emptiest has an open node); failing
    that, per domain whether any of its nodes is open, with one gather of the
    nodes in domain order."""
    if scope is Scope.NODE:
        return int(per_domain.compress(open_nodes).min())
    cached = rnd.cache.get(("domain-order", scope))
    if cached is None:
        index, size = rnd.domain(scope)
        order = np.argsort(index, kind="stable")
        # Every domain below ``size`` has a node; the nodes without the label sort
        # last and are never open, so the last domain may run on into them.
        starts = np.searchsorted(index[order], np.arange(size))
        cached = (order, starts, [*starts[1:].tolist(), len(order)])
        rnd.cache[("domain-order", scope)] = cached
    order, starts, ends = cached
    held = per_domain[:len(starts)]
    if len(held) <= _SORTED_IN_PYTHON:
        counts = held.tolist()
        emptiest = sorted(range(len(counts)), key=counts.__getitem__)[:_EMPTIEST_TRIED]
    else:
        emptiest = np.argsort(held, kind="stable")[:_EMPTIEST_TRIED].tolist()
    for d in emptiest:  # a stable order: the lowest index first on equal counts
        if np.count_nonzero(open_nodes.take(order[starts[d]:ends[d]])):
            return int(held[d])  # every emptier domain was looked at and is closed
    has_open = np.logical_or.reduceat(open_nodes.take(order), starts)
    return int(held.compress(has_open).min())


Check = Callable[[Request, Round, Bools], list[Refusal]]


@dataclass(frozen=True, slots=True)
class FilterPlugin:
    """A named filter. Called with one node, it answers for that node alone (what
    ``refusals`` and the tests use); the scheduler uses ``check`` over all nodes."""

    name: str
    check: Check
    static: bool
    # Whether the request asks for what the filter checks (or, for anti-affinity, a
    # deployment in the round shuns it); a dynamic filter that does not apply is
    # skipped (it would refuse nothing).
    applies: Callable[[Request, Round], bool] = lambda req, rnd: True

    def __call__(self, req: Request, node: Node, rnd: Round) -> list[Rejection]:
        return refusals(req, node, rnd, (self.name,))


_PLUGINS = [
    FilterPlugin("node-ready", node_ready_checker, True),
    FilterPlugin("runtime", runtime_checker, True),
    FilterPlugin("platform", platform_checker, True),
    FilterPlugin("node-selector", node_selector_checker, True),
    FilterPlugin("site-selector", site_selector_checker, True),
    FilterPlugin("residency", residency_checker, True),
    FilterPlugin("taints", taint_checker, True),
    FilterPlugin("no-execute", no_execute_checker, True),
    FilterPlugin("latency", latency_checker, True),
    FilterPlugin("resources", resources_checker, False),
    FilterPlugin("devices", devices_checker, False, lambda req, rnd: bool(req.devices)),
    FilterPlugin("host-ports", host_port_checker, False, lambda req, rnd: bool(req.host_ports)),
    FilterPlugin("max-per-node", max_per_node_checker, False,
                 lambda req, rnd: req.max_per_node > 0),
    FilterPlugin("max-per-site", max_per_site_checker, False,
                 lambda req, rnd: req.max_per_site > 0),
    FilterPlugin("anti-affinity", anti_affinity_checker, False,
                 lambda req, rnd: bool(req.apart) or bool(shunned_by(req, rnd))),
    FilterPlugin("affinity", affinity_checker, False, lambda req, rnd: bool(req.near)),
    # After the others: it reads what fits.
    FilterPlugin("split", split_checker, False, lambda req, rnd: bool(req.split)),
    # Last: it reads what the others let through.
    FilterPlugin("spread", spread_checker, False,
                 lambda req, rnd: any(spread.required for spread in req.spread)),
]
FILTERS: dict[str, FilterPlugin] = {p.name: p for p in _PLUGINS}
# What a placed replica must still pass to stay where it runs, checked again on
# every pass: the rules on the node's labels, and the per-node and per-site limits
# (counted in slot order, so the highest slots move first). A replica that fails
# (its placement or a policy changed, or the node's labels) is placed again.
# A NoExecute taint the replica does not tolerate makes it leave, as in Kubernetes.
# Resources, ports, affinity, spread and latency are checked only when a replica is
# placed (an RTT that drifts over the bound must not make replicas flap).
STAY_FILTERS = ("platform", "node-selector", "site-selector", "residency", "no-execute",
                "max-per-node", "max-per-site")


def may_stay(req: Request, rnd: Round, i: int) -> bool:
    """Whether row ``i`` passes the ``STAY_FILTERS``, checked at that row alone: the
    label rules from the static filters' masks (gathered once per deployment and
    round), the limits as their filters compare the replicas counted so far."""
    static = _static(req, rnd)
    cached = rnd.cache.get(("stay-refused", req.deployment))
    if cached is None or cached[0] is not static:
        refused = np.zeros(len(rnd.nodes), dtype=np.bool_)
        for name in STAY_FILTERS:
            for refusal in static[0].get(name, ()):
                refused |= refusal.mask
        cached = (static, refused)
        rnd.cache[("stay-refused", req.deployment)] = cached
    if cached[1][i]:
        return False
    counts = rnd.counts(req.deployment)
    if req.max_per_node > 0 and counts.node[i] >= req.max_per_node:
        return False
    return not (req.max_per_site > 0 and
                counts.domains[Scope.SITE][rnd.site_idx[i]] >= req.max_per_site)


# -- the chain -----------------------------------------------------------------------------


Tally = tuple[dict[str, int], dict[str, Rejection]]


def tally(found: Iterable[tuple[Rejection, int]], counts: dict[str, int],
          numbers: dict[str, Rejection]) -> None:
    """Add reasons to ``counts``; keep per resource reason the rejection with the
    most free (its numbers are the ones shown)."""
    for rejection, count in found:
        counts[rejection.reason] = counts.get(rejection.reason, 0) + count
        if rejection.unit:
            seen = numbers.get(rejection.reason)
            if seen is None or (rejection.free or 0) > (seen.free or 0):
                numbers[rejection.reason] = rejection


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every filter's refusals for one request, and the nodes that pass them all."""

    refusals: dict[str, list[Refusal]]
    fits: Bools
    static_tally: Tally  # the static filters' reasons, counted once per round
    dynamic: list[Refusal]  # the other filters' refusals, in chain order


def _static_key(req: Request) -> tuple[object, ...]:
    """What the static filters read, and what the dynamic filters' ``applies`` read."""
    return (req.has_command, req.node_selector, req.site_selector, req.countries, req.regions,
            req.tolerations, req.users, req.labels,
            req.devices, req.host_ports, req.max_per_node, req.max_per_site, req.apart, req.near,
            req.split, req.spread)


Static = tuple[dict[str, list[Refusal]], Bools, Tally, list[FilterPlugin]]


def _static(req: Request, rnd: Round) -> Static:
    """The static filters' verdict and the dynamic filters that apply, decided once
    per deployment and round (which apply again when a deployment with
    anti-affinity terms joins the round)."""
    cached = rnd.cache.get(("static", req.deployment))
    key = _static_key(req)
    joined = len(rnd.deployment_apart)
    if cached is not None and cached[0] == key:
        if cached[1] == joined:
            return cached[2]  # type: ignore[no-any-return]
        verdict: Static = cached[2]
        result = (*verdict[:3], [p for p in _DYNAMIC if p.applies(req, rnd)])
        rnd.cache[("static", req.deployment)] = (key, joined, result)
        return result
    fits = np.ones(len(rnd.nodes), dtype=np.bool_)
    out: dict[str, list[Refusal]] = {}
    counts: dict[str, int] = {}
    numbers: dict[str, Rejection] = {}
    for plugin in _PLUGINS:
        if plugin.static:
            out[plugin.name] = plugin.check(req, rnd, fits)
            for refusal in out[plugin.name]:
                fits &= ~refusal.mask
                tally(refusal.explain(refusal.mask), counts, numbers)
    result = (out, fits, (counts, numbers), [p for p in _DYNAMIC if p.applies(req, rnd)])
    rnd.cache[("static", req.deployment)] = (key, joined, result)
    return result


def static_fits(req: Request, rnd: Round) -> Bools:
    """The nodes that pass the static filters (what no reservation can change)."""
    return _static(req, rnd)[1]


_DYNAMIC = [p for p in _PLUGINS if not p.static]


def evaluate(req: Request, rnd: Round, names: Iterable[str] | None = None) -> Verdict:
    """Run the filter chain over every node (only the dynamic filters in ``names``,
    when given; the static ones come from the round's cache). A dynamic filter that
    does not apply to the request answers nothing, as if it had refused no node."""
    static, fits, static_tally, applying = _static(req, rnd)
    wanted = set() if names is None else set(names)
    everything = names is None or "spread" in wanted
    out = dict(static)
    fits = fits.copy()
    dynamic: list[Refusal] = []
    for plugin in applying:
        if not everything and plugin.name not in wanted:
            continue
        found = plugin.check(req, rnd, fits)
        out[plugin.name] = found
        for refusal in found:
            np.greater(fits, refusal.mask, out=fits)  # fits and not refused
        dynamic += found
    return Verdict(refusals=out, fits=fits, static_tally=static_tally, dynamic=dynamic)


def refusals(req: Request, node: Node, rnd: Round,
             names: Iterable[str] = tuple(FILTERS)) -> list[Rejection]:
    """What the named filters (all by default) say against ``node``."""
    names = tuple(names)
    verdict = evaluate(req, rnd, names)
    i = rnd.index[node.name]
    row = np.zeros(len(rnd.nodes), dtype=np.bool_)
    row[i] = True
    return [rejection for name in names for refusal in verdict.refusals.get(name, ())
            if refusal.mask[i] for rejection, _ in refusal.explain(row)]
