"""What every round reads off the nodes, kept between scheduling passes.

A round needs, for every node, its name, site and labels, its allocatable and
reported usage, devices, state, runtime and images, and a hash of its name.
Reading them off 50,000 ``Node`` objects takes a few tenths of a second, and the
controller builds a round on every pass. A :class:`Fleet` keeps them as columns.
Nodes are immutable and replaced on every change (a capacity report, a state
change), so :meth:`Fleet.refresh` compares each node with the one it holds, by
identity, and reads again only the rows whose node was replaced.

What the nodes' names, sites and labels give (the :class:`Layout`: site labels,
site index, taints, hashes, and the label columns encoded so far) changes only
when a node joins, leaves or is relabelled, and a new layout is built then. A
row whose node reports a label it did not have before is a relabelling: its
site's labels and the taints may change with it.

A fleet built from nothing and a kept one that saw the same nodes hold the same
columns; ``Round(nodes)`` builds one from nothing, ``Round(nodes, fleet=...)``
refreshes the one it is given.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from federation.inventory import Node, NodeState, common_labels
from federation.scheduling.request import Scope
from federation.wire import Capacity
from policies.model import TaintEffect

Bools = NDArray[np.bool_]
Ints = NDArray[np.int64]
Floats = NDArray[np.float64]

TAINT_PREFIX = "taint.edgefed.io/"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: TaintEffect

    def describe(self) -> str:
        return f"{self.key}={self.value}:{self.effect.value}"


def parse_taint(label: str, text: str) -> Taint | None:
    """``taint.edgefed.io/<key>`` = ``<value>:<Effect>``; None if it is not one."""
    value, sep, effect = text.rpartition(":")
    if not label.startswith(TAINT_PREFIX) or not sep:
        return None
    try:
        return Taint(key=label[len(TAINT_PREFIX):], value=value, effect=TaintEffect(effect))
    except ValueError:
        return None


@dataclass(slots=True)
class LabelColumn:
    """One label key over every node: value codes (-1: absent) and the vocabulary."""

    codes: Ints
    values: list[str]
    index: dict[str, int]

    def code(self, value: str) -> int:
        return self.index.get(value, -2)  # -2 matches no node, not even unlabelled ones


@dataclass(slots=True)
class Layout:
    """The nodes' names, sites and labels and what follows from them alone. Never
    changed once built, except that label columns, numeric label columns and
    domains are added as rounds first ask for them (each a function of the layout)."""

    names: list[str]
    sites_of: list[str]  # per row
    index: dict[str, int]
    labels: list[dict[str, str]]
    reported: list[bool]  # the node has sent a capacity report (its labels count for its site)
    site_labels: dict[str, dict[str, str]]
    sites: list[str]
    site_idx: Ints
    site_label_rows: list[dict[str, str]]
    hashes: NDArray[np.uint64]
    taints: dict[Taint, Bools]
    columns: dict[tuple[str, str], LabelColumn] = field(default_factory=dict)
    numbers: dict[str, Floats] = field(default_factory=dict)
    domains: dict[Scope, tuple[Ints, int]] = field(default_factory=dict)


@functools.lru_cache(maxsize=1 << 18)
def _hash64(text: str) -> int:
    """Of a node name, for the tie-break; remembered, since a new layout asks again."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _layout(nodes: Sequence[Node], labels: list[dict[str, str]]) -> Layout:
    reported = [n.capacity is not None for n in nodes]
    by_site: dict[str, list[dict[str, str]]] = {}
    for n, own, known in zip(nodes, labels, reported, strict=True):
        rows = by_site.setdefault(n.site, [])
        if known:  # what site_labels counts
            rows.append(own)
    site_labels = {s: common_labels(s, rows) for s, rows in by_site.items()}
    sites = list(by_site)
    site_index = {s: i for i, s in enumerate(sites)}
    names = [n.name for n in nodes]
    site_idx = np.array([site_index[n.site] for n in nodes], dtype=np.int64)
    return Layout(names=names, sites_of=[n.site for n in nodes],
                  index={name: i for i, name in enumerate(names)}, labels=labels,
                  reported=reported, site_labels=site_labels, sites=sites, site_idx=site_idx,
                  site_label_rows=[site_labels[n.site] for n in nodes],
                  hashes=np.array([_hash64(name) for name in names], dtype=np.uint64),
                  taints=_taints(labels, sites, site_labels, site_idx))


def _taints(labels: list[dict[str, str]], sites: list[str],
            site_labels: dict[str, dict[str, str]], site_idx: Ints) -> dict[Taint, Bools]:
    """Which nodes carry each distinct taint (from node and site labels; a site's
    labels are read once and given to its nodes)."""
    out: dict[Taint, Bools] = {}

    def mark(own: Mapping[str, str], rows: int | Bools) -> None:
        for key, text in own.items():
            if key.startswith(TAINT_PREFIX) and (taint := parse_taint(key, text)):
                if taint not in out:
                    out[taint] = np.zeros(len(labels), dtype=np.bool_)
                out[taint][rows] = True

    for i, own in enumerate(labels):
        if TAINT_PREFIX in "\n".join(own):  # most nodes have no taint label at all
            mark(own, i)
    for s, site in enumerate(sites):
        mark(site_labels[site], site_idx == s)
    return out


_NO_DEVICES: Mapping[str, int] = {}


def _resources(cap: Capacity | None) -> tuple[int, int, int, int, int, int]:
    """Allocatable cpu, memory and disk, then what the node's instances request."""
    if cap is None:
        return 0, 0, 0, 0, 0, 0
    alloc, used = cap.allocatable, cap.used
    return (alloc.cpu_millis, alloc.memory_bytes, alloc.disk_bytes,
            used.cpu_millis, used.memory_bytes, used.disk_bytes)


@dataclass
class Fleet:
    """The columns of the nodes last seen by :meth:`refresh`, one row per node in the
    order given. Rows are rewritten in place: a round copies the columns and shares
    only the layout, which is replaced, never changed, when the nodes' labels are."""

    nodes: list[Node] = field(default_factory=list)
    layout: Layout | None = None
    alloc_cpu: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    alloc_mem: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    alloc_disk: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # As reported (0 for a node that has not reported): what its instances request.
    used_cpu: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    used_mem: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    used_disk: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    devices: dict[str, Ints] = field(default_factory=dict)  # reported, per kind
    ready: Bools = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    states: list[str] = field(default_factory=list)
    process_runtime: Bools = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    images: list[Sequence[str]] = field(default_factory=list)
    # How the last refresh went: rows read again, and whether the layout was rebuilt;
    # and since the fleet was made: refreshes, layouts built, rows read.
    rows_read: int = 0
    relaid: bool = False
    refreshes: int = 0
    layouts: int = 0
    rows_total: int = 0

    def refresh(self, nodes: Sequence[Node]) -> Fleet:
        """Make the columns those of ``nodes``: every row read again when a node
        joined, left, moved in the order or was relabelled, otherwise only the rows
        of replaced nodes."""
        nodes = list(nodes)
        self.refreshes += 1
        held, layout = self.nodes, self.layout
        if layout is None or len(nodes) != len(held):
            self._read_all(nodes)
            return self
        changed = list(itertools.compress(range(len(nodes)), map(operator.is_not, nodes, held)))
        replaced = [nodes[i] for i in changed]
        if any(n.name != layout.names[i] or (n.capacity is not None) != layout.reported[i]
               or n.labels != layout.labels[i] for i, n in zip(changed, replaced, strict=True)):
            self._read_all(nodes)
            return self
        self.nodes = nodes
        self._read_rows(changed, replaced)
        self.relaid = False
        return self

    def _read_all(self, nodes: list[Node]) -> None:
        size = len(nodes)
        self.nodes = nodes
        self.layout = _layout(nodes, [n.labels for n in nodes])
        self.layouts += 1
        self.alloc_cpu, self.alloc_mem, self.alloc_disk, self.used_cpu, self.used_mem, \
            self.used_disk = (np.zeros(size, dtype=np.int64) for _ in range(6))
        self.devices = {}
        self.ready = np.zeros(size, dtype=np.bool_)
        self.process_runtime = np.zeros(size, dtype=np.bool_)
        self.states = [""] * size
        self.images = [()] * size
        self._read_rows(range(size), nodes)
        self.relaid = True

    def _read_rows(self, rows: Sequence[int], nodes: list[Node]) -> None:
        """Read ``nodes`` into ``rows``, a numpy assignment per column."""
        self.rows_read = len(rows)
        self.rows_total += len(rows)
        if not rows:
            return
        at = np.asarray(rows, dtype=np.int64)
        values = np.array([_resources(n.capacity) for n in nodes],
                          dtype=np.int64).reshape(len(nodes), 6)
        for k, column in enumerate((self.alloc_cpu, self.alloc_mem, self.alloc_disk,
                                    self.used_cpu, self.used_mem, self.used_disk)):
            column[at] = values[:, k]
        self.ready[at] = [n.state is NodeState.READY for n in nodes]
        self.process_runtime[at] = [n.capacity is not None and n.capacity.runtime == "process"
                                    for n in nodes]
        states, images = self.states, self.images
        for i, n in zip(rows, nodes, strict=True):
            states[i] = n.state.value
            images[i] = n.capacity.images if n.capacity is not None else ()
            if self.devices or (n.capacity is not None and n.capacity.devices):
                self._read_devices(i, n.capacity.devices if n.capacity else _NO_DEVICES)

    def _read_devices(self, i: int, reported: Mapping[str, int]) -> None:
        for kind in [*self.devices, *(k for k in reported if k not in self.devices)]:
            count = reported.get(kind, 0)
            if count:
                self._device(kind)[i] = count
            elif kind in self.devices and self.devices[kind].item(i):
                self.devices[kind][i] = 0
                if not self.devices[kind].any():
                    del self.devices[kind]  # a kind no node has is not kept

    def _device(self, kind: str) -> Ints:
        if kind not in self.devices:
            self.devices[kind] = np.zeros(len(self.nodes), dtype=np.int64)
        return self.devices[kind]
