"""The published JSON Schema: valid, in step with the model, and what the loader uses."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from policies.errors import format_path
from policies.loader import load_text
from policies.model import (
    MAX_REPLICAS,
    NAME_RE,
    SCORE_NAMES,
    STRATEGIES,
    AffinityTerm,
    DataSet,
    Deployment,
    FailureAction,
    HealthCheck,
    OnReconnect,
    Operator,
    RestartPolicy,
    Scope,
    Selector,
    SpreadConstraint,
    TaintEffect,
    TolerationOperator,
    UserGroup,
    Volume,
    deployment_from_document,
)
from policies.schema import schema, schema_problems

EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"
DEFS = schema()["$defs"]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema())


def _native_documents() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("apiVersion") == "edgefed.io/v1":
                out.append((f"{path.name}:{doc['kind']}", doc))
    return out


@pytest.mark.parametrize(("name", "doc"), _native_documents(), ids=lambda v: str(v)[:40])
def test_every_native_example_validates_against_the_published_schema(
        name: str, doc: dict[str, Any]) -> None:
    # The schema as an editor or CI would use it: the root, choosing by kind.
    errors = list(jsonschema.Draft202012Validator(schema()).iter_errors(doc))
    assert errors == [], name


def test_every_kind_of_native_example_is_there() -> None:
    kinds = {doc["kind"] for _, doc in _native_documents()}
    assert kinds == {"Deployment", "PlacementPolicy"}


def test_the_root_schema_chooses_by_kind() -> None:
    validator = jsonschema.Draft202012Validator(schema())
    policy = {"apiVersion": "edgefed.io/v1", "kind": "PlacementPolicy",
              "metadata": {"name": "p"}, "spec": {"selector": {}, "replicas": 1}}
    [error] = validator.iter_errors(policy)
    assert (list(error.absolute_path), error.validator) == (["spec"], "additionalProperties")


REFUSED = [
    pytest.param("Deployment", {"apiVersion": "edgefed.io/v1", "kind": "Deployment",
                                "metadata": {"name": "Web"}, "spec": {"container": {}}},
                 ["metadata.name: 'Web' is not a valid name (expected lowercase letters, digits "
                  "and '-', at most 63 characters)",
                  "spec.container.image: is required (expected a string)"], id="deployment"),
    pytest.param("PlacementPolicy", {"apiVersion": "edgefed.io/v1", "kind": "PlacementPolicy",
                                     "metadata": {"name": "p"},
                                     "spec": {"priority": "high",
                                              "failover": {"grace": True}}},
                 ["spec.selector: is required (expected a mapping)",
                  "spec.priority: expected an integer, found a string 'high'",
                  "spec.failover.grace: expected a duration like 500ms, 10s, 5m or 1h, found a "
                  "boolean True"], id="policy"),
    pytest.param("Deployment", {"apiVersion": "edgefed.io/v1", "kind": "Deployment",
                                "metadata": {"name": "web"},
                                "spec": {"container": {"image": "a"},
                                         "placement": {"users": [{"name": "u"}]},
                                         "rollout": {"maxSurge": 1.5}}},
                 ["spec.placement.users[0]: found none of them, expected exactly one of site, "
                  "landmark",
                  "spec.rollout.maxSurge: expected an integer, found a number 1.5"],
                 id="one-of-and-integers"),
]


@pytest.mark.parametrize(("kind", "doc", "expected"), REFUSED)
def test_invalid_documents_are_refused_with_exact_messages(
        kind: str, doc: dict[str, Any], expected: list[str]) -> None:
    found = schema_problems(doc, kind)
    assert sorted(f"{format_path(p.path)}: {p.message}" for p in found) == sorted(expected)


# -- in step with the model ----------------------------------------------------------


@pytest.mark.parametrize(("enum", "values"), [
    ("deploymentSpec.restartPolicy", [p.value for p in RestartPolicy]),
    ("placement.strategy", list(STRATEGIES)),
    ("scope", [s.value for s in Scope]),
    ("rollout.failureAction", [a.value for a in FailureAction]),
    ("failover.onReconnect", [o.value for o in OnReconnect]),
])
def test_enums_match_the_model(enum: str, values: list[str]) -> None:
    node = DEFS
    for part in enum.split("."):
        node = node[part] if part in node else node["properties"][part]
    assert node["enum"] == values


def test_nested_enums_and_patterns_match_the_model() -> None:
    placement = DEFS["placement"]["properties"]
    assert placement["weights"]["propertyNames"]["enum"] == list(SCORE_NAMES)
    toleration = placement["tolerations"]["items"]["properties"]
    assert toleration["operator"]["enum"] == [o.value for o in TolerationOperator]
    assert toleration["effect"]["enum"] == [e.value for e in TaintEffect]
    requirement = DEFS["selector"]["properties"]["matchExpressions"]["items"]["properties"]
    assert requirement["operator"]["enum"] == [o.value for o in Operator]
    assert DEFS["name"]["pattern"] == NAME_RE.pattern
    assert DEFS["deploymentSpec"]["properties"]["replicas"]["maximum"] == MAX_REPLICAS


def _defaults(name: str) -> dict[str, Any]:
    properties = DEFS[name]["properties"]
    return {key: node["default"] for key, node in properties.items() if "default" in node}


def _items_defaults(section: str, field: str) -> dict[str, Any]:
    items = DEFS[section]["properties"][field]["items"]
    items = DEFS[items["$ref"].rsplit("/", 1)[-1]] if "$ref" in items else items
    return {key: node["default"] for key, node in items["properties"].items()
            if "default" in node}


def _unset(d: Deployment) -> Deployment:
    return dataclasses.replace(
        d, placement=dataclasses.replace(d.placement, set_fields=frozenset()),
        failover=dataclasses.replace(d.failover, set_fields=frozenset()))


def test_schema_defaults_are_the_model_defaults() -> None:
    minimal = {"apiVersion": "edgefed.io/v1", "kind": "Deployment",
               "metadata": {"name": "web"}, "spec": {"container": {"image": "a"}}}
    spelled_out = {**minimal, "spec": {
        **_defaults("deploymentSpec"),
        "container": {"image": "a", "resources": _defaults("resources"),
                      "security": _defaults("security")},
        "placement": _defaults("placement"), "rollout": _defaults("rollout"),
        "failover": _defaults("failover")}}
    assert set(spelled_out["spec"]["rollout"]) == set(DEFS["rollout"]["properties"])
    assert set(spelled_out["spec"]["failover"]) == set(DEFS["failover"]["properties"])
    assert _unset(deployment_from_document(spelled_out)) == deployment_from_document(minimal)


def test_schema_defaults_of_list_items_are_the_model_defaults() -> None:
    doc = {"apiVersion": "edgefed.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"container": {
               "image": "a",
               "healthCheck": {"command": ["true"], **_defaults("healthCheck")},
               "volumes": [{"name": "v", "hostPath": "/h", "mountPath": "/v",
                            **_defaults("volume")}],
               "dataSets": [{"name": "d", "mountPath": "/d", **_defaults("dataSet")}]},
               "placement": {
                   "affinity": [{"selector": {}, **_defaults("affinityTerm")}],
                   "spread": [_items_defaults("placement", "spread")],
                   "users": [{"name": "u", "site": "s",
                              **_items_defaults("placement", "users")}]}}}
    d = deployment_from_document(doc)
    assert d.container.health_check == HealthCheck(command=("true",))
    assert d.container.volumes == (Volume(name="v", host_path="/h", mount_path="/v"),)
    assert d.container.data_sets == (DataSet(name="d", mount_path="/d"),)
    assert d.placement.affinity == (AffinityTerm(selector=Selector()),)
    assert d.placement.spread == (SpreadConstraint(),)
    assert d.placement.users == (UserGroup(name="u", site="s"),)


def test_the_schema_ships_in_the_package() -> None:
    pyproject = tomllib.loads((EXAMPLES.parents[1] / "pyproject.toml").read_text())
    assert "deployment.schema.json" in pyproject["tool"]["setuptools"]["package-data"]["policies"]


def test_the_documents_in_the_format_reference_load_without_warnings() -> None:
    reference = (EXAMPLES.parents[1] / "docs" / "policy-format.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", reference, re.S)
    loaded = [load_text(block, filename="policy-format.md") for block in blocks]
    assert [(len(r.deployments), len(r.policies), r.warnings) for r in loaded] == [
        (1, 0, ()), (0, 1, ())]
