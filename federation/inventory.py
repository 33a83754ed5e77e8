"""What the controller knows about sites and nodes, and whether each node is alive.

Pure: fed with decoded presence and capacity messages plus ``now``; never
reads the clock. A node moves Ready -> Suspect when the controller loses
contact with it (its agent says it is offline, by Last Will, or its heartbeats
stop) and Suspect -> Lost when contact stays lost for ``Liveness.lost_after``;
a fresh capacity report brings it back to Ready. A node back from Lost first
stays Suspect for ``Liveness.ready_after_reports`` consecutive reports
(hysteresis); meanwhile the controller stops its superseded instances. Only
*timely* reports count: one held back in transit (queued during the outage and
delivered in a burst when the link heals) or one that follows the last counted
one by less than half a report interval does not.

While the controller itself is cut off from the broker (``pause``/``resume``),
no heartbeat can arrive whatever the nodes do: silence moves no node, and after
the reconnect every node gets a fresh grace before its silence is judged.

Flap damping (``Liveness.flap_limit`` > 0; see docs/failover.md): every loss of
contact is a disconnect; a node with ``flap_limit`` disconnects within
``flap_window`` seconds is *flapping* and is held Suspect (no new work) until
``hold_down`` seconds after its last disconnect. With damping, the out-of-contact
clock (``Node.unreachable_since``) restarts at every contact, so a node that
never stays silent for a grace is never Lost and its replicas never move;
without damping, a node back from Lost counts as out of contact until it is
Ready again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from federation.wire import Capacity, InstanceReport, Presence, PresenceState, Resources

# Labels every node carries whatever its agent says.
BUILTIN_LABELS = ("node", "site", "arch", "os", "runtime")


class NodeState(StrEnum):
    READY = "Ready"
    SUSPECT = "Suspect"  # out of contact, back from Lost or flapping; gets no new work
    LOST = "Lost"  # out of contact past the controller's grace


@dataclass(frozen=True, slots=True, kw_only=True)
class Liveness:
    """When a node stops counting as Ready, when as Lost, and when it flaps."""

    heartbeat_misses: float = 3.0  # Suspect after this many capacity intervals without one
    lost_after: float = 10.0  # seconds out of contact before Lost
    # A node back from Lost is Ready only after this many consecutive timely capacity
    # reports (losing contact starts the count again); 1 makes it Ready on the first.
    ready_after_reports: int = 2
    # Flap damping: this many disconnects within flap_window seconds make a node
    # flapping, held Suspect until hold_down seconds after its last one. 0: no damping.
    flap_limit: int = 3
    flap_window: float = 60.0
    hold_down: float = 30.0
    # While the controller is cut off from the broker, silence counts for nothing. Off
    # only to show in a drill what it prevents: a broker outage longer than the grace
    # then makes every node Lost.
    pause_when_cut_off: bool = True

    @property
    def damping(self) -> bool:
        return self.flap_limit > 0


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
    # When the controller lost contact with it; None while in contact. Per-deployment
    # grace (failover.grace) is measured from here.
    unreachable_since: float | None = None
    disconnects: tuple[float, ...] = ()  # when it lost contact, within the flap window
    held_until: float = 0.0  # flapping: Suspect at least until then
    confirmed_lost: bool = False  # an operator said it is gone (until it is heard again)
    # The last capacity report: controller time it arrived, and arrival minus the
    # sender's sent_at (transit time plus the two clocks' offset). Reports that arrive
    # in step have about the same delay; ones held back in transit have a longer one.
    report_at: float | None = None
    report_delay: float = 0.0
    counted_at: float | None = None  # the last report counted toward ready_after_reports

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

    def out_of_contact(self, now: float) -> float:
        """Seconds since the controller lost contact with the node; 0 while in contact."""
        return 0.0 if self.unreachable_since is None else max(0.0, now - self.unreachable_since)


@dataclass(frozen=True, slots=True, kw_only=True)
class Site:
    name: str
    labels: Mapping[str, str]
    nodes: tuple[str, ...]
    ready: int


def clock(at: float) -> str:
    """``at`` (seconds since the epoch) as a UTC time of day, for reasons."""
    return time.strftime("%H:%M:%SZ", time.gmtime(at))


@dataclass
class Inventory:
    liveness: Liveness = field(default_factory=Liveness)
    nodes: dict[str, Node] = field(default_factory=dict)
    # Since when the controller is cut off from the broker (None: connected), and
    # when it was connected again: silence before then does not count.
    paused_since: float | None = None
    resumed_at: float = -math.inf

    def pause(self, now: float) -> None:
        """The controller lost its broker connection: until ``resume`` no heartbeat can
        arrive, so silence moves no node to Suspect or Lost (unless
        ``Liveness.pause_when_cut_off`` is off)."""
        if self.paused_since is None and self.liveness.pause_when_cut_off:
            self.paused_since = now

    def resume(self, now: float) -> None:
        """Connected again: every node gets a fresh grace. Heartbeats are judged from
        ``now``, and a node already out of contact (not Lost) starts its grace again."""
        if not self.liveness.pause_when_cut_off:
            return
        self.paused_since = None
        self.resumed_at = now
        for name, node in self.nodes.items():
            if (node.state is NodeState.SUSPECT and not node.returning
                    and node.unreachable_since is not None and not node.confirmed_lost):
                self.nodes[name] = replace(node, unreachable_since=now)

    def observe_presence(self, name: str, epoch: str, presence: Presence, now: float) -> Node:
        old = self.nodes.get(name)
        online = presence.state is PresenceState.ONLINE
        site = presence.site or (old.site if old else "")
        if old is None:
            node = Node(name=name, site=site, epoch=epoch, online=online,
                        state=NodeState.SUSPECT, state_since=now, last_seen=now,
                        reason="waiting for the first capacity report")
        elif online:
            node = self._contact(replace(old, site=site, epoch=epoch, online=True, last_seen=now))
        else:
            node = replace(old, site=site, epoch=epoch, online=False, last_seen=now)
            if old.state is NodeState.READY or old.returning or (
                    old.unreachable_since is None and old.capacity is not None):
                node = self._lose_contact(node, now, "agent went offline")
        self.nodes[name] = node
        return node

    def observe_capacity(self, name: str, epoch: str, capacity: Capacity, now: float, *,
                         sent_at: float | None = None) -> Node:
        """A capacity report that arrived at ``now``; ``sent_at`` is the sender's
        clock when it sent it (None: just now)."""
        old = self.nodes.get(name)
        delay = 0.0 if sent_at is None else now - sent_at
        if old is None:
            node = Node(name=name, site=capacity.site, epoch=epoch, online=True,
                        state=NodeState.READY, state_since=now, last_seen=now,
                        capacity=capacity, report_at=now, report_delay=delay)
        else:
            # A capacity report is a heartbeat; an offline node reporting again is online.
            node = replace(old, site=capacity.site, epoch=epoch, online=True, last_seen=now,
                           capacity=capacity, report_at=now, report_delay=delay)
            node = self._back(old, self._contact(node), now)
        self.nodes[name] = node
        return node

    def confirm_lost(self, name: str, now: float) -> Node:
        """An operator says node ``name`` is gone for good: it is Lost now, and its
        replicas (singletons too) are replaced without waiting for a grace. Refused
        (ValueError) while the node is in contact; LookupError if unknown."""
        node = self.nodes.get(name)
        if node is None:
            raise LookupError(f"node {name} not found")
        if node.unreachable_since is None:
            raise ValueError(f"node {name} is {node.state.value} and in contact (last message "
                             f"at {clock(node.last_seen)}): only a node out of contact can be "
                             "confirmed lost")
        node = replace(node, state=NodeState.LOST, state_since=now, returning=0,
                       confirmed_lost=True, reason="confirmed lost by an operator")
        self.nodes[name] = node
        return node

    def _contact(self, node: Node) -> Node:
        """``node`` just heard from. With damping the out-of-contact clock stops here;
        without, only Ready stops it (see _back)."""
        node = replace(node, confirmed_lost=False)
        if self.liveness.damping:
            node = replace(node, unreachable_since=None)
        return node

    def _lose_contact(self, node: Node, now: float, why: str) -> Node:
        """``node`` (Ready, back from Lost or held) has just become unreachable."""
        lv = self.liveness
        recent = (*(t for t in node.disconnects if now - t < lv.flap_window), now)
        held = node.held_until
        if lv.damping and len(recent) >= lv.flap_limit:
            held = max(held, now + lv.hold_down)
        since = node.unreachable_since if node.unreachable_since is not None else now
        node = replace(node, disconnects=recent if lv.damping else (), held_until=held,
                       unreachable_since=since)
        if node.returning or node.state is NodeState.LOST:
            # Back from Lost and gone again before it counted as Ready: it is Lost again
            # and a later return counts anew.
            return replace(node, state=NodeState.LOST, state_since=now, returning=0,
                           counted_at=None,
                           reason=f"{why} again while back from Lost" + self._flapping(node, now))
        return replace(node, state=NodeState.SUSPECT, state_since=now,
                       reason=why + self._flapping(node, now))

    def _flapping(self, node: Node, now: float) -> str:
        if now >= node.held_until:
            return ""
        lv = self.liveness
        return (f"; flapping: {len(node.disconnects)} disconnects in {lv.flap_window:g}s, "
                f"held until {clock(node.held_until)}")

    def _back(self, old: Node, node: Node, now: float) -> Node:
        """``node`` after a capacity report while in ``old``'s state."""
        if old.state is NodeState.READY:
            return node
        needed = self.liveness.ready_after_reports
        count = 0
        if old.state is NodeState.LOST or old.returning:
            count = old.returning
            if self._timely(old, node, now):
                count += 1
                node = replace(node, counted_at=now)
            why = (f"back after Lost; Ready after {needed} consecutive reports ({count} so far)"
                   + self._flapping(node, now))
            if count == 0:
                # Only reports held back in transit so far: in contact, but still Lost.
                return replace(node, state=NodeState.LOST, state_since=old.state_since,
                               returning=0, reason=why)
            if count < needed:
                # Still Suspect: it gets no new work, keeps none it lost, but is sent the
                # stops for its superseded instances.
                return replace(node, state=NodeState.SUSPECT,
                               state_since=now if old.state is NodeState.LOST else old.state_since,
                               returning=count, reason=why)
        if now < node.held_until:
            # Flapping: in contact, keeps its work, gets no new work until stable.
            return replace(node, state=NodeState.SUSPECT,
                           state_since=old.state_since if old.state is NodeState.SUSPECT else now,
                           returning=count, reason=self._flapping(node, now)[2:])
        return replace(node, state=NodeState.READY, state_since=now, reason="", returning=0,
                       unreachable_since=None)

    def _timely(self, old: Node, node: Node, now: float) -> bool:
        """Whether ``node``'s new report counts toward ready_after_reports: its delay is
        within half an interval of the report before it (a report queued during an
        outage arrives late by the time it was held), and it comes at least half an
        interval after the last counted one (a burst is one report, not several).
        Delays are compared with each other, never with the controller's clock, so
        the sender's clock offset cancels out."""
        half = (node.capacity.interval if node.capacity else 5.0) / 2
        if old.report_at is not None and abs(node.report_delay - old.report_delay) > half:
            return False
        return old.counted_at is None or now - old.counted_at >= half

    def tick(self, now: float) -> list[Node]:
        """Advance liveness to ``now``; return the nodes whose state changed. Nothing
        changes while paused: the controller's own silence says nothing of the nodes."""
        if self.paused_since is not None:
            return []
        changed = []
        for name, node in list(self.nodes.items()):
            new = self._next(node, now)
            if new is not node:
                self.nodes[name] = new
                changed.append(new)
        return changed

    def _overdue(self, node: Node, now: float) -> bool:
        interval = node.capacity.interval if node.capacity else 5.0
        heard = max(node.last_seen, self.resumed_at)
        return now - heard > interval * self.liveness.heartbeat_misses

    def _in_contact(self, node: Node, now: float) -> bool:
        return node.online and not self._overdue(node, now)

    def _next(self, node: Node, now: float) -> Node:
        if node.capacity is None:
            return node  # announced, never reported: nothing to lose yet
        in_contact = self._in_contact(node, now)
        watched = node.state is NodeState.READY or node.returning or (
            self.liveness.damping and node.unreachable_since is None)
        if watched and not in_contact:
            why = "agent went offline" if not node.online else (
                f"no heartbeat for {now - node.last_seen:.1f} s")
            return self._lose_contact(node, now, why)
        if node.state is NodeState.SUSPECT and not in_contact and (
            node.unreachable_since is not None
            and now - node.unreachable_since >= self.liveness.lost_after
        ):
            return replace(node, state=NodeState.LOST, state_since=now, returning=0,
                           reason=f"{node.reason}; grace of {self.liveness.lost_after:g} s over")
        return node

    def next_change(self) -> float | None:
        """The earliest time at which ``tick`` may change a node's state without any
        new message, or None. Lets the caller tick right at a deadline, so a grace
        ends when it is over and not up to a loop period later."""
        if self.paused_since is not None:
            return None
        deadlines = []
        for node in self.nodes.values():
            if node.capacity is None:
                continue
            # tick tests `>` against the heartbeat deadline: a hair after it.
            heard = max(node.last_seen, self.resumed_at)
            overdue_at = heard + node.capacity.interval * self.liveness.heartbeat_misses + 1e-3
            if node.online and (node.state is NodeState.READY or node.returning
                                or node.unreachable_since is None):
                deadlines.append(overdue_at)
            elif node.state is NodeState.SUSPECT and node.unreachable_since is not None:
                lost_at = node.unreachable_since + self.liveness.lost_after
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
    """A site's labels: its name plus every label all of its nodes agree on (a node
    announced but not yet reported knows no labels to agree on)."""
    return common_labels(name, (node.labels for node in members if node.capacity is not None))


def common_labels(name: str, rows: Iterable[Mapping[str, str]]) -> dict[str, str]:
    """``site_labels`` of the labels of a site's reported nodes (in the order of the
    first node's labels)."""
    first: Mapping[str, str] | None = None
    shared: set[tuple[str, str]] = set()
    for labels in rows:
        if first is None:
            first, shared = labels, set(labels.items())
        else:
            shared.intersection_update(labels.items())
    out = {k: v for k, v in first.items() if k != "node" and (k, v) in shared} if first else {}
    out["site"] = name
    return out
