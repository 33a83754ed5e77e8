"""The federation controller: inventory from MQTT, desired state in SQLite,
one reconcile loop, commands out, observed state in, REST API.

    bus ──presence/capacity──▶ Inventory          bus ──events──▶ observed instances
    api ──apply/delete──▶ Store + desired          tick ──▶ reconcile ──▶ place ──▶ cmd
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from federation import rollout, wire
from federation.aio import wait_set
from federation.bus import Bus, Will, new_epoch
from federation.failover import Throttle, fence_after
from federation.inventory import Inventory, Liveness, NodeState
from federation.latency import RttMatrix
from federation.model import (
    CommandKey,
    DeploymentRecord,
    Desired,
    Observed,
    Op,
    SlotKey,
    SlotRecord,
)
from federation.planning import (
    OPTIMAL_PASS_SECONDS,
    SolverTime,
    decide,
    misplaced,
    new_round,
    request_for,
)
from federation.reconcile import (
    RESEND_AFTER,
    Forget,
    Place,
    Purge,
    Reclaim,
    Run,
    Stop,
    reconcile,
)
from federation.rollout import Replica, RolloutState
from federation.scheduler import Fleet
from federation.store import EVENTS_KEPT, Store
from policies.errors import PolicyError
from policies.merge import effective_deployment
from policies.model import Deployment, PlacementPolicy, deployment_from_document

log = logging.getLogger("edgefed.controller")
TICK = 1.0  # seconds between reconcile passes when nothing wakes the loop
INFLIGHT_EXPIRY = 60.0  # seconds before an unanswered command is no longer tracked
WARM_UP = 1.5  # seconds after connecting before the first pass: retained reports arrive first
ECHO_EVERY = 0.5  # seconds between the controller's echoes to itself through the broker
ECHO_TIMEOUT = 2.0  # seconds without an echo back before the controller counts itself cut off


@dataclass
class Inflight:
    key: CommandKey
    sent_at: float
    sent_mono: float


class Controller:
    def __init__(self, *, broker: str, db: Path, topic_root: str = wire.DEFAULT_ROOT,
                 liveness: Liveness | None = None, throttle: Throttle | None = None,
                 events_kept: int = EVENTS_KEPT,
                 solver_seconds: float = OPTIMAL_PASS_SECONDS) -> None:
        self.broker_url = broker
        self.topics = wire.Topics(topic_root)
        self.store = Store(db, events_kept=events_kept)
        self.inventory = Inventory(liveness=liveness or Liveness())
        self.latency = RttMatrix()  # measured RTTs + Vivaldi estimates, fed by capacity reports
        # The nodes' columns, kept from pass to pass: a round reads again only the
        # nodes that reported or changed state since the last one.
        self.fleet = Fleet()
        loaded = self.store.load_desired()
        self.deployments: dict[str, DeploymentRecord] = dict(loaded.deployments)
        self.slots: dict[SlotKey, SlotRecord] = dict(loaded.slots)
        self.policies: dict[str, PlacementPolicy] = self.store.load_policies()
        self.instances: dict[tuple[str, str, int], wire.InstanceReport] = {}
        self.inflight: dict[str, Inflight] = {}  # command_id -> what and when, until answered
        # When each command was last sent, answered or not: reconcile resends only after
        # RESEND_AFTER, so an ack that comes before the instance runs causes no flood.
        self.sent: dict[CommandKey, float] = {}
        self.waiters: dict[str, asyncio.Future[wire.Event]] = {}
        self.ack_latencies: list[float] = []
        self.passes = 0  # reconcile passes run, and how long the last 1,000 took
        self.pass_seconds: deque[float] = deque(maxlen=1000)
        self.rejected: Counter[str] = Counter()
        self.epoch = new_epoch()
        self.seq = 0
        self._echo_heard = -math.inf  # monotonic time the last echo came back
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()
        self.bus: Bus | None = None
        self._last_unschedulable: dict[SlotKey, str] = {}
        self._effective: dict[str, tuple[Deployment, list[str]]] = {}
        # Failover (federation.failover): the replacement rate limit (None: unlimited),
        # and for each slot a failover replacement moved, the node it left (keep-original).
        self.throttle = throttle
        # Stored, so a controller restart while the node is away still keeps the original.
        self.replaced_from: dict[SlotKey, str] = self.store.load_replaced_from()
        self._deferred = 0
        # strategy: optimal. Seconds of exact solving a pass may spend over its batches,
        # and the deployments whose batch a pass left for later, with the pass that
        # first left each: the next passes solve them first, oldest first.
        self.solver_seconds = solver_seconds
        self._left: dict[str, int] = {}
        # Paced rollouts (federation.rollout), stored so a restart resumes them; and when
        # each instance (node, deployment, slot, generation) was first seen running.
        self.rollouts: dict[str, RolloutState] = self.store.load_rollouts()
        self.running_since: dict[tuple[str, str, int, int], float] = {}

    # -- lifecycle -------------------------------------------------------------

    def _encode(self, schema: str, body: wire.Body) -> bytes:
        self.seq += 1
        return wire.encode(schema, body, sender="controller", epoch=self.epoch, seq=self.seq,
                           sent_at=time.time())

    def _presence(self, state: wire.PresenceState) -> bytes:
        return self._encode(wire.SCHEMA_CONTROLLER_PRESENCE, wire.Presence(state=state))

    async def run(self, stop: asyncio.Event) -> None:
        self.bus = Bus(
            self.broker_url,
            client_id=f"edgefed-controller-{self.topics.root}",
            subscriptions=[*((self.topics.all_nodes(k), 1) for k in
                             (wire.NodeTopic.PRESENCE, wire.NodeTopic.CAPACITY,
                              wire.NodeTopic.EVENTS)),
                           (self.topics.controller_echo, 0)],
            will=lambda: Will(self.topics.controller_presence,
                              self._presence(wire.PresenceState.OFFLINE)),
        )
        tasks = [asyncio.create_task(self.bus.run(self._on_connect), name="bus"),
                 asyncio.create_task(self._consume(), name="consume"),
                 asyncio.create_task(self._watch_broker(), name="broker watch"),
                 asyncio.create_task(self._loop(), name="reconcile")]
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not waiter and not task.cancelled() and task.exception() is not None:
                log.error("task %s failed", task.get_name(), exc_info=task.exception())
        await self.bus.close(final=(self.topics.controller_presence,
                                    self._presence(wire.PresenceState.OFFLINE)))
        for task in [waiter, *tasks]:
            task.cancel()
        await asyncio.gather(waiter, *tasks, return_exceptions=True)
        self.store.close()

    async def _on_connect(self) -> None:
        assert self.bus is not None
        self.bus.publish(self.topics.controller_presence,
                         self._presence(wire.PresenceState.ONLINE), retain=True)
        if not self.ready.is_set():
            await asyncio.sleep(WARM_UP)
            self.ready.set()
            self.wake.set()

    async def _watch_broker(self) -> None:
        """Cut off from the broker, the controller hears no node at all: node liveness
        pauses (silence moves no node to Suspect or Lost) and, once it hears the broker
        again, every node gets a fresh grace before its silence counts.

        Cut off means the connection is down, or it is up but the controller's echo (a
        message to itself through the broker, every ECHO_EVERY seconds) has not come
        back for ECHO_TIMEOUT: a link that drops everything silently keeps the socket
        open until the keepalive gives up, long after the nodes' grace."""
        assert self.bus is not None
        bus = self.bus
        token = self.epoch.encode()
        cut_since: float | None = None
        heard = time.monotonic()  # the last echo, or when the connection came up
        while True:
            up = bus.connected.is_set()
            if up:
                bus.publish(self.topics.controller_echo, token, qos=0)
            now = time.monotonic()
            heard = max(heard, self._echo_heard)
            silent = now - heard
            cut = not up or silent > ECHO_TIMEOUT
            if cut and cut_since is None:
                cut_since = time.time() - (silent if up else 0.0)
                self.inventory.pause(cut_since)
                if bus.connects and not self.inventory.liveness.pause_when_cut_off:
                    log.warning("cut off from the broker: node liveness keeps counting "
                                "(--no-cut-off-pause), so nodes may become Lost")
                elif bus.connects:
                    why = (f"no echo through the broker for {silent:.1f} s" if up
                           else "the broker connection is down")
                    log.warning("cut off from the broker (%s): node liveness paused, no node "
                                "becomes Suspect or Lost until the controller hears the broker "
                                "again", why)
            elif not cut and cut_since is not None:
                self.inventory.resume(time.time())
                log.info("connected to the broker again after %.1f s%s", time.time() - cut_since,
                         ": every node gets a fresh grace"
                         if self.inventory.liveness.pause_when_cut_off else "")
                cut_since = None
                self.wake.set()
            # Wake at once when the connection drops or comes back, else every ECHO_EVERY.
            await wait_set(bus.offline if up else bus.connected, ECHO_EVERY)
            if not up and bus.connected.is_set():
                heard = time.monotonic()  # a fresh connection: its echo gets ECHO_TIMEOUT

    # -- inbound ---------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.bus is not None
        echo, token = self.topics.controller_echo, self.epoch.encode()
        while True:
            incoming = await self.bus.messages.get()
            if incoming.topic == echo:
                if incoming.payload == token:
                    self._echo_heard = time.monotonic()
                continue
            try:
                self.handle(incoming.topic, incoming.payload)
            except wire.Refused as exc:
                self.rejected[exc.kind] += 1
                sender = wire.sender_hint(incoming.payload)
                log.warning("refused message on %s from %s: %s", incoming.topic, sender,
                            exc.reason)
            except Exception:  # a message we failed on must not stop the controller
                self.rejected["internal error"] += 1
                log.exception("failed to handle message on %s from %s", incoming.topic,
                              wire.sender_hint(incoming.payload))

    def handle(self, topic: str, payload: bytes) -> None:
        node, message = wire.decode_from_topic(self.topics, topic, payload)
        if node is None:
            return  # our own presence echoed back
        now = time.time()
        body = message.body
        if isinstance(body, wire.Presence):
            before = self.inventory.nodes.get(node)
            after = self.inventory.observe_presence(node, message.epoch, body, now)
            self._note_node_change(before.state if before else None, after.state, node,
                                   after.reason, now)
        elif isinstance(body, wire.Capacity):
            before = self.inventory.nodes.get(node)
            after = self.inventory.observe_capacity(node, message.epoch, body, now,
                                                    sent_at=message.sent_at)
            self._note_node_change(before.state if before else None, after.state, node,
                                   after.reason, now)
            self._observe_rtt(node, body, now)
            for key in [k for k in self.instances if k[0] == node]:
                del self.instances[key]
            for inst in body.instances:
                self.instances[(node, inst.deployment, inst.slot)] = inst
            self.wake.set()
        elif isinstance(body, wire.Event):
            self._on_event(node, body, now)

    def _observe_rtt(self, node: str, body: wire.Capacity, now: float) -> None:
        ignored = self.latency.observe(node, body.site, body.rtt_ms, now)
        if ignored:  # said once per node until its report changes
            log.warning("capacity from %s: ignored rtt_ms entries: %s", node, ignored)

    def _note_node_change(self, before: NodeState | None, after: NodeState, node: str,
                          reason: str, now: float) -> None:
        if before is after:
            return
        log.info("node %s: %s -> %s %s", node, before.value if before else "new", after.value,
                 f"({reason})" if reason else "")
        self.store.record_event(now, f"Node{after.value}", f"node {node} is {after.value}"
                                + (f": {reason}" if reason else ""), node=node)
        self.wake.set()

    def _on_event(self, node: str, event: wire.Event, now: float) -> None:
        if event.type is wire.EventType.INSTANCE and event.instance is not None:
            inst = event.instance
            key = (node, inst.deployment, inst.slot)
            current = self.instances.get(key)
            if current is None or inst.generation >= current.generation:
                if inst.state == "stopped":
                    self.instances.pop(key, None)
                else:
                    self.instances[key] = inst
            if inst.state in ("failed", "exited") or (
                current is None or current.state != inst.state
            ):
                self.store.record_event(
                    now, f"Instance{inst.state.capitalize()}",
                    f"{inst.deployment}/{inst.slot} generation {inst.generation} on {node} is "
                    f"{inst.state}" + (f" (exit {inst.exit_code})" if inst.exit_code is not None
                                       else "") + (f": {inst.reason}" if inst.reason else ""),
                    deployment=inst.deployment, slot=inst.slot, node=node)
            self.wake.set()
            return
        sent = self.inflight.pop(event.command_id, None)
        if sent is not None and event.type is not wire.EventType.LOGS:
            self.ack_latencies.append(time.monotonic() - sent.sent_mono)
            del self.ack_latencies[:-10_000]
        if event.type is wire.EventType.REJECT:
            log.warning("node %s refused command %s: %s", node, event.command_id, event.reason)
            if sent is not None:
                _, op, dep, slot, gen = sent.key
                self.store.record_event(now, "CommandRefused", f"{node} refused {op.value} "
                                        f"{dep}/{slot} generation {gen}: {event.reason}",
                                        deployment=dep, slot=slot, node=node)
        waiter = self.waiters.pop(event.command_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)

    # -- reconcile -------------------------------------------------------------

    def effective(self, name: str) -> tuple[Deployment, list[str]]:
        """Deployment ``name`` as it is scheduled and run: its own spec with the
        placement policies that match it merged in, plus those policies' names.
        Everything that places replicas or sends commands reads specs through here."""
        cached = self._effective.get(name)
        if cached is None:
            cached = self._effective[name] = self.merged(self.deployments[name].spec)
        return cached

    def merged(self, spec: Deployment, policies: Mapping[str, PlacementPolicy] | None = None
               ) -> tuple[Deployment, list[str]]:
        """``spec`` (stored or not) with ``policies`` (default: the stored ones) merged in."""
        return effective_deployment(spec, (self.policies if policies is None
                                           else policies).values())

    def bound_to(self, policy: str) -> list[str]:
        """The deployments (not being deleted) that policy ``policy`` binds."""
        return [name for name, record in sorted(self.deployments.items())
                if not record.deleted and policy in self.effective(name)[1]]

    def specs(self) -> dict[str, Deployment]:
        """Every deployment's effective spec, by name."""
        return {name: self.effective(name)[0] for name in self.deployments}

    def _changed(self) -> None:
        """Deployments or policies changed: effective specs are computed afresh."""
        self._effective.clear()
        self.wake.set()

    def desired(self) -> Desired:
        return Desired(deployments={n: replace(d, spec=self.effective(n)[0])
                                    for n, d in self.deployments.items()},
                       slots=dict(self.slots))

    def observed(self, now: float) -> Observed:
        # A command to a Lost node sits in its persistent session: remember it for the
        # whole outage, so it is queued once, not every RESEND_AFTER.
        lost = {n.name for n in self.inventory.nodes.values()
                if n.state is NodeState.LOST or n.unreachable_since is not None}
        self.sent = {k: at for k, at in self.sent.items()
                     if now - at < RESEND_AFTER or k[0] in lost}
        stale = [cid for cid, f in self.inflight.items() if now - f.sent_at > INFLIGHT_EXPIRY]
        for cid in stale:  # never answered (node gone?): stop tracking its latency
            del self.inflight[cid]
        return Observed(nodes=dict(self.inventory.nodes), instances=dict(self.instances),
                        inflight=dict(self.sent))

    async def _loop(self) -> None:
        await self.ready.wait()
        while True:
            try:
                # Cut off from the broker, it would act on a world it cannot see (a
                # Suspect node's grace would run out) with commands that cannot go out.
                if self.inventory.paused_since is None:
                    started = time.monotonic()
                    self.pass_once(time.time())
                    self.passes += 1
                    self.pass_seconds.append(time.monotonic() - started)
            except Exception:  # one bad pass must not stop the controller
                log.exception("reconcile pass failed")
            # Tick at the next liveness deadline if it comes before TICK, so that
            # Suspect and Lost are noticed when due, not up to a period later.
            due = self.inventory.next_change()
            timeout = TICK if due is None else min(TICK, max(0.01, due - time.time()))
            await wait_set(self.wake, timeout)
            self.wake.clear()

    def pass_once(self, now: float) -> None:
        for node in self.inventory.tick(now):
            self.store.record_event(now, f"Node{node.state.value}",
                                    f"node {node.name} is {node.state.value}: {node.reason}",
                                    node=node.name)
            log.info("node %s -> %s (%s)", node.name, node.state.value, node.reason)
        waiting, holds = self.pace_rollouts(now)  # first: a rollback changes the desired state
        desired = self.desired()
        live = {n: d.spec for n, d in desired.deployments.items() if not d.deleted}
        must_move = misplaced(live, self.slots.values(), self.inventory.nodes.values(),
                              fleet=self.fleet)
        actions = reconcile(desired, self.observed(now), now, misplaced=must_move,
                            waiting=waiting, grace=self.inventory.liveness.lost_after,
                            replaced_from=self.replaced_from)
        places = self._rate_limit([a for a in actions if isinstance(a, Place)], now)
        if places:
            self._place(places, now)
            self._refund(places)
        for action in actions:
            if isinstance(action, Run):
                self._send_run(self.slots.get(action.slot.key, action.slot), now)
            elif isinstance(action, Stop):
                if (action.deployment, action.index) not in holds:  # surge: old runs on
                    self._send_stop(action, now)
            elif isinstance(action, Reclaim):
                self._reclaim(action, now)
            elif isinstance(action, Forget):
                # forget_slot drops its stored row too
                self.replaced_from.pop((action.deployment, action.index), None)
                self.slots.pop((action.deployment, action.index), None)
                self.store.forget_slot(action.deployment, action.index)
            elif isinstance(action, Purge):
                self.deployments.pop(action.deployment, None)
                self._effective.pop(action.deployment, None)
                self.rollouts.pop(action.deployment, None)
                self.store.purge(action.deployment)
                self.store.record_event(now, "Deleted", f"deployment {action.deployment} "
                                        "deleted; every instance stopped",
                                        deployment=action.deployment)

    # -- failover (federation.failover) ----------------------------------------

    def _rate_limit(self, places: list[Place], now: float) -> list[Place]:
        """``places`` with failover replacements beyond the rate limit left for a later
        pass (reconcile asks for them again); other placements are never held back."""
        replacing = [p for p in places if p.failover]
        if self.throttle is None or not replacing:
            return places
        granted, self.throttle = self.throttle.take(len(replacing), now)
        deferred = len(replacing) - granted
        if deferred and deferred != self._deferred:
            log.warning("deferring %d replacement(s) to a later pass: at most %g per second "
                        "(burst %g)", deferred, self.throttle.rate, self.throttle.burst)
        self._deferred = deferred
        held = {id(p) for p in replacing[granted:]}
        return [p for p in places if id(p) not in held]

    def _refund(self, places: list[Place]) -> None:
        """Give back the rate limit's tokens of replacements that found no node."""
        unplaced = sum(1 for p in places if p.failover and (
            (s := self.slots.get(p.slot.key)) is None or s.generation == p.slot.generation))
        if self.throttle is not None and unplaced:
            self.throttle = self.throttle.give_back(unplaced)

    def _replaced(self, key: SlotKey, from_node: str | None) -> None:
        """A failover replacement moved the slot away from ``from_node`` (keep-original
        may bring it back there); None: the slot is placed for any other reason."""
        if self.replaced_from.get(key) == from_node:
            return
        if from_node is None:
            del self.replaced_from[key]
        else:
            self.replaced_from[key] = from_node
        self.store.set_replaced_from(key, from_node)

    def _reclaim(self, action: Reclaim, now: float) -> None:
        """keep-original: the slot runs on its original node again, at a generation above
        the replacement's; the next pass stops the replacement as superseded."""
        current = self.slots.get(action.slot.key)
        if current is None or current.generation != action.slot.generation:
            return  # the slot changed meanwhile: the next pass decides again
        generation = self.store.next_generation(action.slot.deployment, action.slot.index,
                                                action.generation)
        slot = replace(current, node=action.node, generation=generation,
                       revision=action.revision, assigned_at=now,
                       template=self.deployments[current.deployment].template)
        self.slots[slot.key] = slot
        self._replaced(slot.key, None)
        self.store.save_slot(slot)
        self.store.record_event(now, "KeptOriginal", f"{slot.name} generation {generation} -> "
                                f"{action.node}: {action.reason}", deployment=slot.deployment,
                                slot=slot.index, node=action.node)
        log.info("%s: %s", slot.name, action.reason)
        self._send_run(slot, now)

    def confirm_lost(self, node: str) -> None:
        """An operator says ``node`` is gone: its replicas, singletons included, are
        replaced now. LookupError if unknown, ValueError while it is in contact."""
        now = time.time()
        after = self.inventory.confirm_lost(node, now)
        self.store.record_event(now, "NodeLost", f"node {node} is Lost: {after.reason}",
                                node=node)
        log.warning("node %s confirmed lost by an operator", node)
        self.wake.set()

    def _place(self, places: list[Place], now: float) -> None:
        if self._left:  # batches left by earlier passes go first (a pass always solves its first)
            places = sorted(places, key=lambda p: self._left.get(p.slot.deployment, math.inf))
        specs = self.specs()
        moving = {p.slot.key for p in places}
        rnd = new_round(self.inventory.nodes.values(),
                        [s for k, s in self.slots.items() if k not in moving], specs,
                        rtt=self.latency, fleet=self.fleet)
        generations = [self.store.next_generation(p.slot.deployment, p.slot.index, p.generation)
                       for p in places]
        requests = [request_for(specs[p.slot.deployment], p.slot.index, generation,
                                current_node=p.prefer_node)
                    for p, generation in zip(places, generations, strict=True)]
        left: set[str] = set()
        for p, generation, decided in zip(places, generations,
                                          decide(requests, rnd, solver_time=SolverTime(
                                              seconds=self.solver_seconds,
                                              clock=time.monotonic)),
                                          strict=True):
            if decided is None:  # the exact solver's time for this pass is spent
                left.add(p.slot.deployment)
                if p.slot.key not in self.slots:  # new: Pending, saying why (others keep theirs)
                    self.slots[p.slot.key] = replace(p.slot, node=None, explanation={
                        "message": f"waiting for the exact solver (strategy optimal): this "
                                   f"pass's {self.solver_seconds:g}s of solving went to other "
                                   "deployments; a later pass solves it, those left longest first"})
                continue
            decision = decided.decision
            expl = {**decision.explanation.to_dict(), "message": decided.message}
            if decision.node is None:
                msg = str(expl["message"])
                if self._last_unschedulable.get(p.slot.key) != msg:
                    self._last_unschedulable[p.slot.key] = msg
                    self.store.record_event(now, "Unschedulable", f"{p.slot.name}: {msg}",
                                            deployment=p.slot.deployment, slot=p.slot.index)
                    log.warning("cannot place %s: %s", p.slot.name, msg)
                if p.slot.node is not None and p.slot.key in self.slots:
                    # Its node is lost (or it may no longer stay there) and nothing else
                    # fits: keep the record, mark the reason.
                    self.slots[p.slot.key] = replace(p.slot, explanation=expl)
                else:
                    self.slots[p.slot.key] = replace(p.slot, node=None, explanation=expl)
                continue
            self._last_unschedulable.pop(p.slot.key, None)
            slot = SlotRecord(deployment=p.slot.deployment, index=p.slot.index,
                              generation=generation, revision=p.revision,
                              template=self.deployments[p.slot.deployment].template,
                              node=decision.node,
                              assigned_at=now, explanation=expl)
            self.slots[slot.key] = slot
            self._replaced(slot.key, p.slot.node if p.failover else None)
            self.store.save_slot(slot)
            self.store.record_event(now, "Scheduled", f"{slot.name} generation {generation} -> "
                                    f"{decision.node} ({p.reason}): {expl['message']}",
                                    deployment=slot.deployment, slot=slot.index,
                                    node=decision.node)
            self._send_run(slot, now)
        self._leave(left)

    def _leave(self, left: set[str]) -> None:
        """Remember the deployments whose optimal batch this pass left for a later one
        (forgetting those it solved) and wake the next pass, which runs as soon as the
        messages that came in the meantime are read."""
        if left:
            # Said once when passes start leaving batches, not on every pass after.
            log.log(logging.DEBUG if self._left else logging.INFO,
                    "strategy optimal: %s left for the next pass; this one has had its %gs "
                    "of exact solving", ", ".join(sorted(left)), self.solver_seconds)
            self.wake.set()
        self._left = {d: self._left.get(d, self.passes) for d in left}

    def _send(self, node: str, command: wire.Command, key: CommandKey, now: float) -> None:
        assert self.bus is not None
        self.inflight = {cid: f for cid, f in self.inflight.items() if f.key != key}
        self.inflight[command.command_id] = Inflight(key=key, sent_at=now,
                                                     sent_mono=time.monotonic())
        self.sent[key] = now
        self.bus.publish(self.topics.node(node, wire.NodeTopic.CMD),
                         self._encode(wire.SCHEMA_COMMAND, command))

    def _send_run(self, slot: SlotRecord, now: float) -> None:
        assert slot.node is not None
        spec = self._spec_of(slot)
        c = spec.container
        workload = wire.WorkloadBody(
            image=c.image, command=c.command, args=c.args, env=dict(c.env),
            ports=tuple(wire.PortBody(container_port=p.container_port, host_port=p.host_port,
                                      protocol=p.protocol) for p in c.ports),
            cpu_millis=c.resources.cpu_millis, memory_bytes=c.resources.memory_bytes,
            restart_policy=spec.restart_policy.value,
            fence_after=fence_after(spec.failover, self.inventory.liveness.lost_after))
        command = wire.Command(op=wire.CommandOp.RUN, command_id=uuid.uuid4().hex,
                               deployment=slot.deployment, slot=slot.index,
                               generation=slot.generation, revision=slot.revision,
                               workload=workload)
        self._send(slot.node, command, (slot.node, Op.RUN, slot.deployment, slot.index,
                                        slot.generation), now)

    def _spec_of(self, slot: SlotRecord) -> Deployment:
        """What a slot's instance runs: the current spec, or for a slot a paced rollout has
        not replaced yet, the revision it was placed at (a resent run must not sneak the
        new template past the rollout)."""
        current = self.effective(slot.deployment)[0]
        record = self.deployments[slot.deployment]
        if slot.template == record.template or slot.revision == record.revision:
            return current
        document = self.store.revision_document(slot.deployment, slot.revision)
        try:
            return current if document is None else self.merged(
                deployment_from_document(document))[0]
        except PolicyError:
            return current

    def _send_stop(self, stop: Stop, now: float) -> None:
        log.info("stopping %s/%d generation %d on %s: %s", stop.deployment, stop.index,
                 stop.generation, stop.node, stop.reason)
        self.store.record_event(now, "Stopping", f"{stop.deployment}/{stop.index} generation "
                                f"{stop.generation} on {stop.node}: {stop.reason}",
                                deployment=stop.deployment, slot=stop.index, node=stop.node)
        command = wire.Command(op=wire.CommandOp.STOP, command_id=uuid.uuid4().hex,
                               deployment=stop.deployment, slot=stop.index,
                               generation=stop.generation)
        self._send(stop.node, command, (stop.node, Op.STOP, stop.deployment, stop.index,
                                        stop.generation), now)

    # -- rollouts (federation.rollout) -----------------------------------------

    def pace_rollouts(self, now: float) -> tuple[dict[SlotKey, str], set[SlotKey]]:
        """Step every deployment's rollout: the template changes that must wait for now
        (for reconcile) and the surge slots whose old instance must not be stopped yet.
        Failover is not paced: a Lost node's replicas never pass through here."""
        self._note_running(now)
        waiting: dict[SlotKey, str] = {}
        holds: set[SlotKey] = set()
        for name, record in list(self.deployments.items()):
            if record.deleted:
                continue
            paced = self._step_rollout(name, now)
            if paced is not None:
                waiting.update({(name, i): why for i, why in paced.waiting.items()})
                holds.update((name, i) for i in paced.hold)
        return waiting, holds

    def _step_rollout(self, name: str, now: float) -> rollout.Step | None:
        record = self.deployments[name]
        replicas = self._replicas(name, record.template)
        state = self.rollouts.get(name)
        if state is None or state.target != record.template:
            if all(r.updated for r in replicas):
                return None  # nothing runs an older template: nothing to roll out
            earlier = [r for r, _ in self.store.revisions(name) if r < record.revision]
            state = rollout.begin(deployment=name, to_revision=record.revision,
                                  from_revision=earlier[-1] if earlier else record.revision,
                                  target=record.template, replicas=replicas, now=now)
            self.store.record_event(now, "RolloutStarted", f"revision {state.from_revision} -> "
                                    f"{state.to_revision}: {state.total} replica(s) to replace",
                                    deployment=name)
        paced = rollout.step(state, record.spec.rollout, replicas, now)
        for kind, message in paced.events:
            log.info("%s: %s", name, message)
            self.store.record_event(now, kind, message, deployment=name)
        before = self.rollouts.get(name)
        self.rollouts[name] = paced.state
        # The message counts seconds down; store only what a restart needs.
        if before is None or replace(before, message="") != replace(paced.state, message=""):
            self.store.save_rollout(paced.state, now)
        if paced.rollback:
            return self._roll_back(name, paced.state, paced.rollback, now)
        return paced

    def _roll_back(self, name: str, failed: RolloutState, why: str,
                   now: float) -> rollout.Step | None:
        """failureAction rollback: apply the revision before the rollout again, as a new
        revision, rolled out by the same settings (Swarm's rollback_config is not kept)."""
        try:
            revision, spec = self.rollback_target(name, failed.from_revision)
        except (LookupError, PolicyError) as exc:
            paused = replace(failed, paused=f"{why}; cannot roll back: {exc}")
            self.rollouts[name] = paused
            self.store.save_rollout(paused, now)
            return self._step_rollout(name, now)
        record, _ = self.apply(spec, cause=f"automatic rollback to revision {revision}: {why}")
        self.rollouts[name] = rollout.begin(
            deployment=name, from_revision=failed.to_revision, to_revision=record.revision,
            target=record.template, replicas=self._replicas(name, record.template), now=now,
            rollback_of=failed.to_revision, rollback_reason=why)
        self.store.save_rollout(self.rollouts[name], now)
        self.store.record_event(now, "RolloutRollingBack", f"revision {failed.to_revision} -> "
                                f"{record.revision} (the template of revision {revision})",
                                deployment=name)
        return self._step_rollout(name, now)

    def _replicas(self, name: str, target: str) -> list[Replica]:
        """Each replica of ``name`` as the rollout to template ``target`` sees it."""
        out = []
        for index in range(self.deployments[name].spec.replicas):
            slot = self.slots.get((name, index))
            if slot is None or slot.node is None:
                # Placed when the reconciler gets to it, with the current template.
                out.append(Replica(index=index, updated=True, serving=False))
                continue
            node = self.inventory.nodes.get(slot.node)
            inst = self.instances.get((slot.node, name, index))
            if inst is not None and inst.generation != slot.generation:
                inst = None
            out.append(Replica(
                index=index, updated=slot.template == target,
                serving=inst is not None and inst.state == "running",
                failed=_failure(inst),
                running_since=self.running_since.get((slot.node, name, index, slot.generation)),
                movable=node is not None and node.state is NodeState.READY))
        return out

    def _note_running(self, now: float) -> None:
        running = {(node, dep, index, inst.generation)
                   for (node, dep, index), inst in self.instances.items()
                   if inst.state == "running"}
        self.running_since = {key: self.running_since.get(key, now) for key in running}

    def rollout_status(self, name: str) -> dict[str, object] | None:
        """The deployment's rollout as the API shows it; None if it never had one."""
        state, record = self.rollouts.get(name), self.deployments.get(name)
        if state is None or record is None:
            return None
        updated = sum(1 for i in range(record.spec.replicas)
                      if (s := self.slots.get((name, i))) is not None
                      and s.template == state.target)
        return rollout.status(state, record.spec.replicas, updated)

    # -- operations the API calls ----------------------------------------------

    def apply(self, spec: Deployment, *, cause: str = "") -> tuple[DeploymentRecord, bool]:
        now = time.time()
        record, changed = self.store.apply(spec, now)
        if changed:
            self.deployments[spec.name] = record
            self.store.record_event(now, "Applied", f"revision {record.revision}: "
                                    f"{spec.replicas} replica(s) of {spec.container.image}"
                                    + (f" ({cause})" if cause else ""), deployment=spec.name)
            self._changed()
        return record, changed

    def rollback_target(self, name: str, revision: int | None) -> tuple[int, Deployment]:
        """The revision ``rollout undo`` goes back to (default: the one before the
        current) and its spec. Raises LookupError with the message for the operator."""
        record = self.deployments.get(name)
        if record is None:
            raise LookupError(f"deployment {name} not found")
        known = [r for r, _ in self.store.revisions(name)]
        if revision is None:
            earlier = [r for r in known if r < record.revision]
            if not earlier:
                raise LookupError(f"deployment {name} has no revision before its current "
                                  f"revision {record.revision}")
            revision = earlier[-1]
        document = self.store.revision_document(name, revision)
        if document is None:
            raise LookupError(f"deployment {name} has no revision {revision} (revisions: "
                              f"{_ranges(known)})")
        return revision, deployment_from_document(document)

    def apply_policy(self, policy: PlacementPolicy) -> bool:
        """Store ``policy``; the next pass places by it. False when nothing changed."""
        now = time.time()
        before = set(self.bound_to(policy.name))
        if not self.store.put_policy(policy, now):
            return False
        self.policies[policy.name] = policy
        self._changed()
        for name in sorted(before | set(self.bound_to(policy.name))):
            self.store.record_event(now, "PolicyApplied", f"placement policy {policy.name} "
                                    f"(priority {policy.priority}) applied", deployment=name)
        return True

    def delete_policy(self, name: str) -> bool:
        now = time.time()
        bound = self.bound_to(name)
        if not self.store.delete_policy(name):
            return False
        self.policies.pop(name, None)
        self._changed()
        for deployment in bound:
            self.store.record_event(now, "PolicyDeleted", f"placement policy {name} deleted",
                                    deployment=deployment)
        return True

    def delete(self, name: str) -> bool:
        record = self.deployments.get(name)
        if record is None or record.deleted:
            return False
        self.store.mark_deleted(name, time.time())
        self.deployments[name] = replace(record, deleted=True)
        self._changed()
        return True

    async def logs(self, deployment: str, slot: int, tail: int) -> wire.Event:
        record = self.slots.get((deployment, slot))
        if record is None or record.node is None:
            raise LookupError(f"{deployment}/{slot} is not placed on any node")
        assert self.bus is not None
        command = wire.Command(op=wire.CommandOp.LOGS, command_id=uuid.uuid4().hex,
                               deployment=deployment, slot=slot, generation=record.generation,
                               tail=tail)
        future: asyncio.Future[wire.Event] = asyncio.get_running_loop().create_future()
        self.waiters[command.command_id] = future
        self.bus.publish(self.topics.node(record.node, wire.NodeTopic.CMD),
                         self._encode(wire.SCHEMA_COMMAND, command))
        try:
            return await asyncio.wait_for(future, timeout=10)
        finally:
            self.waiters.pop(command.command_id, None)

    def live_instances(self, deployment: str) -> int:
        return sum(1 for (node, d, i), inst in self.instances.items()
                   if d == deployment and inst.state == "running"
                   and (s := self.slots.get((d, i))) is not None and s.node == node
                   and s.generation == inst.generation)


def _failure(inst: wire.InstanceReport | None) -> str:
    """Why an instance counts as a failed update ("" if it does not)."""
    if inst is None:
        return ""
    if inst.state == "failed":
        return inst.reason or "could not start"
    if inst.state == "exited" and inst.exit_code not in (None, 0):
        return f"exited with code {inst.exit_code}"
    if inst.restarts:
        return f"restarted {inst.restarts} time(s)"
    return ""


def _ranges(numbers: list[int]) -> str:
    """``1-3, 5``: sorted numbers with runs folded."""
    parts: list[str] = []
    for n in sorted(numbers):
        if parts and parts[-1].split("-")[-1] == str(n - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{n}"
        else:
            parts.append(str(n))
    return ", ".join(parts) or "none"
