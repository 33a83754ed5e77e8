"""Properties of the array scheduler over random fleets and requests: no placed
replica breaks a rule (checked by a plain per-node predicate written here, not
by the scheduler's code), the explanation agrees with the decision, and the
same round decides the same way whatever the order of its nodes; a pass that
moves replicas to make room keeps every node within its capacity."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from rtt_table import TableRtt

from federation import wire
from federation.inventory import Node, NodeState
from federation.model import SlotKey, SlotRecord
from federation.planning import decide, misplaced, request_for
from federation.scheduler import (
    STAY_FILTERS,
    Apart,
    Request,
    Round,
    Scope,
    Spread,
    Users,
    place,
    refusals,
    tie_keys,
)
from federation.scheduling.filters import evaluate
from federation.scheduling.place import _top, histogram
from federation.scheduling.scores import SCORES, score
from policies.model import (
    Container,
    Deployment,
    Placement,
    Residency,
    Resources,
    Selector,
    Toleration,
)

MiB = 1024**2
SITES = {"s1": {"region": "eu", "country": "de"}, "s2": {"region": "eu", "country": "fr"},
         "s3": {"region": "us", "country": "us"}}


def make_node(i: int, site: str, arch: str, taint: str | None, cpu: int, mem: int,
              used_cpu: int, ready: bool) -> Node:
    labels = dict(SITES[site])
    if taint:
        labels["taint.edgefed.io/dedicated"] = taint
    capacity = wire.Capacity(
        site=site, arch=arch, os="linux", runtime="docker", labels=labels,
        allocatable=wire.Resources(cpu_millis=cpu, memory_bytes=mem * MiB, disk_bytes=0),
        used=wire.Resources(cpu_millis=used_cpu, memory_bytes=0, disk_bytes=0),
        images=(), instances=())
    state = NodeState.READY if ready else NodeState.SUSPECT
    return Node(name=f"n{i}", site=site, epoch="e", online=ready, state=state,
                state_since=0.0, last_seen=0.0, capacity=capacity)


nodes_strategy = st.lists(
    st.builds(make_node, st.integers(0, 99), st.sampled_from(sorted(SITES)),
              st.sampled_from(["arm64", "amd64"]),
              st.sampled_from([None, "gpu:NoSchedule", "gpu:PreferNoSchedule"]),
              st.integers(0, 4000), st.integers(0, 4096), st.integers(0, 2000),
              st.sampled_from([True, True, True, False])),
    min_size=1, max_size=10, unique_by=lambda n: n.name)

requests_strategy = st.lists(st.builds(
    lambda dep, cpu, mem, arch, country, tolerate, port, bound, per_node, per_site, apart,
    spread: Request(
        deployment=dep, slot=0, generation=1, labels={"app": dep}, cpu_millis=cpu,
        memory_bytes=mem * MiB, node_selector=Selector(match_labels={"arch": arch} if arch else {}),
        countries=(country,) if country else (),
        tolerations=(Toleration(key="dedicated", value="gpu"),) if tolerate else (),
        host_ports=(port,) if port else (),
        users=(Users(name="eu", source="berlin", max_rtt_ms=bound),),
        max_per_node=per_node, max_per_site=per_site,
        apart=(Apart(selector=Selector(match_labels={"app": "db"}), scope=apart),) if apart
        else (),
        spread=(Spread(scope=Scope.REGION, max_skew=1, required=True),) if spread else ()),
    st.sampled_from(["web", "db"]), st.integers(0, 2000), st.integers(0, 2048),
    st.sampled_from([None, "arm64", "amd64"]), st.sampled_from([None, "de", "us"]),
    st.booleans(), st.sampled_from([None, 80]), st.sampled_from([None, 20.0, 60.0]),
    st.integers(0, 2), st.integers(0, 3), st.sampled_from([None, Scope.NODE, Scope.SITE]),
    st.booleans()), min_size=1, max_size=8)


@dataclass
class Ledger:
    """What the test itself knows is placed: cpu, memory, ports, replicas."""

    cpu: Counter[str] = field(default_factory=Counter)
    mem: Counter[str] = field(default_factory=Counter)
    ports: dict[str, set[int]] = field(default_factory=dict)
    replicas: dict[str, Counter[str]] = field(default_factory=dict)


def rtt_of(node: Node) -> float:
    return 10.0 + (7 * int(node.name[1:])) % 60


def allowed(req: Request, node: Node, nodes: list[Node], ledger: Ledger,
            terms: Mapping[str, tuple[Apart, ...]]) -> bool:
    """Every rule except required spread, one node at a time, from first principles.
    ``terms``: each deployment's required anti-affinity terms."""
    cap = node.capacity
    assert cap is not None
    if node.state is not NodeState.READY:
        return False
    want = req.node_selector.match_labels.get("arch")
    if want is not None and cap.arch != want:
        return False
    if req.countries and cap.labels["country"] not in req.countries:
        return False
    taint = cap.labels.get("taint.edgefed.io/dedicated")
    if taint == "gpu:NoSchedule" and not req.tolerations:
        return False
    for users in req.users:
        if users.max_rtt_ms is not None and rtt_of(node) > users.max_rtt_ms:
            return False
    free_cpu = cap.allocatable.cpu_millis - cap.used.cpu_millis - ledger.cpu[node.name]
    free_mem = cap.allocatable.memory_bytes - cap.used.memory_bytes - ledger.mem[node.name]
    if req.cpu_millis > free_cpu or req.memory_bytes > free_mem:
        return False
    if set(req.host_ports) & ledger.ports.get(node.name, set()):
        return False
    mine = ledger.replicas.get(req.deployment, Counter())
    if req.max_per_node and mine[node.name] >= req.max_per_node:
        return False
    same_site = [n.name for n in nodes if n.site == node.site]
    if req.max_per_site and sum(mine[n] for n in same_site) >= req.max_per_site:
        return False
    for term in req.apart:
        db = ledger.replicas.get("db", Counter())
        near = [node.name] if term.scope is Scope.NODE else same_site
        if sum(db[n] for n in near):
            return False
    # Both ways: nor may it land next to a replica of a deployment that shuns it.
    for other, placed in ledger.replicas.items():
        for term in terms.get(other, ()) if other != req.deployment else ():
            near = [node.name] if term.scope is Scope.NODE else same_site
            if term.selector.matches(req.labels) and sum(placed[n] for n in near):
                return False
    return True


def one_spec_each(reqs: list[Request]) -> list[Request]:
    """The requests numbered by slot, every replica of a deployment with the
    anti-affinity terms of its first (replicas of a deployment share its spec)."""
    terms: dict[str, tuple[Apart, ...]] = {}
    return [Request(**{**{f: getattr(base, f) for f in base.__dataclass_fields__},
                       "slot": slot, "apart": terms.setdefault(base.deployment, base.apart)})
            for slot, base in enumerate(reqs)]


def spread_allows(req: Request, node: Node, plain: list[Node], ledger: Ledger,
                  site_of: Mapping[str, str]) -> bool:
    """Required spread over regions: the node's region may then hold at most maxSkew
    more than the emptiest region among the nodes every other rule allows."""
    if not req.spread:
        return True
    mine = ledger.replicas.get(req.deployment, Counter())

    def held(region: str) -> int:
        return sum(c for name, c in mine.items() if SITES[site_of[name]]["region"] == region)
    low = min(held(SITES[n.site]["region"]) for n in plain)
    return held(SITES[node.site]["region"]) + 1 - low <= req.spread[0].max_skew


def without_rtt(reason: str) -> str:
    return re.sub(r"^(rtt from \S+) [\d.]+ms >", r"\1 >", reason)


@settings(max_examples=80, deadline=None)
@given(nodes=nodes_strategy, reqs=requests_strategy)
def test_placements_obey_every_rule_and_explain_themselves(nodes: list[Node],
                                                           reqs: list[Request]) -> None:
    site_of = {n.name: n.site for n in nodes}
    rtt = TableRtt({("berlin", n.name): rtt_of(n) for n in nodes})
    rnd = Round(nodes=nodes, rtt=rtt)
    ledger = Ledger()
    reqs = one_spec_each(reqs)
    terms = {req.deployment: req.apart for req in reqs}
    for req in reqs:
        plain = [n for n in nodes if allowed(req, n, nodes, ledger, terms)]
        fits = [n for n in plain if spread_allows(req, n, plain, ledger, site_of)]
        totals, _ = score(req, rnd)
        refused = [n for n in nodes if n not in fits]
        said = {n.name: refusals(req, n, rnd) for n in nodes}  # before place() reserves
        decision = place(req, rnd)
        explanation = decision.explanation

        # The decision agrees with the plain predicate.
        assert explanation.feasible == len(fits)
        assert (decision.node is None) == (not fits)
        if decision.node is not None:
            assert decision.node in {n.name for n in fits}
            # The winner has the highest total of every node that fits, ties by the hash.
            rows = np.array([rnd.index[n.name] for n in fits])
            best = totals[rows].max()
            tied = rows[totals[rows] == best]
            expected = tied[np.argmin(tie_keys(req, rnd, tied))]
            assert decision.node == rnd.node_names[int(expected)]
            assert explanation.ranked[0].total == best
            assert [r.total for r in explanation.ranked] == sorted(
                (r.total for r in explanation.ranked), reverse=True)
        # The histogram counts every reason of every refused node, and nothing else.
        reasons = [r.reason for n in refused for r in said[n.name]]
        assert all(said[n.name] for n in refused)
        assert not any(said[n.name] for n in fits)
        assert sum(explanation.rejections.values()) == len(reasons)
        # Per node an RTT reason names the node's own RTT; the histogram names the lowest
        # of the group (how close the nearest refused node comes).
        assert Counter(map(without_rtt, reasons)) == Counter(
            {without_rtt(r): c for r, c in explanation.rejections.items()})

        if decision.node is not None:
            ledger.cpu[decision.node] += req.cpu_millis
            ledger.mem[decision.node] += req.memory_bytes
            ledger.ports.setdefault(decision.node, set()).update(req.host_ports)
            ledger.replicas.setdefault(req.deployment, Counter())[decision.node] += 1


@settings(max_examples=30, deadline=None)
@given(nodes=nodes_strategy, reqs=requests_strategy)
def test_the_order_of_the_nodes_does_not_change_decisions(nodes: list[Node],
                                                         reqs: list[Request]) -> None:
    rtt = TableRtt({("berlin", n.name): rtt_of(n) for n in nodes})
    forward, backward = Round(nodes=nodes, rtt=rtt), Round(nodes=nodes[::-1], rtt=rtt)
    for slot, base in enumerate(reqs):
        req = Request(**{**{f: getattr(base, f) for f in base.__dataclass_fields__},
                         "slot": slot})
        a, b = place(req, forward), place(req, backward)
        assert a.node == b.node
        assert a.explanation.message == b.explanation.message


@settings(max_examples=30, deadline=None)
@given(nodes=nodes_strategy, reqs=requests_strategy)
def test_scores_kept_through_a_round_equal_a_fresh_rounds(nodes: list[Node],
                                                          reqs: list[Request]) -> None:
    """Scores updated only where replicas land are, float for float, the scores of
    a round built from scratch with the same reservations."""
    rtt = TableRtt({("berlin", n.name): rtt_of(n) for n in nodes})
    rnd = Round(nodes=nodes, rtt=rtt)
    for slot, base in enumerate(reqs):
        req = Request(**{**{f: getattr(base, f) for f in base.__dataclass_fields__},
                         "slot": slot})
        fresh = Round(nodes=nodes, rtt=rtt, reserved=dict(rnd.reserved),
                      placed={d: Counter(c) for d, c in rnd.placed.items()},
                      deployment_labels=dict(rnd.deployment_labels),
                      deployment_apart=dict(rnd.deployment_apart))
        (kept, kept_vectors), (built, built_vectors) = score(req, rnd), score(req, fresh)
        assert np.array_equal(kept, built)
        assert {k: v.tolist() for k, v in kept_vectors.items()} == {
            k: v.tolist() for k, v in built_vectors.items()}
        assert_same_verdict(req, rnd, fresh)
        place(req, rnd)


@settings(max_examples=200, deadline=None)
@given(totals=st.lists(st.sampled_from([0.0, 12.5, 40.0, 40.0, 77.25, 90.0]), min_size=1,
                       max_size=40),
       fitting=st.lists(st.booleans(), min_size=40, max_size=40), keep=st.integers(1, 4),
       slot=st.integers(0, 50))
def test_the_best_among_the_nodes_that_fit_are_found_alike_masked_or_gathered(
        totals: list[float], fitting: list[bool], keep: int, slot: int) -> None:
    """A big fleet's best nodes are looked for among the totals of the nodes that fit,
    gathered; a small one's among every total, the others masked. Both give the same
    nodes in the same order, equal totals included."""
    nodes = [make_node(i, "s1", "arm64", None, 1000, 1024, 0, True) for i in range(len(totals))]
    fits = np.array(fitting[:len(totals)], dtype=np.bool_)
    if not fits.any():
        fits[0] = True
    rnd = Round(nodes=nodes)
    req = Request(deployment="web", slot=slot, generation=1)
    masked = _top(req, rnd, np.array(totals), fits, keep, gather_from=len(totals) + 1)
    gathered = _top(req, rnd, np.array(totals), fits, keep, gather_from=0)
    assert masked[0].tolist() == gathered[0].tolist()
    assert masked[1] == gathered[1]
    assert set(masked[0].tolist()) <= set(np.flatnonzero(fits).tolist())


def assert_same_verdict(req: Request, rnd: Round, fresh: Round) -> None:
    """What the filters kept through ``rnd`` (the nodes short of a resource, say)
    answer as they answer in ``fresh``: the same nodes fit, for the same reasons."""
    kept, built = evaluate(req, rnd), evaluate(req, fresh)
    assert kept.fits.tolist() == built.fits.tolist()
    assert histogram(kept) == histogram(built)


PROVIDERS = {"s1": "aws", "s2": None, "s3": "aws"}


def with_provider(node: Node) -> Node:
    """The node with its site's ``provider`` label, where the site has one."""
    provider = PROVIDERS[node.site]
    if provider is None or node.capacity is None:
        return node
    labels = {**node.capacity.labels, "provider": provider}
    capacity = wire.Capacity(**{**{f: getattr(node.capacity, f)
                                   for f in node.capacity.__dataclass_fields__},
                                "labels": labels})
    return Node(**{**{f: getattr(node, f) for f in node.__dataclass_fields__},
                   "capacity": capacity})


resizes_strategy = st.lists(st.tuples(st.sampled_from(["web", "db", "cache"]),
                                      st.integers(0, 1500), st.integers(0, 1024),
                                      st.integers(1, 6)), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(nodes=nodes_strategy, asks=resizes_strategy)
def test_spread_scores_kept_with_the_counts_equal_a_fresh_rounds(
        nodes: list[Node], asks: list[tuple[str, int, int, int]]) -> None:
    """The spread-sites score of each site, region and provider domain, rewritten
    one cell per scope when a replica lands, is after every placement the score a
    round built from scratch computes, also when a deployment changes size (cpu,
    memory, replicas) in the middle of the round."""
    nodes = [with_provider(n) for n in nodes]
    rnd = Round(nodes=nodes)
    for slot, (deployment, cpu, mem, replicas) in enumerate(asks):
        req = Request(deployment=deployment, slot=slot, generation=1,
                      labels={"app": deployment}, cpu_millis=cpu, memory_bytes=mem * MiB,
                      replicas=replicas,
                      spread=(Spread(scope=Scope.PROVIDER, max_skew=1),))
        place(req, rnd)
        fresh = Round(nodes=nodes, reserved=dict(rnd.reserved),
                      placed={d: Counter(c) for d, c in rnd.placed.items()},
                      deployment_labels=dict(rnd.deployment_labels))
        for name in rnd.placed:
            kept, built = rnd.counts(name), fresh.counts(name)
            for scope in (Scope.SITE, Scope.REGION, Scope.PROVIDER):
                assert kept.domains[scope].tolist() == built.domains[scope].tolist()
                assert kept.spread_sites[scope].tolist() == built.spread_sites[scope].tolist()
            ask = Request(**{**{f: getattr(req, f) for f in req.__dataclass_fields__},
                             "deployment": name})
            assert SCORES["spread-sites"].score(ask, rnd).tolist() == \
                SCORES["spread-sites"].score(ask, fresh).tolist()
            assert SCORES["topology-spread"].score(ask, rnd).tolist() == \
                SCORES["topology-spread"].score(ask, fresh).tolist()


# Big replicas on few nodes, ``db`` picky about arch and placed after ``web``:
# passes that paint themselves into a corner, so that room is made often.
crowded_nodes = st.lists(
    st.builds(make_node, st.integers(0, 99), st.sampled_from(sorted(SITES)),
              st.sampled_from(["arm64", "amd64"]), st.none(), st.integers(1000, 4000),
              st.just(4096), st.integers(0, 1000), st.just(True)),
    min_size=2, max_size=5, unique_by=lambda n: n.name)
def _crowd(dep: str, cpu: int, arch: str, per_node: int) -> Request:
    return Request(deployment=dep, slot=0, generation=1, labels={"app": dep}, cpu_millis=cpu,
                   memory_bytes=64 * MiB, max_per_node=per_node,
                   node_selector=Selector(match_labels={"arch": arch} if dep == "db" else {}))


crowded_requests = st.builds(
    lambda web, db: web + db,
    st.lists(st.builds(_crowd, st.just("web"), st.integers(300, 2000), st.just(""),
                       st.just(0)), min_size=1, max_size=6),
    st.lists(st.builds(_crowd, st.just("db"), st.integers(300, 2000),
                       st.sampled_from(["arm64", "amd64"]), st.integers(0, 1)),
             min_size=1, max_size=4))


@settings(max_examples=100, deadline=None)
@given(nodes=crowded_nodes, reqs=crowded_requests)
def test_making_room_in_a_pass_keeps_capacity_and_leaves_a_consistent_round(
        nodes: list[Node], reqs: list[Request]) -> None:
    """A pass (``decide``) that moves replicas to make room never over-commits a node
    or a host port, places every replica it made room for, and leaves the round's
    columns, counts and kept scores as a round built from scratch with the final
    placements has them. (It does not always place more in all: room made for a
    big replica can leave two small ones after it without a node.)"""
    rtt = TableRtt({("berlin", n.name): rtt_of(n) for n in nodes})
    reqs = [Request(**{**{f: getattr(base, f) for f in base.__dataclass_fields__},
                       "slot": slot}) for slot, base in enumerate(reqs)]
    rnd = Round(nodes=nodes, rtt=rtt)
    passed = decide(reqs, rnd)
    decided = [d.decision for d in passed]
    for d in passed:
        if d.note.startswith(("room made on ", "moved from ")):
            assert d.decision.node is not None
        if d.decision.node is None:
            assert d.message.startswith(f"0/{len(nodes)} nodes fit")

    by_name = {n.name: n for n in nodes}
    cpu, mem, ports = Counter[str](), Counter[str](), Counter[tuple[str, int]]()
    placed: dict[str, Counter[str]] = {}
    for d in decided:
        if d.node is None:
            continue
        cpu[d.node] += d.request.cpu_millis
        mem[d.node] += d.request.memory_bytes
        ports.update((d.node, p) for p in d.request.host_ports)
        placed.setdefault(d.request.deployment, Counter())[d.node] += 1
    for name, used in cpu.items():
        cap = by_name[name].capacity
        assert cap is not None
        assert used <= cap.allocatable.cpu_millis - cap.used.cpu_millis
        assert mem[name] <= cap.allocatable.memory_bytes - cap.used.memory_bytes
    assert all(count == 1 for count in ports.values())
    assert rnd.placed == placed

    fresh = Round(nodes=nodes, rtt=rtt, reserved=dict(rnd.reserved),
                  placed={d: Counter(c) for d, c in rnd.placed.items()},
                  deployment_labels=dict(rnd.deployment_labels),
                  deployment_apart=dict(rnd.deployment_apart))
    for column in ("free_cpu", "free_mem", "used_cpu", "used_mem", "room"):
        assert getattr(rnd, column).tolist() == getattr(fresh, column).tolist(), column
    assert [rnd.row(i) for i in range(len(nodes))] == [fresh.row(i) for i in range(len(nodes))]
    for req in reqs:
        (kept, _), (built, _) = score(req, rnd), score(req, fresh)
        assert np.array_equal(kept, built)
        assert_same_verdict(req, rnd, fresh)


APPS = ("web", "db", "cache")
terms_strategy = st.lists(st.tuples(st.sampled_from(APPS), st.sampled_from([Scope.NODE, Scope.SITE])),
                          max_size=2).map(lambda pairs: tuple(
                              Apart(selector=Selector(match_labels={"app": app}), scope=scope)
                              for app, scope in pairs))


@settings(max_examples=60, deadline=None)
@given(nodes=nodes_strategy, terms=st.fixed_dictionaries({app: terms_strategy for app in APPS}),
       order=st.lists(st.sampled_from(APPS), min_size=1, max_size=10))
def test_no_replica_ends_next_to_one_it_shuns_whichever_came_first(
        nodes: list[Node], terms: dict[str, tuple[Apart, ...]], order: list[str]) -> None:
    """Required anti-affinity holds both ways at the end of a pass: whatever the
    order the replicas came in, no placed replica shares its node (or site) with a
    replica of a deployment its terms shun."""
    rnd = Round(nodes=nodes)
    reqs = [Request(deployment=app, slot=slot, generation=1, labels={"app": app},
                    cpu_millis=100, memory_bytes=MiB, apart=terms[app])
            for slot, app in enumerate(order)]
    placed = [(req, d.node) for req, d in zip(reqs, (x.decision for x in decide(reqs, rnd)),
                                              strict=True) if d.node is not None]
    site_of = {n.name: n.site for n in nodes}
    for req, node in placed:
        for other, there in placed:
            if other is req:
                continue
            for term in req.apart:
                same = node == there if term.scope is Scope.NODE else \
                    site_of[node] == site_of[there]
                assert not (same and term.selector.matches(other.labels)), (
                    f"{req.deployment}/{req.slot} on {node} shuns {other.deployment}/"
                    f"{other.slot} on {there} ({term.scope.value})")


def _stay_reference(specs: dict[str, Deployment], slots: list[SlotRecord],
                    nodes: list[Node]) -> dict[SlotKey, str]:
    """``misplaced`` the plain way: every replica through the filter chain, every
    kept one reserved."""
    rnd = Round(nodes=nodes)
    out: dict[SlotKey, str] = {}
    for slot in sorted(slots, key=lambda s: s.key):
        spec = specs.get(slot.deployment)
        node = rnd.by_name.get(slot.node) if slot.node else None
        if spec is None or node is None or node.state is not NodeState.READY or \
                slot.index >= spec.replicas:
            continue
        req = request_for(spec, slot.index, slot.generation)
        refused = refusals(req, node, rnd, STAY_FILTERS)
        if refused:
            out[slot.key] = f"node {node.name} no longer fits: " + ", ".join(
                r.reason for r in refused)
        else:
            rnd.reserve(req, node.name)
    return out


stay_specs = st.builds(
    lambda name, replicas, arch, country, per_node, per_site: Deployment(
        name=name, replicas=replicas, labels={"app": name},
        container=Container(image="busybox", resources=Resources(cpu_millis=100,
                                                                 memory_bytes=MiB)),
        placement=Placement(node_selector=Selector(match_labels={"arch": arch} if arch else {}),
                            residency=Residency(countries=(country,) if country else ()),
                            max_per_node=per_node, max_per_site=per_site)),
    st.sampled_from(["web", "db"]), st.integers(3, 8), st.sampled_from([None, "arm64", "amd64"]),
    st.sampled_from([None, None, "de", "us"]), st.sampled_from([0, 1, 1, 2]),
    st.sampled_from([0, 1, 1, 2]))
# Few nodes on two sites, many replicas: the limits bite in about one example in
# twenty (enough to catch a limit compared with > instead of >=, or a replica
# that may stay not counted).
few_nodes = st.lists(
    st.builds(make_node, st.integers(0, 99), st.sampled_from(["s1", "s1", "s3"]),
              st.sampled_from(["arm64", "amd64"]), st.just(None), st.just(4000), st.just(4096),
              st.just(0), st.sampled_from([True, True, True, False])),
    min_size=1, max_size=4, unique_by=lambda n: n.name)


@settings(max_examples=100, deadline=None)
@given(nodes=few_nodes, specs=st.lists(stay_specs, min_size=1, max_size=2,
                                       unique_by=lambda d: d.name),
       on=st.lists(st.tuples(st.sampled_from(["web", "web", "db", "gone"]), st.integers(0, 7),
                             st.integers(0, 99)), max_size=16))
def test_which_replicas_may_stay_is_what_the_filter_chain_says(
        nodes: list[Node], specs: list[Deployment], on: list[tuple[str, int, int]]) -> None:
    """``misplaced`` checks each replica at its node's row and words only the ones
    that fail; it answers, reason for reason, what the whole chain says."""
    names = [n.name for n in nodes]
    slots = list({(dep, index): SlotRecord(deployment=dep, index=index, generation=1,
                                           revision=1, node=names[k % len(names)])
                  for dep, index, k in on}.values())
    by_name = {d.name: d for d in specs}
    assert misplaced(by_name, slots, nodes) == _stay_reference(by_name, slots, nodes)
