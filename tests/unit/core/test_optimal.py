"""The optimal strategy's 0/1 program: exact answers on instances small enough
to solve by hand, every rule respected, and never worse than a greedy loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation import wire
from federation.inventory import Node, NodeState
from federation.optimal import (
    Assignment,
    Group,
    Problem,
    Status,
    evaluate,
    place_optimal,
    problem_from_round,
    solve,
    violations,
)
from federation.scheduler import Apart, Near, Request, Round, Scope, Users
from policies.model import Selector

GiB = float(1024**3)


def problem(*, rtt: Sequence[Sequence[float]], free_cpu: Sequence[float],
            cpu: Sequence[float] | None = None, size_cpu: Sequence[float] | None = None,
            allowed: Sequence[Sequence[bool]] | None = None,
            groups: tuple[Group, ...] = (), balance_weight: float = 0.0) -> Problem:
    """Replicas of 1 GiB memory on nodes of 64 GiB (memory never binds), cpu as given."""
    n = len(free_cpu)
    rtts = np.asarray(rtt, dtype=np.float64).reshape(-1, n)
    r = rtts.shape[0]
    demand = np.column_stack([np.asarray(cpu if cpu is not None else [1000.0] * r), np.full(r, GiB)])
    free = np.column_stack([np.asarray(free_cpu, dtype=np.float64), np.full(n, 64 * GiB)])
    size = free.copy()
    if size_cpu is not None:
        size[:, 0] = size_cpu
    return Problem(demand=demand, free=free, size=size,
                   allowed=np.asarray(allowed if allowed is not None else np.ones((r, n)),
                                      dtype=np.bool_),
                   rtt=rtts, groups=groups, balance_weight=balance_weight)


def per_node(members: Sequence[int], room: Sequence[int]) -> Group:
    return Group.per_node(members, room)


def per_site(members: Sequence[int], sites: Sequence[int], room: Sequence[int]) -> Group:
    """``sites[n]``: the site of node n."""
    return Group(members=tuple(members), domain=np.asarray(sites, dtype=np.int64),
                 room=np.asarray(room, dtype=np.int64))


# -- exact answers -------------------------------------------------------------------


def test_users_at_site_a_and_room_for_one_replica_there_puts_the_other_on_b() -> None:
    # Users all at A: 2 ms to A's node, 30 ms to B's. A has cpu for one replica only.
    # The replica whose users gain the most from A (slot 1: 40 ms saved vs 28 ms) gets it.
    p = problem(rtt=[[2.0, 30.0], [5.0, 45.0]], free_cpu=[1000.0, 4000.0])
    s = solve(p)
    assert s.status is Status.OPTIMAL
    assert s.assignment == (1, 0)
    assert s.objective == pytest.approx((30.0 + 5.0) / 2)
    assert s.gap is not None and s.gap <= 1e-4


def test_without_capacity_limits_every_replica_goes_to_its_users_nearest_node() -> None:
    p = problem(rtt=[[2.0, 30.0, 9.0], [50.0, 3.0, 8.0], [7.0, 6.0, 1.0]],
                free_cpu=[8000.0] * 3)
    assert solve(p).assignment == (0, 1, 2)


def test_balance_term_picks_the_emptier_node_when_rtt_is_equal() -> None:
    # Node 0 is half full already; at equal RTT the peak utilisation decides.
    p = problem(rtt=[[10.0, 10.0]], free_cpu=[2000.0, 4000.0], size_cpu=[4000.0, 4000.0],
                balance_weight=20.0)
    s = solve(p)
    assert s.assignment == (1,)
    # Node 0 stays at 50 %, node 1 goes to 25 %: the peak is 0.5.
    assert s.objective == pytest.approx(10.0 + 20.0 * 0.5)


def test_balance_weight_trades_peak_utilisation_against_rtt() -> None:
    # Node 0: 1 ms but already 75 % full (the replica takes it to 100 %);
    # node 1: 4 ms and empty. 25 points of peak cost 0.25 * beta ms.
    rtt, free, size = [[1.0, 4.0]], [1000.0, 4000.0], [4000.0, 4000.0]
    low = problem(rtt=rtt, free_cpu=free, size_cpu=size, balance_weight=8.0)
    high = problem(rtt=rtt, free_cpu=free, size_cpu=size, balance_weight=16.0)
    assert solve(low).assignment == (0,)  # 1 + 8 * 1.0 = 9 < 4 + 8 * 0.75 = 10
    assert solve(high).assignment == (1,)  # 1 + 16 = 17 > 4 + 12 = 16


def test_anti_affinity_per_node_puts_each_replica_on_its_own_node() -> None:
    p = problem(rtt=[[1.0, 20.0, 30.0]] * 3, free_cpu=[8000.0] * 3,
                groups=(per_node([0, 1, 2], [1, 1, 1]),))
    s = solve(p)
    assert sorted(a for a in s.assignment if a is not None) == [0, 1, 2]
    assert violations(p, s.assignment) == []


def test_anti_affinity_per_site_puts_each_replica_in_its_own_site() -> None:
    # Nodes 0, 1 in site 0 (near the users), nodes 2, 3 in site 1.
    p = problem(rtt=[[1.0, 2.0, 40.0, 50.0]] * 2, free_cpu=[8000.0] * 4,
                groups=(per_site([0, 1], [0, 0, 1, 1], [1, 1]),))
    s = solve(p)
    assert sorted(a for a in s.assignment if a is not None) == [0, 2]
    assert s.objective == pytest.approx((1.0 + 40.0) / 2)


def test_an_existing_replica_leaves_less_room_on_its_node() -> None:
    # maxPerNode 2 with one replica already on node 0: room 1 there.
    p = problem(rtt=[[1.0, 9.0]] * 2, free_cpu=[8000.0] * 2,
                groups=(per_node([0, 1], [1, 2]),))
    assert sorted(solve(p).assignment, key=str) == [0, 1]


def test_residency_is_the_mask_a_refused_node_is_never_used() -> None:
    # Node 0 is nearest but outside the allowed countries for replica 0.
    p = problem(rtt=[[1.0, 15.0, 25.0], [1.0, 15.0, 25.0]], free_cpu=[8000.0] * 3,
                allowed=[[False, True, True], [True, True, True]])
    assert solve(p).assignment == (1, 0)


def test_not_every_replica_fits_reports_infeasible_and_places_the_most() -> None:
    # Cpu for two replicas in all; the two are put where their users are nearest.
    p = problem(rtt=[[1.0, 30.0], [2.0, 40.0], [3.0, 50.0]], free_cpu=[1000.0, 1000.0])
    s = solve(p)
    assert s.status is Status.INFEASIBLE
    assert not s.complete
    assert s.evaluation is not None and s.evaluation.placed == 2
    assert violations(p, s.assignment) == []
    # The best pair: replica 1 on node 0 and replica 0 on node 1, 2 + 30 ms (the next
    # best, replica 2 on 0 and replica 0 on 1, costs 3 + 30).
    assert s.assignment == (1, 0, None)
    assert s.objective == pytest.approx(32.0 / 3)


def test_a_replica_no_node_allows_is_left_out() -> None:
    p = problem(rtt=[[1.0, 2.0], [1.0, 2.0]], free_cpu=[8000.0] * 2,
                allowed=[[False, False], [True, True]])
    s = solve(p)
    assert s.status is Status.INFEASIBLE
    assert s.assignment == (None, 0)


def test_an_exhausted_time_limit_says_so() -> None:
    rng = np.random.default_rng(7)
    r, n = 40, 40
    p = Problem(demand=rng.integers(100, 1000, (r, 2)).astype(np.float64),
                free=np.full((n, 2), 2000.0), size=np.full((n, 2), 2000.0),
                allowed=rng.random((r, n)) < 0.8, rtt=rng.random((r, n)) * 100,
                groups=(per_site(range(r), [i // 4 for i in range(n)], [5] * 10),))
    s = solve(p, time_limit=0.001)
    assert s.status is Status.TIME_LIMIT
    assert violations(p, s.assignment) == []


def test_no_replicas_is_trivially_optimal() -> None:
    s = solve(problem(rtt=[], free_cpu=[1000.0, 1000.0]))
    assert (s.status, s.assignment, s.objective) == (Status.OPTIMAL, (), 0.0)


def test_shapes_that_do_not_agree_are_refused_with_the_field() -> None:
    good = problem(rtt=[[1.0, 2.0]], free_cpu=[1000.0, 1000.0])
    with pytest.raises(ValueError, match=r"rtt has shape \(1, 3\), expected \(1, 2\)"):
        replace(good, rtt=np.ones((1, 3)))
    with pytest.raises(ValueError, match="rtt must be finite"):
        replace(good, rtt=np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match=r"groups\[0\]\.domain has shape \(3,\), expected \(2,\)"):
        replace(good, groups=(per_site([0], [0, 0, 1], [1, 1]),))
    with pytest.raises(ValueError, match=r"groups\[0\]\.domain names a domain outside 0\.\.0"):
        replace(good, groups=(per_site([0], [0, 1], [1]),))


# -- never worse than greedy ------------------------------------------------------------


def greedy(p: Problem) -> Assignment:
    """Each replica in turn on its nearest node that still has room: a plain loop."""
    free = np.maximum(p.free, 0).copy()
    used = [np.zeros(g.room.shape, dtype=np.int64) for g in p.groups]
    out: list[int | None] = []
    for r in range(p.replicas):
        best = None
        for n in sorted(range(p.nodes), key=lambda n: p.rtt[r, n]):
            if not p.allowed[r, n] or np.any(p.demand[r] > free[n]):
                continue
            if any(r in g.members and used[i][g.domain[n]] >= g.room[g.domain[n]]
                   for i, g in enumerate(p.groups)):
                continue
            best = n
            break
        out.append(best)
        if best is not None:
            free[best] -= p.demand[r]
            for i, g in enumerate(p.groups):
                if r in g.members:
                    used[i][g.domain[best]] += 1
    return tuple(out)


@st.composite
def small_problems(draw: st.DrawFn) -> Problem:
    r = draw(st.integers(1, 5))
    n = draw(st.integers(1, 4))
    sites = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    sites = [s if 0 in sites else s - 1 for s in sites]  # site ids start at 0
    cells = st.lists(st.integers(0, 100), min_size=r * n, max_size=r * n)
    rtt = np.asarray(draw(cells), dtype=np.float64).reshape(r, n)
    allowed = np.asarray(draw(st.lists(st.booleans(), min_size=r * n, max_size=r * n)),
                         dtype=np.bool_).reshape(r, n)
    cpu = np.asarray(draw(st.lists(st.integers(1, 4), min_size=r, max_size=r)), dtype=np.float64)
    mem = np.asarray(draw(st.lists(st.integers(1, 4), min_size=r, max_size=r)), dtype=np.float64)
    size = np.asarray(draw(st.lists(st.integers(2, 8), min_size=2 * n, max_size=2 * n)),
                      dtype=np.float64).reshape(n, 2)
    taken = np.asarray(draw(st.lists(st.integers(0, 2), min_size=2 * n, max_size=2 * n)),
                       dtype=np.float64).reshape(n, 2)
    groups: tuple[Group, ...] = ()
    if draw(st.booleans()):
        groups = (per_site(range(r), sites, [1] * (max(sites) + 1)),)
    elif draw(st.booleans()):
        groups = (per_node(range(r), [1] * n),)
    return Problem(demand=np.column_stack([cpu, mem]), free=size - taken, size=size,
                   allowed=allowed, rtt=rtt,
                   groups=groups, balance_weight=draw(st.sampled_from([0.0, 20.0])))


@settings(max_examples=60, deadline=None)
@given(small_problems())
def test_the_optimum_is_never_worse_than_greedy(p: Problem) -> None:
    s = solve(p, time_limit=10.0)
    assert s.status is not Status.TIME_LIMIT
    assert violations(p, s.assignment) == []
    g = greedy(p)
    assert violations(p, g) == []
    mine, theirs = evaluate(p, s.assignment), evaluate(p, g)
    assert mine.placed >= theirs.placed
    assert s.complete == (s.status is Status.OPTIMAL)
    if mine.placed == theirs.placed:
        assert mine.objective <= theirs.objective + 1e-6


# -- the scheduler's round as a problem, and placing a batch --------------------------------


class SiteRtt:
    """RTT from user locations to sites; unknown (nan) for sites not listed."""

    def __init__(self, table: dict[str, dict[str, float]], sites: dict[str, str]) -> None:
        self.table, self.sites = table, sites

    def rtt_from(self, source: str, nodes: Sequence[str]) -> npt.NDArray[np.float64]:
        row = self.table.get(source, {})
        return np.array([row.get(self.sites[n], np.nan) for n in nodes], dtype=np.float64)


def fleet_node(name: str, site: str, *, cpu: int = 4000, used_cpu: int = 0,
               country: str = "de") -> Node:
    capacity = wire.Capacity(
        site=site, arch="amd64", os="linux", runtime="docker", labels={"country": country},
        allocatable=wire.Resources(cpu_millis=cpu, memory_bytes=int(16 * GiB), disk_bytes=0),
        used=wire.Resources(cpu_millis=used_cpu, memory_bytes=0, disk_bytes=0),
        images=(), instances=())
    return Node(name=name, site=site, epoch="boot-1", online=True, state=NodeState.READY,
                state_since=0.0, last_seen=0.0, capacity=capacity)


def fleet(*nodes: Node, rtt: dict[str, dict[str, float]] | None = None) -> Round:
    sites = {n.name: n.site for n in nodes}
    return Round(nodes=list(nodes), rtt=SiteRtt(rtt or {}, sites))


def replicas(count: int, **kw: Any) -> list[Request]:
    kw.setdefault("deployment", "web")
    kw.setdefault("cpu_millis", 1000)
    kw.setdefault("users", (Users(name="eu", source="a"),))
    return [Request(slot=i, generation=1, strategy="optimal", **kw) for i in range(count)]


NEAR_A = {"a": {"a": 2.0, "b": 30.0, "c": 50.0}}


def test_the_problem_is_read_off_the_round() -> None:
    rnd = fleet(fleet_node("a1", "a", cpu=2000, used_cpu=500), fleet_node("b1", "b"),
                fleet_node("c1", "c", country="fr"),
                rtt={"a": {"a": 2.0, "b": 30.0}, "x": {"b": 10.0}})
    rnd.reserve(replicas(1)[0], "b1")  # an earlier placement of the round
    reqs = replicas(2, max_per_site=1, countries=("de",),
                    users=(Users(name="eu", source="a", share=0.75),
                           Users(name="x", source="x", share=0.25)))
    p = problem_from_round(reqs, rnd)
    assert p.allowed.tolist() == [[True, False, False]] * 2  # b1: maxPerSite; c1: country
    # Users at a: c unknown, counted as a's farthest known (30); users at x know b only (10).
    assert p.rtt[0].tolist() == [0.75 * 2 + 0.25 * 10, 0.75 * 30 + 0.25 * 10,
                                 0.75 * 30 + 0.25 * 10]
    assert p.free[:, 0].tolist() == [1500, 3000, 4000]
    assert p.size[:, 0].tolist() == [2000, 4000, 4000]
    (per_site_group,) = p.groups
    assert per_site_group.members == (0, 1)
    assert per_site_group.room[per_site_group.domain].tolist() == [1, 0, 1]


def test_users_at_a_and_room_for_one_there_put_the_other_replica_on_b() -> None:
    rnd = fleet(fleet_node("a1", "a", cpu=1000), fleet_node("b1", "b"), fleet_node("c1", "c"),
                rtt=NEAR_A)
    placed = place_optimal(replicas(2), rnd)
    assert sorted(str(p.decision.node) for p in placed) == ["a1", "b1"]
    assert all(p.note == "optimal (gap 0.0%)" for p in placed)
    first = next(p for p in placed if p.decision.node == "a1")
    assert first.message == ("optimal (gap 0.0%); 3/3 nodes fit; chose a1 (site a) by optimal "
                             "(user-rtt-ms 2)")
    assert first.decision.explanation.to_dict()["strategy"] == "optimal"
    assert rnd.placed["web"] == {"a1": 1, "b1": 1}  # reserved as place() reserves


def test_required_anti_affinity_and_residency_hold_in_a_batch() -> None:
    rnd = fleet(fleet_node("a1", "a"), fleet_node("a2", "a"), fleet_node("a3", "a", country="us"),
                fleet_node("b1", "b"), rtt=NEAR_A)
    apart = (Apart(selector=Selector(match_labels={"app": "web"}), scope=Scope.NODE),)
    placed = place_optimal(replicas(3, labels={"app": "web"}, apart=apart, countries=("de",)),
                           rnd)
    assert sorted(str(p.decision.node) for p in placed) == ["a1", "a2", "b1"]
    refused = placed[0].decision.explanation
    assert refused.rejections == {"country is us, residency allows de": 1}


def test_a_replica_that_fits_nowhere_is_explained_by_two_phase() -> None:
    rnd = fleet(fleet_node("a1", "a", cpu=1000), fleet_node("b1", "b", cpu=1000), rtt=NEAR_A)
    placed = place_optimal(replicas(3), rnd)
    assert [p.decision.node for p in placed].count(None) == 1
    left = next(p for p in placed if p.decision.node is None)
    assert left.note == "optimal (gap 0.0%), then two-phase: no room left"
    assert left.decision.explanation.message == (
        "0/2 nodes fit: 2 insufficient cpu (need 1, most free 0)")


def test_a_batch_not_solved_in_time_falls_back_to_two_phase() -> None:
    nodes = [fleet_node(f"{site}{i}", site, cpu=3000) for site in "abcdefgh" for i in range(5)]
    rtt = {"a": {s: 1.0 + 7.0 * i for i, s in enumerate("abcdefgh")}}
    rnd = fleet(*nodes, rtt=rtt)
    placed = place_optimal(replicas(30, max_per_site=4, cpu_millis=700), rnd, time_limit=1e-6)
    assert {p.note for p in placed} == {"fell back to two-phase: time limit"}
    assert all(p.decision.node is not None for p in placed)
    assert all(p.decision.explanation.to_dict().get("strategy") is None for p in placed)


def test_required_affinity_is_not_modelled_and_falls_back() -> None:
    rnd = fleet(fleet_node("a1", "a"), rtt=NEAR_A)
    near = (Near(selector=Selector(match_labels={"app": "db"})),)
    placed = place_optimal(replicas(1, near=near, labels={"app": "db"}), rnd)
    assert placed[0].note == ("fell back to two-phase: required affinity, spread and split "
                              "are not in the program")
    assert placed[0].decision.node == "a1"
