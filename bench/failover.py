"""Node failover latency: from an agent's failure to its replicas running elsewhere,
on a local federation of three agents in three sites (real Mosquitto, controller
and agents as real processes, replicas as host processes).

    python bench/failover.py [--lost-after 2,5] [--repeat 3] [--replicas 6]

    apply N replicas ──▶ all running ──▶ SIGKILL (or SIGSTOP) the busiest agent
        ──▶ poll GET /api/v1/nodes and /pods every 20 ms:
            Suspect, Lost, every moved slot scheduled elsewhere at a higher
            generation, every replica running again

SIGKILL is noticed through the agent's Last Will at once; SIGSTOP only through
missed capacity heartbeats (interval x heartbeat_misses), since the broker's
keepalive takes far longer. Each run is a fresh controller and fresh agents
(`--report-interval 1`) on one broker; medians over --repeat runs go to stdout as
one JSON document, progress to stderr. Everything started is stopped on exit,
including the processes the replicas ran as.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import signal
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from federation.inventory import Liveness
from federation.localfed import LocalFederation, start_broker

REPORT_INTERVAL = 1.0
POLL = 0.02
PHASES = ("suspect", "lost", "scheduled", "running")
DOCUMENT = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: worker
spec:
  replicas: {replicas}
  container:
    image: none
    command: ["sleep", "3600"]
    resources: {{cpu: 50m, memory: 8Mi}}
"""


def get(fed: LocalFederation, kind: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{fed.server}/api/v1/{kind}", timeout=5) as answer:
        return list(json.load(answer)["items"])


def put(fed: LocalFederation, replicas: int) -> None:
    body = json.dumps(yaml.safe_load(DOCUMENT.format(replicas=replicas))).encode()
    request = urllib.request.Request(f"{fed.server}/api/v1/deployments/worker", data=body,
                                     method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10):
        pass


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(POLL)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def running(fed: LocalFederation, replicas: int, avoid: str | None = None
            ) -> list[dict[str, Any]] | None:
    pods = get(fed, "pods")
    ok = len(pods) == replicas and all(p["state"] == "Running" and p["node"] != avoid
                                       for p in pods)
    return pods if ok else None


def stop_replicas(fed: LocalFederation) -> None:
    """Process replicas outlive their agent by design; end the ones this run caused."""
    from cloud_adapters.process_runtime import ProcessRuntime

    async def stop_all() -> None:
        for node in fed.agents:
            state = fed.workdir / "agents" / node / "process"
            if state.exists():
                runtime = ProcessRuntime(node, state)
                for inst in await runtime.list():
                    await runtime.stop(inst.runtime_id, grace=1)

    asyncio.run(stop_all())


def one_run(workdir: Path, port: int, *, mode: str, lost_after: float, replicas: int
            ) -> dict[str, float]:
    tag = uuid.uuid4().hex[:8]
    fed = LocalFederation(workdir / f"{mode}-{lost_after:g}-{tag}", topic_root=f"bench-{tag}",
                          runtime="process", tag=tag)
    fed.broker_port = port
    try:
        fed.start_controller("--lost-after", str(lost_after))
        for site in ("a", "b", "c"):
            fed.start_agent(f"{site}1-{tag}", f"site-{site}",
                            extra=["--report-interval", str(REPORT_INTERVAL)])
        wait(lambda: sum(n["state"] == "Ready" for n in get(fed, "nodes")) == 3, 30,
             "3 Ready nodes")
        put(fed, replicas)
        before = wait(lambda: running(fed, replicas), 30, f"{replicas} running replicas")
        victim = str(Counter(p["node"] for p in before).most_common(1)[0][0])
        moved = {p["slot"]: p["generation"] for p in before if p["node"] == victim}

        def state() -> str:
            return next(n["state"] for n in get(fed, "nodes") if n["name"] == victim)

        def scheduled() -> bool:
            pods = {p["slot"]: p for p in get(fed, "pods")}
            return all(pods[s]["node"] != victim and pods[s]["generation"] > g
                       for s, g in moved.items())

        agent = fed.agents[victim]
        t0 = time.monotonic()
        if mode == "sigkill":
            agent.kill()
        else:
            agent.signal(signal.SIGSTOP)
        times = {}
        bound = lost_after + 20
        for phase, check in (("suspect", lambda: state() in ("Suspect", "Lost")),
                             ("lost", lambda: state() == "Lost"),
                             ("scheduled", scheduled),
                             ("running", lambda: running(fed, replicas, avoid=victim))):
            wait(check, bound, f"{victim} {phase}")
            times[phase] = round(time.monotonic() - t0, 3)
        return times
    finally:
        fed.stop()  # SIGCONTs a stopped agent before terminating it
        stop_replicas(fed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lost-after", default="2,5", help="comma-separated seconds")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=6)
    args = parser.parse_args(argv)
    grace = [float(x) for x in args.lost_after.split(",")]
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgefed-failover-") as tmp:
        broker, port = start_broker(Path(tmp) / "broker")
        try:
            for mode in ("sigkill", "sigstop"):
                for lost_after in grace:
                    runs = []
                    for i in range(args.repeat):
                        times = one_run(Path(tmp), port, mode=mode, lost_after=lost_after,
                                        replicas=args.replicas)
                        print(f"{mode} lost-after {lost_after:g} run {i + 1}: {times}",
                              file=sys.stderr)
                        runs.append(times)
                    results.append({
                        "failure": mode, "lost_after_seconds": lost_after,
                        "median_seconds_from_failure": {
                            f"to_{p}": round(statistics.median(r[p] for r in runs), 2)
                            for p in PHASES},
                        "runs": runs,
                    })
        finally:
            broker.stop()
    print(json.dumps({
        "bench": "failover", "runtime": "process", "agents": 3, "replicas": args.replicas,
        "report_interval_seconds": REPORT_INTERVAL, "heartbeat_misses": Liveness().heartbeat_misses,
        "repeat": args.repeat, "poll_seconds": POLL, "python": platform.python_version(),
        "results": results, "wall_seconds": round(time.monotonic() - started, 1),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
