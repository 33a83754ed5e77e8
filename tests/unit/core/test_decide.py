"""``strategy: optimal`` deployments are placed as one batch by the exact solver,
in the controller's pass and in dry runs alike; everything else one at a time,
with room made for a replica that fits nowhere by moving replicas placed earlier
in the pass."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace

import pytest

from federation.inventory import Node
from federation.planning import (
    OPTIMAL_PASS_SECONDS,
    OPTIMAL_TIME_LIMIT,
    SolverTime,
    decide,
    dry_run,
    new_round,
    request_for,
)
from federation.scheduler import Request, Scope, place
from policies.model import (
    AffinityTerm,
    Deployment,
    Placement,
    Port,
    Selector,
    SpreadConstraint,
)
from policies.model import Scope as PolicyScope
from tests.unit.core.test_planning import GiB, node, spec, specs


def _optimal(name: str, replicas: int) -> Deployment:
    base = spec(name, replicas=replicas, cpu=1000, memory=256 * 1024**2)
    return replace(base, placement=Placement(strategy="optimal"))


def test_an_optimal_deployment_is_solved_as_one_batch_within_capacity() -> None:
    nodes = [node("n1", cpu=2000), node("n2", site="s2", cpu=2000)]
    web = _optimal("web", 4)
    rnd = new_round(nodes, [], specs(web))
    decided = decide([request_for(web, i, 1) for i in range(4)], rnd)
    assert all(d.note.startswith("optimal (gap") for d in decided), [d.note for d in decided]
    assert all(d.message.startswith(d.note + "; 2/2 nodes fit") for d in decided[:1])
    assert Counter(d.decision.node for d in decided) == {"n1": 2, "n2": 2}


def test_other_deployments_in_the_same_pass_are_placed_one_at_a_time() -> None:
    nodes = [node("n1", cpu=4000), node("n2", site="s2", cpu=4000)]
    web, api = _optimal("web", 2), spec("api", replicas=2, cpu=1000)
    rnd = new_round(nodes, [], specs(web, api))
    requests = [request_for(api, 0, 1), request_for(web, 0, 1), request_for(api, 1, 1),
                request_for(web, 1, 1)]
    decided = decide(requests, rnd)
    assert [bool(d.note) for d in decided] == [False, True, False, True]
    assert [d.decision.request.deployment for d in decided] == ["api", "web", "api", "web"]
    assert all(d.decision.node is not None for d in decided)


def test_replicas_beyond_capacity_are_refused_with_the_filters_reason() -> None:
    nodes = [node("n1", cpu=2000), node("n2", site="s2", cpu=2000)]
    web = _optimal("web", 5)
    rnd = new_round(nodes, [], specs(web))
    decided = decide([request_for(web, i, 1) for i in range(5)], rnd)
    unplaced = [d for d in decided if d.decision.node is None]
    assert len(unplaced) == 1
    assert "0/2 nodes fit: 2 insufficient cpu" in unplaced[0].message


def test_a_dry_run_of_an_optimal_deployment_says_how_the_batch_was_solved() -> None:
    nodes = [node("n1", cpu=2000), node("n2", site="s2", cpu=2000)]
    web = _optimal("web", 3)
    plan = dry_run(web, nodes, {}, specs(web))
    assert [p.slot for p in plan] == [0, 1, 2]
    assert all(p.node in {"n1", "n2"} and p.message.startswith("optimal (gap") for p in plan)


def _two_batches() -> tuple[list[Node], dict[str, Deployment], list[Request]]:
    nodes = [node("n1", cpu=4000), node("n2", site="s2", cpu=4000)]
    web, db, api = _optimal("web", 2), _optimal("db", 2), spec("api", replicas=1, cpu=1000)
    requests = [request_for(web, 0, 1), request_for(db, 0, 1), request_for(api, 0, 1),
                request_for(web, 1, 1), request_for(db, 1, 1)]
    return nodes, specs(web, db, api), requests


def test_a_batch_that_may_not_start_in_the_solver_time_left_is_left_whole() -> None:
    """With no solver time, the pass's first batch still runs; the next is left
    (None, nothing reserved) and the two-phase replica between them is placed."""
    nodes, deployments, requests = _two_batches()
    rnd = new_round(nodes, [], deployments)
    decided = decide(requests, rnd, solver_time=SolverTime(seconds=0.0, clock=time.monotonic))
    assert [d is None for d in decided] == [False, True, False, False, True]
    assert all(d.note.startswith("optimal (gap") for d in (decided[0], decided[3]))
    assert decided[2].decision.node is not None
    assert set(rnd.placed) == {"web", "api"}
    # A dry run gives the solver no limit: every replica is decided.
    assert all(d is not None for d in decide(requests, new_round(nodes, [], deployments)))


@pytest.mark.parametrize(("first_batch_seconds", "second_starts"), [
    (0.4, True),   # 0.4 spent + the 0.5 limit fits in 1 s
    (0.5, True),
    (0.6, False),
])
def test_a_later_batch_starts_only_if_its_time_limit_fits_in_what_is_left(
        first_batch_seconds: float, second_starts: bool) -> None:
    """The pass's clock is read before and after each batch; here it says the first
    batch took ``first_batch_seconds`` of the pass's 1 s."""
    readings = iter([0.0, first_batch_seconds, 5.0, 5.0])
    nodes, deployments, requests = _two_batches()
    solver_time = SolverTime(seconds=OPTIMAL_PASS_SECONDS, clock=lambda: next(readings))
    decided = decide(requests, new_round(nodes, [], deployments), solver_time=solver_time)
    assert OPTIMAL_TIME_LIMIT == 0.5 and OPTIMAL_PASS_SECONDS == 1.0
    assert (decided[1] is not None) is second_starts
    assert solver_time.batches == (2 if second_starts else 1)
    assert solver_time.spent == pytest.approx(first_batch_seconds)


def test_a_disk_request_goes_only_where_the_disk_is_free() -> None:
    roomy = node("roomy", site="s2")
    roomy = replace(roomy, capacity=replace(roomy.capacity, allocatable=replace(
        roomy.capacity.allocatable, disk_bytes=3 * 1024**3)))
    nodes = [node("n1"), roomy]
    base = spec("cache", replicas=2, cpu=100, memory=64 * 1024**2)
    cache = replace(base, container=replace(base.container, resources=replace(
        base.container.resources, disk_bytes=2 * 1024**3)))
    plan = dry_run(cache, nodes, {}, specs(cache))
    assert plan[0].node == "roomy"
    assert plan[1].node is None
    assert "insufficient disk (need 2Gi, most free 1Gi)" in plan[1].message


# -- making room -------------------------------------------------------------------------


def _cornered() -> tuple[list[Node], Deployment, Deployment]:
    """``web`` goes anywhere and lands first on the roomier ``big``; ``db`` may only
    run on ``big`` and needs what ``web`` took there."""
    nodes = [node("big", cpu=3000), node("small", site="s2", cpu=2000)]
    web = spec("web", replicas=1, cpu=1500, memory=256 * 1024**2)
    db = replace(spec("db", replicas=1, cpu=2000, memory=256 * 1024**2),
                 placement=Placement(node_selector=Selector(match_labels={"disk": "ssd"})))
    nodes[0] = replace(nodes[0], capacity=replace(nodes[0].capacity, labels={"disk": "ssd"}))
    return nodes, web, db


def test_a_replica_that_fits_nowhere_gets_room_by_moving_one_placed_earlier() -> None:
    nodes, web, db = _cornered()
    rnd = new_round(nodes, [], specs(web, db))
    first = place(request_for(web, 0, 1), new_round(nodes, [], specs(web, db)))
    assert first.node == "big"  # the corner: alone, web takes the node db needs
    decided = decide([request_for(web, 0, 1), request_for(db, 0, 1)], rnd)
    assert [d.decision.node for d in decided] == ["small", "big"]
    assert decided[0].message.startswith("moved from big to make room for db/0; ")
    assert decided[1].message.startswith("room made on big by moving web/0 to small; ")
    assert rnd.free(rnd.by_name["big"]) == (1000, 4 * GiB - 256 * 1024**2)
    assert rnd.free(rnd.by_name["small"]) == (500, 4 * GiB - 256 * 1024**2)


def test_when_no_move_helps_the_pass_is_left_exactly_as_it_was() -> None:
    nodes, web, db = _cornered()
    nodes[1] = replace(nodes[1], capacity=replace(nodes[1].capacity, allocatable=replace(
        nodes[1].capacity.allocatable, cpu_millis=1000)))  # web fits only on big
    rnd = new_round(nodes, [], specs(web, db))
    before = (rnd.free_cpu.copy(), rnd.free_mem.copy(), rnd.room.copy())
    decided = decide([request_for(web, 0, 1), request_for(db, 0, 1)], rnd)
    assert [d.decision.node for d in decided] == ["big", None]
    assert decided[1].message.startswith("0/2 nodes fit: ")
    assert rnd.free_cpu.tolist() == [before[0][0] - 1500, before[0][1]]
    assert rnd.room[1] == before[2][1]
    assert rnd.placed == {"web": Counter({"big": 1})}


def test_room_is_not_made_by_moving_a_replica_back_next_to_what_shuns_it() -> None:
    """``db`` shuns ``web`` on the node; taken off ``big``, ``web`` fits nowhere but
    ``big`` again, which would put it next to ``db``: no room is made."""
    nodes, web, _ = _cornered()
    nodes[0] = replace(nodes[0], capacity=replace(nodes[0].capacity, allocatable=replace(
        nodes[0].capacity.allocatable, cpu_millis=4000)))
    nodes[1] = replace(nodes[1], capacity=replace(nodes[1].capacity, allocatable=replace(
        nodes[1].capacity.allocatable, cpu_millis=1000)))
    shy = replace(spec("db", replicas=1, cpu=2000, memory=256 * 1024**2), placement=Placement(
        node_selector=Selector(match_labels={"disk": "ssd"}),
        anti_affinity=(AffinityTerm(selector=Selector(match_labels={"app": "web"}),
                                    scope=PolicyScope.NODE, required=True),)))
    web, shy = replace(web, labels={"app": "web"}), replace(shy, labels={"app": "db"})
    rnd = new_round(nodes, [], specs(web, shy))
    decided = decide([request_for(web, 0, 1), request_for(shy, 0, 1)], rnd)
    assert [d.decision.node for d in decided] == ["big", None]
    assert decided[1].message.startswith(
        "0/2 nodes fit: 1 anti-affinity with app=web on the node")
    assert rnd.placed == {"web": Counter({"big": 1})}


def test_unreserve_is_the_exact_inverse_of_reserve() -> None:
    nodes = [node("n1", cpu=4000), node("n2", site="s2", cpu=2000)]
    web = replace(spec("web", replicas=2, cpu=300, ports=(Port(container_port=80,
                                                                host_port=8080),)),
                  placement=Placement(spread=(SpreadConstraint(scope=Scope.SITE,
                                                               max_skew=1),)))
    rnd = new_round(nodes, [], specs(web))
    req = request_for(web, 0, 1)
    first = place(req, rnd)
    assert first.node is not None
    columns = (rnd.free_cpu.copy(), rnd.used_mem.copy(), rnd.room.copy(),
               rnd.counts("web").node.copy(), rnd.ports[8080].copy())
    again = place(request_for(web, 1, 1), rnd)
    assert again.node is not None and again.node != first.node
    rnd.unreserve(again.request, again.node)
    assert rnd.free_cpu.tolist() == columns[0].tolist()
    assert rnd.used_mem.tolist() == columns[1].tolist()
    assert rnd.room.tolist() == columns[2].tolist()
    assert rnd.counts("web").node.tolist() == columns[3].tolist()
    assert rnd.ports[8080].tolist() == columns[4].tolist()
    assert rnd.placed["web"] == Counter({first.node: 1})
    # The same replica decides the same way as before it was taken back.
    assert place(request_for(web, 1, 1), rnd).node == again.node


def test_a_deployment_that_left_the_pass_while_making_room_is_counted_again() -> None:
    """``db`` shuns ``db`` and ``cache`` on the node; one node has room for two
    replicas. Room for ``cache`` is tried by taking ``db/0`` off (the round then
    holds no db at all) and fails; the round is put back, and ``db/2`` is still
    kept off the node ``db/0`` holds."""
    nodes = [node("n1", cpu=200, memory=2 * 1024**2)]
    db = replace(spec("db", cpu=100, memory=1024**2), labels={"app": "db"},
                 placement=Placement(anti_affinity=tuple(
                     AffinityTerm(selector=Selector(match_labels={"app": app}),
                                  scope=PolicyScope.NODE, required=True)
                     for app in ("db", "cache"))))
    cache = replace(spec("cache", cpu=100, memory=1024**2), labels={"app": "cache"})
    rnd = new_round(nodes, [], specs(db, cache))
    decided = decide([request_for(db, 0, 1), request_for(cache, 1, 1), request_for(db, 2, 1)],
                     rnd)
    assert [d.decision.node for d in decided] == ["n1", None, None]
    assert decided[1].message == "0/1 nodes fit: 1 db's anti-affinity with app=cache on the node"
    assert decided[2].message == "0/1 nodes fit: 1 anti-affinity with app=db on the node"
    assert rnd.placed == {"db": Counter({"n1": 1})}
