"""Node failover latency: from an agent's failure to its replicas' replacements
commanded and running, on a local federation (real Mosquitto, controller and
agents as real processes, replicas as host processes), plus a control run that
counts false Lost transitions under CPU load.

    python bench/failover.py [--trials 20] [--lost-after 0.5] [--report-interval 1]
                             [--link-trials 10] [--control-seconds 60]

    per mode (crash = SIGKILL, hang = SIGSTOP, link = nft drop on the agent's netns):
      3 agents in 3 sites, N replicas running ──▶ per trial:
        fail the busiest agent at t0 ──▶ poll GET /api/v1/pods every 20 ms until every
        slot it ran runs elsewhere at a higher generation ──▶ read the controller's
        event table (SQLite, wall-clock `at`) for the times of:
          detection   first NodeSuspect (or NodeLost) of the victim after t0
          lost        its NodeLost
          commanded   the last of its slots' Scheduled events (the run command goes
                      out in the same pass: replacement commands sent)
          running     the last InstanceRunning of a replacement
        ──▶ stop what the victim left behind, add a fresh agent (a new node name,
            so flap damping never sees the same node twice), wait until Ready

    control: fresh federation, flap damping on (the controller's defaults), two
    busy-looping processes (one per core) for --control-seconds; every NodeLost is
    a false one, since every agent stays up.

How each failure is noticed: SIGKILL closes the agent's socket, so the broker sends
its Last Will at once. SIGSTOP and a cut link are noticed by missed capacity
heartbeats (--report-interval x the controller's heartbeat misses) or the broker's
MQTT keepalive (1.5 x the agent's keepalive), whichever comes first; the agent's
keepalive is passed as --keepalive only if the agent takes that flag. Replacement
commands go out once the node has been out of contact for the grace (--lost-after).

p50/p99 are nearest-rank quantiles (with 20 trials p99 is the maximum). Link
trials need root and ip/nft (federation.drill.faults); they are skipped, and say
so, otherwise. One JSON document goes to stdout, progress to stderr. Everything
started is stopped on exit: processes, replica processes, namespaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from federation.inventory import Liveness
from federation.localfed import LocalFederation, Proc, edgefed_argv, start_broker

T = TypeVar("T")
POLL = 0.02
SITES = ("a", "b", "c")
DOCUMENT = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: worker
spec:
  replicas: {replicas}
  container:
    image: none
    command: ["sleep", "{marker}"]
    resources: {{cpu: 50m, memory: 8Mi}}
"""


def progress(message: str) -> None:
    print(f"[failover {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def get(fed: LocalFederation, kind: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{fed.server}/api/v1/{kind}", timeout=5) as answer:
        return list(json.load(answer)["items"])


def put(fed: LocalFederation, replicas: int, marker: str) -> None:
    body = json.dumps(yaml.safe_load(DOCUMENT.format(replicas=replicas, marker=marker))).encode()
    request = urllib.request.Request(f"{fed.server}/api/v1/deployments/worker", data=body,
                                     method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def wait(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(POLL)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


def quantile(values: list[float], q: float) -> float | None:
    """Nearest-rank quantile."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)


def summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": quantile(values, 0.5), "p99": quantile(values, 0.99),
            "min": round(min(values), 3) if values else None,
            "max": round(max(values), 3) if values else None}


def events(db: Path, since: float) -> list[dict[str, Any]]:
    """The controller's events at or after ``since`` (read-only; WAL lets us read
    while it writes)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        rows = conn.execute("SELECT at, kind, deployment, slot, node, message FROM events "
                            "WHERE at >= ? ORDER BY id", (since,)).fetchall()
    keys = ("at", "kind", "deployment", "slot", "node", "message")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def generation_of(message: str) -> int:
    """``worker/3 generation 2 ...`` -> 2."""
    words = message.split()
    return int(words[words.index("generation") + 1]) if "generation" in words else 0


def stop_instances(node: str, state_dir: Path) -> None:
    """Process replicas outlive their agent by design; end the ones a victim left."""
    from cloud_adapters.process_runtime import ProcessRuntime

    async def stop_all() -> None:
        runtime = ProcessRuntime(node, state_dir / "process")
        for inst in await runtime.list():
            await runtime.stop(inst.runtime_id, grace=1)

    if (state_dir / "process").exists():
        asyncio.run(stop_all())


def agent_takes(flag: str) -> bool:
    out = subprocess.run(edgefed_argv("agent", "--help"), capture_output=True, text=True,
                         check=False).stdout
    return flag in out


class Federation:
    """One controller, agents (optionally each in a network namespace), the worker."""

    def __init__(self, workdir: Path, broker_port: int, args: argparse.Namespace, *,
                 netns: bool = False, controller: tuple[str, ...] = ()) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.args = args
        self.fed = LocalFederation(workdir / self.tag, topic_root=f"bench-{self.tag}",
                                   runtime="process", tag=self.tag)
        self.fed.broker_port = broker_port
        self.netns = netns
        self.namespaces: dict[str, Any] = {}
        self.marker = str(uuid.uuid4().int % 10**8 + 10**8)
        self.serial = 0
        self.fed.start_controller("--lost-after", str(args.lost_after), *controller)
        for site in SITES:
            self.add_agent(site)
        self.ready(len(SITES))
        put(self.fed, args.replicas, self.marker)
        self.running()

    @property
    def db(self) -> Path:
        return self.fed.workdir / "controller.db"

    def add_agent(self, site: str) -> str:
        self.serial += 1
        node = f"{site}{self.serial}-{self.tag}"
        extra = ["--report-interval", str(self.args.report_interval)]
        if self.args.keepalive_flag:
            extra += ["--keepalive", str(self.args.keepalive)]
        if not self.netns:
            self.fed.start_agent(node, f"site-{site}", extra=extra)
            return node
        from federation.drill.faults import SiteNamespace

        ns = SiteNamespace(f"site-{site}").open()
        self.namespaces[node] = ns
        proxy = ns.bridge(self.fed.broker_port)
        argv = edgefed_argv("agent", "--broker", f"mqtt://{ns.host_addr}:{proxy.port}",
                            "--site", f"site-{site}", "--node", node, "--runtime", "process",
                            "--state-dir", str(self.fed.workdir / "agents" / node), *extra)
        self.fed.agents[node] = Proc(f"agent {node}", ns.argv(argv),
                                     self.fed.workdir / f"agent-{node}.log",
                                     self.fed.env()).start()
        return node

    def ready(self, count: int) -> None:
        wait(lambda: sum(n["state"] == "Ready" for n in get(self.fed, "nodes")) >= count, 30,
             f"{count} Ready nodes")

    def running(self, avoid: str | None = None) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            pods = get(self.fed, "pods")
            ok = len(pods) == self.args.replicas and all(
                p["state"] == "Running" and p["node"] != avoid for p in pods)
            return pods if ok else None

        return wait(check, 30, f"{self.args.replicas} running replicas")

    def trial(self, mode: str) -> dict[str, float]:
        before = self.running()
        victim = str(Counter(p["node"] for p in before).most_common(1)[0][0])
        moved = {p["slot"]: p["generation"] for p in before if p["node"] == victim}
        agent = self.fed.agents[victim]
        t0 = time.time()
        if mode == "crash":
            agent.kill()
        elif mode == "hang":
            agent.signal(signal.SIGSTOP)
        else:
            self.namespaces[victim].cut()

        def replaced() -> bool:
            pods = {p["slot"]: p for p in get(self.fed, "pods")}
            return all(pods[s]["node"] != victim and pods[s]["generation"] > g
                       and pods[s]["state"] == "Running" for s, g in moved.items())

        try:
            wait(replaced, self.args.lost_after + 30, f"{victim}'s replicas replaced")
            polled = time.time() - t0
            return self.timings(victim, moved, t0, polled)
        finally:
            self.retire(victim)

    def timings(self, victim: str, moved: dict[int, int], t0: float,
                polled: float) -> dict[str, float]:
        seen = events(self.db, t0)

        def first(kinds: tuple[str, ...], slot: int | None = None) -> float | None:
            for e in seen:
                if e["kind"] in kinds and (
                        (slot is None and e["node"] == victim) or (
                        slot is not None and e["slot"] == slot and e["node"] != victim
                        and generation_of(e["message"]) > moved[slot])):
                    return float(e["at"]) - t0
            return None

        detection = first(("NodeSuspect", "NodeLost"))
        lost = first(("NodeLost",))
        commanded = [first(("Scheduled",), s) for s in moved]
        running = [first(("InstanceRunning",), s) for s in moved]
        out = {"detection": detection, "lost": lost,
               "commanded": max(c for c in commanded if c is not None) if all(
                   c is not None for c in commanded) else None,
               "running": max(r for r in running if r is not None) if all(
                   r is not None for r in running) else None,
               "polled_running": polled, "slots_moved": float(len(moved))}
        return {k: round(v, 3) for k, v in out.items() if v is not None}

    def retire(self, victim: str) -> None:
        """Stop what the victim left behind and replace it with a fresh agent."""
        proc = self.fed.agents.pop(victim)
        proc.signal(signal.SIGCONT)
        proc.kill()
        stop_instances(victim, self.fed.workdir / "agents" / victim)
        ns = self.namespaces.pop(victim, None)
        if ns is not None:
            ns.close()
        self.add_agent(victim[0])
        self.ready(len(SITES))

    def close(self) -> None:
        self.fed.stop()
        for node in list(self.fed.agents):
            stop_instances(node, self.fed.workdir / "agents" / node)
        for ns in self.namespaces.values():
            ns.close()


def run_mode(workdir: Path, port: int, args: argparse.Namespace, mode: str,
             trials: int) -> dict[str, Any]:
    fed = Federation(workdir, port, args, netns=mode == "link")
    runs: list[dict[str, float]] = []
    failures: list[str] = []
    try:
        for i in range(trials):
            try:
                times = fed.trial(mode)
            except TimeoutError as exc:
                failures.append(f"trial {i + 1}: {exc}")
                progress(f"{mode} trial {i + 1}: {exc}")
                continue
            progress(f"{mode} trial {i + 1}/{trials}: {times}")
            runs.append(times)
    finally:
        fed.close()
    return {
        "failure": {"crash": "SIGKILL", "hang": "SIGSTOP",
                    "link": "nft drop, both directions"}[mode],
        "trials": len(runs), "failed_trials": failures,
        "seconds_from_failure": {
            phase: summary([r[phase] for r in runs if phase in r])
            for phase in ("detection", "lost", "commanded", "running", "polled_running")},
        "runs": runs,
    }


def cpu_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             start_new_session=True) for _ in range(count)]


def control(workdir: Path, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """Damping on, every core busy, nothing failed: count Lost (all false)."""
    fed = Federation(workdir, port, args)
    hogs: list[subprocess.Popen[bytes]] = []
    states: Counter[str] = Counter()
    try:
        before = {(p["slot"], p["node"], p["generation"]) for p in fed.running()}
        t0 = time.time()
        hogs = cpu_hogs(os.cpu_count() or 2)
        load0 = os.getloadavg()[0]
        while time.time() < t0 + args.control_seconds:
            for n in get(fed.fed, "nodes"):
                states[n["state"]] += 1
            time.sleep(0.1)
        load1 = os.getloadavg()[0]
        seen = events(fed.db, t0)
        lost = [e for e in seen if e["kind"] == "NodeLost"]
        suspect = [e for e in seen if e["kind"] == "NodeSuspect"]
        for hog in hogs:
            hog.kill()
            hog.wait(5)
        hogs = []
        after = {(p["slot"], p["node"], p["generation"]) for p in fed.running()}
        return {
            "seconds": args.control_seconds, "cpu_hogs": os.cpu_count() or 2,
            "load_average_1m": [round(load0, 2), round(load1, 2)],
            "false_lost": len(lost), "false_lost_target": 0,
            "suspect_transitions": len(suspect),
            "node_state_samples": dict(states),
            "replicas_moved": len(before - after),
            "lost_events": [e["message"] for e in lost][:10],
        }
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(5)
        fed.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="per mode, crash and hang")
    parser.add_argument("--link-trials", type=int, default=10,
                        help="nft link cuts (needs root, ip, nft; 0: none)")
    parser.add_argument("--lost-after", type=float, default=0.5,
                        help="the controller's grace, seconds out of contact (default 0.5)")
    parser.add_argument("--report-interval", type=float, default=1.0,
                        help="agents' capacity heartbeat, seconds (default 1)")
    parser.add_argument("--keepalive", type=int, default=2,
                        help="agents' MQTT keepalive, if the agent takes --keepalive")
    parser.add_argument("--replicas", type=int, default=6)
    parser.add_argument("--control-seconds", type=float, default=60.0,
                        help="CPU-hog control run; 0 skips it")
    parser.add_argument("--modes", default="crash,hang,link")
    args = parser.parse_args(argv)
    args.keepalive_flag = agent_takes("--keepalive")
    can_netns = os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "nft"))
    started = time.monotonic()
    results: dict[str, Any] = {}
    notes: list[str] = []
    if not args.keepalive_flag:
        notes.append("the agent takes no --keepalive: its MQTT keepalive is the Bus default; "
                     "a hang and a cut link are noticed by missed heartbeats")
    with tempfile.TemporaryDirectory(prefix="edgefed-failover-") as tmp:
        broker, port = start_broker(Path(tmp) / "broker")
        try:
            for mode in args.modes.split(","):
                trials = args.link_trials if mode == "link" else args.trials
                if mode == "link" and not can_netns:
                    notes.append("link trials skipped: need root and ip/nft")
                    continue
                if trials > 0:
                    progress(f"{mode}: {trials} trials")
                    results[mode] = run_mode(Path(tmp), port, args, mode, trials)
            if args.control_seconds > 0:
                progress(f"control: {args.control_seconds:g} s with every core busy")
                results["control"] = control(Path(tmp), port, args)
        finally:
            broker.stop()
    targets = {"crash_commanded_p99_seconds": 1.0, "hang_commanded_p99_seconds": 6.0,
               "control_false_lost": 0}
    met = {}
    for mode, key in (("crash", "crash_commanded_p99_seconds"),
                      ("hang", "hang_commanded_p99_seconds")):
        p99 = results.get(mode, {}).get("seconds_from_failure", {}).get("commanded", {}).get("p99")
        met[key] = None if p99 is None else p99 <= targets[key]
    if "control" in results:
        met["control_false_lost"] = results["control"]["false_lost"] == 0
    print(json.dumps({
        "bench": "failover", "runtime": "process", "agents": len(SITES),
        "replicas": args.replicas, "report_interval_seconds": args.report_interval,
        "lost_after_seconds": args.lost_after,
        "agent_keepalive_seconds": args.keepalive if args.keepalive_flag else None,
        "liveness_defaults": dataclasses.asdict(Liveness()),
        "poll_seconds": POLL, "targets": targets, "targets_met": met, "notes": notes,
        "results": results, "cpus": os.cpu_count(), "python": platform.python_version(),
        "wall_seconds": round(time.monotonic() - started, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
