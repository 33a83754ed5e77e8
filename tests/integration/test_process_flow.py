"""The core loop with the process runtime (hosts without Docker): replicas are
plain child processes that outlive their agent and are adopted on restart."""

from __future__ import annotations

import json
import random
import sys
import urllib.request
from typing import Any

import psutil

from federation.localfed import Proc
from tests.integration.test_core_loop import running_pods, start
from tests.support import edgefed, get_json, wait_until

DEPLOYMENT = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: worker
spec:
  replicas: {replicas}
  container:
    image: none
    command: ["sh", "-c", "echo slot $EDGEFED_SLOT on $EDGEFED_NODE; exec sleep {marker}"]
    resources:
      cpu: 50m
      memory: 8Mi
"""


def sleepers(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", marker]:
            found.append(proc)
    return found


def test_process_runtime_runs_scales_and_deletes(make_federation, tmp_path):
    fed = make_federation("process")
    start(fed)
    marker = str(random.randint(10**6, 10**7))
    path = tmp_path / "worker.yaml"
    for replicas in (3, 5, 2):
        path.write_text(DEPLOYMENT.format(replicas=replicas, marker=marker))
        edgefed("apply", "-f", str(path), server=fed.server)
        pods = running_pods(fed, replicas)
        wait_until(lambda n=replicas: len(sleepers(marker)) == n, timeout=30,
                   what=f"{replicas} sleep processes")
    assert len({p["site"] for p in pods}) == 2
    pod = pods[0]
    logs = wait_until(lambda: (out := edgefed("logs", f"worker/{pod['slot']}", server=fed.server)
                               .stdout) and "slot" in out and out, timeout=20, what="the log line")
    assert logs.strip() == f"slot {pod['slot']} on {pod['node']}"
    missing = edgefed("logs", "worker/9", server=fed.server, check=False)
    assert missing.returncode == 1 and "worker/9 is not placed on any node" in missing.stderr

    edgefed("delete", "deployment", "worker", server=fed.server)
    wait_until(lambda: not sleepers(marker), timeout=30, what="every process gone")
    wait_until(lambda: get_json("deployments", fed.server) == [], timeout=30,
               what="the deployment purged")


def test_process_agent_restart_adopts_processes(make_federation, tmp_path):
    fed = make_federation("process")
    nodes = start(fed, sites=("a",))
    marker = str(random.randint(10**6, 10**7))
    path = tmp_path / "worker.yaml"
    path.write_text(DEPLOYMENT.format(replicas=2, marker=marker))
    edgefed("apply", "-f", str(path), server=fed.server)
    running_pods(fed, 2)
    pids = sorted(p.pid for p in wait_until(lambda: len(sleepers(marker)) == 2 and
                                            sleepers(marker), timeout=30, what="2 processes"))

    fed.agents[nodes[0]].kill()  # SIGKILL: no goodbye, the Last Will speaks for it
    fed.start_agent(nodes[0], "site-a", extra=["--report-interval", "1"])
    wait_until(lambda: all(p["state"] == "Running" and p["generation"] == 1
                           for p in get_json("pods", fed.server)), timeout=30,
               what="pods running at generation 1 after the agent restart")
    assert sorted(p.pid for p in sleepers(marker)) == pids


def test_agent_from_a_config_file_joins_the_federation(make_federation, tmp_path):
    fed = make_federation("process")
    fed.start_controller()
    node = f"cfg-{fed.tag}"
    config = tmp_path / "agent.yaml"
    config.write_text(f"broker: {fed.broker_url}\nsite: site-cfg\nnode: {node}\n"
                      f"runtime: process\nstate_dir: {fed.workdir / 'agents' / node}\n"
                      "labels:\n  tier: edge\nreport_interval: 1\n")
    proc = Proc(f"agent {node}", [sys.executable, "-m", "edge_agent.cli", "--config", str(config)],
                fed.workdir / f"agent-{node}.log", fed.env()).start()
    fed.agents[node] = proc
    ready = wait_until(lambda: [n for n in get_json("nodes", fed.server)
                                if n["name"] == node and n["state"] == "Ready"],
                       timeout=30, what="the agent configured from a file to be Ready")
    assert ready[0]["site"] == "site-cfg"
    assert ready[0]["labels"]["tier"] == "edge"


def test_exit_code_is_reported_and_never_restarted(make_federation, tmp_path):
    fed = make_federation("process")
    start(fed, sites=("a",))
    path = tmp_path / "once.yaml"
    path.write_text("apiVersion: edgefed.io/v1\nkind: Deployment\nmetadata:\n  name: once\n"
                    "spec:\n  replicas: 1\n  restartPolicy: Never\n  container:\n    image: none\n"
                    "    command: [sh, -c, 'exit 3']\n")
    edgefed("apply", "-f", str(path), server=fed.server)
    pod = wait_until(lambda: [p for p in get_json("pods", fed.server) if p["state"] == "Exited"],
                     timeout=30, what="the pod to be reported Exited")[0]
    assert (pod["exit_code"], pod["restarts"]) == (3, 0)
    events = json.loads(edgefed("describe", "deployment", "once", "-o", "json",
                                server=fed.server).stdout)["events"]
    assert any(e["kind"] == "InstanceExited" and "(exit 3)" in e["message"] for e in events)


def stats(server: str) -> Any:
    with urllib.request.urlopen(f"{server}/api/v1/stats", timeout=5) as resp:
        return json.loads(resp.read())


def test_passes_make_their_rounds_from_the_kept_columns(make_federation):
    """Every reconcile pass refreshes the nodes' columns kept since the last one: with
    three nodes that keep reporting the same labels, passes go on without building
    the layout again, and /api/v1/stats says so, with what the passes take."""
    fed = make_federation("process")
    start(fed)

    def kept() -> Any:
        now = stats(fed.server)
        columns = now["scheduler_columns"]
        return now if columns["refreshes"] >= columns["layouts_built"] + 10 else None

    now = wait_until(kept, timeout=60, what="ten passes more than layouts built")
    columns, passes = now["scheduler_columns"], now["reconcile_pass_seconds"]
    assert columns["nodes"] == 3
    assert 1 <= columns["layouts_built"] <= columns["refreshes"] - 10
    assert 1 <= passes["passes"] <= columns["refreshes"]
    assert 0 < passes["p50"] <= passes["p99"] <= passes["max"]
