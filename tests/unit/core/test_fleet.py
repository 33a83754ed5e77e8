"""The columns kept between passes (``Fleet``): after any run of reports, state
changes, relabellings, joins, leaves and reorderings, a round made from the kept
fleet holds what a round built from the nodes alone holds, and a report reads
only its own row."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from federation import wire
from federation.inventory import Node, NodeState
from federation.scheduler import Request, Round, Scope, Usage, place
from federation.scheduling.fleet import Fleet
from policies.model import Selector, Toleration

MiB = 1024**2
SITE_LABELS = {"s1": {"region": "eu"}, "s2": {"region": "eu"}, "s3": {"region": "us"}}
GPU = "nvidia.com/gpu"


def capacity(site: str, cpu: int, used: int, gpus: int, runtime: str, images: tuple[str, ...],
             taint: str | None) -> wire.Capacity:
    labels = dict(SITE_LABELS[site])
    if taint:
        labels["taint.edgefed.io/dedicated"] = taint
    return wire.Capacity(
        site=site, arch="arm64", os="linux", runtime=runtime, labels=labels,
        allocatable=wire.Resources(cpu_millis=cpu, memory_bytes=cpu * MiB, disk_bytes=cpu),
        used=wire.Resources(cpu_millis=used, memory_bytes=used * MiB, disk_bytes=used),
        images=images, instances=(), devices={GPU: gpus} if gpus else {})


capacities = st.builds(
    capacity, st.sampled_from(sorted(SITE_LABELS)), st.integers(0, 4000), st.integers(0, 2000),
    st.integers(0, 2), st.sampled_from(["docker", "docker", "process"]),
    st.sampled_from([(), ("web:1",), ("web:1", "db:2")]),
    st.sampled_from([None, None, "gpu:NoSchedule", "gpu:PreferNoSchedule"]))
states = st.sampled_from([NodeState.READY, NodeState.READY, NodeState.SUSPECT, NodeState.LOST])


def make_node(name: str, cap: wire.Capacity | None, state: NodeState) -> Node:
    return Node(name=name, site=cap.site if cap else "s1", epoch="e",
                online=state is NodeState.READY, state=state, state_since=0.0, last_seen=0.0,
                capacity=cap)


def node_strategy(name: str) -> st.SearchStrategy[Node]:
    return st.builds(make_node, st.just(name), st.one_of(st.none(), capacities, capacities),
                     states)


fleets = st.lists(st.sampled_from([f"n{i}" for i in range(12)]), min_size=1, max_size=8,
                  unique=True).flatmap(lambda names: st.tuples(*map(node_strategy, names)))

# (what happens, which node by position, a fresh capacity, a state)
changes = st.lists(st.tuples(
    st.sampled_from(["report", "report", "report", "state", "relabel", "join", "leave", "swap"]),
    st.integers(0, 20), capacities, states), min_size=1, max_size=10)

commitments = st.dictionaries(
    st.sampled_from([f"n{i}" for i in range(14)]),
    st.builds(lambda cpu, gpus, port: Usage(cpu_millis=cpu, memory_bytes=cpu * MiB,
                                            disk_bytes=cpu, devices={GPU: gpus} if gpus else {},
                                            host_ports=frozenset({port}) if port else frozenset()),
              st.integers(0, 3000), st.integers(0, 2), st.sampled_from([None, 80])),
    max_size=5)


def apply(nodes: list[Node], what: str, at: int, cap: wire.Capacity,
          state: NodeState) -> list[Node]:
    nodes = list(nodes)
    i = at % len(nodes)
    node = nodes[i]
    if what == "report":  # new usage, images and devices, the same labels where it had some
        if node.capacity is not None:
            cap = replace(cap, site=node.capacity.site, labels=node.capacity.labels,
                          runtime=node.capacity.runtime)
        nodes[i] = replace(node, capacity=cap, site=cap.site)
    elif what == "state":
        nodes[i] = replace(node, state=state)
    elif what == "relabel" and node.capacity is not None:
        labels = {**node.capacity.labels, "tier": f"t{at}"}
        nodes[i] = replace(node, capacity=replace(node.capacity, labels=labels))
    elif what == "join" and len(nodes) < 12:
        nodes.append(make_node(f"j{at}", cap, state))
    elif what == "leave" and len(nodes) > 1:
        del nodes[i]
    elif what == "swap":
        j = (at // 2) % len(nodes)
        nodes[i], nodes[j] = nodes[j], nodes[i]
    return nodes


def columns(rnd: Round) -> dict[str, Any]:
    """Everything a round reads off its nodes, as plain values."""
    return {
        "names": rnd.node_names, "sites": rnd.node_sites, "index": rnd.index,
        "labels": rnd.node_labels, "site_labels": rnd.site_labels, "site_list": rnd.sites,
        "site_idx": rnd.site_idx.tolist(), "hash": rnd.node_hash.tolist(),
        "taints": {t.describe(): m.tolist() for t, m in rnd.taints.items()},
        "ready": rnd.ready.tolist(), "states": rnd.states,
        "process": rnd.process_runtime.tolist(), "images": [list(i) for i in rnd.images],
        **{name: getattr(rnd, name).tolist() for name in (
            "alloc_cpu", "alloc_mem", "alloc_disk", "free_cpu", "free_mem", "free_disk",
            "used_cpu", "used_mem", "room", "per_cpu", "per_mem")},
        "devices": {k: v.tolist() for k, v in rnd.devices.items() if v.any()},
        "ports": {k: v.tolist() for k, v in rnd.ports.items()},
        "by_name": rnd.by_name,
    }


def encoded(rnd: Round) -> dict[str, Any]:
    """The label columns and domains, which a layout keeps once a round asks."""
    out: dict[str, Any] = {}
    for key in ("region", "tier", "taint.edgefed.io/dedicated", "arch"):
        for of in ("node", "site"):
            column = rnd.codes(key, of=of)
            out[f"{of}:{key}"] = (column.codes.tolist(), column.values)
    for scope in (Scope.NODE, Scope.SITE, Scope.REGION):
        index, size = rnd.domain(scope)
        out[f"domain:{scope.value}"] = (index.tolist(), size)
    return out


@settings(max_examples=150, deadline=None)
@given(first=fleets, steps=changes, committed=commitments)
def test_a_round_from_the_kept_fleet_is_a_round_from_the_nodes(
        first: tuple[Node, ...], steps: list[tuple[str, int, wire.Capacity, NodeState]],
        committed: dict[str, Usage]) -> None:
    fleet = Fleet()
    nodes = list(first)
    encoded(Round(nodes=nodes, fleet=fleet))  # encodes label columns into the layout
    for what, at, cap, state in steps:
        nodes = apply(nodes, what, at, cap, state)
        kept = Round(nodes=nodes, committed=committed, fleet=fleet)
        fresh = Round(nodes=nodes, committed=committed)
        assert columns(kept) == columns(fresh)
        assert encoded(kept) == encoded(fresh)


def test_a_report_reads_its_own_row_and_a_relabelling_the_whole_layout() -> None:
    cap = capacity("s1", 2000, 0, 0, "docker", (), None)
    nodes = [make_node(f"n{i}", cap, NodeState.READY) for i in range(5)]
    fleet = Fleet()
    Round(nodes=nodes, fleet=fleet)
    assert (fleet.rows_read, fleet.relaid) == (5, True)
    layout = fleet.layout

    Round(nodes=list(nodes), fleet=fleet)  # nothing new
    assert (fleet.rows_read, fleet.relaid, fleet.layout) == (0, False, layout)

    nodes[3] = replace(nodes[3], capacity=replace(cap, used=wire.Resources(
        cpu_millis=1500, memory_bytes=0, disk_bytes=0)))
    nodes[4] = replace(nodes[4], state=NodeState.SUSPECT)
    rnd = Round(nodes=nodes, fleet=fleet)
    assert (fleet.rows_read, fleet.relaid, fleet.layout) == (2, False, layout)
    assert rnd.free_cpu.tolist() == [2000, 2000, 2000, 500, 2000]
    assert rnd.ready.tolist() == [True, True, True, True, False]

    tainted = replace(cap, labels={**cap.labels, "taint.edgefed.io/dedicated": "gpu:NoSchedule"})
    nodes[0] = replace(nodes[0], capacity=tainted)
    rnd = Round(nodes=nodes, fleet=fleet)
    assert fleet.relaid and fleet.layout is not layout
    assert [t.describe() for t in rnd.taints] == ["dedicated=gpu:NoSchedule"]
    # since it was made: four refreshes, two layouts, 5 + 0 + 2 + 5 rows
    assert (fleet.refreshes, fleet.layouts, fleet.rows_total) == (4, 2, 12)


def test_a_round_made_before_a_refresh_keeps_its_columns() -> None:
    """A round reads the columns it was made with, whatever the fleet reads later."""
    cap = capacity("s1", 2000, 0, 1, "docker", ("web:1",), None)
    nodes = [make_node(f"n{i}", cap, NodeState.READY) for i in range(3)]
    fleet = Fleet()
    before = Round(nodes=nodes, fleet=fleet)
    snapshot = columns(before)
    nodes[1] = replace(nodes[1], state=NodeState.LOST,
                       capacity=replace(cap, used=wire.Resources(
                           cpu_millis=2000, memory_bytes=0, disk_bytes=0), devices={},
                           images=()))
    Round(nodes=nodes, fleet=fleet)
    assert fleet.rows_read == 1
    assert columns(before) == snapshot


def test_replicas_placed_from_a_kept_fleet_go_where_a_fresh_round_puts_them() -> None:
    caps = [capacity(site, cpu, 0, gpus, "docker", (), taint) for site, cpu, gpus, taint in (
        ("s1", 4000, 0, None), ("s2", 2000, 1, "gpu:NoSchedule"), ("s3", 3000, 0, None),
        ("s1", 1000, 2, "gpu:NoSchedule"))]
    nodes = [make_node(f"n{i}", cap, NodeState.READY) for i, cap in enumerate(caps)]
    fleet = Fleet()
    Round(nodes=nodes, fleet=fleet)
    nodes[0] = replace(nodes[0], capacity=replace(caps[0], used=wire.Resources(
        cpu_millis=3500, memory_bytes=0, disk_bytes=0)))
    nodes[2] = replace(nodes[2], state=NodeState.SUSPECT)
    reqs = [Request(deployment=dep, slot=slot, generation=1, labels={"app": dep},
                    cpu_millis=400, memory_bytes=64 * MiB, devices=devices,
                    tolerations=(Toleration(key="dedicated", value="gpu"),) if devices else (),
                    node_selector=Selector())
            for slot in range(4) for dep, devices in (("web", {}), ("ml", {GPU: 1}))]
    kept, fresh = Round(nodes=nodes, fleet=fleet), Round(nodes=nodes)
    assert fleet.rows_read == 2
    placed = [(place(req, kept).node, place(req, fresh).node) for req in reqs]
    assert [a for a, _ in placed] == [b for _, b in placed]
    assert "n2" not in {a for a, _ in placed}  # Suspect since the fleet was made
    assert np.count_nonzero(kept.devices[GPU]) == 0  # every gpu taken
