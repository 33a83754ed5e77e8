"""Kubernetes apps/v1 Deployments onto the native model: what maps, what warns,
what is refused, and that every problem names the field as the user wrote it."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.errors import PolicyError, Problems, format_path
from policies.kubernetes import Translation, translate, translate_deployment
from policies.loader import load_file, load_text
from policies.model import Container, Deployment, Placement, Port, Resources, Selector

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
    (("spec", "strategy"), {"type": "Recreate"}, "spec.strategy: has no edgefed equivalent yet"),
    (("spec", "minReadySeconds"), 5, "spec.minReadySeconds: has no edgefed equivalent yet"),
    ((*POD, "affinity"), {"nodeAffinity": {}}, "spec.template.spec.affinity: has no edgefed "
     "equivalent yet"),
    ((*POD, "tolerations"), [{"key": "k", "operator": "Exists"}],
     "spec.template.spec.tolerations: has no edgefed equivalent yet"),
    ((*POD, "volumes"), [{"name": "data", "emptyDir": {}}],
     "spec.template.spec.volumes: has no edgefed equivalent yet"),
    ((*CONTAINER, "imagePullPolicy"), "IfNotPresent",
     "spec.template.spec.containers[0].imagePullPolicy: has no edgefed equivalent yet"),
    ((*CONTAINER, "livenessProbe"), {"httpGet": {"path": "/"}},
     "spec.template.spec.containers[0].livenessProbe: has no edgefed equivalent yet"),
    ((*CONTAINER, "volumeMounts"), [{"name": "data", "mountPath": "/data"}],
     "spec.template.spec.containers[0].volumeMounts: has no edgefed equivalent yet"),
    ((*CONTAINER, "resources"), {"requests": {"ephemeral-storage": "1Gi"}},
     "spec.template.spec.containers[0].resources.requests.ephemeral-storage: has no edgefed "
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
