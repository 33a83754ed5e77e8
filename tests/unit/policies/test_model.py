"""The native model: the one validation path and the lossless way back."""

from __future__ import annotations

import json
import string
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
    STRATEGIES,
    AffinityTerm,
    Container,
    DataSet,
    Deployment,
    Failover,
    FailureAction,
    HealthCheck,
    HttpGet,
    LabelRequirement,
    OnReconnect,
    Operator,
    Placement,
    PlacementPolicy,
    Port,
    Residency,
    Resources,
    RestartPolicy,
    Rollout,
    Scope,
    Security,
    Selector,
    SplitGroup,
    SpreadConstraint,
    TaintEffect,
    TcpSocket,
    Toleration,
    TolerationOperator,
    UserGroup,
    Volume,
    deployment_from_document,
    deployment_to_document,
    policy_from_document,
    policy_to_document,
    validate_deployment,
)


def native(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"container": {"image": "edgefed/tiny:latest"}}
    body.update(spec)
    return {"apiVersion": "edgefed.io/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": body}


def container(**fields: Any) -> dict[str, Any]:
    return native(container={"image": "a", **fields})


def placement(**fields: Any) -> dict[str, Any]:
    return native(placement=fields)


def problems(doc: Any) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        deployment_from_document(doc)
    return [f"{format_path(p.path)}: {p.message}" for p in caught.value.problems]


ERROR_CASES = [
    # -- what the schema judges: structure, in the words of "found X, expected Y" --
    pytest.param([1], ["(document): expected a mapping, found a list"], id="not-a-mapping"),
    pytest.param(None, ["(document): expected a mapping, found nothing"], id="nothing"),
    pytest.param(native(replicas=1001),
                 ["spec.replicas: 1001 is out of range (expected 0 to 1000)"], id="replicas-max"),
    pytest.param(native(replicas=True),
                 ["spec.replicas: expected an integer, found a boolean True"], id="replicas-bool"),
    pytest.param(native(replicas=2.0),
                 ["spec.replicas: expected an integer, found a number 2.0"], id="replicas-float"),
    pytest.param({**native(), "metadata": {"name": "-web"}},
                 ["metadata.name: '-web' is not a valid name (expected lowercase letters, "
                  "digits and '-', at most 63 characters)"], id="bad-name"),
    pytest.param({**native(), "metadata": {}},
                 ["metadata.name: is required (expected a name)"], id="missing-name"),
    pytest.param({**native(), "status": {}},
                 ["status: unknown field (expected one of: apiVersion, kind, metadata, spec)"],
                 id="unknown-top-level-field"),
    pytest.param(native(container={}),
                 ["spec.container.image: is required (expected a string)"],
                 id="empty-container"),
    pytest.param(native(container={"image": ""}),
                 ["spec.container.image: must not be empty (expected an image reference)"],
                 id="empty-image"),
    pytest.param(native(container={"env": {"A": None}, "args": "x"}),
                 ["spec.container.image: is required (expected a string)",
                  "spec.container.env.A: is required (expected a string)",
                  "spec.container.args: expected a list of strings, found a string 'x'"],
                 id="missing-image-still-reports-the-rest"),
    pytest.param(container(ports=[{"containerPort": None}, 80]),
                 ["spec.container.ports[0].containerPort: is required (expected a port number)",
                  "spec.container.ports[1]: expected a mapping, found an integer"],
                 id="ports"),
    pytest.param(container(ports=[{"containerPort": 80, "protocol": "SCTP"}]),
                 ["spec.container.ports[0].protocol: found 'sctp', expected tcp or udp"],
                 id="protocol"),
    pytest.param(container(resources={"cpu": "-1", "memory": -1}),
                 ["spec.container.resources.cpu: '-1' is not a cpu quantity (expected like "
                  "250m or 0.5)",
                  "spec.container.resources.memory: -1 is out of range (expected at least 0)"],
                 id="negative-quantities"),
    pytest.param(container(resources={"disk": "lots"}),
                 ["spec.container.resources.disk: 'lots' is not a memory quantity (expected "
                  "like 64Mi or 1Gi)"], id="disk"),
    pytest.param(container(resources={"memory": 1.5}),
                 ["spec.container.resources.memory: expected a memory quantity like 64Mi or 1Gi, "
                  "found a number 1.5"], id="fractional-bytes"),
    pytest.param(container(resources={"devices": {"nvidia.com/gpu": 0, "/gpu": 1}}),
                 ["spec.container.resources.devices.nvidia.com/gpu: 0 is out of range (expected "
                  "1 to 1000)",
                  "spec.container.resources.devices./gpu: '/gpu' is not a device kind (expected "
                  "a name like nvidia.com/gpu)"], id="devices"),
    pytest.param(container(healthCheck={"command": ["true"], "tcpSocket": {"port": 80}}),
                 ["spec.container.healthCheck: found command and tcpSocket, expected exactly "
                  "one of command, httpGet, tcpSocket"], id="health-check-two-probes"),
    pytest.param(container(healthCheck={"interval": "10s"}),
                 ["spec.container.healthCheck: found none of them, expected exactly one of "
                  "command, httpGet, tcpSocket"], id="health-check-no-probe"),
    pytest.param(container(healthCheck={"command": [], "interval": "ten seconds",
                                        "retries": 0}),
                 ["spec.container.healthCheck.command: must not be empty (expected a list of "
                  "strings)",
                  "spec.container.healthCheck.interval: 'ten seconds' is not a duration "
                  "(expected like 500ms, 10s, 5m or 1h)",
                  "spec.container.healthCheck.retries: 0 is out of range (expected 1 to 100)"],
                 id="health-check-fields"),
    pytest.param(container(healthCheck={"httpGet": {"path": "/healthz"}}),
                 ["spec.container.healthCheck.httpGet.port: is required (expected a port "
                  "number)"], id="http-get-port"),
    pytest.param(container(volumes=[{"name": "cache", "hostPath": "var/cache",
                                     "mountPath": "/cache", "readOnly": "no"}]),
                 ["spec.container.volumes[0].hostPath: 'var/cache' is not an absolute path "
                  "(expected a path starting with /)",
                  "spec.container.volumes[0].readOnly: expected true or false, found a string "
                  "'no'"], id="volume"),
    pytest.param(container(dataSets=[{"name": "frames"}]),
                 ["spec.container.dataSets[0].mountPath: is required (expected an absolute "
                  "path)"], id="data-set"),
    pytest.param(container(security={"runAsUser": -1, "capabilities": {"add": ["net_admin"],
                                                                      "keep": ["ALL"]}}),
                 ["spec.container.security.runAsUser: -1 is out of range (expected 0 to "
                  "4294967294)",
                  "spec.container.security.capabilities.add[0]: 'net_admin' is not a "
                  "capability (expected upper case like NET_ADMIN or ALL)",
                  "spec.container.security.capabilities.keep: unknown field (expected one of: "
                  "add, drop)"], id="security"),
    pytest.param(placement(weights={"least-allocated": -1, "spread-site": 1}),
                 ["spec.placement.weights.least-allocated: -1 is out of range (expected at "
                  "least 0)",
                  "spec.placement.weights.spread-site: found 'spread-site', expected one of "
                  "least-allocated, headroom, spread-sites, spread-nodes, stay-put, user-rtt, "
                  "data-locality, image-locality, balanced, topology-spread, affinity, cost, "
                  "prefer-no-schedule"],
                 id="weight-names"),
    pytest.param(placement(weights={"least-allocated": "1"}),
                 ["spec.placement.weights.least-allocated: expected a number, found a string "
                  "'1'"], id="weight-string"),
    pytest.param(placement(strategy="best"),
                 ["spec.placement.strategy: found 'best', expected one of two-phase, random, "
                  "round-robin, least-load, optimal"], id="strategy"),
    pytest.param(placement(affinity=[{"scope": "rack", "weight": 0}]),
                 ["spec.placement.affinity[0].selector: is required (expected a mapping)",
                  "spec.placement.affinity[0].scope: found 'rack', expected one of node, site, "
                  "region, provider",
                  "spec.placement.affinity[0].weight: 0 is out of range (expected 1 to 100)"],
                 id="affinity"),
    pytest.param(placement(spread=[{"scope": "site", "maxSkew": 0}], maxPerNode=-1),
                 ["spec.placement.spread[0].maxSkew: 0 is out of range (expected 1 to 1000)",
                  "spec.placement.maxPerNode: -1 is out of range (expected 0 to 1000)"],
                 id="spread-and-limits"),
    pytest.param(placement(split=[{"sites": {"matchLabels": {"tier": "edge"}}}]),
                 ["spec.placement.split[0].weight: is required (expected an integer)"],
                 id="split-without-weight"),
    pytest.param(placement(users=[{"name": "eu", "site": "berlin", "landmark": "probe",
                                   "share": 0, "maxRtt": "30 ms"}]),
                 ["spec.placement.users[0]: found site and landmark, expected exactly one of "
                  "site, landmark",
                  "spec.placement.users[0].share: 0 is out of range (expected more than 0 and "
                  "at most 1)",
                  "spec.placement.users[0].maxRtt: '30 ms' is not a duration (expected like "
                  "500ms, 10s, 5m or 1h)"], id="users"),
    pytest.param(placement(residency={"countries": ["DE", "germany"], "zones": ["a"]}),
                 ["spec.placement.residency.countries[0]: 'DE' is not a country code "
                  "(expected two lowercase letters like de)",
                  "spec.placement.residency.countries[1]: 'germany' is not a country code "
                  "(expected two lowercase letters like de)",
                  "spec.placement.residency.zones: unknown field (expected one of: countries, "
                  "regions)"], id="residency"),
    pytest.param(placement(tolerations=[{"key": "gpu", "operator": "Equals",
                                         "effect": "NoRun"}]),
                 ["spec.placement.tolerations[0].operator: found 'Equals', expected one of "
                  "Equal, Exists",
                  "spec.placement.tolerations[0].effect: found 'NoRun', expected one of "
                  "NoSchedule, PreferNoSchedule, NoExecute"], id="tolerations"),
    pytest.param(native(rollout={"parallelism": 0, "delay": -1, "failureAction": "abort",
                                 "healthGated": 1}),
                 ["spec.rollout.parallelism: 0 is out of range (expected 1 to 1000)",
                  "spec.rollout.delay: -1 is out of range (expected at least 0)",
                  "spec.rollout.failureAction: found 'abort', expected one of pause, continue, "
                  "rollback",
                  "spec.rollout.healthGated: expected true or false, found an integer 1"],
                 id="rollout"),
    pytest.param(native(failover={"grace": "10", "onReconnect": "keep-both",
                                  "singleton": "yes please"}),
                 ["spec.failover.grace: '10' is not a duration (expected like 500ms, 10s, 5m "
                  "or 1h)",
                  "spec.failover.onReconnect: found 'keep-both', expected one of "
                  "keep-replacement, keep-original",
                  "spec.failover.singleton: expected true or false, found a string 'yes please'"],
                 id="failover"),
    pytest.param(native(restartPolicy="Sometimes"),
                 ["spec.restartPolicy: found 'Sometimes', expected one of Always, OnFailure, "
                  "Never"], id="restart-policy"),
    pytest.param({"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "web"},
                  "spec": {"container": {"image": "a"}}},
                 ["apiVersion: found 'apps/v1', expected 'edgefed.io/v1'",
                  "kind: found 'Pod', expected 'Deployment'"], id="not-native"),
    pytest.param({"metadata": {"name": "web"}, "spec": {"container": {"image": "a"}}},
                 ["apiVersion: is required (expected 'edgefed.io/v1')",
                  "kind: is required (expected 'Deployment')"], id="no-header"),
    # -- what only the reader can see, in the same pass -------------------------------
    pytest.param(container(resources={"cpu": 10**400, "memory": "9" * 400 + "Ki"}),
                 ["spec.container.resources.cpu: is too large to be a cpu quantity",
                  "spec.container.resources.memory: is too large to be a memory quantity"],
                 id="quantities-beyond-float"),
    pytest.param(placement(weights={"least-allocated": float("inf"),
                                    "spread-sites": float("nan"), "spread-nodes": 10**400}),
                 ["spec.placement.weights.least-allocated: expected a number >= 0, found inf",
                  "spec.placement.weights.spread-sites: expected a number >= 0, found nan",
                  "spec.placement.weights.spread-nodes: expected a number >= 0, found "
                  f"{10**400!r}"], id="weights-beyond-float"),
    pytest.param(placement(siteSelector={"matchExpressions": [
        {"key": "zone", "operator": "In"},
        {"key": "ram", "operator": "Gt", "values": ["lots"]},
        {"key": "gpu", "operator": "Exists", "values": ["yes"]},
        {"key": "arch", "operator": "Equals", "values": ["arm64"]},
        {"operator": "Exists"},
    ]}), [
        "spec.placement.siteSelector.matchExpressions[0].values: In needs at least one value",
        "spec.placement.siteSelector.matchExpressions[1].values: Gt needs exactly one numeric "
        "value",
        "spec.placement.siteSelector.matchExpressions[2].values: Exists takes no values",
        "spec.placement.siteSelector.matchExpressions[3].operator: found 'Equals', expected "
        "one of In, NotIn, Exists, DoesNotExist, Gt, Lt",
        "spec.placement.siteSelector.matchExpressions[4].key: is required (expected a string)",
    ], id="expressions"),
    pytest.param(container(healthCheck={"tcpSocket": {"port": 80}, "interval": "0s",
                                        "timeout": "1.5ms", "startPeriod": "400d"}),
                 ["spec.container.healthCheck.interval: '0s' is out of range (expected more "
                  "than 0s)",
                  "spec.container.healthCheck.timeout: '1.5ms' is finer than a millisecond "
                  "(expected whole milliseconds)",
                  "spec.container.healthCheck.startPeriod: '400d' is not a duration (expected "
                  "like 500ms, 10s, 5m or 1h)"], id="durations"),
    pytest.param(native(failover={"grace": "9000h"}),
                 ["spec.failover.grace: '9000h' is too long (expected at most 365 days)"],
                 id="duration-too-long"),
]


@pytest.mark.parametrize(("doc", "expected"), ERROR_CASES)
def test_validation_problems(doc: Any, expected: list[str]) -> None:
    assert problems(doc) == expected


def test_deep_json_from_the_api_is_refused_not_recursed_into() -> None:
    deep = json.loads("[" * 950 + "]" * 950)  # JSON has no depth bound the loader's YAML has
    assert problems(container(env={"A": deep}, args=deep)) == [
        "spec.container.env.A: expected a string, found a list",
        "spec.container.args[0]: expected a string, found a list",
    ]


def test_null_fields_count_as_not_given() -> None:
    doc = native(replicas=None, placement=None, rollout=None)
    doc["metadata"]["labels"] = None
    assert deployment_from_document(doc) == deployment_from_document(native())


def test_minimal_document_and_defaults() -> None:
    deployment = deployment_from_document(native())
    assert deployment == Deployment(name="web", container=Container(image="edgefed/tiny:latest"))
    assert deployment_to_document(deployment) == {
        "apiVersion": "edgefed.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "container": {"image": "edgefed/tiny:latest"}},
    }


def test_defaults_are_the_documented_ones() -> None:
    d = deployment_from_document(native(container={
        "image": "a", "healthCheck": {"httpGet": {"port": 8080}},
        "volumes": [{"name": "v", "hostPath": "/h", "mountPath": "/m"}],
        "dataSets": [{"name": "d", "mountPath": "/d"}]},
        placement={"affinity": [{"selector": {}}], "spread": [{}],
                   "users": [{"name": "u", "site": "s"}], "tolerations": [{"key": "k"}]}))
    assert d.container.health_check == HealthCheck(
        http_get=HttpGet(port=8080, path="/"), interval=timedelta(seconds=10),
        timeout=timedelta(seconds=2), retries=3, start_period=timedelta(0))
    assert d.container.volumes == (Volume(name="v", host_path="/h", mount_path="/m",
                                          read_only=False),)
    assert d.container.data_sets == (DataSet(name="d", mount_path="/d", read_only=True),)
    assert d.placement.affinity == (AffinityTerm(selector=Selector(), scope=Scope.NODE,
                                                 required=False, weight=100),)
    assert d.placement.spread == (SpreadConstraint(scope=Scope.SITE, max_skew=1,
                                                   required=False),)
    assert d.placement.users == (UserGroup(name="u", site="s", share=1.0, max_rtt=None),)
    assert d.placement.tolerations == (Toleration(key="k", operator=TolerationOperator.EQUAL,
                                                  value="", effect=None),)
    assert d.placement.strategy == "two-phase"
    assert d.rollout == Rollout(parallelism=1, delay=timedelta(0), health_gated=False,
                                failure_action=FailureAction.PAUSE, max_surge=0,
                                max_unavailable=1)
    assert d.failover == Failover(grace=timedelta(seconds=10), disconnect_tolerance=timedelta(0),
                                  on_reconnect=OnReconnect.KEEP_REPLACEMENT, singleton=False)


def test_document_carries_only_what_differs_from_the_defaults() -> None:
    doc = native(container={"image": "a", "healthCheck": {"command": ["true"],
                                                          "interval": "10s"}},
                 rollout={"parallelism": 1, "maxSurge": 1},
                 failover={"grace": "10s"}, placement={"maxPerNode": 0})
    written = deployment_to_document(deployment_from_document(doc))
    assert written["spec"] == {
        "replicas": 1,
        "container": {"image": "a", "healthCheck": {"command": ["true"]}},
        # Placement and failover fields set at their default stay: they override policies.
        "placement": {"maxPerNode": 0},
        "rollout": {"maxSurge": 1},
        "failover": {"grace": "10s"},
    }


def test_set_fields_record_what_the_document_wrote() -> None:
    d = deployment_from_document(native(placement={"maxPerNode": 0, "strategy": "random"},
                                        failover={"grace": "10s"}))
    assert d.placement.set_fields == {"max_per_node", "strategy"}
    assert d.failover.set_fields == {"grace"}
    # Built in code: a field different from its default counts as set.
    assert Placement(max_per_site=2).set_fields == {"max_per_site"}
    assert Placement(max_per_site=2) == Placement(max_per_site=2, set_fields=frozenset(
        {"max_per_site"}))


def test_warnings_do_not_refuse() -> None:
    doc = native(rollout={"healthGated": True})
    deployment, found = validate_deployment(doc)
    assert deployment is not None and deployment.rollout.health_gated
    assert [(format_path(p.path), p.warning) for p in found] == [("spec.rollout.healthGated",
                                                                  True)]
    assert deployment_from_document(doc) == deployment


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


# -- placement policies ------------------------------------------------------------------

POLICY = {"apiVersion": "edgefed.io/v1", "kind": "PlacementPolicy",
          "metadata": {"name": "eu"},
          "spec": {"selector": {"matchLabels": {"data": "personal"}}, "priority": 10,
                   "placement": {"residency": {"regions": ["eu-central"]}},
                   "failover": {"grace": "30s"}}}


def test_policy_document() -> None:
    policy = policy_from_document(POLICY)
    assert policy == PlacementPolicy(
        name="eu", selector=Selector(match_labels={"data": "personal"}), priority=10,
        placement=Placement(residency=Residency(regions=("eu-central",))),
        failover=Failover(grace=timedelta(seconds=30)))
    assert policy_to_document(policy) == POLICY


@pytest.mark.parametrize(("spec", "expected"), [
    pytest.param({"placement": {"maxPerNode": 1}},
                 ["spec.selector: is required (expected a mapping)"], id="no-selector"),
    pytest.param({"selector": {}, "priority": 1001, "rollout": {}},
                 ["spec.priority: 1001 is out of range (expected -1000 to 1000)",
                  "spec.rollout: unknown field (expected one of: failover, placement, priority, "
                  "selector)"], id="fields"),
])
def test_policy_problems(spec: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(PolicyError) as caught:
        policy_from_document({**POLICY, "spec": spec})
    assert [f"{format_path(p.path)}: {p.message}" for p in caught.value.problems] == expected


def test_a_policy_is_not_a_deployment() -> None:
    assert problems(POLICY) == [
        "kind: found 'PlacementPolicy', expected 'Deployment'",
        "spec.container: is required (expected a mapping)",
        "spec.selector: unknown field (expected one of: container, failover, placement, "
        "replicas, restartPolicy, rollout)",
        "spec.priority: unknown field (expected one of: container, failover, placement, "
        "replicas, restartPolicy, rollout)",
    ]


# -- round trip ------------------------------------------------------------------------

TEXT = st.text(max_size=12)
# Residency checks read the labels country and region; keep selectors clear of them.
KEYS = TEXT.filter(lambda key: key not in ("country", "region"))
LABELS = st.dictionaries(TEXT, TEXT, max_size=3)
NAMES = st.from_regex(NAME_RE, fullmatch=True)
# Cheaper to draw, for the many names inside a document.
WORDS = st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8)
SHORT_NAMES = WORDS | st.tuples(WORDS, WORDS).map("-".join)
MILLIS = st.integers(0, 365 * 86_400_000).map(lambda ms: timedelta(milliseconds=ms))
POSITIVE_MILLIS = st.integers(1, 365 * 86_400_000).map(lambda ms: timedelta(milliseconds=ms))
PATHS = st.text(alphabet=string.ascii_lowercase + "/._-", max_size=20).map(lambda p: "/" + p)


@st.composite
def selectors(draw: st.DrawFn) -> Selector:
    """A selector some labels satisfy: every key is constrained once."""
    keys = draw(st.lists(KEYS, unique=True, max_size=5))
    cut = draw(st.integers(0, len(keys)))
    requirements = []
    for key in keys[cut:]:
        operator = draw(st.sampled_from(Operator))
        values: list[str] = []
        if operator in (Operator.IN, Operator.NOT_IN):
            values = draw(st.lists(TEXT, min_size=1, max_size=3))
        elif operator in (Operator.GT, Operator.LT):
            values = [str(draw(st.integers(-10**6, 10**6)))]
        requirements.append(LabelRequirement(key=key, operator=operator, values=tuple(values)))
    return Selector(match_labels={key: draw(TEXT) for key in keys[:cut]},
                    match_expressions=tuple(requirements))


PORTS = st.builds(Port, container_port=st.integers(1, 65535),
                  host_port=st.none() | st.integers(1, 65535),
                  protocol=st.sampled_from(["tcp", "udp"]))

HEALTH_CHECKS = st.builds(
    HealthCheck, interval=POSITIVE_MILLIS, timeout=POSITIVE_MILLIS,
    retries=st.integers(1, 100), start_period=MILLIS,
).flatmap(lambda base: st.one_of(
    st.lists(TEXT, min_size=1, max_size=3).map(
        lambda command: HealthCheck(**{**_fields(base), "command": tuple(command)})),
    st.builds(HttpGet, port=st.integers(1, 65535), path=PATHS).map(
        lambda probe: HealthCheck(**{**_fields(base), "http_get": probe})),
    st.builds(TcpSocket, port=st.integers(1, 65535)).map(
        lambda probe: HealthCheck(**{**_fields(base), "tcp_socket": probe})),
))


def _fields(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__dataclass_fields__}


CAPABILITIES = st.lists(st.sampled_from(["ALL", "NET_ADMIN", "NET_BIND_SERVICE", "SYS_TIME"]),
                        max_size=3).map(tuple)

CONTAINERS = st.builds(
    Container,
    image=st.text(min_size=1, max_size=30),
    command=st.lists(TEXT, max_size=3).map(tuple),
    args=st.lists(TEXT, max_size=3).map(tuple),
    env=LABELS,
    ports=st.lists(PORTS, max_size=3).map(tuple),
    resources=st.builds(Resources, cpu_millis=st.integers(0, 10**7),
                        memory_bytes=st.integers(0, 2**50), disk_bytes=st.integers(0, 2**50),
                        devices=st.dictionaries(
                            st.sampled_from(["nvidia.com/gpu", "example.com/tpu", "fpga"]),
                            st.integers(1, 1000), max_size=2)),
    health_check=st.none() | HEALTH_CHECKS,
    # Names and mount paths unique, as the checks require.
    volumes=st.lists(SHORT_NAMES, unique=True, max_size=3).flatmap(lambda names: st.tuples(*(
        st.builds(Volume, name=st.just(n), host_path=PATHS, mount_path=st.just(f"/v/{n}"),
                  read_only=st.booleans()) for n in names))),
    data_sets=st.lists(SHORT_NAMES, unique=True, max_size=3).flatmap(lambda names: st.tuples(*(
        st.builds(DataSet, name=st.just(n), mount_path=st.just(f"/d/{n}"),
                  read_only=st.booleans()) for n in names))),
    security=st.builds(Security, run_as_user=st.none() | st.integers(0, 2**32 - 2),
                       read_only_root_filesystem=st.booleans(), privileged=st.booleans(),
                       cap_add=CAPABILITIES, cap_drop=CAPABILITIES),
)

AFFINITY = st.lists(st.builds(AffinityTerm, selector=selectors(), scope=st.sampled_from(Scope),
                              required=st.booleans(), weight=st.integers(1, 100)),
                    max_size=2).map(tuple)


@st.composite
def splits(draw: st.DrawFn) -> tuple[SplitGroup, ...]:
    if not draw(st.booleans()):
        return ()
    cuts = sorted(draw(st.lists(st.integers(0, 100), max_size=3)))
    weights = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    # A group of weight 0 is warned about; keep the round trip free of warnings.
    return tuple(SplitGroup(sites=draw(selectors()), weight=w) for w in weights if w)


@st.composite
def user_groups(draw: st.DrawFn) -> tuple[UserGroup, ...]:
    names = draw(st.lists(SHORT_NAMES, unique=True, max_size=3))
    if not names:
        return ()
    cuts = sorted(draw(st.lists(st.integers(1, 99), unique=True, min_size=len(names) - 1,
                                max_size=len(names) - 1)))
    percents = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    out = []
    for name, percent in zip(names, percents, strict=True):
        where = draw(st.sampled_from(["site", "landmark"]))
        out.append(UserGroup(name=name, share=percent / 100, max_rtt=draw(st.none() | MILLIS),
                             **{where: draw(TEXT)}))
    return tuple(out)


TOLERATIONS = st.lists(st.one_of(
    st.builds(Toleration, key=st.text(min_size=1, max_size=10),
              operator=st.just(TolerationOperator.EQUAL), value=TEXT,
              effect=st.none() | st.sampled_from(TaintEffect)),
    st.builds(Toleration, key=TEXT, operator=st.just(TolerationOperator.EXISTS),
              effect=st.none() | st.sampled_from(TaintEffect)),
), max_size=2).map(tuple)

PLACEMENT_ATTRIBUTES = [name for name in Placement.__dataclass_fields__ if name != "set_fields"]
FAILOVER_ATTRIBUTES = [name for name in Failover.__dataclass_fields__ if name != "set_fields"]

PLACEMENTS = st.builds(
    Placement, node_selector=selectors(), site_selector=selectors(),
    strategy=st.sampled_from(STRATEGIES),
    weights=st.dictionaries(st.sampled_from(SCORE_NAMES), st.floats(
        min_value=0, allow_nan=False, allow_infinity=False), max_size=3),
    affinity=AFFINITY, anti_affinity=AFFINITY,
    spread=st.lists(st.builds(SpreadConstraint, scope=st.sampled_from(Scope),
                              max_skew=st.integers(1, 1000), required=st.booleans()),
                    max_size=2).map(tuple),
    max_per_node=st.integers(0, 1000), max_per_site=st.integers(0, 1000),
    split=splits(), users=user_groups(),
    residency=st.builds(Residency,
                        countries=st.lists(st.text(string.ascii_lowercase, min_size=2,
                                                   max_size=2), max_size=3).map(tuple),
                        regions=st.lists(TEXT, max_size=2).map(tuple)),
    tolerations=TOLERATIONS,
    set_fields=st.sets(st.sampled_from(PLACEMENT_ATTRIBUTES)).map(frozenset),
)

FAILOVERS = st.builds(Failover, grace=MILLIS, disconnect_tolerance=MILLIS,
                      on_reconnect=st.sampled_from(OnReconnect), singleton=st.booleans(),
                      set_fields=st.sets(st.sampled_from(FAILOVER_ATTRIBUTES)).map(frozenset))

ROLLOUTS = st.builds(Rollout, parallelism=st.integers(1, 1000), delay=MILLIS,
                     health_gated=st.booleans(), failure_action=st.sampled_from(FailureAction),
                     max_surge=st.integers(0, 1000), max_unavailable=st.integers(0, 1000))


@st.composite
def deployments(draw: st.DrawFn) -> Deployment:
    """Any deployment the checks accept without a warning."""
    container = draw(CONTAINERS)
    failover = draw(FAILOVERS)
    rollout = draw(ROLLOUTS)
    replicas = draw(st.integers(0, 1000))
    if failover.singleton:
        replicas = min(replicas, 1)
        rollout = Rollout(**{**_fields(rollout), "max_surge": 0})
    if rollout.max_surge == 0 and rollout.max_unavailable == 0:
        rollout = Rollout(**{**_fields(rollout), "max_unavailable": 1})
    if container.health_check is None:
        rollout = Rollout(**{**_fields(rollout), "health_gated": False})
    return Deployment(name=draw(NAMES), container=container, replicas=replicas,
                      labels=draw(LABELS), placement=draw(PLACEMENTS),
                      restart_policy=draw(st.sampled_from(RestartPolicy)),
                      rollout=rollout, failover=failover)


POLICIES = st.builds(PlacementPolicy, name=NAMES, selector=selectors(),
                     priority=st.integers(-1000, 1000), labels=LABELS,
                     placement=PLACEMENTS.filter(lambda p: bool(p.set_fields)),
                     failover=FAILOVERS)

ROUND_TRIP = settings(max_examples=200, deadline=timedelta(seconds=2))


@ROUND_TRIP
@given(deployments())
def test_document_round_trip_is_lossless(deployment: Deployment) -> None:
    assert deployment_from_document(deployment_to_document(deployment)) == deployment


@ROUND_TRIP
@given(deployments())
def test_yaml_round_trip_through_the_loader_is_lossless(deployment: Deployment) -> None:
    text = yaml.safe_dump(deployment_to_document(deployment))
    result = load_text(text)
    assert result.deployments == (deployment,)
    assert result.warnings == ()


@ROUND_TRIP
@given(POLICIES)
def test_policy_round_trip_is_lossless(policy: PlacementPolicy) -> None:
    assert policy_from_document(policy_to_document(policy)) == policy
    result = load_text(yaml.safe_dump(policy_to_document(policy)))
    assert result.policies == (policy,)
    assert result.warnings == ()
