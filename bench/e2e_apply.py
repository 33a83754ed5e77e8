"""End-to-end apply latency: from the HTTP PUT of a Deployment to every replica
running, as the controller reports it, on a local federation of three agents
in three sites (real Mosquitto, controller and agents as real processes,
replicas as real containers or processes).

    python bench/e2e_apply.py [--runtime docker|process] [--replicas 1,10,50] [--repeat N]

    PUT /api/v1/deployments/NAME ──▶ poll GET /api/v1/deployments/NAME every 20 ms
        until running == replicas ──▶ DELETE ──▶ wait until its instances are gone

One JSON document goes to stdout, progress to stderr. Every wait is bounded by
--timeout; a size that times out is named in the JSON and its remaining runs
are skipped. Everything the bench started (broker, controller, agents and the
containers or processes they ran) is stopped on exit, also on Ctrl-C, SIGTERM
or an error; containers are found by the label edgefed.bench=<id>.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from federation.localfed import LocalFederation, LocalFederationError

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
SITES = ("a", "b", "c")
REPORT_INTERVAL = "1"
POLL_INTERVAL = 0.020  # state polling granularity; the JSON reports it

DOCKER_DEPLOYMENT = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  container:
    image: myapp:latest
    resources:
      cpu: {cpu}
      memory: {memory}
"""

# The process runtime ignores the image; it needs a command.
PROCESS_DEPLOYMENT = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  container:
    image: none
    command: ["sleep", "3600"]
    resources:
      cpu: {cpu}
      memory: {memory}
"""


class BenchAborted(RuntimeError):
    """The federation itself broke (a process died, the API refused): no point going on."""


def progress(message: str) -> None:
    print(f"[e2e_apply {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the API, through urllib only ------------------------------------------------


class Api:
    def __init__(self, server: str) -> None:
        self.server = server

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.server}/api/v1/{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, {"error": raw.decode(errors="replace")}
        except (OSError, ValueError) as exc:  # URLError, refused, reset, timed out, not JSON
            raise BenchAborted(f"{method} {path}: {exc!r}") from exc

    def get(self, path: str) -> Any:
        status, body = self.call("GET", path)
        if status != 200:
            raise BenchAborted(f"GET {path} answered {status}: {body}")
        return body


# -- waiting ----------------------------------------------------------------------


def poll(check: Callable[[], T | None], *, timeout: float, interval: float,
         guard: Callable[[], None]) -> tuple[T | None, float]:
    """Call ``check`` at a fixed rate until it returns something truthy or
    ``timeout`` passes; (value or None, seconds since the first call).
    ``guard`` raises BenchAborted when waiting longer makes no sense."""
    start = time.perf_counter()
    tick = 0
    while True:
        value = check()
        now = time.perf_counter()
        if value:
            return value, now - start
        if now - start >= timeout:
            return None, now - start
        guard()
        tick += 1
        time.sleep(max(0.0, start + tick * interval - time.perf_counter()))


# -- instances in the runtime -------------------------------------------------------


def docker_ids(*labels: str) -> list[str]:
    argv = ["docker", "ps", "-aq"]
    for label in labels:
        argv += ["--filter", f"label={label}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return out.stdout.split()


def docker_remove(*labels: str) -> int:
    ids = docker_ids(*labels)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=120, check=False)
    return len(ids)


def process_runtimes(fed: LocalFederation) -> list[Any]:
    from cloud_adapters.process_runtime import ProcessRuntime

    return [ProcessRuntime(node, fed.workdir / "agents" / node / "process")
            for node in fed.agents if (fed.workdir / "agents" / node / "process").exists()]


def process_instances(fed: LocalFederation, deployment: str | None = None) -> list[Any]:
    async def collect() -> list[Any]:
        found = []
        for runtime in process_runtimes(fed):
            found += [i for i in await runtime.list()
                      if deployment is None or i.deployment == deployment]
        return found

    return asyncio.run(collect())


def process_stop_all(fed: LocalFederation, deployment: str | None = None) -> int:
    """Process instances outlive their agent by design; end the ones we caused."""
    async def stop_all() -> int:
        stopped = 0
        for runtime in process_runtimes(fed):
            for inst in await runtime.list():
                if deployment is None or inst.deployment == deployment:
                    await runtime.stop(inst.runtime_id, grace=1)
                    stopped += 1
        return stopped

    return asyncio.run(stop_all())


# -- the federation ---------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, bench_id: str, workdir: Path) -> None:
        self.args = args
        self.bench_id = bench_id
        self.label = f"edgefed.bench={bench_id}"
        self.fed = LocalFederation(workdir, topic_root=f"bench-{bench_id}", runtime=args.runtime,
                                   container_labels=[self.label], tag=bench_id)
        self.api = Api("")
        self.current: dict[str, Any] = {"phase": "start"}
        self.template = DOCKER_DEPLOYMENT if args.runtime == "docker" else PROCESS_DEPLOYMENT

    def document(self, name: str, replicas: int) -> str:
        return self.template.format(name=name, replicas=replicas, cpu=self.args.cpu,
                                    memory=self.args.memory)

    def guard(self) -> None:
        for proc in [self.fed.broker, self.fed.controller, *self.fed.agents.values()]:
            if proc is not None and proc.popen is not None and not proc.alive():
                raise BenchAborted(f"{proc.name} exited with {proc.popen.returncode}; "
                                   f"last log lines:\n{proc.log_tail(15)}")

    def start(self) -> None:
        progress(f"starting broker, controller and {len(SITES)} agents ({self.args.runtime}) "
                 f"in {self.fed.workdir}")
        self.fed.start_broker()
        self.fed.start_controller()
        self.api = Api(self.fed.server)
        nodes = []
        for site in SITES:
            node = f"{site}1-{self.bench_id}"
            self.fed.start_agent(node, f"site-{site}", extra=["--report-interval", REPORT_INTERVAL])
            nodes.append(node)

        def ready() -> bool:
            items = self.api.get("nodes")["items"]
            return sum(1 for n in items if n["name"] in nodes and n["state"] == "Ready") == len(nodes)

        ok, took = poll(ready, timeout=self.args.timeout, interval=0.1, guard=self.guard)
        if not ok:
            raise BenchAborted(f"{len(nodes)} nodes not Ready after {self.args.timeout} s")
        progress(f"{len(nodes)} nodes Ready after {took:.2f} s")

    def gone(self, name: str) -> bool:
        if self.args.runtime == "docker":
            left = docker_ids(self.label, f"edgefed.deployment={name}")
        else:
            left = process_instances(self.fed, name)
        return not left and self.api.call("GET", f"deployments/{name}")[0] == 404

    def force_remove(self, name: str) -> int:
        if self.args.runtime == "docker":
            return docker_remove(self.label, f"edgefed.deployment={name}")
        return process_stop_all(self.fed, name)

    def warm_up(self) -> float:
        """One throwaway 1-replica run, not counted: the controller holds its first
        reconcile pass for a warm-up after connecting (so retained reports arrive
        first), and the first container start pays for cold caches."""
        name = f"warmup-{self.bench_id}"
        self.current = {"phase": "warm-up", "name": name}
        run = self.run_once(1, name)
        if run["seconds"] is None:
            raise BenchAborted(f"warm-up: {run.get('timed_out') or run.get('cleanup_timed_out')}")
        return float(run["seconds"])

    def run_once(self, replicas: int, name: str) -> dict[str, Any]:
        document = yaml.safe_load(self.document(name, replicas))
        polls: list[float] = []
        last: dict[str, Any] = {}

        def all_running() -> bool:
            sent = time.perf_counter()
            last.update(self.api.get(f"deployments/{name}"))
            polls.append(time.perf_counter() - sent)
            return bool(last["running"] == last["replicas"] == replicas)

        wall0 = time.time()
        t0 = time.perf_counter()
        status, body = self.api.call("PUT", f"deployments/{name}", document)
        put_seconds = time.perf_counter() - t0
        if status != 200:
            raise BenchAborted(f"PUT {name} answered {status}: {body}")
        ok, _ = poll(all_running, timeout=self.args.timeout, interval=POLL_INTERVAL, guard=self.guard)
        seconds = time.perf_counter() - t0
        run: dict[str, Any] = {
            "name": name, "seconds": round(seconds, 4) if ok else None,
            "put_seconds": round(put_seconds, 4), "polls": len(polls),
            "poll_get_mean_seconds": round(statistics.fmean(polls), 4) if polls else None,
            "controller_events": controller_events(self.fed.workdir / "controller.db", name, wall0),
        }
        if not ok:
            run["timed_out"] = (f"running {last.get('running')} of {replicas} "
                                f"(placed {last.get('placed')}) after {self.args.timeout} s")
        self.current["phase"] = "delete"
        run.update(self.delete(name))
        return run

    def delete(self, name: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        status, body = self.api.call("DELETE", f"deployments/{name}")
        if status != 200:
            raise BenchAborted(f"DELETE {name} answered {status}: {body}")
        ok, _ = poll(lambda: self.gone(name), timeout=self.args.timeout, interval=0.1,
                     guard=self.guard)
        if ok:
            return {"delete_to_gone_seconds": round(time.perf_counter() - t0, 3)}
        removed = self.force_remove(name)
        return {"delete_to_gone_seconds": None,
                "cleanup_timed_out": f"instances of {name} still there after {self.args.timeout} s;"
                                     f" removed {removed} by force"}

    def run_size(self, result: dict[str, Any]) -> None:
        """Fill ``result`` run by run, so that an abort keeps what was measured."""
        replicas = result["replicas"]
        try:
            for i in range(self.args.repeat):
                name = f"e2e-{replicas}r-{i}-{uuid.uuid4().hex[:6]}"
                self.current = {"phase": "apply", "replicas": replicas, "run": i + 1, "name": name}
                progress(f"{replicas} replica(s), run {i + 1}/{self.args.repeat}: {name}")
                run = self.run_once(replicas, name)
                result["runs"].append(run)
                progress(f"  all running after {run['seconds']} s; "
                         f"gone {run['delete_to_gone_seconds']} s after delete")
                if "timed_out" in run or "cleanup_timed_out" in run:
                    result["timed_out"] = run.get("timed_out") or run["cleanup_timed_out"]
                    progress(f"  timed out: {result['timed_out']}; skipping the rest of this size")
                    break
        finally:
            result["seconds"] = summary([r["seconds"] for r in result["runs"]
                                         if r["seconds"] is not None])


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(values), "min": round(min(values), 4),
            "median": round(statistics.median(values), 4), "max": round(max(values), 4)}


def controller_events(db: Path, deployment: str, wall0: float) -> dict[str, Any] | None:
    """When the controller recorded each kind of event for the deployment, in
    seconds after the PUT was sent: a first look at where the time went. Read
    straight from its event table, read-only; None if that is not possible."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2) as conn:
            rows = conn.execute("SELECT kind, COUNT(*), MIN(at), MAX(at) FROM events"
                                " WHERE deployment = ? GROUP BY kind", (deployment,)).fetchall()
    except sqlite3.Error:
        return None
    return {kind: {"count": n, "first_s": round(lo - wall0, 3), "last_s": round(hi - wall0, 3)}
            for kind, n, lo, hi in rows}


# -- environment and cleanup --------------------------------------------------------


def command_output(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(runtime: str) -> dict[str, Any]:
    return {
        "runtime": runtime,
        "cpu_count": os.cpu_count(),
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "docker_server_version": command_output(["docker", "version", "--format",
                                                 "{{.Server.Version}}"])
        if runtime == "docker" else None,
        "git_commit": command_output(["git", "rev-parse", "--short", "HEAD"]),
        "git_worktree_dirty": bool(command_output(["git", "status", "--porcelain"])),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def cleanup(bench: Bench, keep_workdir: bool) -> list[str]:
    """Stop everything the bench started; each step runs even if one before failed."""
    notes = []
    try:
        bench.fed.stop()
    except Exception as exc:  # the steps below must still run
        notes.append(f"stopping the federation: {exc!r}")
        for proc in [*bench.fed.agents.values(), bench.fed.controller, bench.fed.broker]:
            if proc is not None:
                proc.kill()
    if shutil.which("docker"):
        try:
            removed = docker_remove(bench.label)
            if removed:
                notes.append(f"removed {removed} container(s) left with {bench.label}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            notes.append(f"removing containers by {bench.label}: {exc!r}")
    try:
        stopped = process_stop_all(bench.fed)
        if stopped:
            notes.append(f"stopped {stopped} process instance(s) left behind")
    except Exception as exc:  # report, never mask the bench's own outcome
        notes.append(f"stopping process instances: {exc!r}")
    if not keep_workdir:
        shutil.rmtree(bench.fed.workdir, ignore_errors=True)
    return notes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runtime", choices=("docker", "process"), default="docker")
    parser.add_argument("--replicas", default="1,10,50",
                        help="comma-separated replica counts (default 1,10,50)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (default 3)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds any single wait may take (default 120)")
    parser.add_argument("--cpu", default="100m",
                        help="cpu of each replica (default 100m; a 10m limit slows each "
                        "docker start to ~2 s on this engine)")
    parser.add_argument("--memory", default="8Mi", help="memory of each replica (default 8Mi)")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the work directory (broker, controller and agent logs)")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.replicas.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--replicas {args.replicas!r}: expected numbers like 1,10,50")
    if not args.sizes or min(args.sizes) < 1 or args.repeat < 1:
        parser.error("--replicas and --repeat must be at least 1")
    return args


def interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"edgefed-bench-{bench_id}-"))
    bench = Bench(args, bench_id, workdir)
    report: dict[str, Any] = {
        "bench": "e2e_apply",
        "bench_id": bench_id,
        "method": {
            "apply": "HTTP PUT /api/v1/deployments/NAME with urllib from this process (no CLI)",
            "done_when": "GET /api/v1/deployments/NAME reports running == replicas",
            "state_poll_interval_seconds": POLL_INTERVAL,
            "timing": "from just before the PUT to the receipt of the first GET showing all "
                      "replicas running; state is seen at most one poll interval plus one GET "
                      "(poll_get_mean_seconds) after it changed",
            "between_runs": "DELETE, then wait until its instances are gone from the runtime "
                            "and the deployment is purged",
            "controller_events": "first/last time the controller recorded each event kind, "
                                 "seconds after the PUT; all Scheduled events of one reconcile "
                                 "pass carry the pass's start time",
        },
        "topology": {"agents": len(SITES), "sites": len(SITES),
                     "agent_report_interval_seconds": float(REPORT_INTERVAL)},
        "workload": yaml.safe_load(bench.document("NAME", 0))["spec"]["container"],
        "repeat": args.repeat,
        "timeout_seconds": args.timeout,
        "environment": environment(args.runtime),
        "warmup_seconds": None,
        "results": [],
        "command_ack_seconds": None,
        "command_ack_note": "controller command -> agent ack, from GET /api/v1/stats after the "
                            "runs: every run and stop command of the whole bench (warm-up and "
                            "deletes included)",
    }
    code = 0
    # Also when started with SIGINT ignored (a background job of a script).
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bench.start()
        report["warmup_seconds"] = round(bench.warm_up(), 4)
        for size in args.sizes:
            result: dict[str, Any] = {"replicas": size, "seconds": None, "timed_out": None,
                                      "runs": []}
            report["results"].append(result)
            bench.run_size(result)
        if any(r["timed_out"] for r in report["results"]):
            code = 2
    except (BenchAborted, LocalFederationError) as exc:
        report["aborted"] = {"reason": str(exc), "during": bench.current}
        code = 1
    except KeyboardInterrupt:
        report["aborted"] = {"reason": "interrupted", "during": bench.current}
        code = 130
    except Exception as exc:  # still clean up and print what was measured
        traceback.print_exc()
        report["aborted"] = {"reason": repr(exc), "during": bench.current}
        code = 1
    finally:
        # A second Ctrl-C must not leave containers or processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if bench.fed.controller is not None and bench.fed.controller.alive():
            try:
                report["command_ack_seconds"] = bench.api.get("stats")["command_ack_seconds"]
            except BenchAborted as exc:
                report["command_ack_seconds"] = {"error": str(exc)}
        progress("stopping everything the bench started")
        report["environment"]["loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
        report["cleanup"] = cleanup(bench, args.keep_workdir)
        if args.keep_workdir:
            report["workdir"] = str(workdir)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print(json.dumps(report, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
