"""``strategy: optimal`` deployments are placed as one batch by the exact solver,
in the controller's pass and in dry runs alike; everything else one at a time."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from federation.planning import decide, dry_run, new_round, request_for
from policies.model import Deployment, Placement
from tests.unit.core.test_planning import node, spec, specs


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
