"""The YAML entry points: exact problems at exact positions, limits, fuzzing."""

from __future__ import annotations

import string
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.checks import deployment_problems
from policies.errors import PolicyError
from policies.loader import (
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    LoadResult,
    load_file,
    load_path,
    load_text,
)
from policies.merge import effective_deployment
from policies.model import Deployment, PlacementPolicy

EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"
SUPPORTED = "edgefed.io/v1 Deployment, edgefed.io/v1 PlacementPolicy and apps/v1 Deployment"

NATIVE = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  container:
    image: edgefed/tiny:latest
"""

KUBERNETES = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  template:
    spec:
      containers:
      - name: api
        image: edgefed/tiny:latest
"""

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_text(text, filename="web.yaml")
    return [str(p) for p in caught.value.problems]


def doc(text: str) -> str:
    return textwrap.dedent(text)


# -- exact problems at exact positions ---------------------------------------------

ERROR_CASES = [
    pytest.param(doc("""\
        apiVersion: edgefed.io/v1
        kind: Deployment
        metadata
          name: web
        """), [
        "web.yaml:4:7: error: could not find expected ':' "
        "(while scanning a simple key at line 3, column 1)",
    ], id="malformed-yaml"),
    pytest.param(doc("""\
        apiVersion: edgefed.io/v1
        kind: Deployment
        metadata: {name: web
        """), [
        "web.yaml:4:1: error: expected ',' or '}', but got '<stream end>' "
        "(while parsing a flow mapping at line 3, column 11)",
    ], id="unclosed-flow-mapping"),
    pytest.param(doc("""\
        apiVersion: v1
        kind: Service
        metadata:
          name: web
        """), [
        "web.yaml:2:1: error: kind: unknown kind 'Service' (apiVersion v1): "
        f"supported are {SUPPORTED}",
    ], id="unknown-kind"),
    pytest.param(doc("""\
        apiVersion: extensions/v1beta1
        kind: Deployment
        """), [
        "web.yaml:1:1: error: apiVersion: unknown apiVersion 'extensions/v1beta1' for kind "
        f"'Deployment': supported are {SUPPORTED}",
    ], id="unknown-api-version"),
    pytest.param(doc("""\
        apiVersion: edgefed.io/v1
        metadata: {name: web}
        """), [
        "web.yaml:1:1: error: kind: is required "
        f"(supported are {SUPPORTED})",
    ], id="missing-kind"),
    pytest.param(doc("""\
        - apiVersion: edgefed.io/v1
          kind: Deployment
        """), [
        "web.yaml:1:1: error: expected a mapping (a Deployment), found a list",
    ], id="document-not-a-mapping"),
    pytest.param(NATIVE.replace("replicas: 2", "replicas: -1"), [
        "web.yaml:6:3: error: spec.replicas: -1 is out of range (expected 0 to 1000)",
    ], id="negative-replicas-native"),
    pytest.param(doc("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          replicas: -3
          template:
            spec:
              containers:
              - name: web
                image: edgefed/tiny:latest
        """), [
        "web.yaml:6:3: error: spec.replicas: -3 is out of range (expected 0 to 1000)",
    ], id="negative-replicas-kubernetes"),
    pytest.param(doc("""\
        apiVersion: edgefed.io/v1
        kind: Deployment
        metadata:
          name: web
          labels: [app, web]
        spec:
          replicas: three
          container:
            image: edgefed/tiny:latest
            command: /bin/server
        """), [
        "web.yaml:5:3: error: metadata.labels: expected a mapping, found a list",
        "web.yaml:7:3: error: spec.replicas: expected an integer, found a string 'three'",
        "web.yaml:10:5: error: spec.container.command: expected a list of strings, "
        "found a string '/bin/server'",
    ], id="wrong-types"),
    pytest.param(doc("""\
        apiVersion: edgefed.io/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          replica: 3
          container:
            image: edgefed/tiny:latest
            imagePullPolicy: Always
        """), [
        "web.yaml:6:3: error: spec.replica: unknown field "
        "(expected one of: container, failover, placement, replicas, restartPolicy, rollout)",
        "web.yaml:9:5: error: spec.container.imagePullPolicy: unknown field "
        "(expected one of: args, command, dataSets, env, healthCheck, image, ports, "
        "resources, security, volumes)",
    ], id="unknown-fields"),
    pytest.param(doc("""\
        apiVersion: edgefed.io/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          container:
            ports:
            - containerPort: 80
        """), [
        "web.yaml:6:3: error: spec.container.image: is required (expected a string)",
    ], id="missing-image-native"),
    pytest.param(doc("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          template:
            spec:
              containers:
              - name: web
                ports:
                - containerPort: 80
        """), [
        "web.yaml:9:9: error: spec.template.spec.containers[0].image: is required "
        "(expected a string)",
    ], id="missing-image-kubernetes"),
    pytest.param(doc("""\
        apiVersion: edgefed.io/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          container:
            image: edgefed/tiny:latest
            resources:
              cpu: 2 cores
              memory: 32MB
        """), [
        "web.yaml:9:7: error: spec.container.resources.cpu: '2 cores' is not a cpu quantity "
        "(expected like 250m or 0.5)",
        "web.yaml:10:7: error: spec.container.resources.memory: '32MB' is not a memory "
        "quantity (expected like 64Mi or 1Gi)",
    ], id="bad-quantities-native"),
    pytest.param(doc("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          template:
            spec:
              containers:
              - name: web
                image: edgefed/tiny:latest
                resources:
                  requests:
                    cpu: "-1"
                  limits:
                    memory: lots
        """), [
        "web.yaml:13:13: error: spec.template.spec.containers[0].resources.requests.cpu: "
        "'-1' is not a cpu quantity (expected like 250m or 0.5)",
        "web.yaml:15:13: error: spec.template.spec.containers[0].resources.limits.memory: "
        "'lots' is not a memory quantity (expected like 64Mi or 1Gi)",
    ], id="bad-quantities-kubernetes"),
    pytest.param(doc("""\
        apiVersion: edgefed.io/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          container:
            image: edgefed/tiny:latest
          placement:
            nodeSelector:
              matchExpressions:
              - key: arch
                operator: Equals
                values: [arm64]
        """), [
        "web.yaml:12:9: error: spec.placement.nodeSelector.matchExpressions[0].operator: "
        "found 'Equals', expected one of In, NotIn, Exists, DoesNotExist, Gt, Lt",
    ], id="bad-operator"),
    pytest.param(doc("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata:
          name: web
        spec:
          template:
            spec:
              containers:
              - name: web
                image: edgefed/tiny:latest
              - name: sidecar
                image: envoy:latest
        """), [
        "web.yaml:8:7: error: spec.template.spec.containers: found 2 containers, expected "
        "exactly one (edgefed runs one container per deployment for now)",
    ], id="multiple-containers"),
    pytest.param(NATIVE + "  replicas: 3\n", [
        "web.yaml:9:3: error: spec.replicas: duplicate key 'replicas' (first given at line 6)",
    ], id="duplicate-key"),
    pytest.param(NATIVE + doc("""\
        ---
        apiVersion: edgefed.io/v1
        kind: Deployment
        metadata:
          name: Web_2
        spec:
          container: {image: edgefed/tiny:latest, ports: [{containerPort: 70000}]}
        """), [
        "web.yaml:13:3: error: metadata.name: 'Web_2' is not a valid name "
        "(expected lowercase letters, digits and '-', at most 63 characters)",
        "web.yaml:15:52: error: spec.container.ports[0].containerPort: 70000 is out of range "
        "(expected 1 to 65535)",
    ], id="positions-in-second-document"),
    pytest.param(NATIVE + "---\n" + KUBERNETES.replace("name: api", "name: web", 1), [
        "web.yaml:13:3: error: metadata.name: deployment 'web' is already defined at web.yaml:4",
    ], id="duplicate-deployment-name"),
    pytest.param("", [
        "web.yaml:1:1: error: no documents found (expected at least one Deployment)",
    ], id="empty-file"),
    pytest.param("# nothing yet\n", [
        "web.yaml:1:1: error: no documents found (expected at least one Deployment)",
    ], id="only-comments"),
    pytest.param("---\n---\n...\n", [
        "web.yaml:1:1: error: no documents found (expected at least one Deployment)",
    ], id="only-empty-documents"),
    pytest.param(BILLION_LAUGHS, [
        f"web.yaml:6:4: error: expands to more than {MAX_NODES} nodes through aliases; "
        "refusing to expand it",
    ], id="billion-laughs"),
    pytest.param("a: &a [1, *a]\n", [
        "web.yaml:1:4: error: an alias refers to a node that contains it; refusing to expand it",
    ], id="recursive-alias"),
    pytest.param("a: *nope\n", [
        "web.yaml:1:4: error: found undefined alias 'nope'",
    ], id="undefined-alias"),
    pytest.param("a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n", [
        f"web.yaml:2:{5 + 4 * MAX_ALIASES}: error: more than {MAX_ALIASES} aliases; "
        "refusing to expand them",
    ], id="too-many-aliases"),
    pytest.param("[" * 100_000, [
        f"web.yaml:1:{MAX_DEPTH + 1}: error: nested deeper than {MAX_DEPTH} levels; "
        "refusing to read it",
    ], id="deep-flow-nesting"),
    pytest.param("".join(" " * i + "-\n" for i in range(MAX_DEPTH + 2)), [
        f"web.yaml:{MAX_DEPTH + 1}:{MAX_DEPTH + 1}: error: nested deeper than {MAX_DEPTH} "
        "levels; refusing to read it",
    ], id="deep-block-nesting"),
    pytest.param("apiVersion: !Ref Version\n", [
        "web.yaml:1:13: error: unsupported tag '!Ref' (expected a plain value)",
    ], id="custom-tag"),
    pytest.param("x: !!python/object/apply:os.system [true]\n", [
        "web.yaml:1:4: error: unsupported tag '!!python/object/apply:os.system' "
        "(expected a list)",
    ], id="python-tag"),
    pytest.param("replicas: !!int many\n", [
        "web.yaml:1:11: error: cannot read 'many' as !!int",
    ], id="bad-explicit-int"),
    pytest.param("apiVersion: edgefed.io/v1\nkind: \x07\n", [
        "web.yaml:2:7: error: unacceptable character #x0007: special characters are not allowed",
    ], id="non-printable-character"),
    pytest.param("x" * (MAX_FILE_BYTES + 1), [
        "web.yaml:1:1: error: larger than 1 MiB; refusing to read it",
    ], id="too-large"),
]


@pytest.mark.parametrize(("text", "expected"), ERROR_CASES)
def test_exact_problems(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


NEW_FIELD_CASES = [
    pytest.param(doc("""\
        apiVersion: edgefed.io/v1
        kind: PlacementPolicy
        metadata:
          name: eu
        spec:
          priority: high
          placement:
            residency: {countries: [DE]}
          failover:
            grace: 30 seconds
        """), [
        "web.yaml:5:1: error: spec.selector: is required (expected a mapping)",
        "web.yaml:6:3: error: spec.priority: expected an integer, found a string 'high'",
        "web.yaml:8:29: error: spec.placement.residency.countries[0]: 'DE' is not a country "
        "code (expected two lowercase letters like de)",
        "web.yaml:10:5: error: spec.failover.grace: '30 seconds' is not a duration (expected "
        "like 500ms, 10s, 5m or 1h)",
    ], id="policy-structure"),
    pytest.param(NATIVE + textwrap.indent(doc("""\
        placement:
          siteSelector:
            matchLabels: {country: us}
          residency:
            countries: [de, fr]
          split:
          - {sites: {matchLabels: {tier: edge}}, weight: 70}
          - {sites: {matchLabels: {tier: cloud}}, weight: 20}
        failover: {singleton: true}
        """), "  "), [
        "web.yaml:6:3: error: spec.replicas: found 2, expected 1: a singleton has exactly one "
        "replica",
        "web.yaml:13:7: error: spec.placement.residency.countries: allows only de, fr, but "
        "siteSelector requires country=us: nothing can be placed",
        "web.yaml:14:5: error: spec.placement.split: weights add up to 90, expected 100",
    ], id="semantic"),
    pytest.param(NATIVE + "  rollout: {healthGated: true, maxUnavailable: 0}\n", [
        "web.yaml:9:13: warning: spec.rollout.healthGated: there is no health check to wait "
        "for (expected spec.container.healthCheck); batches wait only for their instances to "
        "start",
        "web.yaml:9:32: error: spec.rollout.maxUnavailable: found 0 with maxSurge 0, expected "
        "at least 1: a rollout could never replace an instance",
    ], id="semantic-warning-and-error"),
    pytest.param(doc("""\
        apiVersion: edgefed.io/v1
        kind: PlacementPolicy
        metadata: {name: eu}
        spec: {selector: {}, priority: 1}
        ---
        apiVersion: edgefed.io/v1
        kind: PlacementPolicy
        metadata: {name: eu}
        spec: {selector: {}, failover: {grace: 1m}}
        """), [
        "web.yaml:4:1: warning: spec: sets no placement or failover field, so it changes "
        "nothing",
        "web.yaml:8:12: error: metadata.name: placement policy 'eu' is already defined at "
        "web.yaml:3",
    ], id="duplicate-policy"),
]


@pytest.mark.parametrize(("text", "expected"), NEW_FIELD_CASES)
def test_exact_problems_of_new_fields(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


def test_a_policy_and_a_deployment_may_share_a_name() -> None:
    policy = "apiVersion: edgefed.io/v1\nkind: PlacementPolicy\nmetadata: {name: web}\n" \
             "spec: {selector: {}, placement: {maxPerNode: 1}}\n"
    result = load_text(NATIVE + "---\n" + policy)
    assert ([d.name for d in result.deployments], [p.name for p in result.policies]) == (
        ["web"], ["web"])


def test_warnings_come_with_the_result() -> None:
    result = load_text(NATIVE + "  rollout: {healthGated: true}\n", filename="web.yaml")
    assert [str(w) for w in result.warnings] == [
        "web.yaml:9:13: warning: spec.rollout.healthGated: there is no health check to wait "
        "for (expected spec.container.healthCheck); batches wait only for their instances to "
        "start"]
    assert result.deployments[0].rollout.health_gated


def test_problems_carry_file_line_column_and_path() -> None:
    with pytest.raises(PolicyError) as caught:
        load_text(NATIVE.replace("replicas: 2", "replicas: -1"), filename="web.yaml")
    [problem] = caught.value.problems
    assert problem.to_dict() == {
        "message": "-1 is out of range (expected 0 to 1000)", "field": "spec.replicas",
        "file": "web.yaml", "line": 6, "column": 3, "severity": "error",
    }


def test_billion_laughs_is_refused_quickly() -> None:
    start = time.perf_counter()
    with pytest.raises(PolicyError):
        load_text(BILLION_LAUGHS)
    assert time.perf_counter() - start < 0.5


def test_error_lists_warnings_too_in_file_order() -> None:
    text = KUBERNETES.replace("  template:\n", "  minReadySeconds: 5\n  template:\n") \
        .replace("image: edgefed/tiny:latest", "image: edgefed/tiny:latest\n        tty: true"
                 "\n        resources: {requests: {cpu: many}}")
    assert problems(text) == [
        "web.yaml:6:3: warning: spec.minReadySeconds: has no edgefed equivalent yet; ignored",
        "web.yaml:12:9: warning: spec.template.spec.containers[0].tty: has no edgefed "
        "equivalent yet; ignored",
        "web.yaml:13:32: error: spec.template.spec.containers[0].resources.requests.cpu: "
        "'many' is not a cpu quantity (expected like 250m or 0.5)",
    ]


# -- what loads --------------------------------------------------------------------


def test_several_documents_empty_ones_skipped() -> None:
    result = load_text("---\n" + NATIVE + "---\n---\n# nothing\n---\n" + KUBERNETES + "...\n")
    assert [d.name for d in result.deployments] == ["web", "api"]
    assert [d.replicas for d in result.deployments] == [2, 1]
    assert result.warnings == ()


def test_keys_are_text_as_written() -> None:
    # YAML 1.1 would read the key `on` as True and `1` as an int.
    text = NATIVE.replace("  name: web\n", "  name: web\n  labels: {on: 'yes', 1: one}\n")
    [deployment] = load_text(text).deployments
    assert deployment.labels == {"on": "yes", "1": "one"}


def test_merge_keys_and_aliases() -> None:
    text = doc("""\
        apiVersion: edgefed.io/v1
        kind: Deployment
        metadata:
          name: web
          labels: &common {app: web, tier: edge}
        spec:
          container:
            image: edgefed/tiny:latest
          placement:
            nodeSelector:
              matchLabels:
                <<: *common
                tier: cloud
        """)
    [deployment] = load_text(text).deployments
    assert deployment.labels == {"app": "web", "tier": "edge"}
    assert deployment.placement.node_selector.match_labels == {"app": "web", "tier": "cloud"}


def test_load_file_and_directory(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(KUBERNETES)
    (tmp_path / "a.yaml").write_text(NATIVE)
    (tmp_path / "notes.txt").write_text("not a policy")
    assert [d.name for d in load_path(tmp_path).deployments] == ["web", "api"]
    assert [d.name for d in load_file(tmp_path / "b.yml").deployments] == ["api"]
    assert [d.name for d in load_path(str(tmp_path / "a.yaml")).deployments] == ["web"]


def test_directory_problems_name_their_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(NATIVE)
    (tmp_path / "b.yaml").write_text(NATIVE.replace("web", "api").replace("2", "-2"))
    (tmp_path / "c.yaml").write_text(NATIVE)
    with pytest.raises(PolicyError) as caught:
        load_path(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'b.yaml'}:6:3: error: spec.replicas: -2 is out of range "
        "(expected 0 to 1000)",
        f"{tmp_path / 'c.yaml'}:4:3: error: metadata.name: deployment 'web' is already "
        f"defined at {tmp_path / 'a.yaml'}:4",
    ]


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("missing.yaml", None, "error: cannot read: No such file or directory"),
    ("latin1.yaml", b"kind: D\xe9ployment\n", ":1:8: error: not UTF-8 text (byte 0xe9)"),
    ("huge.yaml", b"#" * (MAX_FILE_BYTES + 1), ":1:1: error: larger than 1 MiB; refusing to read it"),
])
def test_file_problems(tmp_path: Path, name: str, content: bytes | None, expected: str) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(PolicyError) as caught:
        load_file(tmp_path / name)
    assert [str(p) for p in caught.value.problems] == [f"{tmp_path / name}{expected}"] \
        if expected.startswith(":") else [f"{tmp_path / name}: {expected}"]


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_path(tmp_path)
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path}: error: no *.yaml or *.yml files in this directory"]


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "bom.yaml").write_bytes(b"\xef\xbb\xbf" + NATIVE.encode())
    assert [d.name for d in load_file(tmp_path / "bom.yaml").deployments] == ["web"]


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.y*ml")), ids=lambda p: p.name)
def test_every_example_loads_without_warnings(example: Path) -> None:
    result = load_file(example)
    assert result.deployments
    assert result.warnings == ()


def test_examples_directory_loads(tmp_path: Path) -> None:
    # The two seeds are one app in two formats, so both are named myapp: one is enough.
    for example in EXAMPLES.glob("*.yaml"):
        if example.name != "seed-compose.yaml":
            (tmp_path / example.name).write_bytes(example.read_bytes())
    result = load_path(tmp_path)
    names = [d.name for d in result.deployments]
    assert "myapp" in names and "web" in names and "inference" in names
    assert [p.name for p in result.policies] == ["eu-personal-data"]
    assert result.warnings == ()


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.y*ml")), ids=lambda p: p.name)
def test_every_example_says_what_it_shows_on_its_first_line(example: Path) -> None:
    assert example.read_text().startswith("# ")


def test_the_residency_example_binds_its_policy() -> None:
    result = load_file(EXAMPLES / "eu-data-residency.yaml")
    [deployment], [policy] = result.deployments, result.policies
    merged, names = effective_deployment(deployment, result.policies)
    assert names == [policy.name]
    assert merged.placement.residency == policy.placement.residency
    assert merged.failover.grace == timedelta(seconds=10)  # the deployment's own value
    assert deployment_problems(merged) == []


def test_load_result_is_frozen() -> None:
    result = load_text(NATIVE)
    assert isinstance(result, LoadResult)
    with pytest.raises(AttributeError):
        result.deployments = ()  # type: ignore[misc]


# -- fuzzing: anything in, only PolicyError out, and fast ---------------------------

FAST = settings(max_examples=300, deadline=timedelta(seconds=1),
                suppress_health_check=[HealthCheck.too_slow])

YAML_PIECES = st.sampled_from([
    "a", "b", "1", "-1", "0x1f", "1.5e+3", "~", "null", "yes", "on", ":", ": ", "- ", "-",
    "[", "]", "{", "}", ",", "? ", "&a ", "*a", "&b ", "*b", "<<: ", "!!str ", "!!int ",
    "!!map ", "!!set ", "!x ", "'", '"', "#", "|", ">", "---\n", "...\n", "\n", "  ", "\t",
    "%YAML 1.1\n", "\\", "\x00", "\ufeff", "é", "apiVersion: ", "edgefed.io/v1", "apps/v1",
    "kind: ", "Deployment", "metadata:", "name: ", "spec:", "container:", "containers:",
    "image: ", "replicas: ", "template:", "resources:", "cpu: ", "ports:", "env:",
])


def assert_only_policy_errors(text: str) -> None:
    start = time.perf_counter()
    try:
        result = load_text(text)
    except PolicyError as exc:
        assert exc.problems
        assert all(p.file == "<input>" for p in exc.problems)
        assert any(not p.warning for p in exc.problems)
        # The schema and the reader never both report one field.
        places = [(p.line, p.column, p.path) for p in exc.problems if p.path]
        assert len(places) == len(set(places)), [str(p) for p in exc.problems]
    else:
        assert all(isinstance(d, Deployment) for d in result.deployments)
        assert all(isinstance(p, PlacementPolicy) for p in result.policies)
    assert time.perf_counter() - start < 1


@FAST
@given(st.text())
def test_fuzz_arbitrary_text(text: str) -> None:
    assert_only_policy_errors(text)


@FAST
@given(st.lists(YAML_PIECES, max_size=60).map("".join))
def test_fuzz_yaml_shaped_text(text: str) -> None:
    assert_only_policy_errors(text)


SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
           | st.sampled_from(["", "0", "-1", "100m", "64Mi", "In", "Always", "TCP", "apps/v1",
                              "edgefed.io/v1", "Deployment", "9" * 400, "1e400",
                              "PlacementPolicy", "10s", "500ms", "1h30m", "two-phase", "site",
                              "keep-original", "de", "/data", "nvidia.com/gpu", "ALL"]))
KEYS = st.text(max_size=12) | st.sampled_from([
    "apiVersion", "kind", "metadata", "name", "labels", "spec", "replicas", "container",
    "containers", "template", "image", "ports", "containerPort", "hostPort", "protocol", "env",
    "value", "valueFrom", "resources", "requests", "limits", "cpu", "memory", "placement",
    "nodeSelector", "matchLabels", "matchExpressions", "key", "operator", "values", "weights",
    "selector", "restartPolicy", "command", "args", "priority", "healthCheck", "httpGet",
    "tcpSocket", "interval", "volumes", "dataSets", "security", "capabilities", "devices",
    "affinity", "antiAffinity", "scope", "required", "weight", "spread", "maxSkew", "split",
    "sites", "users", "share", "maxRtt", "residency", "countries", "tolerations", "rollout",
    "maxSurge", "maxUnavailable", "healthGated", "failover", "grace", "singleton"])
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=5), max_leaves=40)


@FAST
@given(VALUES)
def test_fuzz_arbitrary_structures(value: Any) -> None:
    assert_only_policy_errors(yaml.safe_dump(value))


def paths_in(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths_in(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += paths_in(item, (*prefix, i))
    return out


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


RICH_KUBERNETES = yaml.safe_load(doc("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, labels: {app: web}}
    spec:
      replicas: 2
      selector:
        matchLabels: {app: web}
        matchExpressions: [{key: app, operator: In, values: [web]}]
      template:
        metadata: {labels: {app: web}}
        spec:
          nodeSelector: {arch: arm64}
          restartPolicy: Always
          containers:
          - name: web
            image: edgefed/tiny:latest
            command: [/bin/web]
            args: [--port, "80"]
            env: [{name: A, value: "1"}, {name: B, valueFrom: {fieldRef: {}}}]
            ports: [{containerPort: 80, hostPort: 8080, protocol: TCP}]
            resources: {requests: {cpu: 100m, memory: 32Mi}, limits: {cpu: 200m}}
    """))

RICH_NATIVE = yaml.safe_load(doc("""\
    apiVersion: edgefed.io/v1
    kind: Deployment
    metadata: {name: web, labels: {app: web}}
    spec:
      replicas: 2
      restartPolicy: OnFailure
      container:
        image: edgefed/tiny:latest
        command: [/bin/web]
        env: {A: "1"}
        ports: [{containerPort: 80, hostPort: 8080, protocol: udp}]
        resources: {cpu: 100m, memory: 32Mi}
      placement:
        nodeSelector:
          matchLabels: {arch: arm64}
          matchExpressions: [{key: ram, operator: Gt, values: ["4"]}]
        weights: {spread-sites: 2.5}
    """))


# Every field of the native format, and a placement policy.
FULL_NATIVE = yaml.safe_load((EXAMPLES / "gpu-inference-edge.yaml").read_text())
FULL_NATIVE["spec"]["placement"].update(yaml.safe_load(doc("""\
    strategy: least-load
    antiAffinity: [{selector: {matchLabels: {app: inference}}, scope: node, required: true}]
    spread: [{scope: site, maxSkew: 1}]
    maxPerNode: 1
    maxPerSite: 2
    split: [{sites: {matchLabels: {zone: a}}, weight: 70}, {sites: {}, weight: 30}]
    users: [{name: eu, site: berlin, share: 0.7, maxRtt: 30ms},
            {name: us, landmark: probe, share: 0.3}]
    residency: {countries: [de, fr], regions: [eu-central]}
    weights: {least-allocated: 1, spread-sites: 2}
    """)))
FULL_NATIVE["spec"]["failover"] = {"grace": "10s", "disconnectTolerance": "0s",
                                   "onReconnect": "keep-replacement", "singleton": False}
POLICY = yaml.safe_load(doc("""\
    apiVersion: edgefed.io/v1
    kind: PlacementPolicy
    metadata: {name: eu}
    spec:
      selector: {matchLabels: {data: personal}}
      priority: 10
      placement:
        residency: {regions: [eu-central]}
        tolerations: [{key: dedicated, operator: Exists}]
      failover: {grace: 30s, onReconnect: keep-original}
    """))


@pytest.mark.parametrize("base", [RICH_NATIVE, RICH_KUBERNETES, FULL_NATIVE],
                         ids=["native", "kubernetes", "full-native"])
def test_rich_documents_load(base: dict[str, Any]) -> None:
    result = load_text(yaml.safe_dump(base))
    assert len(result.deployments) == 1
    if base is not RICH_KUBERNETES:  # that one has fields without an equivalent, warned about
        assert result.warnings == ()


def test_policy_document_loads() -> None:
    result = load_text(yaml.safe_dump(POLICY))
    assert [p.name for p in result.policies] == ["eu"]
    assert (result.deployments, result.warnings) == ((), ())


@FAST
@given(base=st.sampled_from([RICH_NATIVE, RICH_KUBERNETES, FULL_NATIVE, POLICY]),
       data=st.data())
def test_fuzz_valid_documents_with_one_part_replaced(base: dict[str, Any],
                                                     data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(paths_in(base)))
    value = data.draw(VALUES)
    assert_only_policy_errors(yaml.safe_dump(replaced(base, path, value)))


@FAST
@given(st.text(alphabet=string.printable, max_size=80))
def test_fuzz_text_inside_a_valid_document(text: str) -> None:
    assert_only_policy_errors(NATIVE.replace("edgefed/tiny:latest", text))
