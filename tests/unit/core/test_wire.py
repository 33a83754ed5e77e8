"""Wire protocol v1: golden payloads decode to the typed fields, re-encode to the
same JSON, and every malformed payload is refused with the reason an operator reads."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation import wire
from federation.wire import (
    Capacity,
    Command,
    CommandOp,
    Event,
    EventType,
    InstanceReport,
    PortBody,
    Presence,
    PresenceState,
    Refused,
    Resources,
    Topics,
    WorkloadBody,
)

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
NODE = "pi-berlin-1"
MiB = 1024**2
GiB = 1024**3
SENT_AT = 1764166400.25
TOPICS = Topics()

RUNNING = InstanceReport(deployment="web", slot=0, generation=3, revision=2, state="running",
                         cpu_millis=250, memory_bytes=128 * MiB, restarts=1)
EXITED = InstanceReport(deployment="batch", slot=1, generation=1, revision=1, state="exited",
                        exit_code=0, reason="completed")


def golden(name: str) -> bytes:
    return (GOLDEN / f"{name}.json").read_bytes()


def golden_doc(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(golden(name))
    return doc


def payload(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def node_topic(kind: wire.NodeTopic, node: str = NODE) -> str:
    return TOPICS.node(node, kind)


# -- golden payloads -------------------------------------------------------------

# file -> (topic, node id the topic names, schema, sender, epoch, seq, body)
GOLDEN_CASES: dict[str, tuple[str, str | None, str, str, str, int, wire.Body]] = {
    "presence_online": (
        node_topic(wire.NodeTopic.PRESENCE), NODE, wire.SCHEMA_PRESENCE, NODE, "boot-7f3a", 1,
        Presence(state=PresenceState.ONLINE, site="factory-berlin", agent_version="0.1.0",
                 probe="192.168.1.20:41234")),
    "presence_offline": (
        node_topic(wire.NodeTopic.PRESENCE), NODE, wire.SCHEMA_PRESENCE, NODE, "boot-7f3a", 2,
        Presence(state=PresenceState.OFFLINE, site="factory-berlin", agent_version="0.1.0")),
    "capacity": (
        node_topic(wire.NodeTopic.CAPACITY), NODE, wire.SCHEMA_CAPACITY, NODE, "boot-7f3a", 3,
        Capacity(site="factory-berlin", arch="arm64", os="linux", runtime="docker",
                 labels={"region": "eu", "tier": "edge"},
                 allocatable=Resources(cpu_millis=4000, memory_bytes=4 * GiB,
                                       disk_bytes=32 * GiB),
                 used=Resources(cpu_millis=250, memory_bytes=128 * MiB, disk_bytes=0),
                 images=("busybox:1.36",), instances=(RUNNING, EXITED),
                 rtt_ms={"pi-berlin-2": 1.5, "aws-eu-west-1": 23.25}, interval=5.0,
                 devices={"hailo.ai/npu": 1})),
    "command_run": (
        node_topic(wire.NodeTopic.CMD), NODE, wire.SCHEMA_COMMAND, "controller", "term-0001", 10,
        Command(op=CommandOp.RUN, command_id="c0ffee01", deployment="web", slot=0,
                generation=3, revision=2,
                workload=WorkloadBody(image="busybox:1.36", command=("httpd", "-f"),
                                      args=("-p", "8080"), env={"MODE": "edge"},
                                      ports=(PortBody(container_port=8080, host_port=18080,
                                                      protocol="tcp"),),
                                      cpu_millis=250, memory_bytes=128 * MiB,
                                      restart_policy="Always"))),
    "command_stop": (
        node_topic(wire.NodeTopic.CMD), NODE, wire.SCHEMA_COMMAND, "controller", "term-0001", 11,
        Command(op=CommandOp.STOP, command_id="c0ffee02", deployment="web", slot=0,
                generation=2)),
    "command_logs": (
        node_topic(wire.NodeTopic.CMD), NODE, wire.SCHEMA_COMMAND, "controller", "term-0001", 12,
        Command(op=CommandOp.LOGS, command_id="c0ffee03", deployment="web", slot=0,
                generation=3, tail=50)),
    "event_instance": (
        node_topic(wire.NodeTopic.EVENTS), NODE, wire.SCHEMA_EVENT, NODE, "boot-7f3a", 4,
        Event(type=EventType.INSTANCE, instance=RUNNING)),
    "event_ack": (
        node_topic(wire.NodeTopic.EVENTS), NODE, wire.SCHEMA_EVENT, NODE, "boot-7f3a", 5,
        Event(type=EventType.ACK, command_id="c0ffee01", duplicate=True)),
    "event_reject": (
        node_topic(wire.NodeTopic.EVENTS), NODE, wire.SCHEMA_EVENT, NODE, "boot-7f3a", 6,
        Event(type=EventType.REJECT, command_id="c0ffee04",
              reason="generation 2 of web/0 is older than generation 3 already seen")),
    "event_logs": (
        node_topic(wire.NodeTopic.EVENTS), NODE, wire.SCHEMA_EVENT, NODE, "boot-7f3a", 7,
        Event(type=EventType.LOGS, command_id="c0ffee03", logs="listening on :8080\n")),
    "controller_presence": (
        TOPICS.controller_presence, None, wire.SCHEMA_CONTROLLER_PRESENCE, "controller",
        "term-0001", 1, Presence(state=PresenceState.ONLINE)),
}


def test_every_golden_file_has_a_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.json")) == sorted(GOLDEN_CASES)


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_decodes_to_typed_fields(name: str) -> None:
    topic, node, schema, sender, epoch, seq, body = GOLDEN_CASES[name]
    got_node, message = wire.decode_from_topic(TOPICS, topic, golden(name))
    assert got_node == node
    assert message == wire.Message(schema=schema, sender=sender, epoch=epoch, seq=seq,
                                   sent_at=SENT_AT, body=body)
    assert wire.decode(golden(name)) == message


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_reencodes_to_the_same_json(name: str) -> None:
    m = wire.decode(golden(name))
    again = wire.encode(m.schema, m.body, sender=m.sender, epoch=m.epoch, seq=m.seq,
                        sent_at=m.sent_at)
    assert json.loads(again) == json.loads(golden(name))


def test_capacity_golden_field_by_field() -> None:
    cap = wire.decode(golden("capacity")).body
    assert isinstance(cap, Capacity)
    assert (cap.site, cap.arch, cap.os, cap.runtime) == ("factory-berlin", "arm64", "linux", "docker")
    assert cap.allocatable.memory_bytes == 4294967296
    assert cap.used.cpu_millis == 250
    assert [i.state for i in cap.instances] == ["running", "exited"]
    assert cap.instances[0].exit_code is None
    assert cap.instances[1].exit_code == 0
    assert cap.rtt_ms == {"pi-berlin-2": 1.5, "aws-eu-west-1": 23.25}
    assert isinstance(cap.images, tuple)
    assert cap.devices == {"hailo.ai/npu": 1}


def test_capacity_without_devices_reads_as_none() -> None:
    # Agents that do not probe devices (every agent so far) leave the field out.
    for value in (DELETE, None, {}):
        cap = wire.decode(patched("capacity", ("body", "devices"), value)).body
        assert isinstance(cap, Capacity)
        assert cap.devices == {}


def test_unknown_optional_fields_are_ignored() -> None:
    doc = golden_doc("command_run")
    doc["signature_algo"] = "ed25519"
    doc["body"]["priority"] = "high"
    doc["body"]["workload"]["volumes"] = [{"name": "data"}]
    doc["body"]["workload"]["ports"][0]["name"] = "http"
    assert wire.decode(payload(doc)) == wire.decode(golden("command_run"))

    cap = golden_doc("capacity")
    cap["body"]["gpus"] = [{"model": "hailo-8"}]
    cap["body"]["instances"][0]["image_digest"] = "sha256:abc"
    cap["body"]["allocatable"]["pids"] = 4096
    assert wire.decode(payload(cap)) == wire.decode(golden("capacity"))


@pytest.mark.parametrize(("doc_patch", "body"), [
    pytest.param({"agent_version": None, "probe": None},
                 Presence(state=PresenceState.ONLINE, site="factory-berlin"), id="null-optional"),
    pytest.param({"site": None, "agent_version": None, "probe": None},
                 Presence(state=PresenceState.ONLINE), id="only-state"),
    pytest.param({"probe": "[fd00::7]:7946"},
                 Presence(state=PresenceState.ONLINE, site="factory-berlin", agent_version="0.1.0",
                          probe="[fd00::7]:7946"), id="probe-ipv6"),
])
def test_optional_fields_default(doc_patch: dict[str, Any], body: Presence) -> None:
    doc = golden_doc("presence_online")
    doc["body"].update(doc_patch)
    assert wire.decode(payload(doc)).body == body


def test_presence_without_probe_reads_as_empty() -> None:
    # Agents before RTT probes (and agents with the listener off) leave it out.
    body = wire.decode(patched("presence_online", ("body", "probe"), DELETE)).body
    assert isinstance(body, Presence)
    assert body.probe == ""


def test_command_on_a_node_topic_may_come_from_the_controller() -> None:
    node, message = wire.decode_from_topic(TOPICS, node_topic(wire.NodeTopic.CMD),
                                           golden("command_stop"))
    assert (node, message.sender) == (NODE, "controller")


def test_own_topic_root() -> None:
    topics = Topics(root="t-1234")
    node, message = wire.decode_from_topic(
        topics, "t-1234/v1/nodes/pi-berlin-1/presence", golden("presence_online"))
    assert node == NODE
    assert message.body == GOLDEN_CASES["presence_online"][6]


def test_payload_of_exactly_the_limit_is_accepted() -> None:
    data = golden("presence_online")
    padded = data[:-1] + b" " * (wire.MAX_PAYLOAD - len(data)) + b"}"
    assert len(padded) == wire.MAX_PAYLOAD
    assert wire.decode(padded) == wire.decode(data)


# -- refusals --------------------------------------------------------------------


def patched(name: str, path: tuple[str | int, ...], value: Any) -> bytes:
    """The golden payload ``name`` with the field at ``path`` set to ``value``
    (``DELETE`` removes it)."""
    doc = golden_doc(name)
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return payload(doc)


DELETE = object()
DEEP = 5000
BIG_LOGS = patched("event_logs", ("body", "logs"), "x" * wire.MAX_PAYLOAD)

REFUSALS = [
    pytest.param(b"not json", "payload is not JSON: Expecting value: line 1 column 1 (char 0)",
                 id="not-json"),
    pytest.param(b"", "payload is not JSON: Expecting value: line 1 column 1 (char 0)",
                 id="empty"),
    pytest.param(b'{"schema": "edgefed.presence/1"', "payload is not JSON: Expecting ',' delimiter: "
                 "line 1 column 32 (char 31)", id="truncated"),
    pytest.param(b'{"schema": "\xff"}', "payload is not JSON: 'utf-8' codec can't decode byte 0xff "
                 "in position 12: invalid start byte", id="not-utf8"),
    pytest.param(b"[1, 2]", "envelope must be an object, found list", id="array"),
    pytest.param(b'"presence"', "envelope must be an object, found str", id="string"),
    pytest.param(b"null", "envelope must be an object, found NoneType", id="null"),
    pytest.param(patched("presence_online", ("schema",), DELETE), "envelope.schema is missing",
                 id="missing-schema"),
    pytest.param(patched("presence_online", ("schema",), None), "envelope.schema is missing",
                 id="null-schema"),
    pytest.param(patched("presence_online", ("schema",), 1), "envelope.schema must be a string",
                 id="schema-not-string"),
    pytest.param(patched("presence_online", ("schema",), "edgefed.weather/1"),
                 "unknown schema 'edgefed.weather/1'", id="unknown-schema"),
    pytest.param(patched("presence_online", ("schema",), "edgefed.presence/2"),
                 "schema 'edgefed.presence/2' is a version this build does not speak",
                 id="future-version"),
    pytest.param(patched("capacity", ("schema",), "edgefed.capacity/0"),
                 "schema 'edgefed.capacity/0' is a version this build does not speak",
                 id="past-version"),
    pytest.param(patched("presence_online", ("body",), DELETE), "envelope.body is missing",
                 id="missing-body"),
    pytest.param(patched("presence_online", ("body",), "online"),
                 "envelope.body must be an object, found str", id="body-not-object"),
    pytest.param(patched("presence_online", ("sender",), DELETE), "envelope.sender is missing",
                 id="missing-sender"),
    pytest.param(patched("presence_online", ("sender",), "x" * 129),
                 "envelope.sender is longer than 128 characters", id="sender-too-long"),
    pytest.param(patched("presence_online", ("seq",), "1"), "envelope.seq must be an integer",
                 id="seq-string"),
    pytest.param(patched("presence_online", ("seq",), 1.0), "envelope.seq must be an integer",
                 id="seq-float"),
    pytest.param(patched("presence_online", ("seq",), True), "envelope.seq must be an integer",
                 id="seq-bool"),
    pytest.param(patched("presence_online", ("seq",), -1),
                 "envelope.seq=-1 is out of range [0, 9223372036854775807]", id="seq-negative"),
    pytest.param(patched("presence_online", ("seq",), 2**63),
                 "envelope.seq=9223372036854775808 is out of range [0, 9223372036854775807]",
                 id="seq-too-big"),
    pytest.param(patched("presence_online", ("sent_at",), "now"),
                 "envelope.sent_at must be a finite number", id="sent-at-string"),
    pytest.param(patched("presence_online", ("sent_at",), True),
                 "envelope.sent_at must be a finite number", id="sent-at-bool"),
    pytest.param(patched("presence_online", ("sent_at",), float("nan")),
                 "envelope.sent_at must be a finite number", id="sent-at-nan"),
    pytest.param(patched("presence_online", ("sent_at",), float("inf")),
                 "envelope.sent_at must be a finite number", id="sent-at-inf"),
    pytest.param(golden("presence_online").replace(b"1764166400.25", b"-Infinity"),
                 "envelope.sent_at must be a finite number", id="sent-at-minus-infinity"),
    pytest.param(golden("presence_online").replace(b"1764166400.25", b"1e400"),
                 "envelope.sent_at must be a finite number", id="sent-at-overflows-to-inf"),
    pytest.param(patched("presence_online", ("body", "state"), "away"),
                 "envelope.body.state='away' is not one of online|offline", id="bad-enum"),
    pytest.param(patched("presence_online", ("body", "state"), DELETE),
                 "envelope.body.state is missing", id="missing-state"),
    pytest.param(patched("presence_online", ("body", "probe"), "10.0.0.5"),
                 "envelope.body.probe: '10.0.0.5' is not HOST:PORT (port 1-65535; [IPv6]:PORT)",
                 id="probe-without-port"),
    pytest.param(patched("presence_online", ("body", "probe"), "10.0.0.5:0"),
                 "envelope.body.probe: '10.0.0.5:0' is not HOST:PORT (port 1-65535; [IPv6]:PORT)",
                 id="probe-port-zero"),
    pytest.param(patched("presence_online", ("body", "probe"), "fd00::7:80"),
                 "envelope.body.probe: 'fd00::7:80' is not HOST:PORT (port 1-65535; [IPv6]:PORT)",
                 id="probe-ipv6-without-brackets"),
    pytest.param(patched("presence_online", ("body", "probe"), 7946),
                 "envelope.body.probe must be a string", id="probe-number"),
    pytest.param(patched("presence_online", ("body", "site"), "s" * 129),
                 "envelope.body.site is longer than 128 characters", id="site-too-long"),
    pytest.param(patched("capacity", ("body", "labels"), {"tier": 3}),
                 "envelope.body.labels must be an object of strings", id="label-not-string"),
    pytest.param(patched("capacity", ("body", "labels"), ["tier=edge"]),
                 "envelope.body.labels must be an object of strings", id="labels-list"),
    pytest.param(patched("capacity", ("body", "allocatable", "cpu_millis"), "4000"),
                 "envelope.body.allocatable.cpu_millis must be an integer", id="cpu-string"),
    pytest.param(patched("capacity", ("body", "allocatable", "memory_bytes"), 4.0e9),
                 "envelope.body.allocatable.memory_bytes must be an integer", id="memory-float"),
    pytest.param(patched("capacity", ("body", "used", "cpu_millis"), -250),
                 "envelope.body.used.cpu_millis=-250 is out of range [0, 9223372036854775807]",
                 id="used-negative"),
    pytest.param(patched("capacity", ("body", "allocatable"), DELETE),
                 "envelope.body.allocatable is missing", id="missing-allocatable"),
    pytest.param(patched("capacity", ("body", "used"), 0),
                 "envelope.body.used must be an object, found int", id="used-not-object"),
    pytest.param(patched("capacity", ("body", "devices"), {"nvidia.com/gpu": "1"}),
                 "envelope.body.devices must be an object of counts (integers >= 0)",
                 id="device-count-string"),
    pytest.param(patched("capacity", ("body", "devices"), {"nvidia.com/gpu": -1}),
                 "envelope.body.devices must be an object of counts (integers >= 0)",
                 id="device-count-negative"),
    pytest.param(patched("capacity", ("body", "devices"), {"nvidia.com/gpu": True}),
                 "envelope.body.devices must be an object of counts (integers >= 0)",
                 id="device-count-bool"),
    pytest.param(patched("capacity", ("body", "devices"), ["nvidia.com/gpu"]),
                 "envelope.body.devices must be an object of counts (integers >= 0)",
                 id="devices-list"),
    pytest.param(patched("capacity", ("body", "devices"), {f"d{i}": 1 for i in range(65)}),
                 "envelope.body.devices has more than 64 entries", id="too-many-device-kinds"),
    pytest.param(patched("capacity", ("body", "devices"), {"d" * 129: 1}),
                 "envelope.body.devices has a key longer than 128 characters",
                 id="device-kind-too-long"),
    pytest.param(patched("capacity", ("body", "images"), "busybox"),
                 "envelope.body.images must be a list", id="images-string"),
    pytest.param(patched("capacity", ("body", "images"), ["busybox", 1]),
                 "envelope.body.images must be a list of strings", id="images-mixed"),
    pytest.param(patched("capacity", ("body", "images"), ["i"] * 10_001),
                 "envelope.body.images has more than 10000 items", id="images-too-many"),
    pytest.param(patched("capacity", ("body", "instances", 1, "slot"), "x"),
                 "envelope.body.instances[1].slot must be an integer", id="instance-slot-type"),
    pytest.param(patched("capacity", ("body", "instances", 0), "web/0"),
                 "envelope.body.instances[0] must be an object, found str", id="instance-string"),
    pytest.param(patched("capacity", ("body", "instances", 1, "exit_code"), 2**31 + 1),
                 "envelope.body.instances[1].exit_code=2147483649 is out of range "
                 "[-2147483648, 2147483647]", id="exit-code-range"),
    pytest.param(patched("capacity", ("body", "rtt_ms", "pi-berlin-2"), "fast"),
                 "envelope.body.rtt_ms must be an object of numbers", id="rtt-string"),
    pytest.param(patched("capacity", ("body", "rtt_ms", "pi-berlin-2"), float("inf")),
                 "envelope.body.rtt_ms must be an object of numbers", id="rtt-inf"),
    pytest.param(patched("capacity", ("body", "rtt_ms", "pi-berlin-2"), False),
                 "envelope.body.rtt_ms must be an object of numbers", id="rtt-bool"),
    pytest.param(patched("capacity", ("body", "interval"), float("nan")),
                 "envelope.body.interval must be a finite number", id="interval-nan"),
    pytest.param(patched("command_run", ("body", "slot"), 100_001),
                 "envelope.body.slot=100001 is out of range [0, 100000]", id="slot-range"),
    pytest.param(patched("command_run", ("body", "generation"), True),
                 "envelope.body.generation must be an integer", id="generation-bool"),
    pytest.param(patched("command_run", ("body", "generation"), 3.5),
                 "envelope.body.generation must be an integer", id="generation-float"),
    pytest.param(patched("command_logs", ("body", "tail"), 10_001),
                 "envelope.body.tail=10001 is out of range [0, 10000]", id="tail-range"),
    pytest.param(patched("command_run", ("body", "op"), "restart"),
                 "envelope.body.op='restart' is not one of run|stop|logs", id="bad-op"),
    pytest.param(patched("command_run", ("body", "workload"), DELETE),
                 "envelope.body.workload is missing", id="run-without-workload"),
    pytest.param(patched("command_run", ("body", "deployment"), "d" * 64),
                 "envelope.body.deployment is longer than 63 characters", id="deployment-long"),
    pytest.param(patched("command_run", ("body", "workload", "ports", 0, "container_port"), 0),
                 "envelope.body.workload.ports[0].container_port=0 is out of range [1, 65535]",
                 id="container-port-zero"),
    pytest.param(patched("command_run", ("body", "workload", "ports", 0, "container_port"), 65536),
                 "envelope.body.workload.ports[0].container_port=65536 is out of range [1, 65535]",
                 id="container-port-range"),
    pytest.param(patched("command_run", ("body", "workload", "ports"),
                         [{"container_port": 80}] * 65),
                 "envelope.body.workload.ports has more than 64 items", id="too-many-ports"),
    pytest.param(patched("command_run", ("body", "workload", "env"), {"A": 1}),
                 "envelope.body.workload.env must be an object of strings", id="env-int"),
    pytest.param(patched("command_run", ("body", "workload", "command"), "httpd -f"),
                 "envelope.body.workload.command must be a list", id="command-string"),
    pytest.param(patched("command_run", ("body", "workload", "image"), DELETE),
                 "envelope.body.workload.image is missing", id="workload-no-image"),
    pytest.param(patched("event_instance", ("body", "instance"), DELETE),
                 "envelope.body.instance is missing", id="instance-event-without-instance"),
    pytest.param(patched("event_ack", ("body", "duplicate"), "yes"),
                 "envelope.body.duplicate must be true or false", id="duplicate-not-bool"),
    pytest.param(patched("event_ack", ("body", "type"), "nack"),
                 "envelope.body.type='nack' is not one of instance|ack|reject|logs", id="bad-event"),
    pytest.param(b"x" * (wire.MAX_PAYLOAD + 1),
                 "payload of 262145 bytes exceeds the 262144 byte limit", id="oversized"),
    pytest.param(BIG_LOGS, f"payload of {len(BIG_LOGS)} bytes exceeds the 262144 byte limit",
                 id="oversized-logs"),
    pytest.param(b"[" * DEEP + b"]" * DEEP, "payload nests too deeply", id="deep-array"),
    pytest.param(b'{"a":' * DEEP + b"1" + b"}" * DEEP, "payload nests too deeply", id="deep-object"),
    pytest.param(golden("presence_online")[:-1] + b',"x":' + b"[" * DEEP + b"]" * DEEP + b"}",
                 "payload nests too deeply", id="deep-inside-envelope"),
]


@pytest.mark.parametrize(("data", "reason"), REFUSALS)
def test_decode_refuses_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(Refused) as caught:
        wire.decode(data)
    assert caught.value.reason == reason
    assert str(caught.value) == reason


TOPIC_REFUSALS = [
    pytest.param(node_topic(wire.NodeTopic.PRESENCE), golden("capacity"),
                 "schema 'edgefed.capacity/1' does not belong on this topic "
                 "(expected 'edgefed.presence/1')", id="capacity-on-presence"),
    pytest.param(node_topic(wire.NodeTopic.CMD), golden("event_ack"),
                 "schema 'edgefed.event/1' does not belong on this topic "
                 "(expected 'edgefed.command/1')", id="event-on-cmd"),
    pytest.param(TOPICS.controller_presence, golden("presence_online"),
                 "schema 'edgefed.presence/1' does not belong on this topic "
                 "(expected 'edgefed.controller-presence/1')", id="node-presence-on-controller"),
    pytest.param(node_topic(wire.NodeTopic.PRESENCE), golden("controller_presence"),
                 "schema 'edgefed.controller-presence/1' does not belong on this topic "
                 "(expected 'edgefed.presence/1')", id="controller-presence-on-node"),
    pytest.param(node_topic(wire.NodeTopic.PRESENCE, "pi-berlin-2"), golden("presence_online"),
                 "sender 'pi-berlin-1' may not publish under node 'pi-berlin-2'",
                 id="sender-not-topic-node"),
    pytest.param(node_topic(wire.NodeTopic.CAPACITY, "pi-berlin-2"), golden("capacity"),
                 "sender 'pi-berlin-1' may not publish under node 'pi-berlin-2'",
                 id="capacity-for-another-node"),
    pytest.param(node_topic(wire.NodeTopic.EVENTS, "pi-berlin-2"), golden("event_ack"),
                 "sender 'pi-berlin-1' may not publish under node 'pi-berlin-2'",
                 id="events-for-another-node"),
    pytest.param("other/v1/nodes/pi-berlin-1/presence", golden("presence_online"),
                 "topic 'other/v1/nodes/pi-berlin-1/presence' is not under edgefed/v1/",
                 id="other-root"),
    pytest.param("edgefed/v2/nodes/pi-berlin-1/presence", golden("presence_online"),
                 "topic 'edgefed/v2/nodes/pi-berlin-1/presence' is not under edgefed/v1/",
                 id="other-version"),
    pytest.param("edgefed", golden("presence_online"),
                 "topic 'edgefed' is not under edgefed/v1/", id="root-only"),
    pytest.param("edgefed/v1/nodes/-pi/presence", golden("presence_online"),
                 "topic 'edgefed/v1/nodes/-pi/presence' names an invalid node id",
                 id="node-id-leading-dash"),
    pytest.param("edgefed/v1/nodes//presence", golden("presence_online"),
                 "topic 'edgefed/v1/nodes//presence' names an invalid node id", id="node-id-empty"),
    pytest.param("edgefed/v1/nodes/pi berlin/presence", golden("presence_online"),
                 "topic 'edgefed/v1/nodes/pi berlin/presence' names an invalid node id",
                 id="node-id-space"),
    pytest.param("edgefed/v1/nodes/+/presence", golden("presence_online"),
                 "topic 'edgefed/v1/nodes/+/presence' names an invalid node id",
                 id="node-id-wildcard"),
    pytest.param(f"edgefed/v1/nodes/{'n' * 64}/presence", golden("presence_online"),
                 f"topic 'edgefed/v1/nodes/{'n' * 64}/presence' names an invalid node id",
                 id="node-id-too-long"),
    pytest.param("edgefed/v1/nodes/pi-berlin-1/status", golden("presence_online"),
                 "topic 'edgefed/v1/nodes/pi-berlin-1/status' is not a v1 edgefed topic",
                 id="unknown-kind"),
    pytest.param("edgefed/v1/nodes/pi-berlin-1/presence/extra", golden("presence_online"),
                 "topic 'edgefed/v1/nodes/pi-berlin-1/presence/extra' is not a v1 edgefed topic",
                 id="too-deep"),
    pytest.param("edgefed/v1/controller/status", golden("controller_presence"),
                 "topic 'edgefed/v1/controller/status' is not a v1 edgefed topic",
                 id="controller-other"),
]


@pytest.mark.parametrize(("topic", "data", "reason"), TOPIC_REFUSALS)
def test_decode_from_topic_refuses_with_reason(topic: str, data: bytes, reason: str) -> None:
    with pytest.raises(Refused) as caught:
        wire.decode_from_topic(TOPICS, topic, data)
    assert caught.value.reason == reason


def test_topic_checks_come_before_the_payload() -> None:
    with pytest.raises(Refused) as caught:
        wire.decode_from_topic(TOPICS, "other/v1/nodes/n/presence", b"not json")
    assert caught.value.reason == "topic 'other/v1/nodes/n/presence' is not under edgefed/v1/"


@pytest.mark.parametrize(("kind", "topic"), [
    (wire.NodeTopic.PRESENCE, "edgefed/v1/nodes/pi-berlin-1/presence"),
    (wire.NodeTopic.CAPACITY, "edgefed/v1/nodes/pi-berlin-1/capacity"),
    (wire.NodeTopic.EVENTS, "edgefed/v1/nodes/pi-berlin-1/events"),
    (wire.NodeTopic.CMD, "edgefed/v1/nodes/pi-berlin-1/cmd"),
])
def test_topic_names_and_parse(kind: wire.NodeTopic, topic: str) -> None:
    assert TOPICS.node(NODE, kind) == topic
    assert TOPICS.parse(topic) == (NODE, kind.value)
    assert TOPICS.all_nodes(kind) == f"edgefed/v1/nodes/+/{kind.value}"


def test_controller_presence_topic() -> None:
    assert TOPICS.controller_presence == "edgefed/v1/controller/presence"
    assert TOPICS.parse("edgefed/v1/controller/presence") == (None, "controller-presence")


@pytest.mark.parametrize("root", ["", "a/b", "+", "#", "-lead", "r" * 64])
def test_invalid_topic_root(root: str) -> None:
    with pytest.raises(ValueError, match="must be letters, digits"):
        Topics(root=root)


def test_encode_refuses_nan_rather_than_emit_invalid_json() -> None:
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        wire.encode(wire.SCHEMA_PRESENCE, Presence(state=PresenceState.ONLINE), sender=NODE,
                    epoch="e", seq=1, sent_at=float("nan"))


# -- known gaps --------------------------------------------------------------------


def _presence_with_raw(field: str, raw: str) -> bytes:
    doc = golden("presence_online").decode()
    doc = doc.replace('"seq":1' if field == "seq" else '"sent_at":1764166400.25',
                      f'"{field}":{raw}')
    return doc.encode()


def test_huge_integer_where_a_float_is_expected_is_refused() -> None:
    with pytest.raises(Refused) as caught:
        wire.decode(_presence_with_raw("sent_at", "1" + "0" * 400))
    assert caught.value.reason == "envelope.sent_at must be a finite number"


def test_huge_integer_rtt_is_refused() -> None:
    data = golden("capacity").replace(b'"pi-berlin-2":1.5', b'"pi-berlin-2":1' + b"0" * 400)
    with pytest.raises(Refused) as caught:
        wire.decode(data)
    assert caught.value.reason == "envelope.body.rtt_ms must be an object of numbers"


def test_integer_literal_beyond_the_digit_limit_is_refused() -> None:
    with pytest.raises(Refused):
        wire.decode(_presence_with_raw("seq", "1" * 5000))


@pytest.mark.parametrize("host_port", [0, -1, 65536])
def test_host_port_out_of_range_is_refused(host_port: int) -> None:
    with pytest.raises(Refused, match="host_port"):
        wire.decode(patched("command_run", ("body", "workload", "ports", 0, "host_port"),
                            host_port))


# -- properties ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=16,
)
topics = st.sampled_from([c[0] for c in GOLDEN_CASES.values()] + [
    node_topic(wire.NodeTopic.PRESENCE, "pi-berlin-2"), "edgefed/v1/nodes/x/y", "a/b"])


def _paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


FIELD_PATHS = [(name, path) for name in sorted(GOLDEN_CASES)
               for path in _paths(golden_doc(name))]


def _decodes_or_refuses(topic: str, data: bytes) -> None:
    try:
        wire.decode_from_topic(TOPICS, topic, data)
    except Refused as exc:
        assert exc.reason
    try:
        wire.decode(data)
    except Refused as exc:
        assert exc.reason


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300), topic=topics)
def test_arbitrary_bytes_only_ever_refused(data: bytes, topic: str) -> None:
    _decodes_or_refuses(topic, data)


@settings(max_examples=150, deadline=None)
@given(value=json_values, topic=topics)
def test_arbitrary_json_only_ever_refused(value: Any, topic: str) -> None:
    _decodes_or_refuses(topic, json.dumps(value).encode())


@settings(max_examples=300, deadline=None)
@given(where=st.sampled_from(FIELD_PATHS), value=json_values | st.just(DELETE))
def test_any_field_of_a_golden_payload_replaced_only_ever_refused(
        where: tuple[str, tuple[str | int, ...]], value: Any) -> None:
    name, path = where
    data = patched(name, path, value if value is DELETE else copy.deepcopy(value))
    _decodes_or_refuses(GOLDEN_CASES[name][0], data)


@settings(max_examples=150, deadline=None)
@given(topic=st.text(max_size=60))
def test_arbitrary_topics_only_ever_refused(topic: str) -> None:
    try:
        node, kind = TOPICS.parse(topic)
    except Refused:
        return
    assert kind in wire.SCHEMA_FOR_KIND
    assert node is None or wire.NODE_ID_RE.match(node)
