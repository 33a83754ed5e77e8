"""Bad input gets a clear error and loses nothing: malformed policies at the
command line, and garbage on every MQTT topic the controller and agents read."""

from __future__ import annotations

import json
import urllib.request

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from federation import wire
from tests.integration.test_core_loop import running_pods, start
from tests.support import edgefed, get_json, wait_until

WORKER = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: worker
spec:
  replicas: 2
  container:
    image: none
    command: ["sleep", "600"]
    resources:
      memory: {memory}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x\n",
         "bad.yaml:4:1: error: expected ',' or '}'"),
        ("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n", "unknown kind 'Service'"),
        ("apiVersion: edgefed.io/v1\nkind: Deployment\nmetadata:\n  name: w\nspec:\n"
         "  replicas: -2\n  container:\n    image: x\n",
         "bad.yaml:6:3: error: spec.replicas: -2 is out of range (expected 0 to 1000)"),
    ],
)
def test_malformed_policies_are_refused_with_file_line_and_field(make_federation, tmp_path,
                                                                 text, expected):
    fed = make_federation("process")
    fed.start_controller()
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    out = edgefed("apply", "-f", str(path), server=fed.server, check=False)
    assert out.returncode == 2
    assert expected in out.stderr
    assert get_json("deployments", fed.server) == []


def test_replica_that_fits_nowhere_is_refused_and_nothing_changes(make_federation, tmp_path):
    fed = make_federation("process")
    start(fed)
    path = tmp_path / "worker.yaml"
    path.write_text(WORKER.format(memory="100Ti"))
    out = edgefed("apply", "-f", str(path), server=fed.server, check=False)
    assert out.returncode == 1
    assert "0/3 nodes fit: 3 insufficient memory (need 100Ti, most free" in out.stderr
    assert get_json("deployments", fed.server) == []
    assert get_json("pods", fed.server) == []


def _hostile_payloads(node: str) -> list[tuple[str, bytes]]:
    topics = wire.Topics("ROOT")
    good = json.loads(wire.encode(wire.SCHEMA_PRESENCE, wire.Presence(
        state=wire.PresenceState.ONLINE, site="x"), sender=node, epoch="e", seq=1, sent_at=1.0))
    truncated = json.dumps(good).encode()[:40]
    future = {**good, "schema": "edgefed.presence/9"}
    wrong_sender = {**good, "sender": "someone-else"}
    cases = []
    for kind in wire.NodeTopic:
        topic = topics.node(node, kind)
        cases += [
            (topic, b"\x00\xff garbage"),
            (topic, truncated),
            (topic, json.dumps(future).encode()),
            (topic, json.dumps(wrong_sender).encode()),
            (topic, b"[" * 100_000),
            (topic, b'{"schema": "' + b"x" * (wire.MAX_PAYLOAD + 10) + b'"}'),
        ]
    cases.append((topics.controller_presence, b"not json"))
    return cases


def test_hostile_mqtt_payloads_are_refused_counted_and_logged(make_federation, broker,
                                                              tmp_path):
    fed = make_federation("process")
    nodes = start(fed, sites=("a",))
    node = nodes[0]
    path = tmp_path / "worker.yaml"
    path.write_text(WORKER.format(memory="8Mi"))
    edgefed("apply", "-f", str(path), server=fed.server)
    before = {(p["slot"], p["node"], p["generation"]) for p in running_pods(fed, 2)}

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"hostile-{fed.tag}")
    client.connect("127.0.0.1", broker[1])
    client.loop_start()
    try:
        cases = [(t.replace("ROOT", fed.topic_root, 1), p) for t, p in _hostile_payloads(node)]
        for topic, payload in cases:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()

    def refused() -> dict[str, int]:
        with urllib.request.urlopen(f"{fed.server}/api/v1/healthz", timeout=5) as reply:
            counts: dict[str, int] = json.load(reply)["rejected_messages"]
            return counts

    # The controller reads presence, capacity and events: 3 kinds x 6 payloads.
    counts = wait_until(lambda: sum(refused().values()) >= 18 and refused(), timeout=20,
                        what="18 refusals counted")
    assert {"not-json", "unknown-schema", "wrong-sender", "oversized"} <= counts.keys()
    controller_log = fed.workdir.joinpath("controller.log").read_text()
    assert f"refused message on {fed.topic_root}/v1/nodes/{node}/capacity from" in controller_log
    assert "exceeds the 262144 byte limit" in controller_log
    agent_log = wait_until(lambda: (text := fed.workdir.joinpath(f"agent-{node}.log").read_text())
                           .count(f"refused message on {fed.topic_root}/v1/nodes/{node}/cmd") >= 6
                           and text, timeout=20, what="the agent to refuse 6 commands")
    assert "is a version this build does not speak" in agent_log

    assert fed.controller is not None and fed.controller.alive()
    assert fed.agents[node].alive()
    after = {(p["slot"], p["node"], p["generation"]) for p in running_pods(fed, 2)}
    assert after == before
    assert [n["state"] for n in get_json("nodes", fed.server)] == ["Ready"]
