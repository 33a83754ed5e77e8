"""The inventory of one scheduling pass as columns: one numpy array per fact,
one row per node, made once per :class:`Round` (from the columns a ``Fleet``
keeps between passes, see ``fleet.py``) and updated in place when a replica is
reserved, so a placement costs a few array operations instead of a Python loop
over every node.

Labels are encoded per key on first use: ``codes(key)`` gives each node the
index of its value in the key's vocabulary (-1: no such label), so a selector is
a handful of integer comparisons. Counts of replicas per deployment are kept
per node and per site/region/provider domain for the spread, limit and
affinity plugins.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from federation.inventory import Node
from federation.scheduling.fleet import Bools as Bools
from federation.scheduling.fleet import Fleet, LabelColumn
from federation.scheduling.fleet import Floats as Floats
from federation.scheduling.fleet import Ints as Ints
from federation.scheduling.fleet import Taint as Taint
from federation.scheduling.request import Apart, Request, RttSource, Scope, Usage
from policies.model import Selector

DATA_PREFIX = "data.edgefed.io/"
PRICE_LABEL = "price"


@dataclass(slots=True)
class Counts:
    """Replicas of one deployment per node and per domain of each scope (the last
    cell of a domain array is the bucket of nodes without the label; never read).
    ``spread_sites`` is the spread-sites score of each site, region and provider domain,
    100 / (1 + replicas there) (the last cell 0: nodes without the label), kept with
    the counts so a placement rewrites one cell per scope."""

    node: Ints
    domains: dict[Scope, Ints]
    spread_sites: dict[Scope, Floats]
    cells: list[tuple[Ints, int, Ints, Floats]]  # per scope: domains, size, counts, scores


@dataclass(slots=True)
class Row:
    """One node's resource columns as Python numbers, read when a reservation changes
    them. Kept scores are caught up at the rows reserved since from here: one object
    instead of a cell of each column (on a big fleet, a cache miss each)."""

    free_cpu: int
    free_mem: int
    used_cpu: int
    used_mem: int
    alloc_cpu: int
    alloc_mem: int
    room: float
    per_cpu: float
    per_mem: float


@dataclass
class Round:
    """Candidate nodes and their committed usage for one scheduling pass.

    ``committed`` is what the controller has already assigned to each node
    (desired state), so capacity reports lagging behind commands do not let a
    node be over-committed. ``placed`` counts replicas per deployment and node;
    ``deployment_labels`` holds the labels affinity rules match and
    ``deployment_apart`` each deployment's required anti-affinity terms: a replica
    may not land where it would break the terms of replicas already there, as
    their own replicas may not land next to what they shun. ``rtt`` gives
    round-trip times from user locations (None: every RTT unknown). ``fleet``
    holds the nodes' columns from the last round made with it, and is refreshed
    from ``nodes``; without one, every node is read.
    """

    nodes: Sequence[Node]
    committed: dict[str, Usage] = field(default_factory=dict)
    placed: dict[str, Counter[str]] = field(default_factory=dict)
    deployment_labels: dict[str, Mapping[str, str]] = field(default_factory=dict)
    deployment_apart: dict[str, tuple[Apart, ...]] = field(default_factory=dict)
    # Reserved by placements in this round: always on top of what is already used.
    reserved: dict[str, Usage] = field(default_factory=dict)
    rtt: RttSource | None = None

    # The columns kept from the last pass (see ``fleet.py``), refreshed from ``nodes``;
    # None: read every node.
    fleet: Fleet | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        nodes = list(self.nodes)
        self.nodes = nodes
        kept = (self.fleet or Fleet()).refresh(nodes)
        layout = kept.layout
        assert layout is not None
        self.node_names = layout.names
        self.node_sites = layout.sites_of
        self.by_name = dict(zip(layout.names, nodes, strict=True))
        self.index = layout.index
        self.node_labels = layout.labels
        self.site_labels = layout.site_labels
        self.sites = layout.sites
        self.site_idx = layout.site_idx
        self._site_label_rows = layout.site_label_rows
        self._columns = layout.columns  # encoded once per layout, as rounds ask
        self._numbers = layout.numbers
        self._domains = layout.domains
        self._counts: dict[str, Counts] = {}
        self._rtt: dict[str, Floats] = {}
        self.cache: dict[Any, Any] = {}  # per-deployment results that hold for the round
        # The node of every reservation, in order: vectors kept in ``cache`` that change
        # only on the node a replica takes are rewritten at the rows reserved since.
        self.touched: list[int] = []
        self._rows: dict[int, Row] = {}  # the rows reserved on, as they are now
        # Bumped whenever a deployment joins or leaves ``placed`` (``unreserve`` can
        # take the last replica off): what ``matching`` remembers is keyed by it.
        self.membership = 0
        self._build_resources(kept, layout.reported)
        self.ready = kept.ready.copy()
        self.states = list(kept.states)
        self.process_runtime = kept.process_runtime.copy()
        # As reported: asked once per image and round (image-locality).
        self.images: list[Sequence[str]] = list(kept.images)
        self.node_hash = layout.hashes
        self.taints = layout.taints

    # -- building -----------------------------------------------------------------

    def _build_resources(self, kept: Fleet, reported: list[bool]) -> None:
        """The fleet's columns, with the committed usage on top: where the controller
        has assigned more than a node reports, the assignment counts (a row not
        ``reported`` yet counts only its assignment)."""
        self.devices: dict[str, Ints] = {kind: column.copy()
                                         for kind, column in kept.devices.items()}
        self.ports: dict[int, Bools] = {}
        self.alloc_cpu, self.alloc_mem, self.alloc_disk = (
            kept.alloc_cpu.copy(), kept.alloc_mem.copy(), kept.alloc_disk.copy())
        used_cpu, used_mem, used_disk = (
            kept.used_cpu.copy(), kept.used_mem.copy(), kept.used_disk.copy())
        for name, mine in self.committed.items():
            i = self.index.get(name)
            if i is None:
                continue
            if reported[i]:
                used_cpu[i] = max(mine.cpu_millis, used_cpu.item(i))
                used_mem[i] = max(mine.memory_bytes, used_mem.item(i))
                used_disk[i] = max(mine.disk_bytes, used_disk.item(i))
            else:
                used_cpu[i], used_mem[i], used_disk[i] = (
                    mine.cpu_millis, mine.memory_bytes, mine.disk_bytes)
            for kind, count in mine.devices.items():
                self._device(kind)[i] -= count
            for port in mine.host_ports:
                self._port(port)[i] = True
        self.free_cpu = self.alloc_cpu - used_cpu
        self.free_mem = self.alloc_mem - used_mem
        self.free_disk = self.alloc_disk - used_disk
        # Free cpu and memory as shares of allocatable, averaged over the dimensions
        # the node has (least-allocated reads it; kept up to date by _take).
        cores, bytes_ = self.alloc_cpu.astype(np.float64), self.alloc_mem.astype(np.float64)
        parts = np.maximum(np.asarray(cores > 0, dtype=np.float64) + (bytes_ > 0), 1.0)
        with np.errstate(divide="ignore"):
            self.per_cpu = np.where(cores > 0, 1.0 / cores, 0.0) / parts
            self.per_mem = np.where(bytes_ > 0, 1.0 / bytes_, 0.0) / parts
        self.room = self.free_cpu * self.per_cpu + self.free_mem * self.per_mem
        # allocatable - free, kept by _take (balanced reads it)
        self.used_cpu, self.used_mem = used_cpu, used_mem
        for name, usage in self.reserved.items():
            if name in self.index:
                self._take(self.index[name], usage)

    def _device(self, kind: str) -> Ints:
        if kind not in self.devices:
            self.devices[kind] = np.zeros(len(self.nodes), dtype=np.int64)
        return self.devices[kind]

    def _port(self, port: int) -> Bools:
        if port not in self.ports:
            self.ports[port] = np.zeros(len(self.nodes), dtype=np.bool_)
        return self.ports[port]

    def _take(self, i: int, usage: Usage | Request, sign: int = 1) -> None:
        """Hold ``usage`` on row ``i`` (``sign`` -1: give it back; a host port given
        back stays taken where committed work holds it)."""
        # In Python numbers from the row as read (an int times a float is the float
        # of the int times the float, as numpy has it), written back cell by cell.
        was = self.row(i)
        cpu, mem = sign * usage.cpu_millis, sign * usage.memory_bytes
        free_cpu, free_mem = was.free_cpu - cpu, was.free_mem - mem
        now = Row(free_cpu, free_mem, was.used_cpu + cpu, was.used_mem + mem, was.alloc_cpu,
                  was.alloc_mem, free_cpu * was.per_cpu + free_mem * was.per_mem, was.per_cpu,
                  was.per_mem)
        self._rows[i] = now
        self.free_cpu[i], self.free_mem[i] = free_cpu, free_mem
        self.used_cpu[i], self.used_mem[i] = now.used_cpu, now.used_mem
        self.room[i] = now.room
        if usage.disk_bytes:
            self.free_disk[i] -= sign * usage.disk_bytes
        for kind, count in usage.devices.items():
            self._device(kind)[i] -= sign * count
        for port in usage.host_ports:
            self._port(port)[i] = sign > 0 or \
                port in self.committed.get(self.node_names[i], _EMPTY).host_ports

    def row(self, i: int) -> Row:
        """Row ``i``'s resource columns as they are now."""
        found = self._rows.get(i)
        if found is None:
            found = self._rows[i] = Row(
                free_cpu=self.free_cpu.item(i), free_mem=self.free_mem.item(i),
                used_cpu=self.used_cpu.item(i), used_mem=self.used_mem.item(i),
                alloc_cpu=self.alloc_cpu.item(i), alloc_mem=self.alloc_mem.item(i),
                room=self.room.item(i), per_cpu=self.per_cpu.item(i),
                per_mem=self.per_mem.item(i))
        return found

    # -- labels ---------------------------------------------------------------------

    def codes(self, key: str, *, of: str = "node", fold: bool = False) -> LabelColumn:
        """The column of label ``key`` of each node (``of="site"``: of its site),
        values case-folded when ``fold``."""
        cache_key = (f"{of}{'/fold' if fold else ''}", key)
        column = self._columns.get(cache_key)
        if column is None:
            rows = self.node_labels if of == "node" else self._site_label_rows
            index: dict[str, int] = {}
            codes = np.empty(len(rows), dtype=np.int64)
            for i, labels in enumerate(rows):
                value = labels.get(key)
                if value is None:
                    codes[i] = -1
                    continue
                if fold:
                    value = value.casefold()
                codes[i] = index.setdefault(value, len(index))
            column = LabelColumn(codes=codes, values=list(index), index=index)
            self._columns[cache_key] = column
        return column

    def numbers(self, key: str, *, of: str = "node") -> Floats:
        """Label ``key`` as a number per node; nan where absent or not a number."""
        cache_key = f"{of}:{key}"
        if cache_key not in self._numbers:
            column = self.codes(key, of=of)
            table = np.array([_number(v) for v in column.values] + [np.nan], dtype=np.float64)
            self._numbers[cache_key] = table[column.codes]  # code -1 reads the nan at the end
        return self._numbers[cache_key]

    def domain(self, scope: Scope) -> tuple[Ints, int]:
        """Each node's domain index at ``scope`` and the number of domains; nodes
        without the scope's label are in the extra last domain."""
        cached = self._domains.get(scope)
        if cached is None:
            if scope is Scope.NODE:
                cached = (np.arange(len(self.nodes), dtype=np.int64), len(self.nodes))
            elif scope is Scope.SITE:
                cached = (self.site_idx, len(self.sites))
            else:
                column = self.codes(scope.value)
                size = len(column.values)
                cached = (np.where(column.codes < 0, size, column.codes), size)
            self._domains[scope] = cached
        return cached

    def has_domain(self, scope: Scope) -> Bools:
        index, size = self.domain(scope)
        return np.asarray(index < size, dtype=np.bool_)

    # -- replica counts ---------------------------------------------------------------

    def counts(self, deployment: str) -> Counts:
        counts = self._counts.get(deployment)
        if counts is None:
            node = np.zeros(len(self.nodes), dtype=np.int64)
            for name, count in self.placed.get(deployment, Counter()).items():
                if name in self.index:
                    node[self.index[name]] += count
            domains: dict[Scope, Ints] = {}
            spread: dict[Scope, Floats] = {}
            cells: list[tuple[Ints, int, Ints, Floats]] = []
            for scope in (Scope.SITE, Scope.REGION, Scope.PROVIDER):
                index, size = self.domain(scope)
                domains[scope] = np.bincount(index, weights=node, minlength=size + 1).astype(
                    np.int64)
                spread[scope] = np.asarray(100.0 / (1.0 + domains[scope]), dtype=np.float64)
                spread[scope][size] = 0.0
                cells.append((index, size, domains[scope], spread[scope]))
            counts = Counts(node=node, domains=domains, spread_sites=spread, cells=cells)
            self._counts[deployment] = counts
        return counts

    def in_domain(self, deployment: str, scope: Scope) -> Ints:
        """Replicas of ``deployment`` in each node's ``scope`` domain (0 for nodes
        without the scope's label)."""
        counts = self.counts(deployment)
        if scope is Scope.NODE:
            return counts.node
        index, size = self.domain(scope)
        per_domain = counts.domains[scope].copy()
        per_domain[size] = 0
        return per_domain.take(index)

    def matching(self, selector: Selector) -> list[str]:
        """Deployments with replicas in the round whose labels ``selector`` matches
        (remembered per selector until a deployment joins or leaves the round)."""
        key = ("matching", id(selector), self.membership, len(self.placed),
               len(self.deployment_labels))
        cached = self.cache.get(key)
        if cached is None or cached[0] is not selector:
            cached = (selector, [d for d in self.placed
                                 if selector.matches(self.deployment_labels.get(d, {}))])
            self.cache[key] = cached
        return list(cached[1])

    def matching_in_domain(self, selector: Selector, scope: Scope) -> Ints:
        """Replicas of the deployments ``selector`` matches in each node's ``scope``
        domain (0 for nodes without the scope's label), summed per domain first."""
        if scope is Scope.NODE:
            matching = self.matching(selector)
            if len(matching) == 1:
                return self.counts(matching[0]).node.copy()
            total = np.zeros(len(self.nodes), dtype=np.int64)
            for deployment in matching:
                total += self.counts(deployment).node
            return total
        return self.matching_per_domain(selector, scope).take(self.domain(scope)[0])

    def matching_per_domain(self, selector: Selector, scope: Scope) -> Ints:
        """Replicas of the deployments ``selector`` matches in each domain of
        ``scope`` (not the node scope); the last cell, of the nodes without the
        scope's label, holds 0."""
        _, size = self.domain(scope)
        per_domain = np.zeros(size + 1, dtype=np.int64)
        for deployment in self.matching(selector):
            per_domain += self.counts(deployment).domains[scope]
        per_domain[size] = 0
        return per_domain

    def count_on_site(self, deployment: str, site: str) -> int:
        counts = self.placed.get(deployment, Counter())
        return sum(c for n, c in counts.items() if n in self.by_name and self.by_name[n].site == site)

    # -- rtt ----------------------------------------------------------------------------

    def rtt_from(self, source: str) -> Floats:
        """Milliseconds from ``source`` to every node, nan where unknown; asked once
        per source and round."""
        if source not in self._rtt:
            if self.rtt is None:
                values = np.full(len(self.nodes), np.nan)
            else:
                values = np.asarray(self.rtt.rtt_from(source, self.node_names),
                                    dtype=np.float64)
            self._rtt[source] = values
        return self._rtt[source]

    # -- reserving ----------------------------------------------------------------------

    def reserve(self, request: Request, node: str) -> None:
        """Hold ``request``'s share on ``node`` for the rest of the round."""
        held = self.reserved.get(node)
        self.reserved[node] = _EMPTY.plus(request) if held is None else held.plus(request)
        self._count(request, self._join(request, node), 1)

    def count(self, request: Request, node: str) -> None:
        """Count a replica of ``request``'s deployment on ``node`` without holding its
        share: for a round that only checks the limits on replica counts (which placed
        replicas may stay), never for one that places."""
        self._move_counts(request.deployment, self._join(request, node), 1)

    def _join(self, request: Request, node: str) -> int:
        """Count a replica of ``request``'s deployment on ``node`` in ``placed``; its row."""
        placed = self.placed.get(request.deployment)
        if placed is None:
            placed = self.placed[request.deployment] = Counter()
            self.membership += 1
        placed[node] += 1
        if request.deployment not in self.deployment_labels:
            self.deployment_labels[request.deployment] = request.labels
            self.membership += 1
        if request.apart:
            self.deployment_apart.setdefault(request.deployment, request.apart)
        return self.index[node]

    def unreserve(self, request: Request, node: str) -> None:
        """Give back what :meth:`reserve` held for ``request`` on ``node``: every
        column, count and kept score is as if it had never been reserved."""
        held = self.reserved[node].minus(request)
        if held.cpu_millis or held.memory_bytes or held.disk_bytes or held.devices or \
                held.host_ports:
            self.reserved[node] = held
        else:
            del self.reserved[node]
        placed = self.placed[request.deployment]
        placed[node] -= 1
        if placed[node] <= 0:
            del placed[node]
            if not placed:
                del self.placed[request.deployment]
                self.membership += 1
        self._count(request, self.index[node], -1)

    def _count(self, request: Request, i: int, step: int) -> None:
        """Take (``step`` 1) or give back (-1) ``request``'s share on row ``i`` and
        move the deployment's replica counts and spread scores with it."""
        self._take(i, request, step)
        self.touched.append(i)
        self._move_counts(request.deployment, i, step)

    def _move_counts(self, deployment: str, i: int, step: int) -> None:
        counts = self._counts.get(deployment)
        if counts is not None:
            counts.node[i] += step
            for index, size, per_domain, scores in counts.cells:
                cell = index.item(i)
                replicas = per_domain.item(cell) + step
                per_domain[cell] = replicas
                if cell < size:  # the unlabelled bucket's score stays 0
                    scores[cell] = 100.0 / (1.0 + replicas)

    def free(self, node: Node) -> tuple[int, int]:
        i = self.index[node.name]
        return int(self.free_cpu[i]), int(self.free_mem[i])


_EMPTY = Usage()  # never changed: ``plus`` makes a new one


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")
