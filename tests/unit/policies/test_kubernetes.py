"""Kubernetes apps/v1 Deployments onto the native model: what maps, what warns,
what is refused, and that every problem names the field as the user wrote it."""

from __future__ import annotations

import copy
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.errors import PolicyError, Problems, format_path
from policies.kubernetes import Translation, translate, translate_deployment
from policies.loader import load_file, load_text
from policies.model import (
    Container,
    Deployment,
    LabelRequirement,
    Operator,
    Placement,
    Port,
    Resources,
    Selector,
)
from policies.spec import Rollout, Scope, SpreadConstraint

EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"

SEED = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: myapp
    spec:
      replicas: 3
      selector:
        matchLabels:
          app: myapp
      template:
        metadata:
          labels:
            app: myapp
        spec:
          containers:
          - name: myapp
            image: myapp:latest
            ports:
            - containerPort: 80
    """)

POD = ("spec", "template", "spec")
CONTAINER = (*POD, "containers", 0)
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"


def seed(*changes: tuple[tuple[Any, ...], Any]) -> dict[str, Any]:
    """The seed document with ``(path, value)`` changes; value None removes the field."""
    doc: dict[str, Any] = yaml.safe_load(SEED)
    for path, value in changes:
        parent = doc
        for part in path[:-1]:
            parent = parent.setdefault(part, {}) if isinstance(parent, dict) else parent[part]
        if value is None:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
    return doc


def outcome(doc: dict[str, Any]) -> tuple[Deployment | None, list[str]]:
    """Load through the real entry point; problems as 'severity field: message'."""
    try:
        result = load_text(yaml.safe_dump(doc, sort_keys=False))
    except PolicyError as exc:
        return None, [_line(p.warning, p.path, p.message) for p in exc.problems]
    [deployment] = result.deployments
    return deployment, [_line(p.warning, p.path, p.message) for p in result.warnings]


def _line(warning: bool, path: tuple[str | int, ...], message: str) -> str:
    return f"{'warning' if warning else 'error'} {format_path(path)}: {message}"


# -- the seed ------------------------------------------------------------------------


def test_seed_example_loads_exactly_as_written() -> None:
    result = load_file(EXAMPLES / "seed-kubernetes.yaml")
    assert result.warnings == ()
    assert result.deployments == (Deployment(
        name="myapp",
        replicas=3,
        labels={"app": "myapp"},
        container=Container(image="myapp:latest", ports=(Port(container_port=80),)),
    ),)


def test_seed_translates_to_this_native_document() -> None:
    problems = Problems()
    assert translate_deployment(yaml.safe_load(SEED), problems) == {
        "apiVersion": "edgefed.io/v1",
        "kind": "Deployment",
        "metadata": {"name": "myapp", "labels": {"app": "myapp"}},
        "spec": {"replicas": 3, "container": {"image": "myapp:latest",
                                              "ports": [{"containerPort": 80}]}},
    }
    assert problems.items == []


@pytest.mark.parametrize(("native", "source"), [
    (("spec", "replicas"), ("spec", "replicas")),
    (("spec", "container"), CONTAINER),
    (("spec", "container", "image"), (*CONTAINER, "image")),
    (("spec", "container", "ports", 0, "containerPort"), (*CONTAINER, "ports", 0,
                                                          "containerPort")),
    (("metadata", "labels", "app"), ("spec", "template", "metadata", "labels", "app")),
    (("metadata", "name"), ("metadata", "name")),
])
def test_native_paths_map_back_to_the_kubernetes_document(
        native: tuple[str | int, ...], source: tuple[str | int, ...]) -> None:
    translation = translate(yaml.safe_load(SEED), Problems())
    assert isinstance(translation, Translation)
    assert translation.source_path(native) == source


# -- what maps -----------------------------------------------------------------------

CONTAINER_CASES = [
    pytest.param({"command": ["/bin/web"], "args": ["--port", "80"]},
                 Container(image="myapp:latest", command=("/bin/web",), args=("--port", "80"),
                           ports=(Port(container_port=80),)), [], id="command-args"),
    pytest.param({"env": [{"name": "A", "value": "1"}, {"name": "EMPTY"},
                          {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
                 Container(image="myapp:latest", env={"A": "1", "EMPTY": ""},
                           ports=(Port(container_port=80),)),
                 ["warning spec.template.spec.containers[0].env[2].valueFrom: not supported, "
                  "ignored; the variable is not set"], id="env"),
    pytest.param({"ports": [{"containerPort": 53, "hostPort": 5353, "protocol": "UDP"},
                            {"containerPort": 80, "hostPort": 0, "name": "http"}]},
                 Container(image="myapp:latest", ports=(
                     Port(container_port=53, host_port=5353, protocol="udp"),
                     Port(container_port=80))),
                 ["warning spec.template.spec.containers[0].ports[1].name: has no edgefed "
                  "equivalent yet; ignored"], id="ports"),
    pytest.param({"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}},
                 Container(image="myapp:latest", ports=(Port(container_port=80),),
                           resources=Resources(cpu_millis=250, memory_bytes=64 * 2**20)),
                 [], id="requests"),
    pytest.param({"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
                 Container(image="myapp:latest", ports=(Port(container_port=80),),
                           resources=Resources(cpu_millis=1000, memory_bytes=2**30)),
                 [], id="limits-stand-in-for-missing-requests"),
    pytest.param({"resources": {"requests": {"cpu": "0.5"}, "limits": {"cpu": "500m"}}},
                 Container(image="myapp:latest", ports=(Port(container_port=80),),
                           resources=Resources(cpu_millis=500)),
                 [], id="equal-limits-written-differently"),
    pytest.param({"resources": {"requests": {"ephemeral-storage": "2Gi"},
                                "limits": {"ephemeral-storage": "4Gi"}}},
                 Container(image="myapp:latest", ports=(Port(container_port=80),),
                           resources=Resources(disk_bytes=2 * 2**30)),
                 ["warning spec.template.spec.containers[0].resources.limits.ephemeral-storage: "
                  "differs from requests.ephemeral-storage (2Gi); edgefed uses one value as both "
                  "reservation and limit: the request"], id="ephemeral-storage-is-disk"),
    pytest.param({"resources": {"requests": {"cpu": "100m", "memory": "32Mi"},
                                "limits": {"cpu": "200m", "memory": "32Mi",
                                           "nvidia.com/gpu": 1}}},
                 Container(image="myapp:latest", ports=(Port(container_port=80),),
                           resources=Resources(cpu_millis=100, memory_bytes=32 * 2**20)),
                 ["warning spec.template.spec.containers[0].resources.limits.cpu: differs from "
                  "requests.cpu (100m); edgefed uses one value as both reservation and limit: "
                  "the request",
                  "warning spec.template.spec.containers[0].resources.limits.nvidia.com/gpu: "
                  "has no edgefed equivalent yet; ignored"], id="limits-differ"),
]


@pytest.mark.parametrize(("fields", "container", "warnings"), CONTAINER_CASES)
def test_container_translation(fields: dict[str, Any], container: Container,
                               warnings: list[str]) -> None:
    deployment, problems = outcome(seed(*(((*CONTAINER, k), v) for k, v in fields.items())))
    assert problems == warnings
    assert deployment is not None and deployment.container == container


def test_deployment_level_translation() -> None:
    deployment, problems = outcome(seed(
        (("metadata", "labels"), {"tier": "edge", "app": "myapp"}),
        (("spec", "replicas"), None),
        ((*POD, "nodeSelector"), {"arch": "arm64", "region": "eu"}),
        ((*POD, "restartPolicy"), "Always"),
    ))
    assert problems == []
    assert deployment is not None
    assert deployment.replicas == 1  # as Kubernetes defaults it
    assert deployment.labels == {"app": "myapp", "tier": "edge"}
    assert deployment.placement == Placement(
        node_selector=Selector(match_labels={"arch": "arm64", "region": "eu"}))


def test_deployment_label_wins_over_template_label_with_a_warning() -> None:
    deployment, problems = outcome(seed(
        (("metadata", "labels"), {"app": "frontend"}),
        (("spec", "selector"), None),
    ))
    assert deployment is not None and deployment.labels == {"app": "frontend"}
    assert problems == ["warning metadata.labels.app: differs from the template's label "
                        "app=myapp; the deployment's own value is used"]


# -- what warns ----------------------------------------------------------------------


@pytest.mark.parametrize(("path", "value", "warning"), [
    (("metadata", "namespace"), "prod", "metadata.namespace: has no edgefed equivalent yet"),
    (("metadata", "annotations"), {"team": "web"}, "metadata.annotations: has no edgefed "
     "equivalent yet"),
    (("spec", "minReadySeconds"), 5, "spec.minReadySeconds: has no edgefed equivalent yet"),
    ((*POD, "affinity"), {"nodeAffinity": {PREFERRED: [
        {"weight": 1, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]}},
     f"spec.template.spec.affinity.nodeAffinity.{PREFERRED}: has no edgefed equivalent yet"),
    ((*POD, "priorityClassName"), "high", "spec.template.spec.priorityClassName: has no edgefed "
     "equivalent yet"),
    ((*POD, "volumes"), [{"name": "data", "emptyDir": {}}],
     "spec.template.spec.volumes: has no edgefed equivalent yet"),
    ((*CONTAINER, "imagePullPolicy"), "IfNotPresent",
     "spec.template.spec.containers[0].imagePullPolicy: has no edgefed equivalent yet"),
    ((*CONTAINER, "livenessProbe"), {"httpGet": {"path": "/"}},
     "spec.template.spec.containers[0].livenessProbe: has no edgefed equivalent yet"),
    ((*CONTAINER, "volumeMounts"), [{"name": "data", "mountPath": "/data"}],
     "spec.template.spec.containers[0].volumeMounts: has no edgefed equivalent yet"),
    ((*CONTAINER, "resources"), {"requests": {"hugepages-2Mi": "1Gi"}},
     "spec.template.spec.containers[0].resources.requests.hugepages-2Mi: has no edgefed "
     "equivalent yet"),
])
def test_fields_without_equivalent_warn(path: tuple[Any, ...], value: Any, warning: str) -> None:
    deployment, problems = outcome(seed((path, value)))
    assert deployment is not None
    assert problems == [f"warning {warning}; ignored"]


def test_status_is_ignored_with_a_warning() -> None:
    _, problems = outcome(seed((("status",), {"replicas": 3})))
    assert problems == ["warning status: is written by the cluster; ignored"]


def test_empty_generated_fields_do_not_warn() -> None:
    # What `kubectl create deployment --dry-run=client -o yaml` writes.
    deployment, problems = outcome(seed(
        (("metadata", "creationTimestamp"), {}), (("spec", "strategy"), {}),
        (("spec", "template", "metadata", "creationTimestamp"), {}),
        ((*CONTAINER, "resources"), {}), (("status",), {}),
    ))
    assert deployment is not None
    assert problems == []


def test_warnings_carry_positions() -> None:
    text = SEED.replace("        image: myapp:latest\n",
                        "        image: myapp:latest\n        imagePullPolicy: Always\n")
    assert [str(w) for w in load_text(text, filename="k.yaml").warnings] == [
        "k.yaml:18:9: warning: spec.template.spec.containers[0].imagePullPolicy: "
        "has no edgefed equivalent yet; ignored"]


# -- what is refused -----------------------------------------------------------------

ERROR_CASES = [
    pytest.param([((*POD, "containers"), [{"name": "a", "image": "a"}, {"name": "b",
                                                                         "image": "b"}])],
                 ["error spec.template.spec.containers: found 2 containers, expected exactly "
                  "one (edgefed runs one container per deployment for now)"],
                 id="two-containers"),
    pytest.param([((*POD, "containers"), [])],
                 ["error spec.template.spec.containers: expected exactly one container, "
                  "found none"], id="no-containers"),
    pytest.param([((*POD, "containers"), None)],
                 ["error spec.template.spec.containers: is required (expected a list with one "
                  "container)"], id="containers-missing"),
    pytest.param([((*POD, "containers"), {"name": "a"})],
                 ["error spec.template.spec.containers: expected a list, found a mapping"],
                 id="containers-not-a-list"),
    pytest.param([((*POD, "containers"), ["myapp:latest"])],
                 ["error spec.template.spec.containers[0]: expected a mapping, found a string"],
                 id="container-not-a-mapping"),
    pytest.param([(("spec", "template"), None)],
                 ["error spec.template: is required (expected a mapping)"],
                 id="template-missing"),
    pytest.param([(("spec",), [1])], ["error spec: expected a mapping, found a list"],
                 id="spec-not-a-mapping"),
    pytest.param([(("spec", "replicas"), "3")],
                 ["error spec.replicas: expected an integer, found a string '3'"],
                 id="replicas-string"),
    pytest.param([(("spec", "replica"), 3)],
                 ["error spec.replica: unknown field in a Kubernetes Deployment "
                  "(did you mean 'replicas'?)"], id="unknown-field"),
    pytest.param([((*CONTAINER, "imagePullSecret"), "x")],
                 ["error spec.template.spec.containers[0].imagePullSecret: unknown field in a "
                  "Kubernetes Deployment (did you mean 'imagePullPolicy'?)"],
                 id="unknown-container-field"),
    pytest.param([(("spec", "selector", "matchLabels", "app"), "web")],
                 ["error spec.template.metadata.labels: `selector` does not match template "
                  "`labels` (selector wants app=web, template labels have app=myapp)"],
                 id="selector-mismatch"),
    pytest.param([(("spec", "selector", "matchLabels", "tier"), "edge")],
                 ["error spec.template.metadata.labels: `selector` does not match template "
                  "`labels` (selector wants tier=edge, template labels have no label tier)"],
                 id="selector-label-missing"),
    pytest.param([(("spec", "selector", "matchExpressions"),
                   [{"key": "app", "operator": "NotIn", "values": ["myapp"]}])],
                 ["error spec.template.metadata.labels: `selector` does not match template "
                  "`labels` (selector wants app NotIn (myapp))"], id="selector-expression"),
    pytest.param([(("spec", "selector", "matchExpressions"),
                   [{"key": "cpu", "operator": "Gt", "values": ["2"]}])],
                 ["error spec.selector.matchExpressions[0].operator: found 'Gt', expected one "
                  "of In, NotIn, Exists, DoesNotExist"], id="selector-operator"),
    pytest.param([((*POD, "restartPolicy"), "OnFailure")],
                 ["error spec.template.spec.restartPolicy: found 'OnFailure', expected 'Always' "
                  "(the only restartPolicy a Kubernetes Deployment allows)"],
                 id="restart-policy"),
    pytest.param([((*POD, "nodeSelector"), ["arch=arm64"])],
                 ["error spec.template.spec.nodeSelector: expected a mapping, found a list"],
                 id="node-selector-type"),
    pytest.param([((*CONTAINER, "env"), [{"value": "1"}, "A=1", {"name": "B", "value": [1]}])],
                 ["error spec.template.spec.containers[0].env[0].name: is required "
                  "(expected a string)",
                  "error spec.template.spec.containers[0].env[1]: expected a mapping, "
                  "found a string",
                  "error spec.template.spec.containers[0].env[2].value: expected a string, "
                  "found a list"], id="env-items"),
    pytest.param([((*CONTAINER, "env"), {"A": "1"})],
                 ["error spec.template.spec.containers[0].env: expected a list, "
                  "found a mapping"], id="env-not-a-list"),
    pytest.param([((*CONTAINER, "ports"), [{"containerPort": 80, "protocol": "SCTP"}, "80"])],
                 ["error spec.template.spec.containers[0].ports[0].protocol: found 'sctp', "
                  "expected tcp or udp",
                  "error spec.template.spec.containers[0].ports[1]: expected a mapping, "
                  "found a string"], id="ports"),
    pytest.param([((*CONTAINER, "resources"), {"requests": {"cpu": "1"},
                                               "limits": {"cpu": "one"}})],
                 ["error spec.template.spec.containers[0].resources.limits.cpu: 'one' is not a "
                  "cpu quantity (expected like 250m or 0.5)"], id="bad-limit"),
    pytest.param([((*CONTAINER, "image"), None), ((*CONTAINER, "command"), "run")],
                 ["error spec.template.spec.containers[0].image: is required "
                  "(expected a string)",
                  "error spec.template.spec.containers[0].command: expected a list of "
                  "strings, found a string 'run'"], id="missing-image-and-bad-command"),
]


@pytest.mark.parametrize(("changes", "expected"), ERROR_CASES)
def test_refused(changes: list[tuple[tuple[Any, ...], Any]], expected: list[str]) -> None:
    deployment, problems = outcome(seed(*changes))
    assert deployment is None
    assert problems == expected


def test_translate_reports_in_kubernetes_coordinates() -> None:
    problems = Problems()
    doc = seed(((*POD, "containers"), [{"name": "a", "image": "a"}, {"name": "b"}]),
               ((*CONTAINER, "livenessProbe"), {"exec": {"command": ["true"]}}))
    document = translate_deployment(copy.deepcopy(doc), problems)
    assert document["spec"]["container"] == {"image": "a"}
    assert [(format_path(p.path), p.warning) for p in problems.items] == [
        ("spec.template.spec.containers", False),
        ("spec.template.spec.containers[0].livenessProbe", True),
    ]


# -- scheduling: node selector, affinity, tolerations, spread ------------------------


def native_placement(*changes: tuple[tuple[Any, ...], Any]) -> tuple[Any, list[str]]:
    """The translated ``spec.placement`` (None if absent) and every problem,
    after checking the native model takes the document when nothing is refused."""
    doc = seed(*changes)
    problems = Problems()
    document = translate_deployment(copy.deepcopy(doc), problems)
    lines = [_line(p.warning, p.path, p.message) for p in problems.items]
    if not problems.errors:
        deployment, loaded = outcome(doc)
        assert deployment is not None and loaded == lines
    return document["spec"].get("placement"), lines


def node_affinity(*terms: dict[str, Any]) -> tuple[tuple[Any, ...], Any]:
    return (*POD, "affinity"), {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": list(terms)}}}


AFFINITY = (*POD, "affinity")
NODE_TERMS = f"spec.template.spec.affinity.nodeAffinity.{REQUIRED}.nodeSelectorTerms"

PLACEMENT_CASES = [
    pytest.param([((*POD, "nodeSelector"), {"kubernetes.io/arch": "arm64", "tier": "edge",
                                            "kubernetes.io/hostname": "pi-1",
                                            "topology.kubernetes.io/zone": "berlin"})],
                 {"nodeSelector": {"matchLabels": {"arch": "arm64", "tier": "edge",
                                                   "node": "pi-1", "site": "berlin"}}},
                 [], id="well-known-node-labels"),
    pytest.param([node_affinity({"matchExpressions": [
        {"key": "topology.kubernetes.io/region", "operator": "In", "values": ["eu"]},
        {"key": "ram-gb", "operator": "Gt", "values": ["4"]}],
        "matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["pi-9"]}]})],
                 {"nodeSelector": {"matchExpressions": [
                     {"key": "region", "operator": "In", "values": ["eu"]},
                     {"key": "ram-gb", "operator": "Gt", "values": ["4"]},
                     {"key": "node", "operator": "NotIn", "values": ["pi-9"]}]}},
                 [], id="node-affinity-one-term"),
    pytest.param([((*POD, "nodeSelector"), {"tier": "edge"}),
                  node_affinity({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]})],
                 {"nodeSelector": {"matchLabels": {"tier": "edge"},
                                   "matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
                 [], id="node-selector-and-affinity-both-hold"),
    pytest.param([node_affinity({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
                                {"matchExpressions": [{"key": "tpu", "operator": "Exists"}]})],
                 {"nodeSelector": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}},
                 [f"warning {NODE_TERMS}: has 2 terms, which Kubernetes ORs; edgefed cannot "
                  "express OR yet, so only the first term is used (placement is narrower than "
                  "written)"], id="node-affinity-several-terms"),
    pytest.param([(AFFINITY, {"podAffinity": {REQUIRED: [
        {"labelSelector": {"matchLabels": {"app": "cache"}},
         "topologyKey": "topology.kubernetes.io/zone"}]}})],
                 {"affinity": [{"selector": {"matchLabels": {"app": "cache"}}, "scope": "site",
                                "required": True}]}, [], id="pod-affinity-required"),
    pytest.param([(AFFINITY, {"podAntiAffinity": {PREFERRED: [
        {"weight": 80, "podAffinityTerm": {
            "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In",
                                                    "values": ["myapp"]}]},
            "topologyKey": "kubernetes.io/hostname"}}]}})],
                 {"antiAffinity": [{"selector": {"matchExpressions": [
                     {"key": "app", "operator": "In", "values": ["myapp"]}]},
                     "scope": "node", "required": False, "weight": 80}]},
                 [], id="pod-anti-affinity-preferred"),
    pytest.param([(AFFINITY, {"podAffinity": {REQUIRED: [
        {"labelSelector": {"matchLabels": {"app": "db"}},
         "topologyKey": "topology.kubernetes.io/region", "namespaces": ["data"]},
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "rack"},
        {"topologyKey": "kubernetes.io/hostname"}]}})],
                 {"affinity": [{"selector": {"matchLabels": {"app": "db"}}, "scope": "region",
                                "required": True}]},
                 [f"warning spec.template.spec.affinity.podAffinity.{REQUIRED}[0].namespaces: has "
                  "no edgefed equivalent yet; ignored",
                  f"warning spec.template.spec.affinity.podAffinity.{REQUIRED}[1].topologyKey: "
                  "'rack' has no edgefed scope; ignored (kubernetes.io/hostname is node, "
                  "topology.kubernetes.io/zone site, topology.kubernetes.io/region region)",
                  f"warning spec.template.spec.affinity.podAffinity.{REQUIRED}[2]: has no "
                  "labelSelector, so it matches no pods (as in Kubernetes); ignored"],
                 id="pod-affinity-what-warns"),
    pytest.param([((*POD, "tolerations"), [
        {"key": "dedicated", "operator": "Equal", "value": "vision", "effect": "NoSchedule"},
        {"operator": "Exists", "effect": "", "tolerationSeconds": 30}])],
                 {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "vision",
                                   "effect": "NoSchedule"}, {"operator": "Exists"}]},
                 ["warning spec.template.spec.tolerations[1].tolerationSeconds: has no edgefed "
                  "equivalent yet; ignored"], id="tolerations"),
    pytest.param([((*POD, "topologySpreadConstraints"), [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
         "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "myapp"}}},
        {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
         "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 3}])],
                 {"spread": [{"scope": "site", "maxSkew": 1, "required": True},
                             {"scope": "node", "maxSkew": 2, "required": False}]},
                 ["warning spec.template.spec.topologySpreadConstraints[1].minDomains: has no "
                  "edgefed equivalent yet; ignored"], id="spread"),
    pytest.param([((*POD, "topologySpreadConstraints"), [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/region",
         "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"app": "other"}}},
        {"maxSkew": 1, "topologyKey": "rack", "whenUnsatisfiable": "ScheduleAnyway"}])],
                 {"spread": [{"scope": "region", "maxSkew": 1, "required": False}]},
                 ["warning spec.template.spec.topologySpreadConstraints[0].labelSelector: "
                  "selects pods other than this deployment's; edgefed spreads this deployment's "
                  "own replicas",
                  "warning spec.template.spec.topologySpreadConstraints[1].topologyKey: 'rack' "
                  "has no edgefed scope; ignored (kubernetes.io/hostname is node, "
                  "topology.kubernetes.io/zone site, topology.kubernetes.io/region region)"],
                 id="spread-what-warns"),
]


@pytest.mark.parametrize(("changes", "placement", "warnings"), PLACEMENT_CASES)
def test_placement_translation(changes: list[tuple[tuple[Any, ...], Any]], placement: Any,
                               warnings: list[str]) -> None:
    assert native_placement(*changes) == (placement, warnings)


def test_placement_reaches_the_model() -> None:
    deployment, problems = outcome(seed(
        node_affinity({"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In",
                                             "values": ["linux"]}]}),
        ((*POD, "topologySpreadConstraints"), [{"maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule",
                                                "topologyKey": "kubernetes.io/hostname"}]),
    ))
    assert problems == []
    assert deployment is not None
    assert deployment.placement.node_selector.match_expressions == (
        LabelRequirement(key="os", operator=Operator.IN, values=("linux",)),)
    assert deployment.placement.spread == (
        SpreadConstraint(scope=Scope.NODE, max_skew=1, required=True),)


# -- rollout: strategy ---------------------------------------------------------------

ROLLOUT_CASES = [
    pytest.param(3, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1,
                                                                "maxUnavailable": 0}},
                 {"maxSurge": 1, "maxUnavailable": 0}, id="integers"),
    pytest.param(10, {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                 {"maxSurge": 3, "maxUnavailable": 2}, id="percent-surge-up-unavailable-down"),
    pytest.param(3, {"rollingUpdate": {"maxUnavailable": "50%"}},
                 {"maxSurge": 1, "maxUnavailable": 1}, id="missing-bound-is-25-percent"),
    pytest.param(3, {"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": "10%"}},
                 {"maxSurge": 0, "maxUnavailable": 1}, id="both-round-to-0-unavailable-is-1"),
    pytest.param(None, {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
                 {"maxSurge": 1, "maxUnavailable": 0}, id="replicas-default-to-1"),
    pytest.param(3, {"type": "Recreate"},
                 {"parallelism": 3, "maxSurge": 0, "maxUnavailable": 3}, id="recreate"),
    pytest.param(0, {"type": "Recreate"},
                 {"parallelism": 1, "maxSurge": 0, "maxUnavailable": 1}, id="recreate-0"),
    pytest.param(3, {"type": "RollingUpdate"}, None, id="no-bounds-keep-edgefed-defaults"),
    pytest.param(3, {}, None, id="empty"),
]


@pytest.mark.parametrize(("replicas", "strategy", "rollout"), ROLLOUT_CASES)
def test_rollout_translation(replicas: int | None, strategy: dict[str, Any],
                             rollout: dict[str, Any] | None) -> None:
    doc = seed((("spec", "strategy"), strategy), (("spec", "replicas"), replicas))
    problems = Problems()
    assert translate_deployment(copy.deepcopy(doc), problems)["spec"].get("rollout") == rollout
    assert problems.items == []
    deployment, loaded = outcome(doc)
    assert loaded == []
    assert deployment is not None and deployment.rollout == Rollout(
        parallelism=(rollout or {}).get("parallelism", 1),
        max_surge=(rollout or {}).get("maxSurge", 0),
        max_unavailable=(rollout or {}).get("maxUnavailable", 1))


def test_progress_deadline_seconds_becomes_the_rollouts_progress_deadline() -> None:
    deployment, problems = outcome(seed((("spec", "progressDeadlineSeconds"), 120)))
    assert problems == []
    assert deployment is not None
    assert deployment.rollout.progress_deadline == timedelta(seconds=120)
    bad, errors = outcome(seed((("spec", "progressDeadlineSeconds"), "soon")))
    assert bad is None
    assert any("spec.progressDeadlineSeconds" in e for e in errors), errors


# -- scheduling and rollout: what is refused -----------------------------------------

STRATEGY = ("spec", "strategy")
SPREAD = (*POD, "topologySpreadConstraints")
SCHEDULING_ERRORS = [
    pytest.param([(STRATEGY, {"type": "BlueGreen"})],
                 ["error spec.strategy.type: found 'BlueGreen', expected RollingUpdate or "
                  "Recreate"], id="strategy-type"),
    pytest.param([(STRATEGY, {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})],
                 ["error spec.strategy.rollingUpdate: may not be given when type is Recreate "
                  "(as in Kubernetes)"], id="recreate-with-rolling-update"),
    pytest.param([(STRATEGY, {"rollingUpdate": {"maxSurge": "one", "maxUnavailable": "150%"}})],
                 ["error spec.strategy.rollingUpdate.maxSurge: expected an integer or a "
                  "percentage like 25%, found 'one'",
                  "error spec.strategy.rollingUpdate.maxUnavailable: '150%' is more than 100%"],
                 id="rolling-update-values"),
    pytest.param([(STRATEGY, {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}})],
                 ["error spec.strategy.rollingUpdate.maxUnavailable: may not be 0 when maxSurge "
                  "is 0 (as in Kubernetes)"], id="both-zero"),
    pytest.param([(STRATEGY, {"rollingUpdate": {"maxSurge": -1}})],
                 ["error spec.strategy.rollingUpdate.maxSurge: -1 is out of range (expected 0 "
                  "to 1000)"], id="negative-judged-by-the-model"),
    pytest.param([node_affinity()],
                 [f"error {NODE_TERMS}: expected a list of at least one term, found an empty "
                  "list"], id="no-terms"),
    pytest.param([node_affinity({})],
                 [f"error {NODE_TERMS}[0]: an empty term matches no node (as in Kubernetes)"],
                 id="empty-term"),
    pytest.param([node_affinity({"matchFields": [{"key": "spec.unschedulable",
                                                  "operator": "In", "values": ["x"]}]})],
                 [f"error {NODE_TERMS}[0].matchFields[0].key: found 'spec.unschedulable', "
                  "expected metadata.name (the only field Kubernetes selects nodes by)"],
                 id="match-fields-key"),
    pytest.param([node_affinity({"matchExpressions": [{"key": "a", "operator": "Near"}]})],
                 [f"error {NODE_TERMS}[0].matchExpressions[0].operator: found 'Near', expected "
                  "one of In, NotIn, Exists, DoesNotExist, Gt, Lt"],
                 id="operator-judged-by-the-model"),
    pytest.param([(AFFINITY, {"podAntiAffinity": {PREFERRED: [
        {"podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                             "labelSelector": {}}},
        {"weight": 0, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                          "labelSelector": {}}}]}})],
                 [f"error spec.template.spec.affinity.podAntiAffinity.{PREFERRED}[0].weight: is "
                  "required (expected 1 to 100)",
                  f"error spec.template.spec.affinity.podAntiAffinity.{PREFERRED}[1].weight: 0 "
                  "is out of range (expected 1 to 100)"], id="weights"),
    pytest.param([(AFFINITY, {"podAffinity": {REQUIRED: [{"labelSelector": {}}]}})],
                 [f"error spec.template.spec.affinity.podAffinity.{REQUIRED}[0].topologyKey: is "
                  "required (expected a node label like kubernetes.io/hostname)"],
                 id="topology-key-missing"),
    pytest.param([(SPREAD, [{"topologyKey": "kubernetes.io/hostname"},
                            {"maxSkew": 1, "whenUnsatisfiable": "Maybe",
                             "topologyKey": "kubernetes.io/hostname"}])],
                 ["error spec.template.spec.topologySpreadConstraints[0].whenUnsatisfiable: is "
                  "required (expected DoNotSchedule or ScheduleAnyway)",
                  "error spec.template.spec.topologySpreadConstraints[0].maxSkew: is required "
                  "(expected an integer of at least 1)",
                  "error spec.template.spec.topologySpreadConstraints[1].whenUnsatisfiable: "
                  "found 'Maybe', expected DoNotSchedule or ScheduleAnyway"], id="spread-fields"),
    pytest.param([(SPREAD, [{"maxSkew": 0, "whenUnsatisfiable": "DoNotSchedule",
                             "topologyKey": "kubernetes.io/hostname"}])],
                 ["error spec.template.spec.topologySpreadConstraints[0].maxSkew: 0 is out of "
                  "range (expected 1 to 1000)"], id="max-skew-judged-by-the-model"),
    pytest.param([((*POD, "tolerations"), [{"key": "a", "operator": "Maybe"}, "a"])],
                 ["error spec.template.spec.tolerations[0].operator: found 'Maybe', expected "
                  "one of Equal, Exists",
                  "error spec.template.spec.tolerations[1]: expected a mapping, found a string"],
                 id="tolerations-judged-by-the-model"),
]


@pytest.mark.parametrize(("changes", "expected"), SCHEDULING_ERRORS)
def test_scheduling_refused(changes: list[tuple[tuple[Any, ...], Any]],
                            expected: list[str]) -> None:
    deployment, problems = outcome(seed(*changes))
    assert deployment is None
    assert problems == expected


def test_scheduling_warnings_carry_positions() -> None:
    text = SEED.replace("      containers:\n", textwrap.indent(textwrap.dedent("""\
        affinity:
          nodeAffinity:
            requiredDuringSchedulingIgnoredDuringExecution:
              nodeSelectorTerms:
              - matchExpressions: [{key: a, operator: Exists}]
              - matchExpressions: [{key: b, operator: Exists}]
        containers:
        """), "      "))
    assert [str(w) for w in load_text(text, filename="k.yaml").warnings] == [
        f"k.yaml:18:13: warning: {NODE_TERMS}: has 2 terms, which Kubernetes ORs; edgefed "
        "cannot express OR yet, so only the first term is used (placement is narrower than "
        "written)"]


# -- fuzzing: anything in the scheduling and strategy fields, only PolicyError out ----

SCALARS = (st.none() | st.booleans() | st.integers(-3, 1200) | st.floats() | st.text(max_size=10)
           | st.sampled_from(["", "25%", "150%", "0%", "Recreate", "RollingUpdate", "In", "Gt",
                              "Exists", "Equal", "NoSchedule", "DoNotSchedule", "ScheduleAnyway",
                              "kubernetes.io/hostname", "topology.kubernetes.io/zone",
                              "metadata.name", "app", "myapp"]))
KEYS = st.text(max_size=8) | st.sampled_from([
    "nodeAffinity", "podAffinity", "podAntiAffinity", REQUIRED, PREFERRED, "nodeSelectorTerms",
    "matchExpressions", "matchFields", "matchLabels", "key", "operator", "values", "weight",
    "podAffinityTerm", "labelSelector", "topologyKey", "namespaces", "maxSkew",
    "whenUnsatisfiable", "value", "effect", "tolerationSeconds", "type", "rollingUpdate",
    "maxSurge", "maxUnavailable"])
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=25)
FIELDS = st.sampled_from([(*POD, "affinity"), (*POD, "tolerations"), (*POD, "nodeSelector"),
                          (*POD, "topologySpreadConstraints"), ("spec", "strategy"),
                          ("spec", "replicas")])


@settings(max_examples=300, deadline=timedelta(seconds=2),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(FIELDS, VALUES), max_size=4))
def test_fuzz_scheduling_fields(changes: list[tuple[tuple[str, ...], Any]]) -> None:
    doc = seed(*((path, value) for path, value in changes if value is not None))
    try:
        load_text(yaml.safe_dump(doc))
    except PolicyError as exc:
        assert any(not p.warning for p in exc.problems)
