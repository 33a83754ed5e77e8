"""The drill log: append-only JSON lines, one per thing that happened.

Every record has ``t`` (seconds on the monotonic clock since the drill started),
``wall`` (Unix time) and ``kind``:

    drill       phase: start | ready | converged | end (and the run's settings)
    fault       action, target, mechanism (how it was injected), params
    cmd         a command the controller sent: node, op, command_id, deployment, slot,
                generation
    answer      an agent's ack/reject: node, command_id, type, reason
    instance    an instance as its agent reported it: node, deployment, slot,
                generation, state, source (event | capacity | harness), ``at`` (when
                the agent sent it, on the log's clock: a report queued through a
                partition tells when the instance stopped, not when we heard)
    heard       a capacity report from a node reached the broker: node (with instance,
                answer and presence records, the checker's measure of contact)
    presence    node, state (online | offline), epoch
    controller  the controller's presence (online | offline) or process events
    node        the controller's view of a node changed: node, state, reason
    placement   the controller's view of a slot changed: deployment, slot, node,
                generation, state

Two recorders write it: :class:`BusRecorder` (an MQTT subscriber on the drill's topic
root: commands, answers, reports, presence) and :class:`ApiRecorder` (polls the
controller's REST API for node states and slot placements, writing changes only).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from federation import wire
from federation.bus import Bus
from federation.client import ApiClient, ApiError

LIVE_STATES = ("starting", "running")


class DrillLog:
    """Appends records to a JSONL file and keeps them in memory for the checker."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.records: list[dict[str, Any]] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def write(self, kind: str, *, t: float | None = None, **fields: Any) -> dict[str, Any]:
        """Append a record; ``t`` (log time) defaults to now."""
        with self._lock:
            now = self.now()
            at = now if t is None else t
            record = {"t": round(at, 4), "wall": round(time.time() - (now - at), 4),
                      "kind": kind, **fields}
            self.records.append(record)
            self._file.write(json.dumps(record, sort_keys=False) + "\n")
            self._file.flush()
            return record

    def at_wall(self, wall: float) -> float:
        """A Unix time (an agent's ``sent_at``: same machine, same clock) on the log's
        clock, never later than now."""
        return round(min(self.now(), self.now() - (time.time() - wall)), 4)

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_log(path: Path) -> list[dict[str, Any]]:
    """Records of a drill log; a torn last line (the run was killed) is left out."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


class BusRecorder:
    """Everything published under the drill's topic root, as log records."""

    def __init__(self, log: DrillLog, broker: str, topic_root: str, *,
                 persistent: bool = True) -> None:
        # Persistent on a broker of our own, so a restart loses nothing queued for us;
        # on a shared one (attach mode) no session of ours outlives the drill.
        self.log = log
        self.topics = wire.Topics(topic_root)
        self.bus = Bus(broker, client_id=f"edgefed-drill-recorder-{topic_root}",
                       subscriptions=[(f"{topic_root}/{wire.VERSION}/#", 1)],
                       persistent=persistent, max_backoff=0.5)
        self.reported: dict[str, dict[tuple[str, int, int], str]] = {}
        self.refused = 0
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self.bus.run(), name="recorder-bus"),
                       asyncio.create_task(self._consume(), name="recorder-consume")]
        await asyncio.wait_for(self.bus.connected.wait(), timeout=20)

    async def stop(self) -> None:
        # Drain what already arrived, then leave.
        await asyncio.sleep(0)
        while not self.bus.messages.empty():
            self._record(self.bus.messages.get_nowait())
        await self.bus.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _consume(self) -> None:
        while True:
            self._record(await self.bus.messages.get())

    def _record(self, incoming: Any) -> None:
        if incoming.topic == self.topics.controller_echo:
            return  # the controller checking its own link; nothing happened
        try:
            node, message = wire.decode_from_topic(self.topics, incoming.topic, incoming.payload)
        except wire.Refused as exc:
            self.refused += 1
            self.log.write("refused", topic=incoming.topic, reason=exc.reason)
            return
        body = message.body
        if node is None:
            if isinstance(body, wire.Presence):
                self.log.write("controller", state=body.state.value, epoch=message.epoch,
                               retained=incoming.retain)
            return
        if isinstance(body, wire.Command):
            self.log.write("cmd", node=node, op=body.op.value, command_id=body.command_id,
                           deployment=body.deployment, slot=body.slot,
                           generation=body.generation, retained=incoming.retain)
        elif isinstance(body, wire.Event):
            self._event(node, body, self.log.at_wall(message.sent_at))
        elif isinstance(body, wire.Presence):
            self.log.write("presence", node=node, state=body.state.value, site=body.site,
                           epoch=message.epoch, retained=incoming.retain)
        elif isinstance(body, wire.Capacity):
            self._capacity(node, body, self.log.at_wall(message.sent_at),
                           retained=incoming.retain)

    def _event(self, node: str, event: wire.Event, at: float) -> None:
        if event.type is wire.EventType.INSTANCE and event.instance is not None:
            inst = event.instance
            self.log.write("instance", node=node, deployment=inst.deployment, slot=inst.slot,
                           generation=inst.generation, state=inst.state, source="event",
                           at=at)
            known = self.reported.setdefault(node, {})
            key = (inst.deployment, inst.slot, inst.generation)
            if inst.state in LIVE_STATES:
                known[key] = inst.state
            else:
                known.pop(key, None)
        elif event.type in (wire.EventType.ACK, wire.EventType.REJECT):
            self.log.write("answer", node=node, command_id=event.command_id,
                           type=event.type.value, reason=event.reason,
                           duplicate=event.duplicate)

    def _capacity(self, node: str, cap: wire.Capacity, at: float, *, retained: bool) -> None:
        """Instances appear and disappear between reports too: a report that lists
        an instance not known live (or omits one that was) is recorded as a change."""
        if retained:
            # A retained report is the past: say when it was, do not treat it as news.
            self.log.write("heard", node=node, what="capacity", retained=True)
            return
        self._heard(node, "capacity")
        now = {(i.deployment, i.slot, i.generation): i.state for i in cap.instances
               if i.state in LIVE_STATES}
        known = self.reported.setdefault(node, {})
        for key, state in now.items():
            if known.get(key) != state:
                self.log.write("instance", node=node, deployment=key[0], slot=key[1],
                               generation=key[2], state=state, source="capacity")
        for key in set(known) - set(now):
            self.log.write("instance", node=node, deployment=key[0], slot=key[1],
                           generation=key[2], state="gone", source="capacity", at=at)
        self.reported[node] = now

    def _heard(self, node: str, what: str) -> None:
        self.log.write("heard", node=node, what=what)


class ApiRecorder:
    """The controller's view, polled: node states and slot placements (changes only)."""

    def __init__(self, log: DrillLog, server: str, *, interval: float = 0.1) -> None:
        self.log = log
        self.client = ApiClient(server, timeout=2.0)
        self.interval = interval
        self.nodes: dict[str, tuple[str, str]] = {}
        self.pods: dict[tuple[str, int], tuple[str | None, int, str]] = {}
        self.reachable: bool | None = None
        self.snapshot: dict[str, Any] = {"nodes": [], "pods": []}

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.poll)
            await asyncio.sleep(self.interval)

    def poll(self) -> None:
        try:
            nodes = self.client.get("/api/v1/nodes")["items"]
            pods = self.client.get("/api/v1/pods")["items"]
        except (ApiError, OSError, KeyError, TypeError):
            if self.reachable is not False:
                self.log.write("controller", state="api-unreachable")
            self.reachable = False
            return
        if self.reachable is False:
            self.log.write("controller", state="api-reachable")
        self.reachable = True
        self.snapshot = {"nodes": nodes, "pods": pods}
        for n in nodes:
            seen = (n["state"], n.get("reason", ""))
            if self.nodes.get(n["name"], ("", ""))[0] != seen[0]:
                self.log.write("node", node=n["name"], site=n.get("site"), state=seen[0],
                               reason=seen[1])
            self.nodes[n["name"]] = seen
        for p in pods:
            key = (p["deployment"], int(p["slot"]))
            seen_pod = (p.get("node"), int(p["generation"]), str(p["state"]))
            if self.pods.get(key) != seen_pod:
                self.log.write("placement", deployment=key[0], slot=key[1], node=seen_pod[0],
                               generation=seen_pod[1], state=seen_pod[2])
            self.pods[key] = seen_pod


def records_of(records: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (r for r in records if r["kind"] == kind)
