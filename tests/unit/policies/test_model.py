"""The native model: the one validation path and the lossless way back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.errors import PolicyError, format_path
from policies.loader import load_text
from policies.model import (
    NAME_RE,
    SCORE_NAMES,
    Container,
    Deployment,
    LabelRequirement,
    Operator,
    Placement,
    Port,
    Resources,
    RestartPolicy,
    Selector,
    deployment_from_document,
    deployment_to_document,
)


def native(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"container": {"image": "edgefed/tiny:latest"}}
    body.update(spec)
    return {"apiVersion": "edgefed.io/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": body}


def problems(doc: Any) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        deployment_from_document(doc)
    return [f"{format_path(p.path)}: {p.message}" for p in caught.value.problems]


ERROR_CASES = [
    pytest.param([1], ["(document): expected a mapping, found a list"], id="not-a-mapping"),
    pytest.param(native(replicas=1001),
                 ["spec.replicas: 1001 is out of range (expected 0 to 1000)"], id="replicas-max"),
    pytest.param(native(replicas=True),
                 ["spec.replicas: expected an integer, found a boolean True"], id="replicas-bool"),
    pytest.param({**native(), "metadata": {"name": "-web"}},
                 ["metadata.name: '-web' is not a valid name (expected lowercase letters, "
                  "digits and '-', at most 63 characters)"], id="bad-name"),
    pytest.param(native(container={}),
                 ["spec.container.image: is required (expected a string)"],
                 id="empty-container"),
    pytest.param(native(container={"image": ""}),
                 ["spec.container.image: must not be empty (expected an image reference)"],
                 id="empty-image"),
    pytest.param(native(container={"env": {"A": None}, "args": "x"}),
                 ["spec.container.image: is required (expected a string)",
                  "spec.container.args: expected a list of strings, found a string 'x'",
                  "spec.container.env.A: is required (expected a string)"],
                 id="missing-image-still-reports-the-rest"),
    pytest.param(native(container={"image": "a", "ports": [{"containerPort": None}, 80]}),
                 ["spec.container.ports[0].containerPort: is required (expected a port number)",
                  "spec.container.ports[1]: expected a mapping, found an integer"],
                 id="ports"),
    pytest.param(native(container={"image": "a", "ports": [{"containerPort": 80,
                                                            "protocol": "sctp"}]}),
                 ["spec.container.ports[0].protocol: found 'sctp', expected tcp or udp"],
                 id="protocol"),
    pytest.param(native(container={"image": "a", "resources": {"cpu": 10**400,
                                                               "memory": "9" * 400 + "Ki"}}),
                 ["spec.container.resources.cpu: is too large to be a cpu quantity",
                  "spec.container.resources.memory: is too large to be a memory quantity"],
                 id="quantities-beyond-float"),
    pytest.param(native(container={"image": "a", "resources": {"cpu": "-1", "memory": -1}}),
                 ["spec.container.resources.cpu: '-1' is not a cpu quantity (expected like "
                  "250m or 0.5)",
                  "spec.container.resources.memory: -1 is negative"], id="negative-quantities"),
    pytest.param(native(placement={"weights": {"least-allocated": float("inf"),
                                               "spread-sites": float("nan"),
                                               "spread-nodes": 10**400, "stay-put": -1}}),
                 ["spec.placement.weights.least-allocated: expected a number >= 0, found inf",
                  "spec.placement.weights.spread-sites: expected a number >= 0, found nan",
                  "spec.placement.weights.spread-nodes: expected a number >= 0, found "
                  f"{10**400!r}",
                  "spec.placement.weights.stay-put: expected a number >= 0, found -1"],
                 id="weights"),
    pytest.param(native(placement={"weights": {"least-allocated": "1", "spread-site": 1}}),
                 ["spec.placement.weights.least-allocated: expected a number >= 0, found '1'",
                  "spec.placement.weights.spread-site: unknown score 'spread-site' (expected "
                  "one of: least-allocated, spread-sites, spread-nodes, stay-put)"],
                 id="weight-names"),
    pytest.param(native(placement={"strategy": "random"}),
                 ["spec.placement.strategy: found 'random', expected one of two-phase"],
                 id="strategy"),
    pytest.param(native(placement={"siteSelector": {"matchExpressions": [
        {"key": "zone", "operator": "In"},
        {"key": "ram", "operator": "Gt", "values": ["lots"]},
        {"key": "gpu", "operator": "Exists", "values": ["yes"]},
        {"key": "arch", "operator": "Equals", "values": ["arm64"]},
        {"operator": "Exists"},
    ]}}), [
        "spec.placement.siteSelector.matchExpressions[0].values: In needs at least one value",
        "spec.placement.siteSelector.matchExpressions[1].values: Gt needs exactly one numeric "
        "value",
        "spec.placement.siteSelector.matchExpressions[2].values: Exists takes no values",
        "spec.placement.siteSelector.matchExpressions[3].operator: found 'Equals', expected "
        "one of In, NotIn, Exists, DoesNotExist, Gt, Lt",
        "spec.placement.siteSelector.matchExpressions[4].key: is required (expected a string)",
    ], id="expressions"),
    pytest.param(native(restartPolicy="Sometimes"),
                 ["spec.restartPolicy: found 'Sometimes', expected one of Always, OnFailure, "
                  "Never"], id="restart-policy"),
    pytest.param({"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "web"},
                  "spec": {"container": {"image": "a"}}},
                 ["apiVersion: found 'apps/v1', expected 'edgefed.io/v1'",
                  "kind: found 'Pod', expected 'Deployment'"], id="not-native"),
]


@pytest.mark.parametrize(("doc", "expected"), ERROR_CASES)
def test_validation_problems(doc: Any, expected: list[str]) -> None:
    assert problems(doc) == expected


def test_minimal_document_and_defaults() -> None:
    deployment = deployment_from_document(native())
    assert deployment == Deployment(name="web", container=Container(image="edgefed/tiny:latest"))
    assert deployment_to_document(deployment) == {
        "apiVersion": "edgefed.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "container": {"image": "edgefed/tiny:latest"}},
    }


@pytest.mark.parametrize(("requirement", "labels", "matches"), [
    (LabelRequirement(key="arch", operator=Operator.IN, values=("arm64",)), {"arch": "arm64"},
     True),
    (LabelRequirement(key="arch", operator=Operator.IN, values=("arm64",)), {}, False),
    (LabelRequirement(key="arch", operator=Operator.NOT_IN, values=("arm64",)), {}, True),
    (LabelRequirement(key="gpu", operator=Operator.EXISTS), {"gpu": ""}, True),
    (LabelRequirement(key="gpu", operator=Operator.DOES_NOT_EXIST), {"gpu": "1"}, False),
    (LabelRequirement(key="ram", operator=Operator.GT, values=("4",)), {"ram": "8"}, True),
    (LabelRequirement(key="ram", operator=Operator.LT, values=("4",)), {"ram": "8"}, False),
    (LabelRequirement(key="ram", operator=Operator.GT, values=("4",)), {"ram": "many"}, False),
])
def test_label_requirements(requirement: LabelRequirement, labels: dict[str, str],
                            matches: bool) -> None:
    assert requirement.matches(labels) is matches


# -- round trip ------------------------------------------------------------------------

TEXT = st.text(max_size=12)
LABELS = st.dictionaries(TEXT, TEXT, max_size=3)


@st.composite
def requirements(draw: st.DrawFn) -> LabelRequirement:
    operator = draw(st.sampled_from(Operator))
    values: list[str] = []
    if operator in (Operator.IN, Operator.NOT_IN):
        values = draw(st.lists(TEXT, min_size=1, max_size=3))
    elif operator in (Operator.GT, Operator.LT):
        values = [str(draw(st.integers(-10**6, 10**6)))]
    return LabelRequirement(key=draw(TEXT), operator=operator, values=tuple(values))


SELECTORS = st.builds(Selector, match_labels=LABELS,
                      match_expressions=st.lists(requirements(), max_size=3).map(tuple))

PORTS = st.builds(Port, container_port=st.integers(1, 65535),
                  host_port=st.none() | st.integers(1, 65535),
                  protocol=st.sampled_from(["tcp", "udp"]))

CONTAINERS = st.builds(
    Container,
    image=st.text(min_size=1, max_size=30),
    command=st.lists(TEXT, max_size=3).map(tuple),
    args=st.lists(TEXT, max_size=3).map(tuple),
    env=LABELS,
    ports=st.lists(PORTS, max_size=3).map(tuple),
    resources=st.builds(Resources, cpu_millis=st.integers(0, 10**7),
                        memory_bytes=st.integers(0, 2**50)),
)

DEPLOYMENTS = st.builds(
    Deployment,
    name=st.from_regex(NAME_RE, fullmatch=True),
    container=CONTAINERS,
    replicas=st.integers(0, 1000),
    labels=LABELS,
    placement=st.builds(
        Placement, node_selector=SELECTORS, site_selector=SELECTORS,
        weights=st.dictionaries(st.sampled_from(SCORE_NAMES), st.floats(min_value=0, allow_nan=False,
                                                allow_infinity=False), max_size=3)),
    restart_policy=st.sampled_from(RestartPolicy),
)

ROUND_TRIP = settings(max_examples=200, deadline=timedelta(seconds=2))


@ROUND_TRIP
@given(DEPLOYMENTS)
def test_document_round_trip_is_lossless(deployment: Deployment) -> None:
    assert deployment_from_document(deployment_to_document(deployment)) == deployment


@ROUND_TRIP
@given(DEPLOYMENTS)
def test_yaml_round_trip_through_the_loader_is_lossless(deployment: Deployment) -> None:
    text = yaml.safe_dump(deployment_to_document(deployment))
    result = load_text(text)
    assert result.deployments == (deployment,)
    assert result.warnings == ()
