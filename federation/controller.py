"""The federation controller: inventory from MQTT, desired state in SQLite,
one reconcile loop, commands out, observed state in, REST API.

    bus ──presence/capacity──▶ Inventory          bus ──events──▶ observed instances
    api ──apply/delete──▶ Store + desired          tick ──▶ reconcile ──▶ place ──▶ cmd
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from federation import wire
from federation.bus import Bus, Will, new_epoch
from federation.inventory import Inventory, Liveness, NodeState
from federation.model import (
    CommandKey,
    DeploymentRecord,
    Desired,
    Observed,
    Op,
    SlotKey,
    SlotRecord,
)
from federation.planning import misplaced, new_round, request_for
from federation.reconcile import RESEND_AFTER, Forget, Place, Purge, Run, Stop, reconcile
from federation.scheduler import place
from federation.store import Store
from policies.merge import effective_deployment
from policies.model import Deployment, PlacementPolicy, deployment_from_document

log = logging.getLogger("edgefed.controller")
TICK = 1.0  # seconds between reconcile passes when nothing wakes the loop
INFLIGHT_EXPIRY = 60.0  # seconds before an unanswered command is no longer tracked
WARM_UP = 1.5  # seconds after connecting before the first pass: retained reports arrive first


@dataclass
class Inflight:
    key: CommandKey
    sent_at: float
    sent_mono: float


class Controller:
    def __init__(self, *, broker: str, db: Path, topic_root: str = wire.DEFAULT_ROOT,
                 liveness: Liveness | None = None) -> None:
        self.broker_url = broker
        self.topics = wire.Topics(topic_root)
        self.store = Store(db)
        self.inventory = Inventory(liveness=liveness or Liveness())
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
        self.rejected: Counter[str] = Counter()
        self.epoch = new_epoch()
        self.seq = 0
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()
        self.bus: Bus | None = None
        self._last_unschedulable: dict[SlotKey, str] = {}
        self._effective: dict[str, tuple[Deployment, list[str]]] = {}

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
            subscriptions=[(self.topics.all_nodes(k), 1) for k in
                           (wire.NodeTopic.PRESENCE, wire.NodeTopic.CAPACITY,
                            wire.NodeTopic.EVENTS)],
            will=lambda: Will(self.topics.controller_presence,
                              self._presence(wire.PresenceState.OFFLINE)),
        )
        tasks = [asyncio.create_task(self.bus.run(self._on_connect), name="bus"),
                 asyncio.create_task(self._consume(), name="consume"),
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

    # -- inbound ---------------------------------------------------------------

    async def _consume(self) -> None:
        assert self.bus is not None
        while True:
            incoming = await self.bus.messages.get()
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
            after = self.inventory.observe_capacity(node, message.epoch, body, now)
            self._note_node_change(before.state if before else None, after.state, node,
                                   after.reason, now)
            for key in [k for k in self.instances if k[0] == node]:
                del self.instances[key]
            for inst in body.instances:
                self.instances[(node, inst.deployment, inst.slot)] = inst
            self.wake.set()
        elif isinstance(body, wire.Event):
            self._on_event(node, body, now)

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
        lost = {n.name for n in self.inventory.nodes.values() if n.state is NodeState.LOST}
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
                self.pass_once(time.time())
            except Exception:  # one bad pass must not stop the controller
                log.exception("reconcile pass failed")
            # Tick at the next liveness deadline if it comes before TICK, so that
            # Suspect and Lost are noticed when due, not up to a period later.
            due = self.inventory.next_change()
            timeout = TICK if due is None else min(TICK, max(0.01, due - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=timeout)
            self.wake.clear()

    def pass_once(self, now: float) -> None:
        for node in self.inventory.tick(now):
            self.store.record_event(now, f"Node{node.state.value}",
                                    f"node {node.name} is {node.state.value}: {node.reason}",
                                    node=node.name)
            log.info("node %s -> %s (%s)", node.name, node.state.value, node.reason)
        desired = self.desired()
        live = {n: d.spec for n, d in desired.deployments.items() if not d.deleted}
        must_move = misplaced(live, self.slots.values(), self.inventory.nodes.values())
        actions = reconcile(desired, self.observed(now), now, misplaced=must_move)
        places = [a for a in actions if isinstance(a, Place)]
        if places:
            self._place(places, now)
        for action in actions:
            if isinstance(action, Run):
                self._send_run(self.slots.get(action.slot.key, action.slot), now)
            elif isinstance(action, Stop):
                self._send_stop(action, now)
            elif isinstance(action, Forget):
                self.slots.pop((action.deployment, action.index), None)
                self.store.forget_slot(action.deployment, action.index)
            elif isinstance(action, Purge):
                self.deployments.pop(action.deployment, None)
                self._effective.pop(action.deployment, None)
                self.store.purge(action.deployment)
                self.store.record_event(now, "Deleted", f"deployment {action.deployment} "
                                        "deleted; every instance stopped",
                                        deployment=action.deployment)

    def _place(self, places: list[Place], now: float) -> None:
        specs = self.specs()
        moving = {p.slot.key for p in places}
        rnd = new_round(self.inventory.nodes.values(),
                        [s for k, s in self.slots.items() if k not in moving], specs)
        for p in places:
            spec = specs[p.slot.deployment]
            generation = self.store.next_generation(p.slot.deployment, p.slot.index, p.generation)
            decision = place(request_for(spec, p.slot.index, generation,
                                         current_node=p.prefer_node), rnd)
            expl = decision.explanation.to_dict()
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
            self.store.save_slot(slot)
            self.store.record_event(now, "Scheduled", f"{slot.name} generation {generation} -> "
                                    f"{decision.node} ({p.reason}): {expl['message']}",
                                    deployment=slot.deployment, slot=slot.index,
                                    node=decision.node)
            self._send_run(slot, now)

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
        spec = self.effective(slot.deployment)[0]
        c = spec.container
        workload = wire.WorkloadBody(
            image=c.image, command=c.command, args=c.args, env=dict(c.env),
            ports=tuple(wire.PortBody(container_port=p.container_port, host_port=p.host_port,
                                      protocol=p.protocol) for p in c.ports),
            cpu_millis=c.resources.cpu_millis, memory_bytes=c.resources.memory_bytes,
            restart_policy=spec.restart_policy.value)
        command = wire.Command(op=wire.CommandOp.RUN, command_id=uuid.uuid4().hex,
                               deployment=slot.deployment, slot=slot.index,
                               generation=slot.generation, revision=slot.revision,
                               workload=workload)
        self._send(slot.node, command, (slot.node, Op.RUN, slot.deployment, slot.index,
                                        slot.generation), now)

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


def _ranges(numbers: list[int]) -> str:
    """``1-3, 5``: sorted numbers with runs folded."""
    parts: list[str] = []
    for n in sorted(numbers):
        if parts and parts[-1].split("-")[-1] == str(n - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{n}"
        else:
            parts.append(str(n))
    return ", ".join(parts) or "none"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edgefed controller",
        description="Run the federation controller: inventory over MQTT, desired state in "
        "SQLite, placement and failover, REST API under /api/v1.",
        epilog="example: edgefed controller --broker mqtt://127.0.0.1:1883 "
        "--db /var/lib/edgefed/controller.db --listen 0.0.0.0:7070",
    )
    parser.add_argument("--broker", required=True, help="mqtt://HOST:PORT (comma-separated list)")
    parser.add_argument("--db", required=True, type=Path, help="SQLite file for desired state")
    parser.add_argument("--listen", default="127.0.0.1:7070", help="HOST:PORT of the REST API")
    parser.add_argument("--topic-root", default=os.environ.get("EDGEFED_TOPIC_ROOT",
                                                               wire.DEFAULT_ROOT),
                        help="MQTT topic root (default edgefed; env EDGEFED_TOPIC_ROOT)")
    parser.add_argument("--lost-after", type=float, default=10.0,
                        help="seconds a node stays Suspect before its work moves (default 10)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"edgefed controller: --listen {args.listen!r} must be HOST:PORT", file=sys.stderr)
        return 2

    async def run() -> None:
        from federation.api import serve_api

        controller = Controller(broker=args.broker, db=args.db, topic_root=args.topic_root,
                                liveness=Liveness(lost_after=args.lost_after))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = await serve_api(controller, host, int(port))
        log.info("controller listening on http://%s:%s/api/v1, broker %s, db %s", host, port,
                 args.broker, args.db)
        try:
            await controller.run(stop)
        finally:
            await runner.cleanup()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
