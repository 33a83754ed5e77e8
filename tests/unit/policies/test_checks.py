"""Semantic checks: well-formed documents that cannot mean what they say."""

from __future__ import annotations

from typing import Any

import pytest

from policies.checks import deployment_problems
from policies.errors import format_path
from policies.merge import effective_deployment
from policies.model import (
    Container,
    Deployment,
    Failover,
    Placement,
    PlacementPolicy,
    Residency,
    Rollout,
    Selector,
    validate_deployment,
    validate_policy,
)


def native(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"container": {"image": "a"}}
    body.update(spec)
    return {"apiVersion": "edgefed.io/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": body}


def found(doc: Any) -> list[str]:
    deployment, problems = validate_deployment(doc)
    assert (deployment is None) == any(not p.warning for p in problems)
    return [f"{'warning' if p.warning else 'error'} {format_path(p.path)}: {p.message}"
            for p in problems]


def node_selector(*expressions: dict[str, Any], **labels: str) -> dict[str, Any]:
    return native(placement={"nodeSelector": {"matchLabels": labels,
                                              "matchExpressions": list(expressions)}})


CASES = [
    # -- selectors that can never match ----------------------------------------------
    pytest.param(node_selector({"key": "arch", "operator": "NotIn", "values": ["amd64"]},
                               arch="amd64"),
                 ["error spec.placement.nodeSelector: can never match: arch=amd64 and "
                  "arch NotIn (amd64) exclude each other"], id="label-and-not-in"),
    pytest.param(node_selector({"key": "gpu", "operator": "Exists"},
                               {"key": "gpu", "operator": "DoesNotExist"}),
                 ["error spec.placement.nodeSelector: can never match: gpu Exists and gpu "
                  "DoesNotExist exclude each other"], id="exists-and-does-not-exist"),
    pytest.param(node_selector({"key": "zone", "operator": "In", "values": ["a", "b"]},
                               {"key": "zone", "operator": "In", "values": ["c"]}),
                 ["error spec.placement.nodeSelector: can never match: zone In (a,b) and zone "
                  "In (c) exclude each other"], id="disjoint-in"),
    pytest.param(node_selector({"key": "ram", "operator": "Gt", "values": ["8"]},
                               {"key": "ram", "operator": "Lt", "values": ["4"]}),
                 ["error spec.placement.nodeSelector: can never match: ram Gt (8) and ram Lt (4) "
                  "exclude each other"], id="empty-range"),
    pytest.param(node_selector({"key": "ram", "operator": "Gt", "values": ["inf"]}),
                 ["error spec.placement.nodeSelector: can never match: no value of 'ram' "
                  "satisfies ram Gt (inf)"], id="above-infinity"),
    pytest.param(node_selector({"key": "ram", "operator": "In", "values": ["2", "16"]},
                               {"key": "ram", "operator": "Gt", "values": ["4"]}), [],
                 id="in-and-gt-can-match"),
    pytest.param(node_selector({"key": "gpu", "operator": "DoesNotExist"},
                               {"key": "gpu", "operator": "NotIn", "values": ["1"]}), [],
                 id="absent-meets-not-in"),
    pytest.param(native(placement={"affinity": [{"selector": {
        "matchLabels": {"app": "db"},
        "matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}}]}),
                 ["error spec.placement.affinity[0].selector: can never match: app=db and app "
                  "DoesNotExist exclude each other"], id="affinity-selector"),
    # -- residency -----------------------------------------------------------------------
    pytest.param(native(placement={"siteSelector": {"matchLabels": {"country": "us"}},
                                   "residency": {"countries": ["de", "fr"]}}),
                 ["error spec.placement.residency.countries: allows only de, fr, but "
                  "siteSelector requires country=us: nothing can be placed"],
                 id="residency-vs-site-selector"),
    pytest.param(native(placement={"nodeSelector": {"matchExpressions": [
        {"key": "region", "operator": "NotIn", "values": ["eu-central"]}]},
        "residency": {"regions": ["eu-central"]}}),
                 ["error spec.placement.residency.regions: allows only eu-central, but "
                  "nodeSelector requires region NotIn (eu-central): nothing can be placed"],
                 id="residency-vs-not-in"),
    pytest.param(native(placement={"siteSelector": {"matchLabels": {"country": "de"}},
                                   "residency": {"countries": ["de", "fr"]}}), [],
                 id="residency-agrees"),
    # -- split and users -----------------------------------------------------------------
    pytest.param(native(placement={"split": [{"sites": {"matchLabels": {"tier": "edge"}},
                                              "weight": 70},
                                             {"sites": {"matchLabels": {"tier": "cloud"}},
                                              "weight": 20}]}),
                 ["error spec.placement.split: weights add up to 90, expected 100"],
                 id="split-sum"),
    pytest.param(native(placement={"split": [{"sites": {}, "weight": 100},
                                             {"sites": {}, "weight": 0}]}),
                 ["warning spec.placement.split[1].weight: is 0: this group gets no replicas"],
                 id="split-group-without-weight"),
    pytest.param(native(placement={"users": [
        {"name": "eu", "site": "berlin", "share": 0.5},
        {"name": "eu", "landmark": "probe", "share": 0.4}]}),
                 ["error spec.placement.users: shares add up to 0.9, expected 1",
                  "error spec.placement.users[1].name: duplicate name 'eu' (first given at "
                  "spec.placement.users[0].name)"], id="users"),
    pytest.param(native(placement={"users": [{"name": "a", "site": "s", "share": 0.1},
                                             {"name": "b", "site": "s", "share": 0.2},
                                             {"name": "c", "site": "s", "share": 0.7}]}), [],
                 id="shares-add-up-despite-floats"),
    # -- tolerations, volumes ------------------------------------------------------------
    pytest.param(native(placement={"tolerations": [
        {"key": "gpu", "operator": "Exists", "value": "yes"}, {"value": "x"}]}),
                 ["error spec.placement.tolerations[0].value: found 'yes', expected no value "
                  "with operator Exists",
                  "error spec.placement.tolerations[1].key: found an empty key with operator "
                  "Equal, expected a key (or operator Exists, to tolerate every taint)"],
                 id="tolerations"),
    pytest.param(native(container={"image": "a", "volumes": [
        {"name": "cache", "hostPath": "/a", "mountPath": "/data"},
        {"name": "cache", "hostPath": "/b", "mountPath": "/other"}],
        "dataSets": [{"name": "frames", "mountPath": "/data"}]}),
                 ["error spec.container.volumes[1].name: duplicate name 'cache' (first given at "
                  "spec.container.volumes[0].name)",
                  "error spec.container.dataSets[0].mountPath: duplicate mount path '/data' "
                  "(first given at spec.container.volumes[0].mountPath)"], id="mounts"),
    # -- rollout and failover ------------------------------------------------------------
    pytest.param(native(replicas=3, failover={"singleton": True}),
                 ["error spec.replicas: found 3, expected 1: a singleton has exactly one "
                  "replica"], id="singleton-replicas"),
    pytest.param(native(replicas=0, failover={"singleton": True}), [], id="singleton-stopped"),
    pytest.param(native(rollout={"maxSurge": 1}, failover={"singleton": True}),
                 ["error spec.rollout.maxSurge: found 1, expected 0: a singleton never runs two "
                  "instances, not even during a rollout"], id="singleton-surge"),
    pytest.param(native(rollout={"maxSurge": 0, "maxUnavailable": 0}),
                 ["error spec.rollout.maxUnavailable: found 0 with maxSurge 0, expected at least "
                  "1: a rollout could never replace an instance"], id="rollout-stuck"),
    pytest.param(native(rollout={"healthGated": True}),
                 ["warning spec.rollout.healthGated: there is no health check to wait for "
                  "(expected spec.container.healthCheck); batches wait only for their instances "
                  "to start"], id="health-gated-without-check"),
    pytest.param(native(container={"image": "a", "healthCheck": {"command": ["true"]}},
                        rollout={"healthGated": True}), [], id="health-gated"),
]


@pytest.mark.parametrize(("doc", "expected"), CASES)
def test_semantic_problems(doc: dict[str, Any], expected: list[str]) -> None:
    assert found(doc) == expected


def test_semantic_checks_wait_for_valid_structure() -> None:
    doc = native(replicas=3, failover={"singleton": True}, rollout={"maxSurge": "1"})
    assert found(doc) == ["error spec.rollout.maxSurge: expected an integer, found a string '1'"]


def test_policy_checks() -> None:
    policy = {"apiVersion": "edgefed.io/v1", "kind": "PlacementPolicy",
              "metadata": {"name": "p"},
              "spec": {"selector": {"matchExpressions": [
                  {"key": "data", "operator": "Exists"},
                  {"key": "data", "operator": "DoesNotExist"}]}}}
    built, problems = validate_policy(policy)
    assert built is None
    assert [(format_path(p.path), p.warning, p.message) for p in problems] == [
        ("spec", True, "sets no placement or failover field, so it changes nothing"),
        ("spec.selector", False, "can never match: data Exists and data DoesNotExist exclude "
                                 "each other"),
    ]


def test_checks_apply_to_the_merged_deployment() -> None:
    deployment, _ = validate_deployment(native(
        replicas=2, placement={"siteSelector": {"matchLabels": {"country": "us"}}}))
    assert deployment is not None
    policy = PlacementPolicy(name="eu", selector=Selector(),
                             placement=Placement(residency=Residency(countries=("de",))),
                             failover=Failover(singleton=True))
    merged, names = effective_deployment(deployment, [policy])
    assert names == ["eu"]
    assert [f"{format_path(p.path)}: {p.message}" for p in deployment_problems(merged)] == [
        "spec.placement.residency.countries: allows only de, but siteSelector requires "
        "country=us: nothing can be placed",
        "spec.replicas: found 2, expected 1: a singleton has exactly one replica",
    ]
    assert deployment_problems(deployment) == []


def test_a_deployment_built_in_code_is_checked_the_same_way() -> None:
    deployment = Deployment(name="web", container=Container(image="a"),
                            rollout=Rollout(max_surge=0, max_unavailable=0))
    assert [p.message for p in deployment_problems(deployment)] == [
        "found 0 with maxSurge 0, expected at least 1: a rollout could never replace an "
        "instance"]
