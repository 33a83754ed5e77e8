"""Placement policies merged into a deployment: who wins, field by field."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies.merge import bound_policies, effective_deployment
from policies.model import (
    Container,
    Deployment,
    Failover,
    Placement,
    PlacementPolicy,
    Selector,
    deployment_from_document,
    deployment_to_document,
    policy_from_document,
)


def deployment(placement: dict[str, Any] | None = None, failover: dict[str, Any] | None = None,
               labels: dict[str, str] | None = None) -> Deployment:
    spec: dict[str, Any] = {"container": {"image": "a"}}
    if placement is not None:
        spec["placement"] = placement
    if failover is not None:
        spec["failover"] = failover
    return deployment_from_document({
        "apiVersion": "edgefed.io/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web", "data": "personal"}
                     if labels is None else labels},
        "spec": spec})


def policy(name: str, priority: int = 0, placement: dict[str, Any] | None = None,
           failover: dict[str, Any] | None = None,
           selector: dict[str, Any] | None = None) -> PlacementPolicy:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}}
                            if selector is None else selector, "priority": priority}
    if placement is not None:
        spec["placement"] = placement
    if failover is not None:
        spec["failover"] = failover
    return policy_from_document({"apiVersion": "edgefed.io/v1", "kind": "PlacementPolicy",
                                 "metadata": {"name": name}, "spec": spec})


def effective(d: Deployment, policies: list[PlacementPolicy]) -> tuple[dict[str, Any], list[str]]:
    merged, names = effective_deployment(d, policies)
    spec = deployment_to_document(merged)["spec"]
    return {k: spec[k] for k in ("placement", "failover") if k in spec}, names


EU = {"residency": {"countries": ["de"]}}
PRECEDENCE = [
    pytest.param(deployment(), [], {}, [], id="no-policies"),
    pytest.param(deployment(), [policy("other", selector={"matchLabels": {"app": "db"}},
                                       placement=EU)],
                 {}, [], id="selector-does-not-match"),
    pytest.param(deployment(), [policy("eu", placement=EU)],
                 {"placement": EU}, ["eu"], id="policy-fills-an-unset-field"),
    pytest.param(deployment(), [policy("all", selector={}, placement=EU)],
                 {"placement": EU}, ["all"], id="empty-selector-matches-every-deployment"),
    pytest.param(deployment(placement={"maxPerNode": 3}), [policy("p", placement={
        "maxPerNode": 1, "maxPerSite": 2})],
                 {"placement": {"maxPerNode": 3, "maxPerSite": 2}}, ["p"],
                 id="deployment-field-wins"),
    pytest.param(deployment(placement={"maxPerNode": 0}, failover={"grace": "10s"}),
                 [policy("p", placement={"maxPerNode": 1}, failover={"grace": "30s"})],
                 {"placement": {"maxPerNode": 0}, "failover": {"grace": "10s"}}, ["p"],
                 id="deployment-field-set-to-the-default-still-wins"),
    pytest.param(deployment(), [policy("low", 1, placement={"maxPerNode": 1}),
                                policy("high", 5, placement={"maxPerNode": 2})],
                 {"placement": {"maxPerNode": 2}}, ["high", "low"],
                 id="higher-priority-wins"),
    pytest.param(deployment(), [policy("low", 1, placement={"maxPerNode": 1, "maxPerSite": 4}),
                                policy("high", 5, placement={"maxPerNode": 2})],
                 {"placement": {"maxPerNode": 2, "maxPerSite": 4}}, ["high", "low"],
                 id="field-by-field"),
    pytest.param(deployment(), [policy("b", placement={"maxPerNode": 1}),
                                policy("a", placement={"maxPerNode": 2})],
                 {"placement": {"maxPerNode": 2}}, ["a", "b"],
                 id="equal-priority-name-sorting-first-wins"),
    pytest.param(deployment(placement={"nodeSelector": {"matchLabels": {"gpu": "yes"}}}),
                 [policy("p", placement={"nodeSelector": {"matchLabels": {"arch": "arm64"}}})],
                 {"placement": {"nodeSelector": {"matchLabels": {"gpu": "yes"}}}}, ["p"],
                 id="a-field-is-replaced-whole"),
    pytest.param(deployment(failover={"singleton": True}),
                 [policy("p", failover={"grace": "30s", "singleton": False})],
                 {"failover": {"grace": "30s", "singleton": True}}, ["p"], id="failover"),
    pytest.param(deployment(placement={"maxPerNode": 1}),
                 [policy("p", placement={"maxPerNode": 2})],
                 {"placement": {"maxPerNode": 1}}, ["p"],
                 id="a-bound-policy-is-named-even-when-overridden"),
]


@pytest.mark.parametrize(("d", "policies", "expected", "names"), PRECEDENCE)
def test_precedence(d: Deployment, policies: list[PlacementPolicy], expected: dict[str, Any],
                    names: list[str]) -> None:
    assert effective(d, policies) == (expected, names)


def test_without_bound_policies_the_deployment_is_returned_as_is() -> None:
    d = deployment()
    assert effective_deployment(d, [policy("db", selector={"matchLabels": {"app": "db"}},
                                           placement=EU)])[0] is d


def test_deployments_built_in_code_keep_their_non_default_fields() -> None:
    d = Deployment(name="web", container=Container(image="a"), labels={"app": "web"},
                   placement=Placement(node_selector=Selector(match_labels={"arch": "arm64"})))
    p = PlacementPolicy(name="p", selector=Selector(), placement=Placement(
        node_selector=Selector(match_labels={"arch": "amd64"}), max_per_node=1))
    merged, _ = effective_deployment(d, [p])
    assert merged.placement.node_selector == Selector(match_labels={"arch": "arm64"})
    assert merged.placement.max_per_node == 1


def test_the_rest_of_the_deployment_is_untouched() -> None:
    d = deployment(failover={"grace": "1m"})
    merged, _ = effective_deployment(d, [policy("p", placement=EU, failover={"grace": "5s"})])
    assert merged.failover.grace == timedelta(minutes=1)
    assert (merged.name, merged.container, merged.labels, merged.rollout) == (
        d.name, d.container, d.labels, d.rollout)


@given(st.permutations([policy("a", 1, placement={"maxPerNode": 1}),
                        policy("b", 1, placement={"maxPerNode": 2, "maxPerSite": 3}),
                        policy("c", 7, failover={"grace": "1s"}),
                        policy("d", -3, placement={"maxPerSite": 9}, failover={"grace": "2s"})]))
def test_the_order_policies_are_given_in_does_not_matter(policies: list[PlacementPolicy]) -> None:
    assert effective(deployment(), policies) == (
        {"placement": {"maxPerNode": 1, "maxPerSite": 3}, "failover": {"grace": "1s"}},
        ["c", "a", "b", "d"])
    assert [p.name for p in bound_policies(deployment(), policies)] == ["c", "a", "b", "d"]


def test_merged_failover_remembers_what_was_set() -> None:
    merged, _ = effective_deployment(deployment(), [policy("p", failover={"grace": "10s"})])
    assert merged.failover == Failover(set_fields=frozenset({"grace"}))
