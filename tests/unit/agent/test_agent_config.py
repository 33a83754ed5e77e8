"""Agent settings from flags and from the YAML file, and their errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edge_agent.capacity import detected_devices, devices
from edge_agent.config import AgentConfig, ConfigError, add_arguments, from_args, parse_labels

REPO = Path(__file__).resolve().parents[3]


def parse(*argv: str) -> AgentConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(list(argv)))


def test_the_example_file_loads_and_flags_override_it():
    config = parse("--config", str(REPO / "deploy" / "agent.example.yaml"), "--node", "pi-02")
    assert config.broker == "mqtt://broker.example.internal:1883"
    assert config.site == "factory-berlin"
    assert config.node == "pi-02"
    assert config.labels == {"tier": "edge", "region": "eu-central", "country": "de"}
    assert config.state_dir == Path("/var/lib/edgefed")
    assert config.report_interval == 5


def test_flags_alone():
    config = parse("--broker", "mqtt://b:1883", "--site", "s1", "--node", "n1",
                   "--labels", "tier=edge, gpu=true", "--cpu", "1500m", "--memory", "1Gi",
                   "--container-label", "team=ops", "--keepalive", "2")
    assert config.keepalive == 2
    assert config.labels == {"tier": "edge", "gpu": "true"}
    assert (config.cpu_millis, config.memory_bytes) == (1500, 1024**3)
    assert config.container_labels == {"team": "ops"}


@pytest.mark.parametrize(
    ("argv", "yaml_text", "message"),
    [
        (["--site", "s"], None, "--broker is required"),
        (["--broker", "mqtt://b", "--site", "s", "--node", "bad/name"], None,
         "node 'bad/name': use letters, digits"),
        (["--broker", "mqtt://b", "--site", "s", "--labels", "tier"], None,
         "label 'tier' must be written key=value"),
        (["--broker", "mqtt://b", "--site", "s", "--cpu", "lots"], None,
         "'lots' is not a cpu quantity"),
        ([], "broker: mqtt://b\nsite: s\nsight: typo\n", "unknown setting(s) sight"),
        ([], "- a list\n", "expected a mapping of settings"),
        ([], "broker: [unclosed\n", "not valid YAML"),
        (["--broker", "mqtt://b", "--site", "s", "--keepalive", "0"], None,
         "keepalive must be a whole number of seconds from 1 to 3600"),
        (["--broker", "mqtt://b", "--site", "s", "--device", "gpu"], None,
         "--device 'gpu' must be written KIND=COUNT"),
        (["--broker", "mqtt://b", "--site", "s", "--device", "/gpu=1"], None,
         "device '/gpu': expected a device kind like nvidia.com/gpu"),
        ([], "broker: mqtt://b\nsite: s\ndevices: {nvidia.com/gpu: -1}\n",
         "device nvidia.com/gpu: the count must be an integer from 0 to 1000000"),
        ([], "broker: mqtt://b\nsite: s\ndevices: [gpu]\n",
         "devices must be a mapping of kind to count"),
    ],
)
def test_errors_name_the_setting(tmp_path, argv, yaml_text, message):
    if yaml_text is not None:
        path = tmp_path / "agent.yaml"
        path.write_text(yaml_text)
        argv = ["--config", str(path), *argv]
    with pytest.raises(ConfigError) as err:
        parse(*argv)
    assert message in str(err.value)


def test_devices_from_flags_and_file(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("broker: mqtt://b\nsite: s\ndevices: {example.com/tpu: 2, nvidia.com/gpu: 1}\n")
    config = parse("--config", str(path), "--device", "nvidia.com/gpu=4")
    assert config.devices == {"example.com/tpu": 2, "nvidia.com/gpu": 4}


def test_devices_found_in_dev_and_declared_over_them(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"):
        (dev / name).touch()
    assert detected_devices(dev) == {"nvidia.com/gpu": 2}
    assert devices({}, dev) == {"nvidia.com/gpu": 2}
    assert devices({"nvidia.com/gpu": 0, "example.com/tpu": 1}, dev) == {"example.com/tpu": 1}
    assert detected_devices(tmp_path / "missing") == {}


def test_parse_labels_skips_empty_items():
    assert parse_labels("a=1,,b=2,") == {"a": "1", "b": "2"}
