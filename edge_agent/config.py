"""Agent settings from flags (`edgefed agent ...`) or a YAML file
(`edgefed-agent --config agent.yaml`); the two spell the same things."""

from __future__ import annotations

import argparse
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from federation.bus import BadBrokerURL, parse_brokers
from federation.wire import DEFAULT_ROOT, NODE_ID_RE, ROOT_RE, split_address
from policies.quantity import QuantityError, parse_cpu, parse_memory

RUNTIMES = ("auto", "docker", "process")
DEVICE_KIND_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    broker: str
    site: str
    node: str
    labels: dict[str, str] = field(default_factory=dict)
    runtime: str = "auto"
    state_dir: Path = Path("/var/lib/edgefed")
    topic_root: str = DEFAULT_ROOT
    container_labels: dict[str, str] = field(default_factory=dict)
    report_interval: float = 5.0
    keepalive: int = 10  # MQTT keepalive, seconds: the broker's Last Will fires ~1.5x after
    cpu_millis: int | None = None
    memory_bytes: int | None = None
    # Device kind -> count the operator declares (over what is detected, by kind).
    devices: dict[str, int] = field(default_factory=dict)
    # RTT probes (edge_agent/probes.py): landmark name -> HOST:PORT of any TCP
    # service near the users it stands for; the echo listener peers probe (auto:
    # an ephemeral port on the broker-facing address; off; HOST:PORT); how many
    # peers to probe (0: none); seconds between two probes.
    landmarks: dict[str, str] = field(default_factory=dict)
    probe_listen: str = "auto"
    probe_peers: int = 8
    probe_interval: float = 1.0

    def __post_init__(self) -> None:
        for what, value in (("node", self.node), ("site", self.site)):
            if not NODE_ID_RE.match(value):
                raise ConfigError(f"{what} {value!r}: use letters, digits, '.', '_' or '-' "
                                  "(at most 63 characters)")
        if not ROOT_RE.match(self.topic_root):
            raise ConfigError(f"topic root {self.topic_root!r} is not valid")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime {self.runtime!r}: expected one of {', '.join(RUNTIMES)}")
        if not 0.2 <= self.report_interval <= 300:
            raise ConfigError("report interval must be between 0.2 and 300 seconds")
        if type(self.keepalive) is not int or not 1 <= self.keepalive <= 3600:
            raise ConfigError("keepalive must be a whole number of seconds from 1 to 3600")
        _check_probes(self)
        for kind, count in self.devices.items():
            if not DEVICE_KIND_RE.match(kind):
                raise ConfigError(f"device {kind!r}: expected a device kind like "
                                  "nvidia.com/gpu")
            if type(count) is not int or not 0 <= count <= 1_000_000:
                raise ConfigError(f"device {kind}: the count must be an integer from 0 to "
                                  "1000000")


def _check_probes(config: AgentConfig) -> None:
    for name, address in config.landmarks.items():
        if not NODE_ID_RE.match(name):
            raise ConfigError(f"landmark {name!r}: use letters, digits, '.', '_' or '-' "
                              "(at most 63 characters)")
        try:
            split_address(address)
        except ValueError as exc:
            raise ConfigError(f"landmark {name}: {exc}") from None
    if config.probe_listen not in ("auto", "off"):
        host, _, port = config.probe_listen.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"probe listen {config.probe_listen!r}: expected auto, off or "
                              "HOST:PORT (port 0 for any free port)")
    if type(config.probe_peers) is not int or not 0 <= config.probe_peers <= 64:
        raise ConfigError("probe peers must be an integer between 0 and 64")
    if not 0.05 <= config.probe_interval <= 3600:
        raise ConfigError("probe interval must be between 0.05 and 3600 seconds")


def parse_labels(text: str | None) -> dict[str, str]:
    """``k=v,k2=v2`` -> dict; a bare ``k`` is refused."""
    out: dict[str, str] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"label {item!r} must be written key=value")
        out[key.strip()] = value.strip()
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML file with the settings below")
    parser.add_argument("--broker", action="append", metavar="URL",
                        help="mqtt://HOST:PORT; repeat it (or comma-separate) to give brokers "
                        "to fail over to, tried in order")
    parser.add_argument("--site", help="site this node belongs to, e.g. factory-berlin")
    parser.add_argument("--node", help="node id, unique in the federation (default: hostname)")
    parser.add_argument("--labels", help="node labels, k=v,k2=v2 (e.g. region=eu,tier=edge)")
    parser.add_argument("--runtime", choices=RUNTIMES,
                        help="where instances run (default auto: docker if the engine answers)")
    parser.add_argument("--state-dir", type=Path, help="local state (default /var/lib/edgefed)")
    parser.add_argument("--container-label", action="append", default=[], metavar="K=V",
                        help="extra label on every container this agent creates (repeatable)")
    parser.add_argument("--report-interval", type=float,
                        help="seconds between capacity reports (default 5)")
    parser.add_argument("--keepalive", type=int,
                        help="MQTT keepalive in seconds (default 10): a silent link is cut by "
                        "the broker, and the Last Will sent, about 1.5x after")
    parser.add_argument("--cpu", help="allocatable cpu, e.g. 2 or 1500m (default: all cores)")
    parser.add_argument("--memory", help="allocatable memory, e.g. 2Gi (default: all memory)")
    parser.add_argument("--device", action="append", default=[], metavar="KIND=COUNT",
                        help="devices replicas can ask for, e.g. nvidia.com/gpu=1 (repeatable; "
                        "NVIDIA GPUs are found in /dev; a declared count replaces the found "
                        "one, 0 hides them)")
    parser.add_argument("--landmark", action="append", default=[], metavar="NAME=HOST:PORT",
                        help="measure RTT to this TCP endpoint and report it as NAME "
                        "(repeatable; policies name it in users[].landmark)")
    parser.add_argument("--probe-listen", metavar="auto|off|HOST:PORT",
                        help="RTT echo listener peers probe (default auto: any free port on "
                        "the address the broker is reached from)")
    parser.add_argument("--probe-peers", type=int,
                        help="peers to measure RTT to at a time (default 8; 0: none)")
    parser.add_argument("--probe-interval", type=float,
                        help="seconds between two RTT probes, jittered (default 1)")


def from_args(args: argparse.Namespace) -> AgentConfig:
    settings: dict[str, Any] = {}
    if args.config is not None:
        settings = load_yaml(args.config)
    flags = {
        "broker": ",".join(args.broker) if args.broker else None,
        "site": args.site, "node": args.node, "runtime": args.runtime,
        "state_dir": args.state_dir, "report_interval": args.report_interval,
        "keepalive": args.keepalive,
        "probe_listen": args.probe_listen, "probe_peers": args.probe_peers,
        "probe_interval": args.probe_interval,
    }
    settings.update({k: v for k, v in flags.items() if v is not None})
    if args.labels is not None:
        settings["labels"] = parse_labels(args.labels)
    if args.container_label:
        settings["container_labels"] = parse_labels(",".join(args.container_label))
    if args.device:
        settings["devices"] = {**settings.get("devices", {}),
                               **dict(_device(item) for item in args.device)}
    if args.landmark:
        # Flags add to (and override by name) the landmarks of --config.
        settings["landmarks"] = {**settings.get("landmarks", {}),
                                 **dict(_landmark(item) for item in args.landmark)}
    try:
        if args.cpu is not None:
            settings["cpu_millis"] = parse_cpu(args.cpu)
        if args.memory is not None:
            settings["memory_bytes"] = parse_memory(args.memory)
    except QuantityError as exc:
        raise ConfigError(str(exc)) from None
    settings.setdefault("node", socket.gethostname().split(".")[0])
    settings.setdefault("topic_root", os.environ.get("EDGEFED_TOPIC_ROOT", DEFAULT_ROOT))
    for required in ("broker", "site"):
        if not settings.get(required):
            raise ConfigError(f"--{required} is required (or `{required}:` in --config)")
    try:  # a bad URL is refused here, before anything starts
        parse_brokers(settings["broker"])
    except BadBrokerURL as exc:
        raise ConfigError(str(exc)) from None
    if "state_dir" in settings:
        settings["state_dir"] = Path(settings["state_dir"])
    return AgentConfig(**settings)


def _device(text: str) -> tuple[str, int]:
    kind, sep, count = text.partition("=")
    if not sep or not kind.strip() or not count.strip().isdigit():
        raise ConfigError(f"--device {text!r} must be written KIND=COUNT, e.g. nvidia.com/gpu=1")
    return kind.strip(), int(count)


def _landmark(text: str) -> tuple[str, str]:
    name, sep, address = text.partition("=")
    if not sep or not name.strip() or not address.strip():
        raise ConfigError(f"--landmark {text!r} must be written NAME=HOST:PORT")
    return name.strip(), address.strip()


_YAML_KEYS = {"broker", "site", "node", "labels", "runtime", "state_dir", "topic_root",
              "container_labels", "report_interval", "keepalive", "cpu", "memory", "devices",
              "landmarks",
              "probe_listen", "probe_peers", "probe_interval"}


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    unknown = set(raw) - _YAML_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(map(str, unknown)))}; "
                          f"known: {', '.join(sorted(_YAML_KEYS))}")
    out = dict(raw)
    if isinstance(out.get("broker"), list):  # `broker: [mqtt://a, mqtt://b]`
        out["broker"] = ",".join(str(b) for b in out["broker"])
    for key in ("labels", "container_labels", "landmarks"):
        if key in out and not isinstance(out[key], dict):
            raise ConfigError(f"{path}: {key} must be a mapping")
        if key in out:
            out[key] = {str(k): str(v) for k, v in out[key].items()}
    if "devices" in out:
        if not isinstance(out["devices"], dict):
            raise ConfigError(f"{path}: devices must be a mapping of kind to count")
        out["devices"] = {str(k): v for k, v in out["devices"].items()}
    try:
        if "cpu" in out:
            out["cpu_millis"] = parse_cpu(out.pop("cpu"))
        if "memory" in out:
            out["memory_bytes"] = parse_memory(out.pop("memory"))
    except QuantityError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return out
