"""The agent's event loop: MQTT session, command handling, supervision, reports.

    broker ──cmd──▶ handle_command ──▶ LocalState (disk) ──▶ supervise ──▶ Runtime
    Runtime ──list──▶ supervise ──events──▶ broker
    HostProbe + Runtime ──▶ report_capacity (retained, every interval and on change)

The supervisor works from local state only, so it keeps workloads running
(and restarts them per their restart policy) with no broker or controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from functools import partial

from cloud_adapters.errors import InstanceNotFound, PermanentRuntimeError, RuntimeAdapterError
from cloud_adapters.runtime import InstanceSpec, InstanceState, InstanceStatus, PortSpec, Runtime
from edge_agent.capacity import HostProbe, devices, host_arch, host_os
from edge_agent.commands import LocalSlot, Verdict, Want, answer, fence, to_fence
from edge_agent.config import AgentConfig
from edge_agent.probes import Probes
from edge_agent.state import LocalState
from federation import wire
from federation.aio import wait_set
from federation.bus import Bus, Will, new_epoch

log = logging.getLogger("edgefed.agent")
VERSION = "0.1.0"
RESTART_BACKOFF_MAX = 60.0
SUPERVISE_CONCURRENCY = 4  # runtime calls in flight at once during one supervise pass
OFFLINE_NOTICE_AFTER = 3.0  # a broker blip shorter than this is not worth a warning
IMAGES_EVERY = 30.0  # seconds between two listings of the images present
IMAGES_TIMEOUT = 5.0  # an engine that takes longer to list them is said not to answer
LOGS_TIMEOUT = 8.0  # seconds a logs command may wait on the runtime (the controller waits 10)
LOGS_IN_FLIGHT = 4  # logs commands answered at once; more are refused as busy


@dataclass
class Restarts:
    count: int = 0
    not_before: float = 0.0


@dataclass
class Counters:
    rejected: dict[str, int] = field(default_factory=dict)

    def refuse(self, topic: str, refused: wire.Refused, sender: str) -> None:
        self.rejected[refused.kind] = self.rejected.get(refused.kind, 0) + 1
        log.warning("refused message on %s from %s: %s", topic, sender, refused.reason)


def make_runtime(config: AgentConfig) -> Runtime:
    choice = config.runtime
    if choice in ("auto", "docker"):
        from cloud_adapters.docker_runtime import DockerRuntime, docker_available

        if docker_available():
            return DockerRuntime(config.node)
        if choice == "docker":
            log.warning("the docker engine does not answer; instances will fail until it does")
            return DockerRuntime(config.node)
        log.warning("no docker engine answers: using the process runtime "
                    "(instances run as plain processes; cpu/memory limits are not enforced)")
    from cloud_adapters.process_runtime import ProcessRuntime

    return ProcessRuntime(config.node, config.state_dir / "process")


class Agent:
    def __init__(self, config: AgentConfig, runtime: Runtime) -> None:
        self.config = config
        self.runtime = runtime
        self.topics = wire.Topics(config.topic_root)
        self.epoch = new_epoch()
        self.seq = 0
        self.state = LocalState(config.state_dir)
        self.slots: dict[tuple[str, int], LocalSlot] = self.state.all()
        self.probe = HostProbe(config.state_dir, config.cpu_millis, config.memory_bytes)
        self.devices = devices(config.devices)
        self.instances: list[InstanceStatus] = []
        self.reported: dict[tuple[str, int, int], tuple[str, int | None]] = {}
        # Slots whose instance could not be started: (generation, reason), reported
        # in every capacity report until a start succeeds or a new command arrives.
        self.failures: dict[tuple[str, int], tuple[int, str]] = {}
        self.restarts: dict[tuple[str, int], Restarts] = {}
        self.images: tuple[str, ...] = ()
        self.counters = Counters()
        self.wake = asyncio.Event()
        self.changed = asyncio.Event()
        self.bus: Bus | None = None
        # Self-fencing: when this agent last heard from the broker (monotonic), and
        # the controller's presence as last seen (None: not known yet) and since when.
        self.last_contact = time.monotonic()
        self.controller_online: bool | None = None
        self.controller_since: float | None = None
        self.fenced = 0  # singleton instances stopped by self-fencing since start
        # Logs are read off the message path: a slow or hung engine must not hold up
        # run/stop commands or the broker-contact clock behind them.
        self._logs_tasks: set[asyncio.Task[None]] = set()
        self.probes = Probes(config.node, config.landmarks, listen=config.probe_listen,
                             peers=config.probe_peers, interval=config.probe_interval)

    # -- envelopes -------------------------------------------------------------

    def _encode(self, schema: str, body: wire.Body) -> bytes:
        self.seq += 1
        return wire.encode(schema, body, sender=self.config.node, epoch=self.epoch,
                           seq=self.seq, sent_at=time.time())

    def _presence(self, state: wire.PresenceState) -> bytes:
        return self._encode(wire.SCHEMA_PRESENCE, wire.Presence(
            state=state, site=self.config.site, agent_version=VERSION,
            probe=self.probes.address if state is wire.PresenceState.ONLINE else ""))

    def _publish_event(self, event: wire.Event) -> None:
        assert self.bus is not None
        topic = self.topics.node(self.config.node, wire.NodeTopic.EVENTS)
        payload = self._encode(wire.SCHEMA_EVENT, event)
        if event.type is not wire.EventType.INSTANCE:  # answers to a live controller
            self.bus.publish(topic, payload)
            return
        # On disk until the broker has it: offline, paho's queue alone would lose it if
        # the agent stopped before reconnecting.
        row, dropped = self.state.queue_event(topic, payload, time.time())
        if dropped:
            log.warning("event outbox full: dropped the %d oldest undelivered event(s)",
                        dropped)
        self.bus.publish(topic, payload, on_acked=partial(self.state.event_sent, row))

    def _forward_stored_events(self) -> None:
        """Events an earlier run of this agent stored but never got to the broker: queued
        first, oldest first, so they reach the controller before anything new."""
        assert self.bus is not None
        pending = self.state.pending_events()
        for row, topic, payload in pending:
            self.bus.publish(topic, payload, on_acked=partial(self.state.event_sent, row))
        if pending:
            log.info("forwarding %d instance event(s) stored before this start", len(pending))

    # -- main ------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; 0 on a requested stop, 1 if a task died."""
        node = self.config.node
        self.bus = Bus(
            self.config.broker,
            client_id=f"edgefed-agent-{node}",
            subscriptions=[(self.topics.node(node, wire.NodeTopic.CMD), 1),
                           # The controller's presence, and the echo of our own capacity
                           # reports: proof of broker contact for self-fencing.
                           (self.topics.controller_presence, 1),
                           (self.topics.node(node, wire.NodeTopic.CAPACITY), 0)] + (
                # Peers' presence carries their probe address (QoS 0: a missed one is
                # learned again at their next connect).
                [(self.topics.all_nodes(wire.NodeTopic.PRESENCE), 0)]
                if self.config.probe_peers else []),
            # Built at every connect, so the will carries this connection's seq.
            will=lambda: Will(self.topics.node(node, wire.NodeTopic.PRESENCE),
                              self._presence(wire.PresenceState.OFFLINE)),
            keepalive=self.config.keepalive,
        )
        log.info("agent %s (site %s) starting: runtime %s, state in %s, %d slot(s) on disk, "
                 "devices %s", node, self.config.site, self.runtime.name, self.config.state_dir,
                 len(self.slots), ", ".join(f"{k}={n}" for k, n in self.devices.items()) or "none")
        self._forward_stored_events()
        tasks = [
            asyncio.create_task(self.bus.run(self._on_connect), name="bus"),
            asyncio.create_task(self._handle_messages(), name="commands"),
            asyncio.create_task(self._supervise_loop(), name="supervise"),
            asyncio.create_task(self._report_loop(), name="report"),
            asyncio.create_task(self._image_loop(), name="images"),
            asyncio.create_task(self._watch_broker(), name="broker watch"),
            asyncio.create_task(self._fence_loop(), name="self-fencing"),
            asyncio.create_task(self.probes.run(), name="rtt probes"),
        ]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not waiter]
        for task in failed:
            log.error("task %s ended unexpectedly", task.get_name(), exc_info=task.exception())
        log.info("agent %s stopping; instances keep running", node)
        await self.bus.close(final=(self.topics.node(node, wire.NodeTopic.PRESENCE),
                                    self._presence(wire.PresenceState.OFFLINE)))
        for task in [waiter, *tasks]:
            task.cancel()
        await asyncio.gather(waiter, *tasks, return_exceptions=True)
        await self.probes.close()
        await self.runtime.close()
        self.state.close()
        return 1 if failed else 0

    async def _on_connect(self) -> None:
        assert self.bus is not None
        self.last_contact = time.monotonic()
        if self.bus.broker is not None:  # presence below advertises the echo listener
            await self.probes.listen(self.bus.broker.host, self.bus.broker.port)
        self.bus.publish(self.topics.node(self.config.node, wire.NodeTopic.PRESENCE),
                         self._presence(wire.PresenceState.ONLINE), retain=True)
        self.changed.set()

    async def _watch_broker(self) -> None:
        """Tell the operator, once per outage, that this node now runs on its own.
        Nothing waits for the broker but reporting: supervision works from local state."""
        assert self.bus is not None
        while True:
            await self.bus.offline.wait()
            if await wait_set(self.bus.connected, OFFLINE_NOTICE_AFTER):
                continue
            wanted = sum(1 for s in self.slots.values() if s.want is Want.RUN)
            log.warning("broker unreachable, running %d instance(s) from local state", wanted)
            await self.bus.connected.wait()
            log.info("broker reachable again; reporting what ran meanwhile")

    # -- commands --------------------------------------------------------------

    async def _handle_messages(self) -> None:
        assert self.bus is not None
        while True:
            incoming = await self.bus.messages.get()
            self.last_contact = time.monotonic()
            try:
                sender, message = wire.decode_from_topic(self.topics, incoming.topic,
                                                         incoming.payload)
            except wire.Refused as exc:
                self.counters.refuse(incoming.topic, exc, wire.sender_hint(incoming.payload))
                continue
            if isinstance(message.body, wire.Presence) and sender is None:
                self._controller_presence(message.body)
            elif isinstance(message.body, wire.Presence) and sender is not None:
                self.probes.learn(sender, message.body)
            elif isinstance(message.body, wire.Command):
                try:
                    await self._handle_command(message.body, message.sender)
                except Exception:  # one command we failed on must not stop the agent
                    log.exception("failed to handle %s command from %s", message.body.op.value,
                                  message.sender)

    def _controller_presence(self, presence: wire.Presence) -> None:
        """Log when the controller goes and comes back; nothing else changes: every
        instance keeps running from local state either way."""
        online = presence.state is wire.PresenceState.ONLINE
        if online == self.controller_online:
            return
        now = time.time()
        if not online:
            log.warning("controller offline since %s; running %d instance(s) from local state",
                        time.strftime("%H:%M:%S", time.localtime(now)),
                        sum(1 for s in self.slots.values() if s.want is Want.RUN))
        elif self.controller_online is False and self.controller_since is not None:
            log.info("controller back after %.1f s offline", now - self.controller_since)
        self.controller_online, self.controller_since = online, now

    def status(self) -> dict[str, object]:
        """What this agent knows about its links, for operators and tests."""
        return {"node": self.config.node, "broker_connected": bool(
                    self.bus is not None and self.bus.connected.is_set()),
                "broker_silent_for": round(time.monotonic() - self.last_contact, 1),
                "controller_online": self.controller_online,
                "controller_since": self.controller_since, "fenced": self.fenced}

    # -- self-fencing ----------------------------------------------------------

    async def _fence_loop(self) -> None:
        """Stop singletons after their fence time without the broker: the controller
        replaces them only once that time (plus a margin) has passed since it last heard
        from this node, so the two never run at once. Other workloads keep running."""
        while True:
            await asyncio.sleep(0.5)
            silent = time.monotonic() - self.last_contact
            # A silence of a few report intervals is normal between echoes.
            if silent < 3 * self.config.report_interval:
                continue
            for slot in to_fence(list(self.slots.values()), silent):
                try:
                    await self._fence(slot, silent)
                except RuntimeAdapterError as exc:  # fenced on disk: supervise retries the stop
                    log.warning("cannot stop %s yet: %s", slot.name, exc)

    async def _fence(self, slot: LocalSlot, silent: float) -> None:
        why = (f"self-fenced: no contact with the broker for {silent:.1f} s (singleton, fences "
               f"after {slot.fence_after:g} s)")
        log.warning("stopping %s generation %d: %s", slot.name, slot.generation, why)
        fenced = fence(slot)
        self.state.put(fenced)  # durable first: a restart while cut off must not revive it
        self.slots[(slot.deployment, slot.slot)] = fenced
        self.fenced += 1
        for inst in [i for i in await self.runtime.list()
                     if (i.deployment, i.slot) == (slot.deployment, slot.slot)]:
            # Queued while offline (QoS 1): the controller reads why when it returns.
            await self._stop(inst, why, grace=1.0)

    async def _handle_command(self, cmd: wire.Command, sender: str) -> None:
        name = f"{cmd.deployment}/{cmd.slot}"
        if cmd.op is wire.CommandOp.LOGS:
            if len(self._logs_tasks) >= LOGS_IN_FLIGHT:
                self._publish_event(wire.Event(
                    type=wire.EventType.REJECT, command_id=cmd.command_id,
                    reason=f"cannot read logs: {LOGS_IN_FLIGHT} logs requests already wait "
                    "on the runtime"))
                return
            task = asyncio.create_task(self._logs_answered(cmd), name=f"logs {name}")
            self._logs_tasks.add(task)
            task.add_done_callback(self._logs_tasks.discard)
            return
        reply = answer(cmd, self.slots.get((cmd.deployment, cmd.slot)))
        if reply.verdict is Verdict.REJECT:
            log.warning("refused %s %s generation %d from %s: %s",
                        cmd.op.value, name, cmd.generation, sender, reply.reason)
            self._publish_event(wire.Event(type=wire.EventType.REJECT, command_id=cmd.command_id,
                                           reason=reply.reason))
            return
        if reply.verdict is Verdict.ACCEPT and reply.slot is not None:
            # Persist before acknowledging: an acked command survives a crash.
            self.state.put(reply.slot)
            self.slots[(cmd.deployment, cmd.slot)] = reply.slot
            self.restarts.pop((cmd.deployment, cmd.slot), None)
            self.failures.pop((cmd.deployment, cmd.slot), None)
            log.info("accepted %s %s generation %d", cmd.op.value, name, cmd.generation)
            self.wake.set()
        self._publish_event(wire.Event(type=wire.EventType.ACK, command_id=cmd.command_id,
                                       duplicate=reply.verdict is Verdict.DUPLICATE,
                                       reason=reply.reason))

    async def _logs_answered(self, cmd: wire.Command) -> None:
        try:
            await self._reply_logs(cmd)
        except Exception:  # the task is not awaited: say so here, keep the agent going
            log.exception("failed to answer logs for %s/%d", cmd.deployment, cmd.slot)

    async def _reply_logs(self, cmd: wire.Command) -> None:
        mine = [i for i in self.instances if (i.deployment, i.slot) == (cmd.deployment, cmd.slot)]
        if not mine:
            self._publish_event(wire.Event(type=wire.EventType.REJECT, command_id=cmd.command_id,
                                           reason=f"no instance of {cmd.deployment}/{cmd.slot} "
                                           f"on {self.config.node}"))
            return
        newest = max(mine, key=lambda i: i.generation)
        try:
            text = await asyncio.wait_for(self.runtime.logs(newest.runtime_id, tail=cmd.tail),
                                          LOGS_TIMEOUT)
        except (RuntimeAdapterError, TimeoutError) as exc:
            why = (str(exc) if isinstance(exc, RuntimeAdapterError)
                   else f"the runtime did not answer within {LOGS_TIMEOUT:g} s")
            self._publish_event(wire.Event(type=wire.EventType.REJECT, command_id=cmd.command_id,
                                           reason=f"cannot read logs: {why}"))
            return
        limit = wire.MAX_PAYLOAD // 2
        if len(text.encode()) > limit:
            text = text.encode()[-limit:].decode(errors="replace")
        self._publish_event(wire.Event(type=wire.EventType.LOGS, command_id=cmd.command_id,
                                       logs=text))

    # -- supervision -----------------------------------------------------------

    async def _supervise_loop(self) -> None:
        while True:
            try:
                await self.supervise()
            except RuntimeAdapterError as exc:
                log.warning("runtime unavailable: %s", exc)
            except Exception:  # a bug in one pass must not end supervision of every workload
                log.exception("supervise pass failed")
            await wait_set(self.wake, 2.0)
            self.wake.clear()

    async def supervise(self) -> None:
        """Make the runtime match local state, once."""
        now = time.time()
        by_slot: dict[tuple[str, int], list[InstanceStatus]] = {}
        for inst in await self.runtime.list():
            by_slot.setdefault((inst.deployment, inst.slot), []).append(inst)
        for key, insts in by_slot.items():
            if key not in self.slots:
                # Not ours on disk (state lost?): adopt it as it is; the controller decides.
                newest = max(insts, key=lambda i: i.generation)
                log.info("adopting %s/%d generation %d found in the runtime",
                         key[0], key[1], newest.generation)
                self.slots[key] = LocalSlot(deployment=key[0], slot=key[1],
                                            generation=newest.generation,
                                            revision=newest.revision, want=Want.RUN)
                self.state.put(self.slots[key])
        # Commands keep arriving while this pass awaits the runtime: work on a snapshot,
        # a few slots at a time (a Pi should not start fifty containers at once).
        gate = asyncio.Semaphore(SUPERVISE_CONCURRENCY)
        await asyncio.gather(*(self._supervise_slot(slot, by_slot.get(key, []), now, gate)
                               for key, slot in list(self.slots.items())))
        self.instances = await self.runtime.list()
        self._report_changes()

    async def _supervise_slot(self, slot: LocalSlot, insts: list[InstanceStatus], now: float,
                              gate: asyncio.Semaphore) -> None:
        async with gate:
            try:
                for inst in insts:
                    if inst.generation < slot.generation or slot.want is not Want.RUN:
                        await self._stop(inst, f"superseded by generation {slot.generation}"
                                         if slot.want is Want.RUN else "self-fenced"
                                         if slot.want is Want.FENCED
                                         else "stopped by the controller")
                if slot.want is Want.RUN:
                    current = [i for i in insts if i.generation == slot.generation]
                    await self._keep_running(slot, current[0] if current else None, now)
            except RuntimeAdapterError as exc:  # one slot's trouble must not stall the others
                log.warning("cannot supervise %s: %s", slot.name, exc)

    async def _stop(self, inst: InstanceStatus, why: str, *, grace: float = 5.0) -> None:
        log.info("stopping %s/%d generation %d: %s", inst.deployment, inst.slot,
                 inst.generation, why)
        with contextlib.suppress(InstanceNotFound):
            await self.runtime.stop(inst.runtime_id, grace=grace)
        self._remember(inst, gone=True)
        self._publish_instance(inst, InstanceState.STOPPED, reason=why)

    async def _keep_running(self, slot: LocalSlot, inst: InstanceStatus | None, now: float) -> None:
        if inst is not None and inst.state in (InstanceState.RUNNING, InstanceState.STARTING):
            return
        if slot.workload is None:
            return  # adopted without a spec: nothing to restart it from
        policy = slot.workload.restart_policy
        if inst is not None:
            exited_ok = inst.state is InstanceState.EXITED and inst.exit_code == 0
            if policy == "Never" or (policy == "OnFailure" and exited_ok):
                return
        backoff = self.restarts.setdefault((slot.deployment, slot.slot), Restarts())
        if now < backoff.not_before:
            return
        if inst is not None:
            # Report how it ended before replacing it, so the controller sees every restart;
            # offline, the QoS 1 publish waits in paho's queue until the next connect.
            if self.reported.get((inst.deployment, inst.slot, inst.generation)) != (
                    inst.state.value, inst.exit_code):
                self._publish_instance(inst, inst.state, inst.reason)
            with contextlib.suppress(InstanceNotFound):
                await self.runtime.stop(inst.runtime_id, grace=0)
            backoff.count += 1
            log.info("restarting %s (exit %s), restart #%d", slot.name, inst.exit_code,
                     backoff.count)
        backoff.not_before = now + min(2.0 ** backoff.count, RESTART_BACKOFF_MAX)
        try:
            started = await self.runtime.start(self._spec(slot))
        except PermanentRuntimeError as exc:
            log.warning("cannot start %s: %s", slot.name, exc)
            self._publish_failed(slot, str(exc))
        else:
            self.failures.pop((slot.deployment, slot.slot), None)
            self._remember(started)
            self._publish_instance(started, started.state, started.reason)

    def _identity_env(self, slot: LocalSlot) -> dict[str, str]:
        """Where an instance runs, as its environment (like Nomad's NOMAD_ALLOC_INDEX)."""
        return {"EDGEFED_NODE": self.config.node, "EDGEFED_SITE": self.config.site,
                "EDGEFED_DEPLOYMENT": slot.deployment, "EDGEFED_SLOT": str(slot.slot),
                "EDGEFED_GENERATION": str(slot.generation)}

    def _remember(self, inst: InstanceStatus, *, gone: bool = False) -> None:
        """Keep ``self.instances`` (what capacity reports list) in step with the events
        just sent, so a report built before the next runtime list does not contradict them."""
        self.instances = [i for i in self.instances if i.runtime_id != inst.runtime_id]
        if not gone:
            self.instances.append(inst)

    def _spec(self, slot: LocalSlot) -> InstanceSpec:
        w = slot.workload
        assert w is not None
        return InstanceSpec(
            deployment=slot.deployment, slot=slot.slot, generation=slot.generation,
            revision=slot.revision, node=self.config.node, image=w.image, command=w.command,
            args=w.args, env={**self._identity_env(slot), **w.env}, cpu_millis=w.cpu_millis,
            memory_bytes=w.memory_bytes,
            ports=tuple(PortSpec(container_port=p.container_port, host_port=p.host_port,
                                 protocol=p.protocol) for p in w.ports),
            labels=dict(self.config.container_labels),
        )

    # -- reporting -------------------------------------------------------------

    def _report(self, deployment: str, slot: int, generation: int, revision: int, state: str,
                *, exit_code: int | None = None, reason: str = "") -> wire.InstanceReport:
        local = self.slots.get((deployment, slot))
        w = local.workload if local else None
        return wire.InstanceReport(
            deployment=deployment, slot=slot, generation=generation, revision=revision,
            state=state, exit_code=exit_code, reason=reason,
            cpu_millis=w.cpu_millis if w else 0, memory_bytes=w.memory_bytes if w else 0,
            restarts=self.restarts.get((deployment, slot), Restarts()).count)

    def _publish_instance(self, inst: InstanceStatus, state: InstanceState, reason: str) -> None:
        key = (inst.deployment, inst.slot, inst.generation)
        self.reported[key] = (state.value, inst.exit_code)
        self._publish_event(wire.Event(type=wire.EventType.INSTANCE, instance=self._report(
            inst.deployment, inst.slot, inst.generation, inst.revision, state.value,
            exit_code=inst.exit_code, reason=reason)))
        self.changed.set()

    def _publish_failed(self, slot: LocalSlot, reason: str) -> None:
        self.failures[(slot.deployment, slot.slot)] = (slot.generation, reason)
        key = (slot.deployment, slot.slot, slot.generation)
        if self.reported.get(key) == (InstanceState.FAILED.value, None):
            return
        self.reported[key] = (InstanceState.FAILED.value, None)
        self._publish_event(wire.Event(type=wire.EventType.INSTANCE, instance=self._report(
            slot.deployment, slot.slot, slot.generation, slot.revision,
            InstanceState.FAILED.value, reason=reason)))
        self.changed.set()

    def _report_changes(self) -> None:
        for inst in self.instances:
            key = (inst.deployment, inst.slot, inst.generation)
            if self.reported.get(key) != (inst.state.value, inst.exit_code):
                self._publish_instance(inst, inst.state, inst.reason)

    def capacity(self) -> wire.Capacity:
        used_cpu = used_mem = 0
        for slot in self.slots.values():
            if slot.want is Want.RUN and slot.workload is not None:
                used_cpu += slot.workload.cpu_millis
                used_mem += slot.workload.memory_bytes
        reports = [self._report(i.deployment, i.slot, i.generation, i.revision, i.state.value,
                                exit_code=i.exit_code, reason=i.reason)
                   for i in self.instances]
        present = {(i.deployment, i.slot) for i in self.instances}
        for (dep, index), (generation, reason) in self.failures.items():
            local = self.slots.get((dep, index))
            if (dep, index) not in present and local is not None and local.generation == generation:
                reports.append(self._report(dep, index, generation, local.revision,
                                            InstanceState.FAILED.value, reason=reason))
        return wire.Capacity(
            site=self.config.site, arch=host_arch(), os=host_os(), runtime=self.runtime.name,
            labels=self.config.labels, allocatable=self.probe.allocatable(),
            used=wire.Resources(cpu_millis=used_cpu, memory_bytes=used_mem, disk_bytes=0),
            images=self.images, instances=tuple(reports), interval=self.config.report_interval,
            rtt_ms=self.probes.rtt_ms(), devices=self.devices,
        )

    async def _report_loop(self) -> None:
        """Capacity reports are the node's heartbeats: nothing here may wait on the
        runtime (see _image_loop), or a hung engine would make a healthy node Lost."""
        assert self.bus is not None
        while True:
            await self.bus.connected.wait()
            self.changed.clear()
            self.bus.publish(self.topics.node(self.config.node, wire.NodeTopic.CAPACITY),
                             self._encode(wire.SCHEMA_CAPACITY, self.capacity()), retain=True)
            await wait_set(self.changed, self.config.report_interval)

    async def _image_loop(self) -> None:
        """Keep ``self.images`` fresh for the reports, apart from them: the reports carry
        the last list known while the engine does not answer. At most one listing is in
        flight, however long the engine hangs."""
        listing: asyncio.Task[list[str]] | None = None
        silent_since: float | None = None
        try:
            while True:
                if listing is None:
                    listing = asyncio.create_task(self.runtime.images(), name="list images")
                done, _ = await asyncio.wait({listing}, timeout=IMAGES_TIMEOUT)
                if not done:
                    if silent_since is None:
                        silent_since = time.monotonic()
                        log.warning("the %s engine does not answer (no image list within %g s); "
                                    "reporting the last %d image(s) known", self.runtime.name,
                                    IMAGES_TIMEOUT, len(self.images))
                    continue
                try:
                    images = tuple(listing.result())
                except RuntimeAdapterError as exc:
                    log.warning("cannot list images: %s", exc)
                else:
                    if silent_since is not None:
                        log.info("the %s engine answers again after %.1f s", self.runtime.name,
                                 time.monotonic() - silent_since)
                        silent_since = None
                    if images != self.images:
                        self.images = images
                        self.changed.set()
                listing = None
                await asyncio.sleep(IMAGES_EVERY)
        finally:
            if listing is not None:
                listing.cancel()
