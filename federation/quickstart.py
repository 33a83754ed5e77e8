"""A local federation to look at: Mosquitto, the controller and three agents
as three sites on this machine, with the example deployment placed.

    python -m federation.quickstart            run until Ctrl-C, then tear down
    python -m federation.quickstart --once     show the placed pods, tear down, exit

Uses the Docker engine when it answers, else the process runtime (and says so).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from federation.localfed import LocalFederation, LocalFederationError, edgefed_argv, free_port, port_free

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "policies" / "examples"
SITES = (
    ("pi-berlin-1", "factory-berlin", "tier=edge,region=eu-central,country=de,provider=onprem"),
    ("edge-lisbon-1", "edge-lisbon", "tier=edge,region=eu-south,country=pt,provider=onprem"),
    ("cloud-dublin-1", "aws-eu-west-1", "tier=cloud,region=eu-west,country=ie,provider=aws"),
)


def _say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m", flush=True)


def _get(server: str, path: str) -> Any:
    with urllib.request.urlopen(server + path, timeout=5) as reply:
        return json.load(reply)


def _wait(what: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.2)
    raise LocalFederationError(f"timed out after {timeout:.0f} s waiting for {what}")


def _docker_answers() -> bool:
    from cloud_adapters.docker_runtime import docker_available

    return docker_available()


def _cli(fed: LocalFederation, *args: str) -> int:
    import subprocess

    return subprocess.call(edgefed_argv(*args, "--server", fed.server))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m federation.quickstart",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / ".edgefed" / "quickstart",
                        help="logs, databases and agent state (default .edgefed/quickstart)")
    parser.add_argument("--once", action="store_true",
                        help="tear down as soon as the deployment runs")
    parser.add_argument("--runtime", choices=("auto", "docker", "process"), default="auto")
    parser.add_argument("--api-port", type=int, default=7070,
                        help="port of the controller's API (default 7070, the CLI's default; "
                        "0 or busy: any free port)")
    parser.add_argument("--container-label", action="append", default=[], metavar="K=V",
                        help="extra label on every container the agents create")
    args = parser.parse_args(argv)

    runtime = args.runtime
    if runtime == "auto":
        runtime = "docker" if _docker_answers() else "process"
        if runtime == "process":
            _say("no Docker engine answers: using the process runtime "
                 "(replicas run as plain processes)")
    example = EXAMPLES / ("seed-kubernetes.yaml" if runtime == "docker" else "quickstart-process.yaml")
    name = "myapp" if runtime == "docker" else "hello"

    fed = LocalFederation(args.workdir, runtime=runtime, container_labels=args.container_label)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        _say(f"starting Mosquitto, the controller and {len(SITES)} agents (logs in {args.workdir})")
        fed.start_broker()
        fed.api_port = args.api_port if args.api_port and port_free(args.api_port) else free_port()
        fed.start_controller()
        for node, site, labels in SITES:
            fed.start_agent(node, site, labels=labels, extra=["--report-interval", "2"])
        _wait("3 Ready nodes", lambda: sum(n["state"] == "Ready" for n in
                                           _get(fed.server, "/api/v1/nodes")["items"]) == 3, 30)
        _cli(fed, "get", "nodes")
        _say(f"edgefed apply -f {example.relative_to(REPO)}")
        if _cli(fed, "apply", "-f", str(example)) != 0:
            raise LocalFederationError("apply failed (see above)")
        _wait(f"{name} running", lambda: (d := _get(fed.server, f"/api/v1/deployments/{name}"))
              and d["running"] == d["replicas"], 90)
        _cli(fed, "get", "pods")
        _next_steps(fed, name)
        if not args.once:
            _say("the federation runs until you press Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.wait(1):
                    pass
    except (LocalFederationError, KeyboardInterrupt) as exc:
        print(f"quickstart: {exc}", file=sys.stderr)
        for proc in [fed.controller, *fed.agents.values()]:
            if proc is not None and not proc.alive():
                print(f"--- {proc.name} exited; last lines of {proc.log_path}:\n{proc.log_tail()}",
                      file=sys.stderr)
        return 1
    finally:
        _teardown(fed, name)
    return 0


def _next_steps(fed: LocalFederation, name: str) -> None:
    env = "" if fed.api_port == 7070 else f"export EDGEFED_SERVER={fed.server}\n  "
    steps = [
        ("get nodes -o wide", "three sites, their capacity and labels"),
        (f"describe deployment {name}", "why each replica went where it did"),
        (f"logs {name}/0", "a replica's log, fetched through its agent"),
        ("get pods -o json", "the same, for scripts"),
    ]
    width = max(len(cmd) for cmd, _ in steps)
    lines = "\n".join(f"  .venv/bin/edgefed {cmd:<{width}}  # {why}" for cmd, why in steps)
    print(f"\nWhere to look next (in another terminal, from this directory):\n  {env}"
          f"{lines.lstrip()}\n  Logs of every process: {fed.workdir}\n", flush=True)


def _teardown(fed: LocalFederation, name: str) -> None:
    _say("tearing down: deleting the deployment, stopping agents, controller and broker")
    if fed.controller is not None and fed.controller.alive():
        with contextlib.suppress(Exception):
            _cli(fed, "delete", "deployment", name)
            _wait("replicas stopped", lambda: not any(
                d["name"] == name for d in _get(fed.server, "/api/v1/deployments")["items"]), 30)
    fed.stop()


if __name__ == "__main__":
    sys.exit(main())
