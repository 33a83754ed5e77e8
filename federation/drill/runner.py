"""Running a drill: start (or attach to) a broker, start the controller and one
agent per node as real processes, apply the workloads through the controller's
API, wait until they run, then inject the faults at their offsets while the
recorders write the log. The log is checked afterwards (:mod:`.check`).

    broker (own, or attached: only the drill's topic root is touched)
      ▲   ▲── site link: netns + fault proxy, or loopback fault proxy ◀── agents
      │   └── controller (REST API polled by the ApiRecorder)
      └── BusRecorder: <root>/v1/# ──▶ drill.jsonl ◀── fault records
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from federation.drill.check import Outcome, check
from federation.drill.links import SiteLink, netns_possible
from federation.drill.record import ApiRecorder, BusRecorder, DrillLog
from federation.drill.spec import Drill, Fault
from federation.localfed import (
    Proc,
    edgefed_argv,
    free_port,
    hold_port,
    start_broker,
    wait_for_port,
)

# A drill's topic root names itself as one: ``drill-<id>`` or ``<prefix>-drill-<id>``.
DRILL_ROOT_RE = re.compile(r"^(?:[A-Za-z0-9_.]+[-.])?drill-[A-Za-z0-9][A-Za-z0-9_.-]*$")
BROKER_ACTIONS = ("restart-broker", "crash-broker")
READY_TIMEOUT = 40.0
CONVERGE_TIMEOUT = 40.0


class DrillRunError(RuntimeError):
    """The drill could not be run (setup failed); not an assertion failure."""


def is_drill_root(root: str) -> bool:
    return bool(DRILL_ROOT_RE.match(root))


@dataclass(kw_only=True)
class RunOptions:
    workdir: Path
    attach: str | None = None  # mqtt://HOST:PORT of an existing federation's broker
    topic_root: str | None = None  # default drill-<name>-<random>
    network: str = "auto"  # auto | netns | proxy
    progress: Callable[[Progress], None] | None = None


@dataclass
class Progress:
    """What the live view shows; updated by the runner."""

    drill: Drill
    phase: str = "starting"
    elapsed: float = 0.0  # since the workloads converged
    done: list[str] = field(default_factory=list)  # faults injected, described
    nodes: dict[str, str] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)


@dataclass(kw_only=True)
class RunResult:
    drill: Drill
    outcome: Outcome
    log_path: Path
    records: list[dict[str, Any]]
    topic_root: str
    network: str
    workdir: Path


class Federation:
    """The drill's processes and links; everything here is stopped by :meth:`close`."""

    def __init__(self, drill: Drill, opts: RunOptions, root: str, log: DrillLog) -> None:
        self.drill, self.opts, self.root, self.log = drill, opts, root, log
        self.workdir = opts.workdir
        self.broker: Proc | None = None
        self.broker_host, self.broker_port = "127.0.0.1", 0
        self.controller: Proc | None = None
        self.api_port = free_port()
        self.agents: dict[str, Proc] = {}
        self.links: dict[str, SiteLink] = {}
        self.site_of: dict[str, str] = {n: s.name for n, s in drill.nodes().items()}
        self.documents: dict[str, dict[str, Any]] = {}  # deployments as applied, by name

    @property
    def broker_url(self) -> str:
        return f"mqtt://{self.broker_host}:{self.broker_port}"

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        import os

        return {**os.environ, "PYTHONUNBUFFERED": "1", "EDGEFED_TOPIC_ROOT": self.root}

    def start_broker(self) -> None:
        if self.opts.attach:
            url = urlsplit(self.opts.attach)
            if url.scheme not in ("mqtt", "tcp") or not url.hostname:
                raise DrillRunError(f"--attach {self.opts.attach!r}: expected mqtt://HOST:PORT")
            self.broker_host, self.broker_port = url.hostname, url.port or 1883
            return
        self.broker, self.broker_port = start_broker(self.workdir / "broker",
                                                     port=self.broker_port or None)

    def start_controller(self) -> None:
        argv = edgefed_argv("controller", "--broker", self.broker_url,
                            "--db", str(self.workdir / "controller.db"),
                            "--listen", f"127.0.0.1:{self.api_port}", "--topic-root", self.root,
                            "--lost-after", f"{self.drill.lost_after:g}",
                            *self.drill.controller_args)
        self.controller = Proc("controller", argv, self.workdir / "controller.log",
                               self.env()).start()
        wait_for_port(self.api_port, timeout=20, proc=self.controller.popen)

    def start_controller_afresh(self) -> None:
        """The controller on a new, empty database: its desired state is gone."""
        for path in self.workdir.glob("controller.db*"):
            path.unlink()
        self.start_controller()

    def open_links(self) -> str:
        use_netns = {"auto": netns_possible(), "netns": True, "proxy": False}[self.opts.network]
        for site in self.drill.sites:
            try:
                link = SiteLink(site.name, (self.broker_host, self.broker_port),
                                use_netns=use_netns)
            except Exception as exc:
                if self.opts.network == "netns":
                    raise DrillRunError(f"site {site.name}: network namespace: {exc}") from exc
                use_netns = False
                link = SiteLink(site.name, (self.broker_host, self.broker_port), use_netns=False)
            self.links[site.name] = link
        return "netns" if use_netns else "proxy"

    def start_agent(self, node: str) -> Proc:
        site = next(s for s in self.drill.sites if s.name == self.site_of[node])
        link = self.links[site.name]
        argv = edgefed_argv("agent", "--broker", link.broker_url, "--site", site.name,
                            "--node", node, "--runtime", "process",
                            "--state-dir", str(self.workdir / "agents" / node),
                            "--report-interval", f"{self.drill.report_interval:g}",
                            "--container-label", f"edgefed.drill={self.root}")
        if site.labels:
            argv += ["--labels", ",".join(f"{k}={v}" for k, v in site.labels.items())]
        proc = Proc(f"agent {node}", link.wrap(argv), self.workdir / f"agent-{node}.log",
                    self.env()).start()
        self.agents[node] = proc
        return proc

    async def kill_instances(self, node: str, *, record: bool = True) -> int:
        """A node losing power takes its replicas with it: SIGKILL their process groups."""
        from cloud_adapters.process_runtime import ProcessRuntime

        state = self.workdir / "agents" / node / "process"
        if not state.exists():
            return 0
        runtime = ProcessRuntime(node, state)
        found = await runtime.list()
        for inst in found:
            await runtime.stop(inst.runtime_id, grace=0)
            if record:
                # Nobody else can tell: the node's agent died with them.
                self.log.write("instance", node=node, deployment=inst.deployment,
                               slot=inst.slot, generation=inst.generation, state="killed",
                               source="harness")
        return len(found)

    def clear_retained(self) -> None:
        """On a shared broker, leave nothing behind under the drill's root: empty the
        retained presence and capacity topics of its nodes and controller."""
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion

        from federation import wire

        topics = wire.Topics(self.root)
        names = [topics.controller_presence] + [
            topics.node(node, kind) for node in self.site_of
            for kind in (wire.NodeTopic.PRESENCE, wire.NodeTopic.CAPACITY)]
        client = paho.Client(CallbackAPIVersion.VERSION2,
                             client_id=f"edgefed-drill-cleanup-{self.root}")
        client.connect(self.broker_host, self.broker_port)
        client.loop_start()
        try:
            for info in [client.publish(t, b"", qos=1, retain=True) for t in names]:
                info.wait_for_publish(timeout=5)
        finally:
            client.loop_stop()
            client.disconnect()

    async def close(self) -> None:
        for proc in self.agents.values():
            await asyncio.to_thread(proc.stop, 5)
        for node in self.agents:
            with contextlib.suppress(Exception):
                await self.kill_instances(node, record=False)
        if self.controller is not None:
            await asyncio.to_thread(self.controller.stop, 5)
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop, 5)
        elif self.opts.attach and self.broker_port:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                await asyncio.to_thread(self.clear_retained)
        for link in self.links.values():
            await asyncio.to_thread(link.close)


async def _restart(proc: Proc, *, crash: bool, down: float,
                   start: Callable[[], Any], port: int | None = None) -> None:
    """Stop ``proc`` and start it again after ``down`` seconds; ``port``, its
    listening port, is held meanwhile so no other process can take it."""
    if crash:
        await asyncio.to_thread(proc.kill)
    else:
        await asyncio.to_thread(proc.stop, 10)
    hold = hold_port(port) if port else None
    try:
        await asyncio.sleep(down)
    finally:
        if hold is not None:
            hold.close()
    await asyncio.to_thread(start)


class Injector:
    """Executes faults; returns the mechanism each used (for the log)."""

    def __init__(self, fed: Federation) -> None:
        self.fed = fed
        self.background: list[asyncio.Task[Any]] = []
        self.refs: dict[str, str] = {}

    def resolve(self, fault: Fault, pods: list[dict[str, Any]]) -> Fault:
        """``@web/0`` as the node or site where that slot runs, fixed at first use."""
        for name in ("node", "site"):
            ref = getattr(fault, name)
            if not ref.startswith("@"):
                continue
            if ref not in self.refs:
                dep, _, slot = ref[1:].partition("/")
                pod = next((p for p in pods if p["deployment"] == dep and
                            str(p["slot"]) == slot and p.get("node")), None)
                if pod is None:
                    raise DrillRunError(f"{fault.action} {ref}: slot {ref[1:]} is not placed")
                node = str(pod["node"])
                self.refs[ref] = node if name == "node" else self.fed.site_of[node]
            fault = (replace(fault, node=self.refs[ref]) if name == "node"
                     else replace(fault, site=self.refs[ref]))
        return fault

    async def inject(self, fault: Fault) -> tuple[str, dict[str, Any]]:
        fed, action = self.fed, fault.action
        if action == "kill-node":
            agent = fed.agents[fault.node]
            pid = agent.pid
            await asyncio.to_thread(agent.kill)
            killed = await fed.kill_instances(fault.node)
            return (f"signal: SIGKILL to agent pid {pid} and to {killed} replica process "
                    "group(s)"), {}
        if action == "hang-node":
            fed.agents[fault.node].signal(signal.SIGSTOP)
            return f"signal: SIGSTOP to agent pid {fed.agents[fault.node].pid}", {}
        if action == "resume-node":
            fed.agents[fault.node].signal(signal.SIGCONT)
            return f"signal: SIGCONT to agent pid {fed.agents[fault.node].pid}", {}
        if action == "restart-node":
            agent = fed.agents[fault.node]
            self._later(_restart(agent, crash=False, down=fault.down,
                                 start=lambda: fed.start_agent(fault.node)))
            return f"signal: SIGTERM to agent pid {agent.pid}, started again after " \
                   f"{fault.down:g} s", {"until": fault.down}
        link = fed.links.get(fault.site)
        if action == "cut-link" and link is not None:
            return link.cut(), {}
        if action == "restore-link" and link is not None:
            return link.restore(), {}
        if action == "degrade-link" and link is not None:
            return link.shape(fault.link), {}
        if action == "reset-link" and link is not None:
            return link.reset(), {}
        if action == "flap-link" and link is not None:
            self._later(self._flap(link, fault))
            how = "nft drop / flush" if link.namespace else "fault proxy hold / release"
            return (f"{how}: {fault.times} cut(s) of {fault.period:g} s every "
                    f"{2 * fault.period:g} s"), {"until": 2 * fault.period * fault.times}
        if action in BROKER_ACTIONS:
            broker = fed.broker
            assert broker is not None  # refused in attach mode before the run
            crash = action == "crash-broker"
            self._later(_restart(broker, crash=crash, down=fault.down,
                                 start=fed.start_broker, port=fed.broker_port))
            return (f"signal: {'SIGKILL' if crash else 'SIGTERM'} to mosquitto pid "
                    f"{broker.pid}, started again on the same port after {fault.down:g} s"
                    ), {"until": fault.down}
        if action in ("restart-controller", "crash-controller"):
            ctl = fed.controller
            assert ctl is not None
            crash = action == "crash-controller"
            start = fed.start_controller
            if fault.fresh_database:
                start = fed.start_controller_afresh
            self._later(_restart(ctl, crash=crash, down=fault.down, start=start,
                                 port=fed.api_port))
            database = "an empty database" if fault.fresh_database else "the same database"
            return (f"signal: {'SIGKILL' if crash else 'SIGTERM'} to controller pid {ctl.pid}, "
                    f"started again with {database} after {fault.down:g} s"
                    ), {"until": fault.down}
        if action == "scale":
            return await self._scale(fault), {}
        raise DrillRunError(f"no way to inject {action} on {fault.target}")

    async def _scale(self, fault: Fault) -> str:
        from federation.client import ApiClient, ApiError, quote

        document = self.fed.documents.get(fault.deployment)
        if document is None:
            raise DrillRunError(f"scale: no workload named {fault.deployment!r} "
                                f"(workloads: {', '.join(sorted(self.fed.documents))})")
        document = {**document, "spec": {**document["spec"], "replicas": fault.replicas}}
        path = f"/api/v1/deployments/{quote(fault.deployment)}"
        try:
            await asyncio.to_thread(ApiClient(self.fed.server).put, path, document)
        except (ApiError, OSError) as exc:
            return f"REST: PUT {path} failed: {exc}"
        self.fed.documents[fault.deployment] = document
        return f"REST: PUT {path} with replicas {fault.replicas}"

    def _later(self, coro: Any) -> None:
        self.background.append(asyncio.get_running_loop().create_task(coro))

    async def _flap(self, link: SiteLink, fault: Fault) -> None:
        for _ in range(fault.times):
            link.cut()
            await asyncio.sleep(fault.period)
            link.restore()
            await asyncio.sleep(fault.period)

    async def settle(self) -> None:
        await asyncio.gather(*self.background, return_exceptions=True)


def _check_attach(drill: Drill, opts: RunOptions, root: str) -> None:
    if not is_drill_root(root):
        raise DrillRunError(f"topic root {root!r} is not a drill root (drill-<id> or "
                            "<prefix>-drill-<id>): refusing to touch non-drill topics")
    if opts.attach:
        touching = [f.action for f in drill.faults if f.action in BROKER_ACTIONS]
        if touching:
            raise DrillRunError(f"attach mode: {', '.join(touching)} would stop the shared "
                                "broker and so touch every federation on it; refusing")


async def _wait(what: str, within: float, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise DrillRunError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.1)


async def _apply(fed: Federation) -> int:
    """PUT every workload (native, Kubernetes or Compose) through the controller's API;
    returns the replica count to wait for."""
    from federation.client import ApiClient, ApiError, quote
    from policies.loader import load_text
    from policies.model import deployment_to_document, policy_to_document

    client = ApiClient(fed.server)
    replicas = 0
    for w in fed.drill.workloads:
        loaded = load_text(w.text, filename=w.where)
        for policy in loaded.policies:
            await asyncio.to_thread(client.put, f"/api/v1/placementpolicies/{quote(policy.name)}",
                                    policy_to_document(policy))
        for dep in loaded.deployments:
            fed.documents[dep.name] = deployment_to_document(dep)
            try:
                await asyncio.to_thread(client.put, f"/api/v1/deployments/{quote(dep.name)}",
                                        fed.documents[dep.name])
            except ApiError as exc:
                raise DrillRunError(f"{w.where}: deployment {dep.name}: {exc.message} "
                                    f"{json.dumps(exc.body)[:600]}") from exc
            replicas += dep.replicas
    return replicas


async def run_drill(drill: Drill, opts: RunOptions) -> RunResult:
    root = opts.topic_root or f"drill-{drill.name}-{uuid.uuid4().hex[:6]}"
    _check_attach(drill, opts, root)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    log_path = opts.workdir / "drill.jsonl"
    log_path.unlink(missing_ok=True)
    log = DrillLog(log_path)
    fed = Federation(drill, opts, root, log)
    progress = Progress(drill=drill)
    show = opts.progress or (lambda _p: None)
    injector = Injector(fed)
    tasks: list[asyncio.Task[Any]] = []
    recorder: BusRecorder | None = None
    network = ""
    try:
        await asyncio.to_thread(fed.start_broker)
        network = await asyncio.to_thread(fed.open_links)
        log.write("drill", phase="start", name=drill.name, topic_root=root,
                  broker=fed.broker_url, attached=bool(opts.attach), network=network,
                  lost_after=drill.lost_after, report_interval=drill.report_interval,
                  controller_args=list(drill.controller_args),
                  sites={s.name: s.node_names() for s in drill.sites})
        recorder = BusRecorder(log, fed.broker_url, root, persistent=not opts.attach)
        await recorder.start()
        await asyncio.to_thread(fed.start_controller)
        for site in drill.sites:
            if site.link.shaped:
                log.write("fault", action="degrade-link", site=site.name,
                          target=f"site {site.name}", mechanism=fed.links[site.name].shape(
                              site.link), declared=True)
        for node in drill.nodes():
            fed.start_agent(node)
        api = ApiRecorder(log, fed.server)
        tasks.append(asyncio.create_task(api.run()))

        def ready() -> bool:
            progress.nodes = {n["name"]: n["state"] for n in api.snapshot["nodes"]}
            show(progress)
            return sum(s == "Ready" for s in progress.nodes.values()) == len(fed.agents)

        progress.phase = "waiting for nodes"
        await _wait(f"{len(fed.agents)} Ready nodes", READY_TIMEOUT, ready)
        log.write("drill", phase="ready")
        progress.phase = "applying workloads"
        replicas = await _apply(fed)

        def converged() -> bool:
            progress.pods = list(api.snapshot["pods"])
            show(progress)
            return len(progress.pods) == replicas and all(
                p["state"] == "Running" for p in progress.pods)

        await _wait(f"{replicas} running replicas", CONVERGE_TIMEOUT, converged)
        start = log.now()
        log.write("drill", phase="converged", replicas=replicas)
        progress.phase = "running"
        for fault in drill.faults:
            await _until(start + fault.at, start, log, progress, api, show)
            at = log.now()
            fault = injector.resolve(fault, list(api.snapshot["pods"]))
            mechanism, extra = await injector.inject(fault)
            if "until" in extra:
                extra["until"] = round(at + extra["until"], 4)
            log.write("fault", t=at, action=fault.action, target=fault.target, node=fault.node,
                      site=fault.site, mechanism=mechanism, **extra)
            progress.done.append(f"t={fault.at:g}s {fault.action} {fault.target}: {mechanism}")
        await _until(start + drill.duration, start, log, progress, api, show)
        await injector.settle()
        log.write("drill", phase="end")
        progress.phase = "checking"
        show(progress)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if recorder is not None:
            await recorder.stop()
        log.close()
        await injector.settle()
        await fed.close()
    outcome = check(log.records, drill.assertions)
    return RunResult(drill=drill, outcome=outcome, log_path=log_path, records=log.records,
                     topic_root=root, network=network, workdir=opts.workdir)


async def _until(t: float, start: float, log: DrillLog, progress: Progress,
                 api: ApiRecorder, show: Callable[[Progress], None]) -> None:
    """Keep the live view fresh until ``t`` on the log's clock."""
    while True:
        left = t - log.now()
        progress.elapsed = log.now() - start
        progress.nodes = {n["name"]: n["state"] for n in api.snapshot["nodes"]}
        progress.pods = list(api.snapshot["pods"])
        show(progress)
        if left <= 0:
            return
        await asyncio.sleep(min(left, 0.25))
