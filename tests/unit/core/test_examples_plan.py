"""Every example in policies/examples/ loads, validates and plans against a test
inventory of six sites, and lands where its comment says it should."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from federation import wire
from federation.inventory import Node, NodeState
from federation.planning import PlannedSlot, dry_run, unenforced
from policies.loader import load_file
from policies.merge import effective_deployment

EXAMPLES = Path(__file__).resolve().parents[3] / "policies" / "examples"
GiB = 1024**3

# (node, site, arch, runtime, labels, devices)
INVENTORY = [
    ("pi-berlin-1", "factory-berlin", "arm64", "docker",
     {"tier": "edge", "country": "de", "region": "eu-central", "provider": "onprem"},
     {"nvidia.com/gpu": 1}),
    ("pi-berlin-2", "factory-berlin", "arm64", "docker",
     {"tier": "edge", "country": "de", "region": "eu-central", "provider": "onprem"}, {}),
    ("box-paris-1", "shop-paris", "arm64", "docker",
     {"tier": "edge", "country": "fr", "region": "eu-west", "provider": "onprem"},
     {"nvidia.com/gpu": 1}),
    ("vm-dublin-1", "aws-eu-west-1", "amd64", "docker",
     {"tier": "cloud", "country": "ie", "region": "eu-west", "provider": "aws"}, {}),
    ("vm-virginia-1", "aws-us-east-1", "amd64", "docker",
     {"tier": "cloud", "country": "us", "region": "us-east", "provider": "aws"}, {}),
    ("vm-frankfurt-1", "gcp-europe-west3", "amd64", "docker",
     {"tier": "cloud", "country": "de", "region": "eu-central", "provider": "gcp"}, {}),
]


def inventory() -> list[Node]:
    nodes = []
    for name, site, arch, runtime, labels, devices in INVENTORY:
        capacity = wire.Capacity(
            site=site, arch=arch, os="linux", runtime=runtime, labels=labels,
            allocatable=wire.Resources(cpu_millis=4000, memory_bytes=8 * GiB, disk_bytes=0),
            used=wire.Resources(cpu_millis=0, memory_bytes=0, disk_bytes=0),
            images=(), instances=(), devices=devices)
        nodes.append(Node(name=name, site=site, epoch="e", online=True, state=NodeState.READY,
                          state_since=0.0, last_seen=0.0, capacity=capacity))
    return nodes


def plan(example: str) -> dict[str, list[PlannedSlot]]:
    loaded = load_file(EXAMPLES / example)
    nodes = inventory()
    out = {}
    for deployment in loaded.deployments:
        effective, _ = effective_deployment(deployment, loaded.policies)
        out[deployment.name] = dry_run(effective, nodes, {}, {})
        assert len(out[deployment.name]) == deployment.replicas
        assert all(isinstance(w, str) for w in unenforced(effective))
    return out


def labels_of(node: str) -> dict[str, str]:
    return next(row[4] for row in INVENTORY if row[0] == node)


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_loads_and_plans(example: str) -> None:
    planned = plan(example)
    assert planned, f"{example} defines no deployment"
    for slots in planned.values():
        for slot in slots:
            assert slot.message  # placed or not, the decision explains itself


def test_seed_examples_spread_over_sites() -> None:
    for example in ("seed-kubernetes.yaml", "seed-compose.yaml"):
        slots = plan(example)["myapp"]
        assert all(s.node for s in slots)
        assert len({s.site for s in slots}) == 3


def test_eu_residency_keeps_every_replica_in_allowed_countries() -> None:
    slots = plan("eu-data-residency.yaml")["patient-records"]
    assert all(s.node for s in slots)
    assert {labels_of(s.node)["country"] for s in slots if s.node} <= {"de", "fr"}


def test_gpu_inference_needs_the_gpu_nodes() -> None:
    slots = plan("gpu-inference-edge.yaml")["inference"]
    placed = sorted(s.node for s in slots if s.node)
    assert placed == ["box-paris-1", "pi-berlin-1"]
    unplaced = [s for s in slots if s.node is None]
    assert len(unplaced) == 1 and "insufficient nvidia.com/gpu" in unplaced[0].message


def test_singleton_runs_once_at_its_site() -> None:
    slots = plan("singleton-fencing.yaml")["plc-controller"]
    assert [(s.slot, s.site) for s in slots] == [(0, "factory-berlin")]


def test_spread_example_respects_max_per_site_and_one_per_node() -> None:
    slots = plan("spread-two-clouds-and-edge.yaml")["message-relay"]
    placed = [s for s in slots if s.node]
    assert len(placed) == 6
    assert max(Counter(s.site for s in placed).values()) <= 2
    assert len({s.node for s in placed}) == 6
