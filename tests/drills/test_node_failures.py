"""Node failures with real processes: an agent killed, an agent hung and resumed, a
node back after Lost. Each drill checks the failover contract of DESIGN.md: a Lost
node's slots move with a higher generation, never two live instances per slot
after healing, and a returning node does not get its work back (no flapping)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from federation.localfed import LocalFederation
from tests.integration.conftest import TINY_IMAGE, tiny_image  # noqa: F401  (fixture)
from tests.support import edgefed, wait_until

LOST_AFTER = 3.0
REPORT_INTERVAL = 0.5
SITES = ("a", "b", "c")

WORKER = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: worker
spec:
  replicas: {replicas}
  container:
    image: {image}
    command: ["sh", "-c", "exec sleep {marker}"]
    resources:
      cpu: 50m
      memory: 8Mi
"""


def api(fed: LocalFederation, kind: str) -> list[dict[str, Any]]:
    """GET /api/v1/KIND directly: cheap enough to poll every 0.1 s while timing."""
    with urllib.request.urlopen(f"{fed.server}/api/v1/{kind}", timeout=5) as answer:
        return list(json.load(answer)["items"])


def node_state(fed: LocalFederation, name: str) -> str:
    return next((n["state"] for n in api(fed, "nodes") if n["name"] == name), "")


def start(fed: LocalFederation, *, lost_after: float = LOST_AFTER) -> list[str]:
    fed.start_controller("--lost-after", str(lost_after))
    nodes = []
    for site in SITES:
        node = f"{site}1-{fed.tag}"
        fed.start_agent(node, f"site-{site}", extra=["--report-interval", str(REPORT_INTERVAL)])
        nodes.append(node)
    wait_until(lambda: sum(n["state"] == "Ready" for n in api(fed, "nodes")) == len(nodes),
               timeout=30, what=f"{len(nodes)} Ready nodes")
    return nodes


def apply_worker(fed: LocalFederation, tmp_path: Path, replicas: int, marker: str,
                 image: str = "none") -> list[dict[str, Any]]:
    path = tmp_path / "worker.yaml"
    path.write_text(WORKER.format(replicas=replicas, marker=marker, image=image))
    edgefed("apply", "-f", str(path), server=fed.server)
    return all_running(fed, replicas, timeout=30)


def all_running(fed: LocalFederation, count: int, *, timeout: float,
                avoid: str | None = None) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        pods = api(fed, "pods")
        ok = (len(pods) == count and all(p["state"] == "Running" for p in pods)
              and all(p["node"] != avoid for p in pods))
        return pods if ok else None

    return wait_until(check, timeout=timeout, what=f"{count} running pods"
                      + (f" off {avoid}" if avoid else ""))


def sleepers(marker: str) -> list[tuple[str, int, int, int]]:
    """Live replica processes of this test: (node, slot, generation, pid)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] != ["sleep", marker] or proc.info["status"] == "zombie":
            continue
        try:
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found.append((env["EDGEFED_NODE"], int(env["EDGEFED_SLOT"]),
                      int(env["EDGEFED_GENERATION"]), proc.pid))
    return sorted(found)


def busiest(pods: list[dict[str, Any]]) -> str:
    return str(Counter(p["node"] for p in pods).most_common(1)[0][0])


def fail_over(fed: LocalFederation, victim: str, before: list[dict[str, Any]], t0: float,
              replicas: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Wait through Suspect, Lost, replacements scheduled and running; return the times."""
    moved = {p["slot"]: p["generation"] for p in before if p["node"] == victim}
    times: dict[str, float] = {}
    wait_until(lambda: node_state(fed, victim) in ("Suspect", "Lost"), timeout=15,
               what=f"{victim} Suspect")
    times["suspect"] = time.monotonic() - t0
    wait_until(lambda: node_state(fed, victim) == "Lost", timeout=LOST_AFTER + 15,
               what=f"{victim} Lost")
    times["lost"] = time.monotonic() - t0

    def rescheduled() -> bool:
        pods = {p["slot"]: p for p in api(fed, "pods")}
        return all(pods[s]["node"] != victim and pods[s]["generation"] > g
                   for s, g in moved.items())

    wait_until(rescheduled, timeout=10, what="replacements scheduled", interval=0.05)
    times["scheduled"] = time.monotonic() - t0
    pods = all_running(fed, replicas, timeout=15, avoid=victim)
    times["running"] = time.monotonic() - t0
    return times, pods


def one_process_per_slot(marker: str, pods: list[dict[str, Any]], nodes: set[str]) -> bool:
    live = [s for s in sleepers(marker) if s[0] in nodes]
    return sorted((node, slot, gen) for node, slot, gen, _ in live) == sorted(
        (p["node"], p["slot"], p["generation"]) for p in pods)


def test_killed_agent_node_goes_lost_and_its_slots_move(make_federation, tmp_path):
    fed = make_federation("process")
    nodes = start(fed)
    marker = str(random.randint(10**6, 10**7))
    before = apply_worker(fed, tmp_path, 6, marker)
    victim = busiest(before)
    survivors = set(nodes) - {victim}

    t0 = time.monotonic()
    fed.agents[victim].kill()
    times, pods = fail_over(fed, victim, before, t0, 6)
    print(f"\nSIGKILL {victim}: " + ", ".join(f"kill->{k} {v:.2f} s" for k, v in times.items()))
    assert times["scheduled"] < LOST_AFTER + 3 * REPORT_INTERVAL + 3
    assert times["running"] < LOST_AFTER + 3 * REPORT_INTERVAL + 5
    assert {p["node"] for p in pods} <= survivors
    wait_until(lambda: one_process_per_slot(marker, pods, survivors), timeout=10,
               what="exactly one process per slot on the surviving nodes")


def assert_healed(fed: LocalFederation, victim: str, stale: list[tuple[str, int, int, int]],
                  pods: list[dict[str, Any]], marker: str, nodes: set[str], *,
                  after: str) -> None:
    """The node is back: Ready again, its superseded processes stopped, exactly one
    process per slot, and the placement made while it was away unchanged."""
    wait_until(lambda: node_state(fed, victim) == "Ready", timeout=40,
               what=f"{victim} Ready again after {after}")
    stale_pids = {pid for *_, pid in stale}
    wait_until(lambda: not stale_pids & {pid for *_, pid in sleepers(marker)}, timeout=20,
               what=f"the superseded processes on {victim} stopped")
    wait_until(lambda: one_process_per_slot(marker, pods, nodes), timeout=10,
               what="exactly one process per slot")
    healed = all_running(fed, len(pods), timeout=10)
    assert {(p["slot"], p["node"], p["generation"]) for p in healed} == {
        (p["slot"], p["node"], p["generation"]) for p in pods}


def test_hung_agent_is_replaced_and_its_stale_instances_stopped_on_resume(make_federation,
                                                                          tmp_path):
    fed = make_federation("process")
    nodes = start(fed)
    marker = str(random.randint(10**6, 10**7))
    before = apply_worker(fed, tmp_path, 6, marker)
    victim = busiest(before)
    stale = [s for s in sleepers(marker) if s[0] == victim]
    assert stale

    agent = fed.agents[victim]
    t0 = time.monotonic()
    agent.signal(signal.SIGSTOP)
    try:
        times, pods = fail_over(fed, victim, before, t0, 6)
    finally:
        agent.signal(signal.SIGCONT)
    print(f"\nSIGSTOP {victim}: " + ", ".join(f"kill->{k} {v:.2f} s" for k, v in times.items()))
    # Heartbeats, not the broker's keepalive, must have noticed it.
    assert times["suspect"] < 3 * REPORT_INTERVAL + 2
    assert times["scheduled"] < LOST_AFTER + 3 * REPORT_INTERVAL + 3

    assert_healed(fed, victim, stale, pods, marker, set(nodes), after="SIGCONT")
    assert len({slot for _, slot, _, _ in sleepers(marker)}) == 6


def test_node_back_after_lost_does_not_take_its_work_back(make_federation, tmp_path):
    fed = make_federation("process")
    nodes = start(fed)
    marker = str(random.randint(10**6, 10**7))
    before = apply_worker(fed, tmp_path, 6, marker)
    victim = busiest(before)

    fed.agents[victim].kill()
    _, pods = fail_over(fed, victim, before, time.monotonic(), 6)
    placed = {(p["slot"], p["node"], p["generation"]) for p in pods}

    fed.start_agent(victim, f"site-{victim[0]}", extra=["--report-interval", str(REPORT_INTERVAL)])
    wait_until(lambda: node_state(fed, victim) == "Ready", timeout=20,
               what=f"{victim} Ready again")
    wait_until(lambda: one_process_per_slot(marker, pods, set(nodes)), timeout=15,
               what="the returned node's old processes stopped")
    # Several passes and heartbeats later, nothing has moved back or restarted.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        now = {(p["slot"], p["node"], p["generation"]) for p in all_running(fed, 6, timeout=5)}
        assert now == placed
        assert node_state(fed, victim) == "Ready"
        time.sleep(0.25)
    events = json.loads(edgefed("describe", "deployment", "worker", "-o", "json",
                                server=fed.server).stdout)["events"]
    assert not [e for e in events if e["kind"] == "Scheduled" and f"-> {victim} " in e["message"]
                and "generation 1 " not in e["message"]]


@pytest.mark.docker
@pytest.mark.usefixtures("tiny_image")
def test_killed_docker_agent_fails_over(make_federation, tmp_path):
    fed = make_federation("docker")
    nodes = start(fed)
    before = apply_worker(fed, tmp_path, 3, "3600", image=TINY_IMAGE)
    victim = busiest(before)

    t0 = time.monotonic()
    fed.agents[victim].kill()
    times, pods = fail_over(fed, victim, before, t0, 3)
    print(f"\nSIGKILL docker {victim}: "
          + ", ".join(f"kill->{k} {v:.2f} s" for k, v in times.items()))
    assert {p["node"] for p in pods} <= set(nodes) - {victim}
    out = subprocess.run(["docker", "ps", "--filter", f"label=edgefed.test={fed.tag}",
                          "--format", '{{.Label "edgefed.node"}} {{.Label "edgefed.slot"}}'],
                         capture_output=True, text=True, check=True).stdout.split("\n")
    live = Counter(line.split()[1] for line in out if line and line.split()[0] != victim)
    assert sorted(live) == sorted(str(p["slot"]) for p in pods)
    assert set(live.values()) == {1}
