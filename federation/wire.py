"""Wire protocol v1: topics, the JSON envelope and the message bodies.

Shared by the agent and the controller. Every payload is an envelope::

    {"schema": "edgefed.<kind>/1", "sender": "...", "epoch": "...", "seq": 7,
     "sent_at": 1764166400.25, "body": {...}, "sig": null}

Decoders are strict: :func:`decode` either returns a typed :class:`Message`
or raises :class:`Refused` with a reason an operator can act on. Unknown
optional fields are ignored; an unknown schema version is refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

_E = TypeVar("_E", bound=StrEnum)

VERSION = "v1"
DEFAULT_ROOT = "edgefed"
MAX_PAYLOAD = 256 * 1024  # bytes; capacity reports of big nodes stay far below
NODE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ROOT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class Refused(ValueError):
    """A payload that is not a valid v1 message; ``reason`` says why, ``kind``
    is a stable code to count refusals by (reasons embed values, kinds do not)."""

    def __init__(self, reason: str, kind: str = "invalid-field") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


# -- topics --------------------------------------------------------------------


class NodeTopic(StrEnum):
    PRESENCE = "presence"
    CAPACITY = "capacity"
    EVENTS = "events"
    CMD = "cmd"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names under one root; tests and drills use their own root."""

    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        if not ROOT_RE.match(self.root):
            raise ValueError(f"topic root {self.root!r} must be letters, digits, '.', '_' or '-'")

    def node(self, node: str, kind: NodeTopic) -> str:
        return f"{self.root}/{VERSION}/nodes/{node}/{kind.value}"

    def all_nodes(self, kind: NodeTopic) -> str:
        return f"{self.root}/{VERSION}/nodes/+/{kind.value}"

    @property
    def controller_presence(self) -> str:
        return f"{self.root}/{VERSION}/controller/presence"

    @property
    def controller_echo(self) -> str:
        """Where the controller sends itself a message through the broker, to know its
        link carries traffic (not only that its socket is open)."""
        return f"{self.root}/{VERSION}/controller/echo"

    def parse(self, topic: str) -> tuple[str | None, str]:
        """(node id or None for the controller, kind) of a topic under this root."""
        parts = topic.split("/")
        prefix = [self.root, VERSION]
        if parts[:2] != prefix:
            raise Refused(f"topic {topic!r} is not under {self.root}/{VERSION}/", "bad-topic")
        rest = parts[2:]
        if rest == ["controller", "presence"]:
            return None, "controller-presence"
        if len(rest) == 3 and rest[0] == "nodes":
            node, kind = rest[1], rest[2]
            if not NODE_ID_RE.match(node):
                raise Refused(f"topic {topic!r} names an invalid node id", "bad-topic")
            try:
                return node, NodeTopic(kind).value
            except ValueError:
                pass
        raise Refused(f"topic {topic!r} is not a v1 edgefed topic", "bad-topic")


# -- bodies --------------------------------------------------------------------


class PresenceState(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True, kw_only=True)
class Presence:
    state: PresenceState
    site: str = ""  # empty for the controller
    agent_version: str = ""
    # HOST:PORT of the agent's RTT echo listener, for peers to probe; optional on
    # the wire, "" when the agent runs none (and for the controller).
    probe: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    cpu_millis: int
    memory_bytes: int
    disk_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceReport:
    """One instance as the agent sees it; in capacity reports and events."""

    deployment: str
    slot: int
    generation: int
    revision: int
    state: str  # cloud_adapters.runtime.InstanceState value
    cpu_millis: int = 0
    memory_bytes: int = 0
    exit_code: int | None = None
    reason: str = ""
    restarts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Capacity:
    site: str
    arch: str
    os: str
    runtime: str  # docker | process
    labels: Mapping[str, str]
    allocatable: Resources
    used: Resources  # requested by instances the agent runs (what scheduling reserves)
    images: tuple[str, ...]
    instances: tuple[InstanceReport, ...]
    rtt_ms: Mapping[str, float] = field(default_factory=dict)
    interval: float = 5.0  # seconds until the next report at the latest
    # Devices the node has, by kind (``nvidia.com/gpu``): count. Optional on the
    # wire (agents that do not probe devices leave it out) and {} when absent.
    devices: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PortBody:
    container_port: int
    host_port: int | None = None
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadBody:
    """What to run for a slot; the agent builds the runtime spec from it."""

    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PortBody, ...] = ()
    cpu_millis: int = 0
    memory_bytes: int = 0
    restart_policy: str = "Always"
    # Singletons only: seconds without the broker after which the agent stops the
    # instance itself (self-fencing). Optional on the wire; None (absent or null) for
    # every other workload.
    fence_after: float | None = None


class CommandOp(StrEnum):
    RUN = "run"  # run the workload for (deployment, slot) at this generation
    STOP = "stop"  # stop every instance of the slot at or below this generation
    LOGS = "logs"  # reply with the tail of the slot's log


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    op: CommandOp
    command_id: str
    deployment: str
    slot: int
    generation: int
    revision: int = 0
    workload: WorkloadBody | None = None  # required for RUN
    tail: int = 100  # for LOGS


class EventType(StrEnum):
    INSTANCE = "instance"  # an instance changed state
    ACK = "ack"  # a command was accepted (or was a duplicate of an accepted one)
    REJECT = "reject"  # a command was refused; reason says why
    LOGS = "logs"  # reply to a LOGS command


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    type: EventType
    command_id: str = ""
    instance: InstanceReport | None = None
    reason: str = ""
    logs: str = ""
    duplicate: bool = False


Body = Presence | Capacity | Command | Event


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    schema: str
    sender: str
    epoch: str
    seq: int
    sent_at: float
    body: Body


SCHEMA_PRESENCE = "edgefed.presence/1"
SCHEMA_CAPACITY = "edgefed.capacity/1"
SCHEMA_COMMAND = "edgefed.command/1"
SCHEMA_EVENT = "edgefed.event/1"
SCHEMA_CONTROLLER_PRESENCE = "edgefed.controller-presence/1"

# The schema each topic kind carries.
SCHEMA_FOR_KIND = {
    "presence": SCHEMA_PRESENCE,
    "capacity": SCHEMA_CAPACITY,
    "cmd": SCHEMA_COMMAND,
    "events": SCHEMA_EVENT,
    "controller-presence": SCHEMA_CONTROLLER_PRESENCE,
}


# -- encoding ------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, StrEnum):
        return value.value
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def encode(
    schema: str, body: Body, *, sender: str, epoch: str, seq: int, sent_at: float
) -> bytes:
    envelope = {
        "schema": schema,
        "sender": sender,
        "epoch": epoch,
        "seq": seq,
        "sent_at": sent_at,
        "body": _plain(body),
        "sig": None,
    }
    return json.dumps(envelope, separators=(",", ":"), allow_nan=False).encode()


# -- decoding ------------------------------------------------------------------


def _finite(value: Any) -> bool:
    """A JSON number that fits a float (huge integers overflow, NaN and inf are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


class _Fields:
    """Strict typed reads from one JSON object; raises Refused naming the field."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise Refused(f"{where} must be an object, found {type(obj).__name__}")
        self.obj = obj
        self.where = where

    def _get(self, name: str, default: Any, required: bool) -> Any:
        if name not in self.obj or self.obj[name] is None:
            if required:
                raise Refused(f"{self.where}.{name} is missing")
            return default
        return self.obj[name]

    def text(self, name: str, default: str = "", *, required: bool = True,
            max_len: int = 1024) -> str:
        value = self._get(name, default, required)
        if not isinstance(value, str):
            raise Refused(f"{self.where}.{name} must be a string")
        if len(value) > max_len:
            raise Refused(f"{self.where}.{name} is longer than {max_len} characters")
        return value

    def integer(self, name: str, default: int = 0, *, required: bool = True,
            low: int = 0, high: int = 2**63 - 1) -> int:
        value = self._get(name, default, required)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Refused(f"{self.where}.{name} must be an integer")
        if not low <= value <= high:
            raise Refused(f"{self.where}.{name}={value} is out of range [{low}, {high}]")
        return value

    def opt_int(self, name: str, *, low: int = -(2**31), high: int = 2**31 - 1) -> int | None:
        if self.obj.get(name) is None:
            return None
        return self.integer(name, low=low, high=high)

    def number(self, name: str, default: float = 0.0, *, required: bool = True) -> float:
        value = self._get(name, default, required)
        if not _finite(value):
            raise Refused(f"{self.where}.{name} must be a finite number")
        return float(value)

    def flag(self, name: str, default: bool = False) -> bool:
        value = self._get(name, default, False)
        if not isinstance(value, bool):
            raise Refused(f"{self.where}.{name} must be true or false")
        return value

    def enum(self, name: str, kind: type[_E]) -> _E:
        raw = self.text(name)
        try:
            return kind(raw)
        except ValueError:
            allowed = "|".join(m.value for m in kind)
            raise Refused(f"{self.where}.{name}={raw!r} is not one of {allowed}") from None

    def obj_field(self, name: str, *, required: bool = True) -> _Fields | None:
        value = self._get(name, None, required)
        return None if value is None else _Fields(value, f"{self.where}.{name}")

    def items(self, name: str, *, max_items: int = 10_000) -> list[Any]:
        value = self._get(name, [], False)
        if not isinstance(value, list):
            raise Refused(f"{self.where}.{name} must be a list")
        if len(value) > max_items:
            raise Refused(f"{self.where}.{name} has more than {max_items} items")
        return value

    def str_list(self, name: str) -> tuple[str, ...]:
        items = self.items(name)
        if not all(isinstance(i, str) for i in items):
            raise Refused(f"{self.where}.{name} must be a list of strings")
        return tuple(items)

    def str_map(self, name: str) -> dict[str, str]:
        value = self._get(name, {}, False)
        if not isinstance(value, dict) or not all(
            isinstance(v, str) for v in value.values()
        ):
            raise Refused(f"{self.where}.{name} must be an object of strings")
        return dict(value)

    def float_map(self, name: str) -> dict[str, float]:
        value = self._get(name, {}, False)
        if not isinstance(value, dict):
            raise Refused(f"{self.where}.{name} must be an object of numbers")
        for v in value.values():
            if not _finite(v):
                raise Refused(f"{self.where}.{name} must be an object of numbers")
        return {k: float(v) for k, v in value.items()}


    def count_map(self, name: str, *, max_items: int = 64, max_key: int = 128) -> dict[str, int]:
        value = self._get(name, {}, False)
        if not isinstance(value, dict) or not all(
            type(v) is int and 0 <= v <= 1_000_000 for v in value.values()
        ):
            raise Refused(f"{self.where}.{name} must be an object of counts (integers >= 0)")
        if len(value) > max_items:
            raise Refused(f"{self.where}.{name} has more than {max_items} entries")
        if any(len(k) > max_key for k in value):
            raise Refused(f"{self.where}.{name} has a key longer than {max_key} characters")
        return dict(value)


def _presence(f: _Fields) -> Presence:
    return Presence(
        state=f.enum("state", PresenceState),
        site=f.text("site", required=False, max_len=128),
        agent_version=f.text("agent_version", required=False, max_len=64),
        probe=_probe(f),
    )


def split_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[IPv6]:PORT`` for IPv6) -> (host, port); ValueError says why."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not (port.isascii() and port.isdigit()) or not (
            1 <= int(port) <= 65535):
        raise ValueError(f"{text!r} is not HOST:PORT (port 1-65535; [IPv6]:PORT)")
    if any(c.isspace() or c in "[]/" for c in host) or (":" in host and "[" not in text):
        raise ValueError(f"{text!r} is not HOST:PORT (port 1-65535; [IPv6]:PORT)")
    return host, int(port)


def _probe(f: _Fields) -> str:
    value = f.text("probe", required=False, max_len=300)
    if value:
        try:
            split_address(value)
        except ValueError as exc:
            raise Refused(f"{f.where}.probe: {exc}") from None
    return value


def _resources(f: _Fields | None) -> Resources:
    assert f is not None
    return Resources(
        cpu_millis=f.integer("cpu_millis"),
        memory_bytes=f.integer("memory_bytes"),
        disk_bytes=f.integer("disk_bytes", required=False),
    )


def _instance(f: _Fields) -> InstanceReport:
    return InstanceReport(
        deployment=f.text("deployment", max_len=63),
        slot=f.integer("slot", high=100_000),
        generation=f.integer("generation"),
        revision=f.integer("revision", required=False),
        state=f.text("state", max_len=32),
        cpu_millis=f.integer("cpu_millis", required=False),
        memory_bytes=f.integer("memory_bytes", required=False),
        exit_code=f.opt_int("exit_code"),
        reason=f.text("reason", required=False, max_len=4096),
        restarts=f.integer("restarts", required=False),
    )


def _capacity(f: _Fields) -> Capacity:
    return Capacity(
        site=f.text("site", max_len=128),
        arch=f.text("arch", max_len=32),
        os=f.text("os", max_len=32),
        runtime=f.text("runtime", max_len=32),
        labels=f.str_map("labels"),
        allocatable=_resources(f.obj_field("allocatable")),
        used=_resources(f.obj_field("used")),
        images=f.str_list("images"),
        instances=tuple(
            _instance(_Fields(item, f"{f.where}.instances[{i}]"))
            for i, item in enumerate(f.items("instances"))
        ),
        rtt_ms=f.float_map("rtt_ms"),
        interval=_interval(f),
        devices=f.count_map("devices"),
    )


def _interval(f: _Fields) -> float:
    value = f.number("interval", 5.0, required=False)
    if not 0.2 <= value <= 3600:
        raise Refused(f"{f.where}.interval={value} is out of range [0.2, 3600]")
    return value


def _workload(f: _Fields) -> WorkloadBody:
    ports = []
    for i, item in enumerate(f.items("ports", max_items=64)):
        p = _Fields(item, f"{f.where}.ports[{i}]")
        host = p.opt_int("host_port", low=1, high=65535)
        ports.append(PortBody(container_port=p.integer("container_port", low=1, high=65535),
                              host_port=host,
                              protocol=p.text("protocol", "tcp", required=False, max_len=8)))
    return WorkloadBody(
        image=f.text("image", max_len=512),
        command=f.str_list("command"),
        args=f.str_list("args"),
        env=f.str_map("env"),
        ports=tuple(ports),
        cpu_millis=f.integer("cpu_millis", required=False),
        memory_bytes=f.integer("memory_bytes", required=False),
        restart_policy=f.text("restart_policy", "Always", required=False, max_len=16),
        fence_after=_fence_after(f),
    )


def _fence_after(f: _Fields) -> float | None:
    if f.obj.get("fence_after") is None:
        return None
    value = f.number("fence_after")
    if not 0 < value <= 7 * 86400:
        raise Refused(f"{f.where}.fence_after={value} is out of range (0, 604800]")
    return value


def _command(f: _Fields) -> Command:
    op = f.enum("op", CommandOp)
    workload_fields = f.obj_field("workload", required=op is CommandOp.RUN)
    return Command(
        op=op,
        command_id=f.text("command_id", max_len=128),
        deployment=f.text("deployment", max_len=63),
        slot=f.integer("slot", high=100_000),
        generation=f.integer("generation"),
        revision=f.integer("revision", required=False),
        workload=_workload(workload_fields) if workload_fields else None,
        tail=f.integer("tail", 100, required=False, high=10_000),
    )


def _event(f: _Fields) -> Event:
    etype = f.enum("type", EventType)
    inst = f.obj_field("instance", required=etype is EventType.INSTANCE)
    return Event(
        type=etype,
        command_id=f.text("command_id", required=False, max_len=128),
        instance=_instance(inst) if inst else None,
        reason=f.text("reason", required=False, max_len=4096),
        logs=f.text("logs", required=False, max_len=MAX_PAYLOAD),
        duplicate=f.flag("duplicate"),
    )


_BODY_DECODERS: dict[str, Callable[[_Fields], Body]] = {
    SCHEMA_PRESENCE: _presence,
    SCHEMA_CONTROLLER_PRESENCE: _presence,
    SCHEMA_CAPACITY: _capacity,
    SCHEMA_COMMAND: _command,
    SCHEMA_EVENT: _event,
}


def decode(payload: bytes, *, expected_schema: str | None = None) -> Message:
    """Parse and validate one envelope; raise Refused with the reason otherwise."""
    if len(payload) > MAX_PAYLOAD:
        raise Refused(f"payload of {len(payload)} bytes exceeds the {MAX_PAYLOAD} byte limit",
                      "oversized")
    try:
        raw = json.loads(payload)
    except ValueError as exc:  # also UnicodeDecodeError, and integers beyond the digit limit
        raise Refused(f"payload is not JSON: {exc}", "not-json") from None
    except RecursionError:
        raise Refused("payload nests too deeply", "not-json") from None
    env = _Fields(raw, "envelope")
    schema = env.text("schema", max_len=64)
    if schema not in _BODY_DECODERS:
        known = schema.rsplit("/", 1)[0] + "/1"
        if known in _BODY_DECODERS:
            raise Refused(f"schema {schema!r} is a version this build does not speak",
                          "unknown-schema")
        raise Refused(f"unknown schema {schema!r}", "unknown-schema")
    if expected_schema is not None and schema != expected_schema:
        raise Refused(f"schema {schema!r} does not belong on this topic "
                      f"(expected {expected_schema!r})", "wrong-topic")
    body_fields = env.obj_field("body")
    assert body_fields is not None
    return Message(
        schema=schema,
        sender=env.text("sender", max_len=128),
        epoch=env.text("epoch", max_len=128),
        seq=env.integer("seq"),
        sent_at=env.number("sent_at"),
        body=_BODY_DECODERS[schema](body_fields),
    )


def sender_hint(payload: bytes) -> str:
    """Best-effort sender of a refused payload, for the log line."""
    try:
        sender = json.loads(payload[:MAX_PAYLOAD]).get("sender")
    except (ValueError, AttributeError, RecursionError):
        return "unknown sender"
    return repr(sender)[:80] if sender is not None else "unknown sender"


def decode_from_topic(topics: Topics, topic: str, payload: bytes) -> tuple[str | None, Message]:
    """Decode a message received on ``topic`` and check that it belongs there:
    the schema matches the topic kind, and a node writes only under its own id."""
    node, kind = topics.parse(topic)
    message = decode(payload, expected_schema=SCHEMA_FOR_KIND[kind])
    if node is not None and kind != "cmd" and message.sender != node:
        raise Refused(f"sender {message.sender!r} may not publish under node {node!r}",
                      "wrong-sender")
    return node, message
