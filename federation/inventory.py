"""What the controller knows about sites and nodes, and whether each node is alive.

Pure: fed with decoded presence and capacity messages plus ``now``; never
reads the clock. A node moves Ready -> Suspect -> Lost when its agent says it
is offline (Last Will) or its heartbeats stop, and back to Ready on a fresh
capacity report after it is online again. A node back from Lost first stays
Suspect for ``Liveness.ready_after_reports`` consecutive reports (hysteresis), so
a flapping link neither takes work back nor causes a reschedule storm; meanwhile
the controller stops its superseded instances.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from federation.wire import Capacity, InstanceReport, Presence, PresenceState, Resources

# Labels every node carries whatever its agent says.
BUILTIN_LABELS = ("node", "site", "arch", "os", "runtime")


class NodeState(StrEnum):
    READY = "Ready"
    SUSPECT = "Suspect"  # offline or heartbeats late; its work stays put for the grace period
    LOST = "Lost"  # grace over; its slots are placed elsewhere


@dataclass(frozen=True, slots=True, kw_only=True)
class Liveness:
    """When a node stops counting as Ready, and when as Lost."""

    heartbeat_misses: float = 3.0  # Suspect after this many capacity intervals without one
    lost_after: float = 10.0  # seconds in Suspect before Lost
    # A node back from Lost is Ready only after this many consecutive capacity reports
    # (an offline presence starts the count again); 1 makes it Ready on the first.
    ready_after_reports: int = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    name: str
    site: str
    epoch: str
    online: bool
    state: NodeState
    state_since: float
    last_seen: float  # controller time of the last message from the node
    capacity: Capacity | None = None
    reason: str = ""  # why the node is in its state
    returning: int = 0  # capacity reports since it came back from Lost, while Suspect

    @property
    def labels(self) -> dict[str, str]:
        cap = self.capacity
        out = dict(cap.labels) if cap else {}
        out.update(node=self.name, site=self.site)
        if cap:
            out.update(arch=cap.arch, os=cap.os, runtime=cap.runtime)
        return out

    @property
    def allocatable(self) -> Resources:
        return self.capacity.allocatable if self.capacity else Resources(
            cpu_millis=0, memory_bytes=0, disk_bytes=0)

    @property
    def instances(self) -> tuple[InstanceReport, ...]:
        return self.capacity.instances if self.capacity else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    name: str
    labels: Mapping[str, str]
    nodes: tuple[str, ...]
    ready: int


@dataclass
class Inventory:
    liveness: Liveness = field(default_factory=Liveness)
    nodes: dict[str, Node] = field(default_factory=dict)

    def observe_presence(self, name: str, epoch: str, presence: Presence, now: float) -> Node:
        old = self.nodes.get(name)
        online = presence.state is PresenceState.ONLINE
        site = presence.site or (old.site if old else "")
        if old is None:
            node = Node(name=name, site=site, epoch=epoch, online=online,
                        state=NodeState.SUSPECT, state_since=now, last_seen=now,
                        reason="waiting for the first capacity report")
        else:
            node = replace(old, site=site, epoch=epoch, online=online, last_seen=now)
            if not online and old.returning:
                # Back from Lost and gone again before it counted as Ready: its work has
                # moved already, so it is Lost again and a later return counts anew.
                node = replace(node, state=NodeState.LOST, state_since=now, returning=0,
                               reason="agent went offline again while back from Lost")
            if not online and old.state is NodeState.READY:
                node = replace(node, state=NodeState.SUSPECT, state_since=now,
                               reason="agent went offline")
        self.nodes[name] = node
        return node

    def observe_capacity(self, name: str, epoch: str, capacity: Capacity, now: float) -> Node:
        old = self.nodes.get(name)
        if old is None:
            node = Node(name=name, site=capacity.site, epoch=epoch, online=True,
                        state=NodeState.READY, state_since=now, last_seen=now,
                        capacity=capacity)
        else:
            # A capacity report is a heartbeat; an offline node reporting again is online.
            node = replace(old, site=capacity.site, epoch=epoch, online=True, last_seen=now,
                           capacity=capacity)
            node = self._back(old, node, now)
        self.nodes[name] = node
        return node

    def _back(self, old: Node, node: Node, now: float) -> Node:
        """``node`` after a capacity report while in ``old``'s state."""
        if old.state is NodeState.READY:
            return node
        needed = self.liveness.ready_after_reports
        if old.state is NodeState.LOST or old.returning:
            count = old.returning + 1
            if count < needed:
                # Still Suspect: it gets no new work, keeps none it lost, but is sent the
                # stops for its superseded instances.
                return replace(node, state=NodeState.SUSPECT,
                               state_since=now if old.state is NodeState.LOST else old.state_since,
                               returning=count,
                               reason=f"back after Lost; Ready after {needed} consecutive "
                               f"reports ({count} so far)")
        return replace(node, state=NodeState.READY, state_since=now, reason="", returning=0)

    def tick(self, now: float) -> list[Node]:
        """Advance liveness to ``now``; return the nodes whose state changed."""
        changed = []
        for name, node in list(self.nodes.items()):
            new = self._next(node, now)
            if new is not node:
                self.nodes[name] = new
                changed.append(new)
        return changed

    def _next(self, node: Node, now: float) -> Node:
        interval = node.capacity.interval if node.capacity else 5.0
        overdue = now - node.last_seen > interval * self.liveness.heartbeat_misses
        if node.returning and overdue:
            return replace(node, state=NodeState.LOST, state_since=now, returning=0,
                           reason=f"no heartbeat for {now - node.last_seen:.1f} s while back "
                           "from Lost")
        if node.state is NodeState.READY and (overdue or not node.online):
            why = "agent went offline" if not node.online else (
                f"no heartbeat for {now - node.last_seen:.1f} s")
            return replace(node, state=NodeState.SUSPECT, state_since=now, reason=why)
        if node.state is NodeState.SUSPECT and node.capacity is not None and (
            not node.online or overdue
        ) and now - node.state_since >= self.liveness.lost_after:
            return replace(node, state=NodeState.LOST, state_since=now, returning=0,
                           reason=f"{node.reason}; grace of {self.liveness.lost_after:g} s over")
        return node

    def next_change(self) -> float | None:
        """The earliest time at which ``tick`` may change a node's state without any
        new message, or None. Lets the caller tick right at a deadline, so a grace
        ends when it is over and not up to a loop period later."""
        deadlines = []
        for node in self.nodes.values():
            interval = node.capacity.interval if node.capacity else 5.0
            # tick tests `>` against the heartbeat deadline: a hair after it.
            overdue_at = node.last_seen + interval * self.liveness.heartbeat_misses + 1e-3
            if node.state is NodeState.READY or node.returning:
                deadlines.append(overdue_at)
            elif node.state is NodeState.SUSPECT and node.capacity is not None:
                lost_at = node.state_since + self.liveness.lost_after
                deadlines.append(max(lost_at, overdue_at) if node.online else lost_at)
        return min(deadlines, default=None)

    def ready(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.state is NodeState.READY]

    def sites(self) -> list[Site]:
        by_site: dict[str, list[Node]] = {}
        for node in self.nodes.values():
            by_site.setdefault(node.site, []).append(node)
        return [
            Site(name=name, labels=site_labels(name, members),
                 nodes=tuple(sorted(n.name for n in members)),
                 ready=sum(1 for n in members if n.state is NodeState.READY))
            for name, members in sorted(by_site.items())
        ]


def site_labels(name: str, members: Iterable[Node]) -> dict[str, str]:
    """A site's labels: its name plus every label all of its nodes agree on."""
    common: dict[str, str] | None = None
    for node in members:
        if node.capacity is None:
            continue  # announced but not yet reported: it knows no labels to agree on
        labels = {k: v for k, v in node.labels.items() if k not in ("node",)}
        common = labels if common is None else {
            k: v for k, v in common.items() if labels.get(k) == v}
    out = dict(common or {})
    out["site"] = name
    return out
