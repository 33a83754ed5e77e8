"""Compose v3 files onto the native model: one Deployment per service, what maps,
what warns, what is refused, and that every problem names the Compose field and
the line it is on."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.compose import cpus, duration, is_compose, memory, translate, translate_services
from policies.errors import PolicyError, Problems
from policies.loader import load_file, load_text
from policies.model import (
    Container,
    Deployment,
    Port,
    RestartPolicy,
)
from policies.spec import Rollout

EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"

SEED = textwrap.dedent("""\
    version: '3'
    services:
      myapp:
        image: myapp:latest
        ports:
          - "80:80"
        deploy:
          replicas: 3
          update_config:
            parallelism: 1
            delay: 10s
          restart_policy:
            condition: on-failure
    """)


def service(body: str = "", *, after: str = "") -> str:
    """A Compose file with one service ``web`` (image ``web:1``) plus ``body``
    under it and ``after`` at the top level."""
    lines = "services:\n  web:\n    image: web:1\n"
    return lines + textwrap.indent(textwrap.dedent(body), "    ") + textwrap.dedent(after)


def native_spec(text: str) -> dict[str, Any]:
    """The spec of the one translated document; the translation must be clean."""
    problems = Problems()
    [document] = translate_services(yaml.safe_load(text), problems)
    assert problems.items == []
    spec: dict[str, Any] = document["spec"]
    return spec


def reported(text: str) -> list[str]:
    """Every problem of loading ``text`` as c.yaml, errors and warnings alike."""
    try:
        result = load_text(text, filename="c.yaml")
    except PolicyError as exc:
        return [str(p) for p in exc.problems]
    return [str(w) for w in result.warnings]


def loaded(text: str) -> Deployment:
    result = load_text(text, filename="c.yaml")
    assert result.warnings == ()
    [deployment] = result.deployments
    return deployment


# -- the seed ------------------------------------------------------------------------


def test_seed_example_file_is_the_seed() -> None:
    text = (EXAMPLES / "seed-compose.yaml").read_text()
    assert text.startswith("# ")
    assert text.split("\n", 1)[1] == SEED


def test_seed_example_loads_exactly_as_written() -> None:
    result = load_file(EXAMPLES / "seed-compose.yaml")
    assert result.warnings == ()
    assert result.deployments == (Deployment(
        name="myapp",
        replicas=3,
        container=Container(image="myapp:latest", ports=(Port(container_port=80, host_port=80),)),
        rollout=Rollout(parallelism=1, delay=timedelta(seconds=10)),
        restart_policy=RestartPolicy.ON_FAILURE,
    ),)


def test_seed_translates_to_this_native_document() -> None:
    problems = Problems()
    assert translate_services(yaml.safe_load(SEED), problems) == [{
        "apiVersion": "edgefed.io/v1",
        "kind": "Deployment",
        "metadata": {"name": "myapp"},
        "spec": {
            "replicas": 3,
            "restartPolicy": "OnFailure",
            "container": {"image": "myapp:latest",
                          "ports": [{"containerPort": 80, "hostPort": 80}]},
            "rollout": {"parallelism": 1, "delay": "10s"},
        },
    }]
    assert problems.items == []


@pytest.mark.parametrize(("native", "source"), [
    (("metadata", "name"), ("services", "myapp")),
    (("spec", "replicas"), ("services", "myapp", "deploy", "replicas")),
    (("spec", "restartPolicy"), ("services", "myapp", "deploy", "restart_policy", "condition")),
    (("spec", "container", "image"), ("services", "myapp", "image")),
    (("spec", "container", "ports", 0, "hostPort"), ("services", "myapp", "ports", 0)),
    (("spec", "rollout", "delay"), ("services", "myapp", "deploy", "update_config", "delay")),
])
def test_native_paths_map_back_to_the_compose_file(
        native: tuple[str | int, ...], source: tuple[str | int, ...]) -> None:
    [translation] = translate(yaml.safe_load(SEED), Problems())
    assert translation.source_path(native) == source


def test_one_deployment_per_service_in_file_order() -> None:
    text = "services:\n  db:\n    image: postgres:16\n  web:\n    image: web:1\n"
    assert [d.name for d in load_text(text).deployments] == ["db", "web"]


@pytest.mark.parametrize(("doc", "expected"), [
    ({"services": {}}, True),
    ({"version": "3", "services": {"web": {}}}, True),
    ({"services": [], "x-a": 1}, True),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "services": {}}, False),
    ({"kind": "Deployment", "services": {}}, False),
    ({"version": "3"}, False),
    ([{"services": {}}], False),
])
def test_what_counts_as_a_compose_file(doc: Any, expected: bool) -> None:
    assert is_compose(doc) is expected


@pytest.mark.parametrize("version", ["'3'", "'3.8'", "3", "3.9", '"3.0"'])
def test_version_3_or_none_is_accepted(version: str) -> None:
    assert loaded(f"version: {version}\n" + service()).name == "web"
    assert loaded(service()).name == "web"


# -- what maps -----------------------------------------------------------------------

IMAGE = {"image": "web:1"}

MAPPING_CASES = [
    pytest.param("command: nginx -g 'daemon off;'\n",
                 {"container": {**IMAGE, "args": ["nginx", "-g", "daemon off;"]}},
                 id="command-string-split-like-a-shell"),
    pytest.param("command: [nginx, -g, daemon off;]\n",
                 {"container": {**IMAGE, "args": ["nginx", "-g", "daemon off;"]}},
                 id="command-list"),
    pytest.param("entrypoint: /bin/entry --verbose\ncommand: [serve]\n",
                 {"container": {**IMAGE, "command": ["/bin/entry", "--verbose"],
                                "args": ["serve"]}}, id="entrypoint-is-command"),
    pytest.param("environment: [A=1, B=x=y, EMPTY=]\n",
                 {"container": {**IMAGE, "env": {"A": "1", "B": "x=y", "EMPTY": ""}}},
                 id="environment-list"),
    pytest.param("environment: {A: '1', PORT: 8080}\n",
                 {"container": {**IMAGE, "env": {"A": "1", "PORT": 8080}}},
                 id="environment-mapping"),
    pytest.param("environment: [COST=$$5]\n",
                 {"container": {**IMAGE, "env": {"COST": "$5"}}}, id="dollar-escape"),
    pytest.param('ports: ["80:80", "8080:80/udp", "443", 53]\n',
                 {"container": {**IMAGE, "ports": [
                     {"containerPort": 80, "hostPort": 80},
                     {"containerPort": 80, "hostPort": 8080, "protocol": "udp"},
                     {"containerPort": 443}, {"containerPort": 53}]}}, id="ports-short"),
    pytest.param('ports: ["9000-9001:8000-8001"]\n',
                 {"container": {**IMAGE, "ports": [
                     {"containerPort": 8000, "hostPort": 9000},
                     {"containerPort": 8001, "hostPort": 9001}]}}, id="ports-range"),
    pytest.param("ports:\n  - {target: 80, published: 8080, protocol: udp, mode: host}\n"
                 "  - {target: 443, published: '8443'}\n  - {target: 9000}\n",
                 {"container": {**IMAGE, "ports": [
                     {"containerPort": 80, "hostPort": 8080, "protocol": "udp"},
                     {"containerPort": 443, "hostPort": 8443}, {"containerPort": 9000}]}},
                 id="ports-long"),
    pytest.param("labels: [tier=edge, flag]\ndeploy:\n  labels: {team: vision}\n",
                 {"container": IMAGE}, id="labels-are-metadata"),
    pytest.param("deploy:\n  replicas: 4\n", {"replicas": 4, "container": IMAGE},
                 id="replicas"),
    pytest.param("deploy:\n  mode: replicated\n  replicas: 0\n",
                 {"replicas": 0, "container": IMAGE}, id="replicated-mode"),
    pytest.param("scale: 2\n", {"replicas": 2, "container": IMAGE}, id="scale"),
    pytest.param("deploy:\n  placement:\n    constraints:\n"
                 "      - node.labels.region == eu\n      - node.labels.disk!=hdd\n"
                 "      - node.platform.arch == x86_64\n      - node.hostname == pi-1\n"
                 "      - node.platform.os == linux\n",
                 {"container": IMAGE, "placement": {"nodeSelector": {
                     "matchLabels": {"region": "eu", "arch": "amd64", "node": "pi-1",
                                     "os": "linux"},
                     "matchExpressions": [{"key": "disk", "operator": "NotIn",
                                           "values": ["hdd"]}]}}}, id="constraints"),
    pytest.param("deploy:\n  placement:\n    constraints: [node.platform.arch == aarch64,"
                 " node.platform.arch != armv7l]\n",
                 {"container": IMAGE, "placement": {"nodeSelector": {
                     "matchLabels": {"arch": "arm64"},
                     "matchExpressions": [{"key": "arch", "operator": "NotIn",
                                           "values": ["armv7l"]}]}}}, id="arch-names"),
    pytest.param("deploy:\n  placement:\n    preferences:\n      - spread: node.labels.site\n"
                 "      - spread: node.labels.region\n      - spread: node.labels.provider\n"
                 "      - spread: node.hostname\n",
                 {"container": IMAGE, "placement": {"spread": [
                     {"scope": "site", "maxSkew": 1, "required": False},
                     {"scope": "region", "maxSkew": 1, "required": False},
                     {"scope": "provider", "maxSkew": 1, "required": False},
                     {"scope": "node", "maxSkew": 1, "required": False}]}}, id="preferences"),
    pytest.param("deploy:\n  placement:\n    max_replicas_per_node: 1\n",
                 {"container": IMAGE, "placement": {"maxPerNode": 1}}, id="max-per-node"),
    pytest.param("deploy:\n  resources:\n    reservations: {cpus: '0.25', memory: 64M}\n",
                 {"container": {**IMAGE, "resources": {"cpu": "250m", "memory": "64Mi"}}},
                 id="reservations"),
    pytest.param("deploy:\n  resources:\n    limits: {cpus: 2, memory: 1gb}\n",
                 {"container": {**IMAGE, "resources": {"cpu": "2", "memory": "1Gi"}}},
                 id="limits-stand-in"),
    pytest.param("deploy:\n  resources:\n    limits: {cpus: '0.5', memory: 512m}\n"
                 "    reservations: {cpus: 0.5, memory: 536870912}\n",
                 {"container": {**IMAGE, "resources": {"cpu": "500m", "memory": "512Mi"}}},
                 id="equal-limits-written-differently"),
    pytest.param("deploy:\n  resources:\n    reservations:\n      devices:\n"
                 "        - {driver: nvidia, capabilities: [gpu, utility], count: 2}\n",
                 {"container": {**IMAGE, "resources": {"devices": {"nvidia.com/gpu": 2}}}},
                 id="gpus"),
    pytest.param("deploy:\n  update_config:\n    parallelism: 2\n    delay: 1m30s\n"
                 "    failure_action: rollback\n    order: start-first\n",
                 {"container": IMAGE, "rollout": {"parallelism": 2, "delay": "90s",
                                                  "failureAction": "rollback", "maxSurge": 2,
                                                  "maxUnavailable": 0}}, id="update-config"),
    pytest.param("deploy:\n  update_config: {parallelism: 3}\n",
                 {"container": IMAGE, "rollout": {"parallelism": 3, "maxUnavailable": 3}},
                 id="stop-first-batch-stops-parallelism-at-once"),
    pytest.param("deploy:\n  update_config: {order: stop-first, failure_action: continue}\n",
                 {"container": IMAGE, "rollout": {"failureAction": "continue", "maxSurge": 0}},
                 id="stop-first"),
    pytest.param("deploy:\n  replicas: 5\n  update_config: {parallelism: 0}\n",
                 {"replicas": 5, "container": IMAGE,
                  "rollout": {"parallelism": 5, "maxUnavailable": 5}},
                 id="parallelism-0-is-all-at-once"),
    pytest.param("deploy:\n  restart_policy: {condition: any}\n",
                 {"restartPolicy": "Always", "container": IMAGE}, id="condition-any"),
    pytest.param("deploy:\n  restart_policy: {condition: none}\n",
                 {"restartPolicy": "Never", "container": IMAGE}, id="condition-none"),
    pytest.param("restart: always\n", {"restartPolicy": "Always", "container": IMAGE},
                 id="restart-always"),
    pytest.param("restart: no\n", {"restartPolicy": "Never", "container": IMAGE},
                 id="restart-no-read-as-false-by-yaml-1.1"),
    pytest.param("restart: unless-stopped\n", {"restartPolicy": "Always", "container": IMAGE},
                 id="restart-unless-stopped"),
    pytest.param("restart: on-failure\n", {"restartPolicy": "OnFailure", "container": IMAGE},
                 id="restart-on-failure"),
    pytest.param("healthcheck:\n  test: [CMD, curl, -f, http://localhost/]\n"
                 "  interval: 1m\n  timeout: 3s\n  retries: 5\n  start_period: 500ms\n",
                 {"container": {**IMAGE, "healthCheck": {
                     "command": ["curl", "-f", "http://localhost/"], "interval": "1m",
                     "timeout": "3s", "retries": 5, "startPeriod": "500ms"}}},
                 id="healthcheck-cmd"),
    pytest.param("healthcheck:\n  test: [CMD-SHELL, curl -f http://localhost/ || exit 1]\n",
                 {"container": {**IMAGE, "healthCheck": {
                     "command": ["/bin/sh", "-c", "curl -f http://localhost/ || exit 1"]}}},
                 id="healthcheck-cmd-shell"),
    pytest.param("healthcheck:\n  test: pg_isready\n",
                 {"container": {**IMAGE, "healthCheck": {
                     "command": ["/bin/sh", "-c", "pg_isready"]}}}, id="healthcheck-string"),
    pytest.param("healthcheck:\n  test: [NONE]\n", {"container": IMAGE},
                 id="healthcheck-none"),
    pytest.param("healthcheck:\n  disable: true\n  interval: 5s\n", {"container": IMAGE},
                 id="healthcheck-disabled"),
    pytest.param("volumes:\n  - /srv/data:/data:ro\n  - /var/log:/logs\n"
                 "  - /cache:/cache:rw\n",
                 {"container": {**IMAGE, "volumes": [
                     {"name": "volume-0", "hostPath": "/srv/data", "mountPath": "/data",
                      "readOnly": True},
                     {"name": "volume-1", "hostPath": "/var/log", "mountPath": "/logs",
                      "readOnly": False},
                     {"name": "volume-2", "hostPath": "/cache", "mountPath": "/cache",
                      "readOnly": False}]}}, id="volumes-short"),
    pytest.param("volumes:\n  - {type: bind, source: /srv, target: /srv, read_only: true}\n",
                 {"container": {**IMAGE, "volumes": [
                     {"name": "volume-0", "hostPath": "/srv", "mountPath": "/srv",
                      "readOnly": True}]}}, id="volumes-long"),
    pytest.param("x-notes: anything\nnetworks: {}\ndepends_on: []\n", {"container": IMAGE},
                 id="extensions-and-empty-fields-are-silent"),
]


@pytest.mark.parametrize(("body", "spec"), MAPPING_CASES)
def test_mapping(body: str, spec: dict[str, Any]) -> None:
    assert native_spec(service(body)) == spec
    loaded(service(body))  # and the native model takes it as is, without a warning


def test_labels_become_deployment_labels() -> None:
    deployment = loaded(service("labels: [tier=edge, flag]\ndeploy:\n  labels: {team: vision}\n"))
    assert deployment.labels == {"tier": "edge", "flag": "", "team": "vision"}


def test_mapped_fields_reach_the_model() -> None:
    deployment = loaded(service("""\
        deploy:
          replicas: 2
          placement:
            constraints: [node.labels.region == eu]
            preferences: [{spread: node.labels.site}]
            max_replicas_per_node: 1
          update_config: {parallelism: 1, delay: 5s, order: start-first}
        healthcheck:
          test: [CMD, /bin/true]
          interval: 30s
        """))
    assert deployment.placement.node_selector.match_labels == {"region": "eu"}
    assert [s.scope.value for s in deployment.placement.spread] == ["site"]
    assert deployment.placement.max_per_node == 1
    assert deployment.rollout == Rollout(parallelism=1, delay=timedelta(seconds=5), max_surge=1,
                                         max_unavailable=0)
    assert deployment.container.health_check is not None
    assert deployment.container.health_check.command == ("/bin/true",)
    assert deployment.container.health_check.interval == timedelta(seconds=30)


@pytest.mark.parametrize(("written", "native"), [
    ("10s", "10s"), ("1m30s", "90s"), ("1h", "1h"), ("90m", "90m"), ("2m0s", "2m"),
    ("500ms", "500ms"), ("1.5s", "1500ms"), ("0s", "0s"), ("3000us", "3ms"),
    ("1h0m0.5s", "3600500ms"), ("5000000ns", "5ms"),
])
def test_durations(written: str, native: str) -> None:
    assert duration(written) == native


@pytest.mark.parametrize(("written", "message"), [
    ("10 seconds", "'10 seconds' is not a duration (expected like 10s or 1m30s)"),
    ("", "'' is not a duration (expected like 10s or 1m30s)"),
    ("1d", "'1d' is not a duration (expected like 10s or 1m30s)"),
    ("1500us", "'1500us' is finer than a millisecond (expected whole milliseconds)"),
    (10, "expected a duration like 10s or 1m30s, found an integer 10"),
    ([1], "expected a duration like 10s or 1m30s, found a list"),
])
def test_durations_refused(written: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        duration(written)
    assert str(caught.value) == message


@pytest.mark.parametrize(("written", "native"), [
    ("512M", "512Mi"), ("512m", "512Mi"), ("1g", "1Gi"), ("1GB", "1Gi"), ("64k", "64Ki"),
    ("1.5G", "1536Mi"), ("100", "100"), (1024, "1Ki"), ("2MiB", "2Mi"), ("1 G", "1Gi"),
])
def test_memory_sizes_are_binary_as_in_docker(written: Any, native: str) -> None:
    assert memory(written) == native


@pytest.mark.parametrize(("written", "native"), [
    ("0.5", "500m"), (0.25, "250m"), (2, "2"), ("1.5", "1500m"), (".1", "100m"),
])
def test_cpus(written: Any, native: str) -> None:
    assert cpus(written) == native


# -- what warns ----------------------------------------------------------------------

NO_EQUIVALENT = "has no edgefed equivalent yet; ignored"

WARNING_CASES = [
    pytest.param("networks: [front]\n",
                 [f"c.yaml:4:5: warning: services.web.networks: {NO_EQUIVALENT}"], id="networks"),
    pytest.param("build: .\n", [f"c.yaml:4:5: warning: services.web.build: {NO_EQUIVALENT}"],
                 id="build-beside-an-image"),
    pytest.param("depends_on: [db]\nlogging: {driver: syslog}\nsecrets: [token]\n"
                 "configs: [conf]\n",
                 [f"c.yaml:4:5: warning: services.web.depends_on: {NO_EQUIVALENT}",
                  f"c.yaml:5:5: warning: services.web.logging: {NO_EQUIVALENT}",
                  f"c.yaml:6:5: warning: services.web.secrets: {NO_EQUIVALENT}",
                  f"c.yaml:7:5: warning: services.web.configs: {NO_EQUIVALENT}"],
                 id="service-fields"),
    pytest.param("", [f"c.yaml:4:1: warning: networks: {NO_EQUIVALENT}",
                      f"c.yaml:6:1: warning: volumes: {NO_EQUIVALENT}",
                      f"c.yaml:8:1: warning: secrets: {NO_EQUIVALENT}",
                      f"c.yaml:9:1: warning: configs: {NO_EQUIVALENT}"],
                 id="top-level-fields"),
    pytest.param("deploy:\n  placement:\n    constraints: [node.role == manager, "
                 "engine.labels.a == b]\n",
                 ["c.yaml:6:23: warning: services.web.deploy.placement.constraints[0]: "
                  "'node.role == manager' has no edgefed equivalent yet; ignored (edgefed "
                  "places by node.labels.<key>, node.hostname, node.platform.arch and "
                  "node.platform.os)",
                  "c.yaml:6:45: warning: services.web.deploy.placement.constraints[1]: "
                  "'engine.labels.a == b' has no edgefed equivalent yet; ignored (edgefed "
                  "places by node.labels.<key>, node.hostname, node.platform.arch and "
                  "node.platform.os)"], id="constraint-other"),
    pytest.param("deploy:\n  placement:\n    preferences: [{spread: node.labels.rack}]\n",
                 ["c.yaml:6:24: warning: services.web.deploy.placement.preferences[0].spread: "
                  "spreading over 'node.labels.rack' has no edgefed equivalent yet; ignored "
                  "(edgefed spreads over node.labels.site, region, provider or node)"],
                 id="preference-other"),
    pytest.param("deploy:\n  update_config: {monitor: 30s, max_failure_ratio: 0.1}\n",
                 [f"c.yaml:5:23: warning: services.web.deploy.update_config.monitor: "
                  f"{NO_EQUIVALENT}",
                  f"c.yaml:5:37: warning: services.web.deploy.update_config.max_failure_ratio: "
                  f"{NO_EQUIVALENT}"], id="update-config-monitor"),
    pytest.param("deploy:\n  restart_policy:\n    condition: on-failure\n    delay: 5s\n"
                 "    max_attempts: 3\n    window: 2m\n",
                 [f"c.yaml:7:9: warning: services.web.deploy.restart_policy.delay: "
                  f"{NO_EQUIVALENT}",
                  f"c.yaml:8:9: warning: services.web.deploy.restart_policy.max_attempts: "
                  f"{NO_EQUIVALENT}",
                  f"c.yaml:9:9: warning: services.web.deploy.restart_policy.window: "
                  f"{NO_EQUIVALENT}"], id="restart-policy-details"),
    pytest.param("deploy:\n  rollback_config: {parallelism: 1}\n  endpoint_mode: dnsrr\n",
                 [f"c.yaml:5:7: warning: services.web.deploy.rollback_config: {NO_EQUIVALENT}",
                  f"c.yaml:6:7: warning: services.web.deploy.endpoint_mode: {NO_EQUIVALENT}"],
                 id="deploy-fields"),
    pytest.param("deploy:\n  mode: global\n",
                 ["c.yaml:5:7: warning: services.web.deploy.mode: 'global' has no edgefed "
                  "equivalent yet; the service runs as replicated"], id="global-mode"),
    pytest.param("volumes: [cache:/var/cache, ./conf:/etc/app, /scratch, '/srv:/srv:z']\n",
                 ["c.yaml:4:15: warning: services.web.volumes[0]: the named volume 'cache' has "
                  "no edgefed equivalent yet; ignored (only host paths are mounted)",
                  "c.yaml:4:33: warning: services.web.volumes[1]: the relative path './conf' "
                  "means nothing on the node that runs the container; ignored (use an absolute "
                  "host path)",
                  "c.yaml:4:50: warning: services.web.volumes[2]: an anonymous volume has no "
                  "edgefed equivalent yet; ignored",
                  "c.yaml:4:60: warning: services.web.volumes[3]: the volume option 'z' has no "
                  "edgefed equivalent yet; ignored"], id="volumes"),
    pytest.param("volumes:\n  - {type: volume, source: data, target: /data}\n",
                 ["c.yaml:5:10: warning: services.web.volumes[0].type: a 'volume' volume has no "
                  "edgefed equivalent yet; ignored (only bind mounts of host paths are)"],
                 id="volume-long-syntax"),
    pytest.param("ports: ['127.0.0.1:8080:80']\n",
                 ["c.yaml:4:13: warning: services.web.ports[0]: the host address 127.0.0.1 has "
                  "no edgefed equivalent yet; the port is published on every address"],
                 id="port-host-ip"),
    pytest.param("ports:\n  - {target: 80, host_ip: 10.0.0.1, app_protocol: http}\n",
                 [f"c.yaml:5:22: warning: services.web.ports[0].host_ip: {NO_EQUIVALENT}",
                  f"c.yaml:5:41: warning: services.web.ports[0].app_protocol: {NO_EQUIVALENT}"],
                 id="port-long-syntax"),
    pytest.param("environment: [FROM_SHELL, A=1]\n",
                 ["c.yaml:4:19: warning: services.web.environment[0]: FROM_SHELL takes its value "
                  "from where Compose runs, which edgefed cannot see; the variable is not set"],
                 id="environment-without-value"),
    pytest.param("environment: [A=1, A=2]\n",
                 ["c.yaml:4:24: warning: services.web.environment[1]: A is set more than once; "
                  "the last value is used"], id="environment-twice"),
    pytest.param("command: [run, --tag, '${TAG}', $$HOME, $USER]\n",
                 ["c.yaml:4:27: warning: services.web.command[2]: ${TAG}: edgefed does not "
                  "substitute Compose variables; the value is used as written (`docker compose "
                  "config` prints the file with variables substituted)",
                  "c.yaml:4:45: warning: services.web.command[4]: $USER: edgefed does not "
                  "substitute Compose variables; the value is used as written (`docker compose "
                  "config` prints the file with variables substituted)"], id="variables"),
    pytest.param("deploy:\n  resources:\n    limits: {cpus: '1', memory: 1G}\n"
                 "    reservations: {cpus: '0.5', memory: 1G}\n",
                 ["c.yaml:6:18: warning: services.web.deploy.resources.limits.cpus: differs from "
                  "reservations.cpus (0.5); edgefed uses one value as both reservation and "
                  "limit: the reservation"], id="limits-differ"),
    pytest.param("deploy:\n  resources:\n    limits: {pids: 100}\n",
                 [f"c.yaml:6:18: warning: services.web.deploy.resources.limits.pids: "
                  f"{NO_EQUIVALENT}"], id="pids"),
    pytest.param("deploy:\n  resources:\n    reservations:\n      devices:\n"
                 "        - {capabilities: [gpu], count: all}\n"
                 "        - {capabilities: [gpu], device_ids: ['0', '3']}\n"
                 "        - {capabilities: [tpu], count: 1}\n",
                 ["c.yaml:8:37: warning: services.web.deploy.resources.reservations.devices[0]."
                  "count: all GPUs of a node has no edgefed equivalent yet; 1 is requested",
                  "c.yaml:9:37: warning: services.web.deploy.resources.reservations.devices[1]."
                  "device_ids: naming devices has no edgefed equivalent yet; 2 of any GPUs are "
                  "requested",
                  "c.yaml:10:16: warning: services.web.deploy.resources.reservations.devices[2]."
                  "capabilities: only gpu devices have an edgefed equivalent yet; ignored"],
                 id="devices"),
    pytest.param("healthcheck:\n  test: [CMD, 'true']\n  start_interval: 1s\n",
                 [f"c.yaml:6:7: warning: services.web.healthcheck.start_interval: "
                  f"{NO_EQUIVALENT}"], id="healthcheck-start-interval"),
    pytest.param("healthcheck:\n  interval: 5s\n",
                 ["c.yaml:4:5: warning: services.web.healthcheck: has no test: Compose takes it "
                  "from the image's HEALTHCHECK, which edgefed does not read; ignored"],
                 id="healthcheck-without-test"),
    pytest.param("scale: 2\ndeploy: {replicas: 3}\n",
                 ["c.yaml:4:5: warning: services.web.scale: differs from deploy.replicas; "
                  "deploy.replicas is used"], id="scale-and-replicas"),
    pytest.param("restart: always\ndeploy: {restart_policy: {condition: none}}\n",
                 ["c.yaml:4:5: warning: services.web.restart: deploy.restart_policy.condition is "
                  "used instead"], id="restart-and-restart-policy"),
    pytest.param("restart: on-failure:3\n",
                 ["c.yaml:4:5: warning: services.web.restart: the retry limit 3 has no edgefed "
                  "equivalent yet; ignored"], id="restart-retries"),
    pytest.param("labels: {tier: edge}\ndeploy: {labels: {tier: cloud}}\n",
                 ["c.yaml:5:23: warning: services.web.deploy.labels.tier: differs from the "
                  "service label tier=edge; the deploy label is used"], id="labels-differ"),
    pytest.param("entrypoint: []\ncommand: ''\n",
                 ["c.yaml:4:5: warning: services.web.entrypoint: is empty, which makes Compose "
                  "ignore the image's ENTRYPOINT; edgefed keeps the image's ENTRYPOINT",
                  "c.yaml:5:5: warning: services.web.command: is empty, which makes Compose "
                  "ignore the image's CMD; edgefed keeps the image's CMD"], id="empty-command"),
]

TOP_LEVEL = "networks:\n  front: {}\nvolumes:\n  data:\nsecrets: {token: {file: ./t}}\n" \
    "configs:\n  conf: {file: ./c}\nx-anchors: {a: 1}\n"


@pytest.mark.parametrize(("body", "expected"), WARNING_CASES)
def test_fields_without_equivalent_warn(body: str, expected: list[str]) -> None:
    text = service(body, after=TOP_LEVEL if not body else "")
    assert reported(text) == expected
    assert [d.name for d in load_text(text).deployments] == ["web"]


def test_top_level_name_and_extensions() -> None:
    text = "name: shop\nx-defaults: &defaults {image: web:1}\nservices:\n  web:\n" \
           "    <<: *defaults\n    x-owner: team-a\n"
    assert reported(text) == [f"c.yaml:1:1: warning: name: {NO_EQUIVALENT}"]


# -- what is refused -----------------------------------------------------------------

ERROR_CASES = [
    pytest.param("services:\n  web:\n    build: .\n    ports: ['80:80']\n",
                 ["c.yaml:2:3: error: services.web.image: a service must name an image; "
                  "edgefed does not build images"], id="build-only"),
    pytest.param("services:\n  web:\n    ports: ['80:80']\n",
                 ["c.yaml:2:3: error: services.web.image: is required (a service must name an "
                  "image)"], id="no-image"),
    pytest.param("version: '2'\nservices:\n  web:\n    image: web:1\n",
                 ["c.yaml:1:1: error: version: Compose file version 2 is not supported; use "
                  "version 3"], id="version-2"),
    pytest.param("version: '2.4'\nservices:\n  web:\n    mem_limit: 1g\n",
                 ["c.yaml:1:1: error: version: Compose file version 2 is not supported; use "
                  "version 3"], id="version-2.4"),
    pytest.param("version: '4'\nservices:\n  web:\n    image: web:1\n",
                 ["c.yaml:1:1: error: version: unknown Compose file version '4' (expected 3, "
                  "3.x or no version)"], id="version-unknown"),
    pytest.param(service("ports:\n  - \"80:80:80:80\"\n"),
                 ["c.yaml:5:9: error: services.web.ports[0]: '80:80:80:80' is not a port "
                  '(expected [HOST_IP:][HOST:]CONTAINER[/PROTOCOL], like "8080:80/udp")'],
                 id="bad-port"),
    pytest.param(service("ports: ['http', '80:', 80.5]\n"),
                 ["c.yaml:4:13: error: services.web.ports[0]: 'http' is not a port (expected "
                  '[HOST_IP:][HOST:]CONTAINER[/PROTOCOL], like "8080:80/udp")',
                  "c.yaml:4:21: error: services.web.ports[1]: '80:' is not a port (expected "
                  '[HOST_IP:][HOST:]CONTAINER[/PROTOCOL], like "8080:80/udp")',
                  "c.yaml:4:28: error: services.web.ports[2]: 80.5 is not a port (expected "
                  '[HOST_IP:][HOST:]CONTAINER[/PROTOCOL], like "8080:80/udp")'],
                 id="bad-ports"),
    pytest.param(service("ports: ['8000-8001:80', '90-80', '1-1000']\n"),
                 ["c.yaml:4:13: error: services.web.ports[0]: the host ports (8000-8001) and "
                  "container ports (80) must be ranges of the same length",
                  "c.yaml:4:29: error: services.web.ports[1]: a port range must not end below "
                  "its start",
                  "c.yaml:4:38: error: services.web.ports[2]: a range of 1000 ports is more "
                  "than edgefed expands (256 at most)"], id="port-ranges"),
    pytest.param(service("ports: ['70000:80', {target: 80, protocol: sctp}, {published: 80}]\n"),
                 ["c.yaml:4:13: error: services.web.ports[0]: 70000 is out of range (expected 1 "
                  "to 65535)",
                  "c.yaml:4:38: error: services.web.ports[1].protocol: found 'sctp', expected "
                  "tcp or udp",
                  "c.yaml:4:55: error: services.web.ports[2].target: is required (expected the "
                  "container port)"], id="ports-judged-by-the-model"),
    pytest.param("services:\n  My_App:\n    image: web:1\n",
                 ["c.yaml:2:3: error: services.My_App: 'My_App' is not a valid deployment name "
                  "(expected lowercase letters, digits and '-', at most 63 characters); each "
                  "service becomes a deployment of the same name"], id="bad-service-name"),
    pytest.param("services:\n  web:\n    imge: web:1\n",
                 ["c.yaml:2:3: error: services.web.image: is required (a service must name an "
                  "image)",
                  "c.yaml:3:5: error: services.web.imge: unknown field in a Compose file (did "
                  "you mean 'image'?)"], id="unknown-field"),
    pytest.param("services:\n  web:\n    image: web:1\nservice: {}\n",
                 ["c.yaml:4:1: error: service: unknown field in a Compose file (did you mean "
                  "'services'?)"], id="unknown-top-level-field"),
    pytest.param("services: {}\n",
                 ["c.yaml:1:1: error: services: is empty (expected at least one service)"],
                 id="no-services"),
    pytest.param("services: [web]\n",
                 ["c.yaml:1:1: error: services: expected a mapping of service names to "
                  "services, found a list"], id="services-not-a-mapping"),
    pytest.param("services:\n  web:\n",
                 ["c.yaml:2:3: error: services.web: expected a mapping (a service), found "
                  "nothing"], id="service-empty"),
    pytest.param(service("deploy: [replicas]\n"),
                 ["c.yaml:4:5: error: services.web.deploy: expected a mapping, found a list"],
                 id="deploy-not-a-mapping"),
    pytest.param(service("deploy:\n  replicas: -1\n"),
                 ["c.yaml:5:7: error: services.web.deploy.replicas: -1 is out of range "
                  "(expected 0 to 1000)"], id="replicas-judged-by-the-model"),
    pytest.param(service("command: echo 'hi\n"),
                 ["c.yaml:4:5: error: services.web.command: cannot split into words: no "
                  "closing quotation"], id="unbalanced-quote"),
    pytest.param(service("command: {run: now}\n"),
                 ["c.yaml:4:5: error: services.web.command: expected a string or a list of "
                  "strings, found a mapping"], id="command-type"),
    pytest.param(service("environment: [=1, 7]\n"),
                 ["c.yaml:4:19: error: services.web.environment[0]: '=1' names no key "
                  "(expected KEY=value)",
                  "c.yaml:4:23: error: services.web.environment[1]: expected KEY=value, found "
                  "an integer"], id="environment-items"),
    pytest.param(service("deploy:\n  update_config:\n    delay: 10 seconds\n    order: random\n"),
                 ["c.yaml:6:9: error: services.web.deploy.update_config.delay: '10 seconds' is "
                  "not a duration (expected like 10s or 1m30s)",
                  "c.yaml:7:9: error: services.web.deploy.update_config.order: found 'random', "
                  "expected start-first or stop-first"], id="update-config"),
    pytest.param(service("deploy:\n  update_config: {failure_action: retry}\n"),
                 ["c.yaml:5:23: error: services.web.deploy.update_config.failure_action: found "
                  "'retry', expected one of pause, continue, rollback"],
                 id="failure-action-judged-by-the-model"),
    pytest.param(service("deploy:\n  restart_policy: {condition: always}\n"),
                 ["c.yaml:5:24: error: services.web.deploy.restart_policy.condition: found "
                  "'always', expected one of any, on-failure, none"], id="condition"),
    pytest.param(service("restart: sometimes\n"),
                 ["c.yaml:4:5: error: services.web.restart: found 'sometimes', expected one of "
                  "no, always, on-failure, unless-stopped"], id="restart"),
    pytest.param(service("deploy:\n  placement:\n    constraints:\n      - node.labels.a == 1\n"
                         "      - node.labels.a == 2\n      - region=eu\n"),
                 ["c.yaml:8:13: error: services.web.deploy.placement.constraints[1]: contradicts "
                  "constraints[0] (a == 1): no node can satisfy both",
                  "c.yaml:9:13: error: services.web.deploy.placement.constraints[2]: 'region=eu' "
                  "is not a placement constraint (expected like node.labels.region == eu)"],
                 id="constraints"),
    pytest.param(service("deploy:\n  placement:\n    preferences: [{spread: 1}, {pack: x}]\n"),
                 ["c.yaml:6:24: error: services.web.deploy.placement.preferences[0].spread: is "
                  "required (expected like node.labels.site)",
                  "c.yaml:6:36: error: services.web.deploy.placement.preferences[1].spread: is "
                  "required (expected like node.labels.site)",
                  "c.yaml:6:37: error: services.web.deploy.placement.preferences[1].pack: "
                  "unknown field in a Compose file"], id="preferences"),
    pytest.param(service("deploy:\n  resources:\n    limits: {memory: lots, cpus: two}\n"),
                 ["c.yaml:6:18: error: services.web.deploy.resources.limits.memory: 'lots' is "
                  "not a memory size (expected like 512M or 1G; Compose sizes are binary, 1M is "
                  "1Mi)",
                  "c.yaml:6:32: error: services.web.deploy.resources.limits.cpus: 'two' is not a "
                  "number of cpus (expected like 0.5 or 2)"], id="resources"),
    pytest.param(service("deploy:\n  resources:\n    reservations:\n      devices:\n"
                         "        - {capabilities: [gpu], count: 0}\n"),
                 ["c.yaml:8:37: error: services.web.deploy.resources.reservations.devices[0]."
                  "count: expected a number of GPUs or 'all', found 0"], id="devices"),
    pytest.param(service("healthcheck:\n  test: [CMD]\n"),
                 ["c.yaml:5:7: error: services.web.healthcheck.test: CMD needs a command after "
                  "it"], id="healthcheck-empty-command"),
    pytest.param(service("healthcheck:\n  test: [RUN, x]\n"),
                 ["c.yaml:5:7: error: services.web.healthcheck.test: expected a command string "
                  "or a list starting with CMD, CMD-SHELL or NONE, found 'RUN'"],
                 id="healthcheck-test"),
    pytest.param(service("healthcheck:\n  test: [CMD, 'true']\n  retries: 0\n  timeout: 2\n"),
                 ["c.yaml:6:7: error: services.web.healthcheck.retries: 0 is out of range "
                  "(expected 1 to 100)",
                  "c.yaml:7:7: error: services.web.healthcheck.timeout: expected a duration "
                  "like 10s or 1m30s, found an integer 2"], id="healthcheck-values"),
    pytest.param(service("volumes: ['/a:/b:ro:x', {type: bind, source: /a}]\n"),
                 ["c.yaml:4:15: error: services.web.volumes[0]: '/a:/b:ro:x' is not a volume "
                  "(expected HOST_PATH:CONTAINER_PATH[:ro], like /srv/data:/data:ro)",
                  "c.yaml:4:29: error: services.web.volumes[1]: a bind mount needs a source and "
                  "a target path"], id="volumes"),
    pytest.param(service("volumes: ['/srv:data']\n"),
                 ["c.yaml:4:15: error: services.web.volumes[0]: 'data' is not an absolute path "
                  "(expected a path starting with /)"], id="mount-path-judged-by-the-model"),
]


@pytest.mark.parametrize(("text", "expected"), ERROR_CASES)
def test_refused(text: str, expected: list[str]) -> None:
    with pytest.raises(PolicyError) as caught:
        load_text(text, filename="c.yaml")
    assert [str(p) for p in caught.value.problems] == expected


def test_a_name_defined_twice_points_at_the_service() -> None:
    native = "apiVersion: edgefed.io/v1\nkind: Deployment\nmetadata: {name: web}\n" \
             "spec: {container: {image: b}}\n"
    assert reported(native + "---\n" + service()) == [
        "c.yaml:7:3: error: services.web: deployment 'web' is already defined at c.yaml:3"]


def test_translate_reports_in_compose_coordinates_and_keeps_going() -> None:
    problems = Problems()
    doc = yaml.safe_load("services:\n  a: {build: .}\n  b: {image: b, networks: [x]}\n")
    assert [d["metadata"]["name"] for d in translate_services(doc, problems)] == ["a", "b"]
    assert [(p.path, p.warning) for p in problems.items] == [
        (("services", "a", "image"), False), (("services", "b", "networks"), True)]


# -- fuzzing: anything under services, only PolicyError out -------------------------

FAST = settings(max_examples=300, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow])

SCALARS = (st.none() | st.booleans() | st.integers(-5, 70000) | st.floats() | st.text(max_size=12)
           | st.sampled_from(["", "80:80", "8080:80/udp", "1-3:4-6", "[::1]:80:80", "10s", "1m30s",
                              "0.5", "512M", "all", "gpu", "CMD", "CMD-SHELL", "NONE", "any",
                              "on-failure", "start-first", "node.labels.site == a",
                              "node.labels.a != b", "node.platform.arch == x86_64", "/a:/b:ro",
                              "cache:/c", "A=1", "${X}", "$$", "bind", "9" * 30]))
KEYS = st.text(max_size=8) | st.sampled_from([
    "image", "build", "command", "entrypoint", "environment", "ports", "volumes", "healthcheck",
    "labels", "restart", "scale", "deploy", "networks", "x-a", "replicas", "mode", "placement",
    "constraints", "preferences", "spread", "max_replicas_per_node", "resources", "limits",
    "reservations", "cpus", "memory", "devices", "capabilities", "count", "device_ids", "driver",
    "update_config", "parallelism", "delay", "failure_action", "order", "restart_policy",
    "condition", "test", "interval", "timeout", "retries", "start_period", "disable", "target",
    "published", "protocol", "host_ip", "type", "source", "read_only"])
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=5), max_leaves=30)
SERVICE_NAMES = st.text(max_size=10) | st.sampled_from(["web", "db", "My_App", "x-a"])


def assert_only_policy_errors(text: str) -> None:
    try:
        result = load_text(text)
    except PolicyError as exc:
        assert exc.problems
        assert any(not p.warning for p in exc.problems)
        assert all(p.line is not None for p in exc.problems)
    else:
        assert all(isinstance(d, Deployment) for d in result.deployments)


@FAST
@given(st.dictionaries(SERVICE_NAMES, VALUES, max_size=3))
def test_fuzz_arbitrary_mappings_under_services(services: dict[str, Any]) -> None:
    assert_only_policy_errors(yaml.safe_dump({"services": services}))


@FAST
@given(st.dictionaries(KEYS, VALUES, max_size=6), st.sampled_from([None, "3", "3.8", 2, "x"]))
def test_fuzz_arbitrary_services(body: dict[str, Any], version: Any) -> None:
    top: dict[str, Any] = {"services": {"web": {"image": "web:1", **body}}}
    if version is not None:
        top["version"] = version
    assert_only_policy_errors(yaml.safe_dump(top))


DEPLOY_SHAPED = st.fixed_dictionaries({}, optional={
    "replicas": VALUES, "mode": VALUES, "labels": VALUES,
    "placement": st.fixed_dictionaries({}, optional={
        "constraints": VALUES, "preferences": VALUES, "max_replicas_per_node": VALUES}),
    "resources": st.fixed_dictionaries({}, optional={
        "limits": VALUES, "reservations": st.fixed_dictionaries({}, optional={
            "cpus": VALUES, "memory": VALUES, "devices": st.lists(VALUES, max_size=3)})}),
    "update_config": st.dictionaries(KEYS, VALUES, max_size=5),
    "restart_policy": st.dictionaries(KEYS, VALUES, max_size=3),
})


@FAST
@given(DEPLOY_SHAPED, st.lists(VALUES, max_size=4), st.lists(VALUES, max_size=4))
def test_fuzz_deploy_ports_and_volumes(deploy: dict[str, Any], ports: list[Any],
                                       volumes: list[Any]) -> None:
    body = {"image": "web:1", "deploy": deploy, "ports": ports, "volumes": volumes}
    assert_only_policy_errors(yaml.safe_dump({"services": {"web": body}}))


def test_unquoted_port_mappings_are_not_read_as_base_60_numbers() -> None:
    from policies.loader import load_text

    result = load_text("services:\n  web:\n    image: x\n    ports:\n      - 22:22\n      - 8080:80\n")
    ports = result.deployments[0].container.ports
    assert [(p.container_port, p.host_port) for p in ports] == [(22, 22), (80, 8080)]
