"""Docker engine restart drill: an agent and its containers across a real restart
of the machine's dockerd. Manual only, never part of the test suite: it restarts
the engine every other container on the machine runs on.

    python bench/engine_restart.py --yes-restart-the-engine
        [--restart-command "service docker restart"] [--replicas 3] [--lost-after 10]
        [--workdir DIR]

    broker, controller, one docker agent (--report-interval 1), N replicas of
    edgefed/tiny running ──▶ run --restart-command at t0 ──▶ poll every 100 ms:
        engine answering again (docker version), the agent process alive, the node's
        state; recovered when the engine itself runs every replica (docker ps) and the
        controller shows each Running at the same slot, node and generation

What must hold (exit 1 otherwise): the agent survives, the node is never Lost, no
replica moves or gets a new generation; the containers the restart stopped (no
live-restore) are started again by the agent, as its restart policy says, once the
engine answers ("containers_started_after_the_restart" counts them). Where dockerd
is not managed by an init system, restart it by hand, e.g. --restart-command
"sh -c 'kill $(pidof dockerd); while pidof dockerd; do sleep 0.2; done; dockerd &'".
The suite covers the same contract without touching the real
engine: tests/drills/test_link_faults.py puts a fault proxy in front of the engine
socket and resets and refuses its connections for a while.

Prints one JSON document; removes every container it labelled (edgefed.bench=ID).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from federation.localfed import LocalFederation

DOCUMENT = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: survivor
spec:
  replicas: {replicas}
  container:
    image: edgefed/tiny:latest  # its own command: busybox httpd in the foreground
    resources: {{cpu: 50m, memory: 8Mi}}
"""


def get(fed: LocalFederation, kind: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{fed.server}/api/v1/{kind}", timeout=5) as answer:
        return list(json.load(answer)["items"])


def engine_answers() -> bool:
    return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          capture_output=True, timeout=10, check=False).returncode == 0


def engine_containers(bench_id: str) -> dict[str, str]:
    """The bench's containers as the engine itself sees them: id -> state."""
    out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=edgefed.bench={bench_id}",
                          "--format", "{{.ID}} {{.State}}"],
                         capture_output=True, text=True, timeout=10, check=False)
    if out.returncode != 0:
        return {}
    return dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)


def started_after(ids: list[str], t_wall: float) -> int:
    """How many of these containers the engine (re)started after ``t_wall``."""
    out = subprocess.run(["docker", "inspect", "--format", "{{.State.StartedAt}}", *ids],
                         capture_output=True, text=True, timeout=10, check=False)
    stamps = [datetime.fromisoformat(line[:26].rstrip("Z") + "+00:00").timestamp()
              for line in out.stdout.split() if line]
    return sum(1 for stamp in stamps if stamp > t_wall)


def placement(fed: LocalFederation) -> set[tuple[int, str, int]] | None:
    pods = get(fed, "pods")
    if pods and all(p["state"] == "Running" for p in pods):
        return {(p["slot"], p["node"], p["generation"]) for p in pods}
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--yes-restart-the-engine", action="store_true", required=True,
                        help="required: this restarts the machine's Docker engine")
    parser.add_argument("--restart-command", default="service docker restart")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--lost-after", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the broker, controller and agent logs here (default: a "
                        "temporary directory, removed after)")
    args = parser.parse_args(argv)
    bench_id = uuid.uuid4().hex[:8]
    result: dict[str, Any] = {"bench": "engine_restart", "restart_command": args.restart_command}
    with tempfile.TemporaryDirectory(prefix="edgefed-engine-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        fed = LocalFederation(workdir, topic_root=f"bench-{bench_id}", runtime="docker",
                              container_labels=[f"edgefed.bench={bench_id}"], tag=bench_id)
        try:
            fed.start_broker()
            fed.start_controller("--lost-after", str(args.lost_after))
            node = f"engine-{bench_id}"
            agent = fed.start_agent(node, "site-engine", extra=["--report-interval", "1"])
            deadline = time.monotonic() + 60
            while not any(n["state"] == "Ready" for n in get(fed, "nodes")):
                if time.monotonic() > deadline:
                    raise TimeoutError("the agent never became Ready")
                time.sleep(0.1)
            body = json.dumps(yaml.safe_load(DOCUMENT.format(replicas=args.replicas))).encode()
            urllib.request.urlopen(urllib.request.Request(
                f"{fed.server}/api/v1/deployments/survivor", data=body, method="PUT",
                headers={"Content-Type": "application/json"}), timeout=10).close()
            deadline = time.monotonic() + 60
            while (before := placement(fed)) is None or len(before) != args.replicas:
                if time.monotonic() > deadline:
                    raise TimeoutError("the replicas never ran")
                time.sleep(0.1)

            t0, t0_wall = time.monotonic(), time.time()
            restart = subprocess.run(shlex.split(args.restart_command), capture_output=True,
                                     text=True, timeout=120, check=False)
            result["restart_exit"] = restart.returncode
            states: set[str] = set()
            engine_back = recovered = None
            while time.monotonic() < t0 + args.timeout:
                states |= {n["state"] for n in get(fed, "nodes") if n["name"] == node}
                if engine_back is None and engine_answers():
                    engine_back = time.monotonic() - t0
                # Recovered: the engine itself runs every replica again (not only the
                # controller's last report says so), at the same slot, node and generation.
                if engine_back is not None:
                    running = [cid for cid, state in engine_containers(bench_id).items()
                               if state == "running"]
                    if len(running) == args.replicas and placement(fed) == before:
                        recovered = time.monotonic() - t0
                        result["containers_started_after_the_restart"] = started_after(
                            running, t0_wall)
                        break
                time.sleep(0.1)
            result.update({
                "agent_alive": agent.alive(), "node_states_seen": sorted(states),
                "engine_back_seconds": engine_back and round(engine_back, 2),
                "replicas_running_again_seconds": recovered and round(recovered, 2),
                "placement_unchanged": recovered is not None,
            })
        finally:
            fed.stop()
            ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=edgefed.bench={bench_id}"],
                                 capture_output=True, text=True, check=False).stdout.split()
            if ids:
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
    ok = bool(result.get("agent_alive")) and "Lost" not in result.get("node_states_seen", []) \
        and bool(result.get("placement_unchanged"))
    result["ok"] = ok
    print(json.dumps(result, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
