"""Failover policies with real processes (process runtime, real broker): a flapping
agent with and without flap damping, a singleton whose agent is cut off from the
broker and fences itself before its replacement starts, and keep-original when a
cut-off node comes back. Agents reach the broker through a TCP fault proxy, so a
partition is a real one: the connection stays open and carries nothing."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.drill.faults import FaultProxy
from federation.localfed import LocalFederation
from tests.drills.test_node_failures import api, node_state, sleepers
from tests.support import edgefed, wait_until

SITES = ("a", "b")

DEPLOYMENT = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
  container:
    image: none
    command: ["sh", "-c", "exec sleep {marker}"]
    resources:
      cpu: 50m
      memory: 8Mi
  failover:
{failover}
"""


@pytest.fixture
def proxies(make_federation: Callable[[str], LocalFederation]) -> Iterator[
        Callable[[LocalFederation], dict[str, FaultProxy]]]:
    """One fault proxy in front of the broker per site; stopped at the end."""
    made: list[FaultProxy] = []

    def make(fed: LocalFederation) -> dict[str, FaultProxy]:
        out = {}
        for site in SITES:
            proxy = FaultProxy(("127.0.0.1", fed.broker_port)).start()
            made.append(proxy)
            out[site] = proxy
        return out

    yield make
    for proxy in made:
        proxy.stop()


def start(fed: LocalFederation, controller: list[str], interval: float,
          links: dict[str, FaultProxy] | None = None) -> list[str]:
    fed.start_controller(*controller)
    nodes = []
    for site in SITES:
        node = f"{site}1-{fed.tag}"
        extra = ["--report-interval", str(interval)]
        if links is None:
            fed.start_agent(node, f"site-{site}", extra=extra)
        else:
            start_agent_via(fed, links[site], node, f"site-{site}", extra)
        nodes.append(node)
    wait_until(lambda: sum(n["state"] == "Ready" for n in api(fed, "nodes")) == len(nodes),
               timeout=30, what=f"{len(nodes)} Ready nodes")
    return nodes


def start_agent_via(fed: LocalFederation, link: FaultProxy, node: str, site: str,
                    extra: list[str]) -> None:
    """fed.start_agent, with the agent reaching the broker through ``link`` only."""
    fed.start_agent(node, site, extra=extra, broker=f"mqtt://127.0.0.1:{link.port}")


def apply(fed: LocalFederation, tmp_path: Path, name: str, marker: str, failover: str
          ) -> dict[str, Any]:
    path = tmp_path / f"{name}.yaml"
    path.write_text(DEPLOYMENT.format(name=name, marker=marker, failover=failover))
    edgefed("apply", "-f", str(path), server=fed.server)
    return wait_until(lambda: next((p for p in api(fed, "pods")
                                    if p["deployment"] == name and p["state"] == "Running"),
                                   None), timeout=30, what=f"{name}/0 running")


def events(fed: LocalFederation, name: str, kind: str) -> list[str]:
    described = json.loads(edgefed("describe", "deployment", name, "-o", "json",
                                   server=fed.server).stdout)
    return [e["message"] for e in described["events"] if e["kind"] == kind]


def reschedules(fed: LocalFederation, name: str) -> list[str]:
    return [m for m in events(fed, name, "Scheduled") if " generation 1 " not in m]


def live(marker: str) -> list[tuple[str, int]]:
    """(node, generation) of every live replica process of this test."""
    return sorted((node, gen) for node, _, gen, _ in sleepers(marker))


# -- flapping -----------------------------------------------------------------------

FLAP_INTERVAL = 0.3  # agents report every 0.3 s: Suspect after 0.9 s of silence
FLAP_CONTROLLER = ["--lost-after", "0.3", "--ready-after-reports", "10"]


@pytest.mark.parametrize("damping", [True, False], ids=["damping-on", "damping-off"])
def test_flapping_agent_moves_no_work_with_damping(make_federation, tmp_path, damping):
    """SIGSTOP/SIGCONT every 2 s for 20 s. The node is Lost within each 2 s pause
    (silence 0.9 s + 0.3 s), the deployment's grace is 3 s: with damping only
    continuous silence counts, so nothing moves; without it, a node back from Lost
    counts as out of contact until Ready, which a flapping node never is."""
    fed = make_federation("process")
    nodes = start(fed, FLAP_CONTROLLER + ([] if damping else ["--flap-limit", "0"]),
                  FLAP_INTERVAL)
    marker = str(random.randint(10**6, 10**7))
    first = apply(fed, tmp_path, "flappy", marker, "    grace: 3s")
    victim = first["node"]
    assert victim in nodes
    original = wait_until(lambda: [s for s in sleepers(marker) if s[0] == victim],
                          timeout=10, what="the replica process")

    agent = fed.agents[victim]
    done = threading.Event()

    def flap() -> None:
        try:
            for _ in range(5):
                agent.signal(signal.SIGSTOP)
                done.wait(2.0)  # the fault schedule itself: down 2 s, up 2 s
                agent.signal(signal.SIGCONT)
                done.wait(2.0)
        finally:
            agent.signal(signal.SIGCONT)
            done.set()

    seen: set[tuple[str, str]] = set()
    flapper = threading.Thread(target=flap, name="flap")
    flapper.start()
    try:
        while not done.is_set():
            node = next(n for n in api(fed, "nodes") if n["name"] == victim)
            seen.add((node["state"], node["reason"]))
            time.sleep(0.2)
    finally:
        done.set()
        flapper.join()

    assert any(state == "Lost" for state, _ in seen), seen  # the pauses were long enough
    moved = reschedules(fed, "flappy")
    print(f"\nflapping {victim}, damping {'on' if damping else 'off'}: {len(moved)} "
          f"reschedule(s); states seen: {sorted({state for state, _ in seen})}")
    if damping:
        assert moved == []
        assert any("flapping: " in reason for _, reason in seen), seen
        # The original process ran through it all.
        assert [s for s in sleepers(marker) if s[0] == victim] == original
    else:
        assert moved, "without damping the flapping should have moved the replica"


# -- singleton self-fencing -------------------------------------------------------------

SINGLETON_INTERVAL = 0.5


def singleton(make_federation, proxies, tmp_path: Path, grace: str) -> tuple[
        LocalFederation, dict[str, FaultProxy], str, str, str]:
    """A singleton ``leader`` with ``grace`` on one of two nodes, each behind its own
    link: (federation, links, marker, the node it runs on, the other node)."""
    fed = make_federation("process")
    links = proxies(fed)
    nodes = start(fed, ["--lost-after", "10"], SINGLETON_INTERVAL, links)
    marker = str(random.randint(10**6, 10**7))
    victim = apply(fed, tmp_path, "leader", marker, f"    grace: {grace}\n    singleton: true")["node"]
    other = next(n for n in nodes if n != victim)
    return fed, links, marker, victim, other


def test_cut_off_singleton_fences_itself_before_its_replacement_starts(
        make_federation, proxies, tmp_path):
    fed, links, marker, victim, other = singleton(make_federation, proxies, tmp_path, "3s")
    assert live(marker) == [(victim, 1)]

    t0 = time.monotonic()
    links[victim[0]].set(blackhole=True)  # the link carries nothing; no socket closes
    timeline: list[tuple[float, list[tuple[str, int]]]] = []

    def replaced() -> bool:
        now = live(marker)
        if not timeline or timeline[-1][1] != now:
            timeline.append((time.monotonic() - t0, now))
        assert len(now) <= 1, f"two live instances of a singleton: {timeline}"
        return now == [(other, 2)]

    wait_until(replaced, timeout=25, what="the singleton replaced on the other node",
               interval=0.05)
    print("\nsingleton cut off at 0: " + "; ".join(f"{t:.2f} s {state}" for t, state in timeline))
    gone = next(t for t, state in timeline if not state)
    assert gone >= 3.0 - 0.5  # not before its fence time (measured from its last contact)
    assert "self-fenced: no contact with the broker" in fed.agents[victim].log_path.read_text()
    moved = reschedules(fed, "leader")
    assert len(moved) == 1 and "singleton: its agent has stopped it" in moved[0], moved

    # Healed: the node comes back, learns it was replaced, and nothing runs twice.
    links[victim[0]].reset()
    links[victim[0]].clear()
    wait_until(lambda: node_state(fed, victim) == "Ready", timeout=30,
               what=f"{victim} Ready again")
    wait_until(lambda: any("self-fenced" in m for m in events(fed, "leader", "InstanceStopped")),
               timeout=15, what="the self-fencing stop reported after the partition")
    end = time.monotonic() + 2
    while time.monotonic() < end:
        assert live(marker) == [(other, 2)]
        time.sleep(0.2)


def test_singleton_replaced_at_once_when_an_operator_confirms_the_node_lost(
        make_federation, proxies, tmp_path):
    # A long grace: only the operator's word can move it within this test.
    fed, _, marker, victim, other = singleton(make_federation, proxies, tmp_path, "5m")

    refused = edgefed("confirm-lost", victim, server=fed.server, check=False)
    assert refused.returncode != 0 and "in contact" in refused.stderr
    unknown = edgefed("confirm-lost", "no-such-node", server=fed.server, check=False)
    assert unknown.returncode != 0 and "node no-such-node not found" in unknown.stderr

    # The host is really gone: its agent and its replica are killed.
    fed.agents[victim].kill()
    for _, _, _, pid in sleepers(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: node_state(fed, victim) in ("Suspect", "Lost"), timeout=10,
               what=f"{victim} out of contact")
    assert reschedules(fed, "leader") == []  # nothing moves by itself: the grace is 5 min
    confirmed = edgefed("confirm-lost", victim, server=fed.server)
    assert "confirmed lost by an operator" in confirmed.stdout
    wait_until(lambda: live(marker) == [(other, 2)], timeout=15,
               what="the singleton replaced after the confirmation")
    assert "confirmed lost by an operator" in reschedules(fed, "leader")[0]


# -- keep-original ----------------------------------------------------------------------


@pytest.mark.parametrize("controller_restarts", [False, True],
                         ids=["", "controller-restarted-meanwhile"])
def test_keep_original_keeps_the_returning_nodes_instance(make_federation, proxies, tmp_path,
                                                          controller_restarts):
    fed = make_federation("process")
    links = proxies(fed)
    controller = ["--lost-after", "10"]
    nodes = start(fed, controller, SINGLETON_INTERVAL, links)
    marker = str(random.randint(10**6, 10**7))
    first = apply(fed, tmp_path, "cache", marker, "    grace: 2s\n    onReconnect: keep-original")
    victim = first["node"]
    other = next(n for n in nodes if n != victim)

    links[victim[0]].set(blackhole=True)
    wait_until(lambda: live(marker) == sorted([(victim, 1), (other, 2)]), timeout=20,
               what="the replacement running while the cut-off original runs on")
    if controller_restarts:  # where the slot came from is on the controller's disk
        assert fed.controller is not None
        fed.controller.stop()
        fed.start_controller(*controller)
    # Not a singleton: the cut-off agent keeps it running, and no stop is queued for it.
    links[victim[0]].reset()
    links[victim[0]].clear()
    wait_until(lambda: live(marker) == [(victim, 3)], timeout=30,
               what="the original's node running the slot again, the replacement stopped")
    kept = events(fed, "cache", "KeptOriginal")
    assert len(kept) == 1 and f"keep-original: {victim} is back with generation 1" in kept[0]
    pods = [p for p in api(fed, "pods") if p["deployment"] == "cache"]
    assert [(p["node"], p["generation"]) for p in pods] == [(victim, 3)]
    end = time.monotonic() + 2
    while time.monotonic() < end:
        assert live(marker) == [(victim, 3)]
        time.sleep(0.2)


# -- rate-limited replacements ------------------------------------------------------------

WORKERS = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: workers
spec:
  replicas: 8
  container:
    image: none
    command: ["sh", "-c", "exec sleep {marker}"]
    resources:
      cpu: 50m
      memory: 8Mi
  placement:
    maxPerNode: 4
"""


def test_replacements_are_rate_limited(make_federation, tmp_path):
    """A node with 4 replicas is lost; at most 1 replacement per second may start
    (burst 1): the 4 are spread over at least 3 s, and all of them do start."""
    fed = make_federation("process")
    nodes = start(fed, ["--lost-after", "1", "--max-replacements-per-second", "1",
                        "--replacement-burst", "1"], 0.5)
    marker = str(random.randint(10**6, 10**7))
    path = tmp_path / "workers.yaml"
    path.write_text(WORKERS.format(marker=marker))
    edgefed("apply", "-f", str(path), server=fed.server)
    wait_until(lambda: len(sleepers(marker)) == 8, timeout=30, what="8 replica processes")
    victim = nodes[0]
    assert sum(node == victim for node, *_ in sleepers(marker)) == 4  # maxPerNode over a and b
    fed.start_agent(f"c1-{fed.tag}", "site-c", extra=["--report-interval", "0.5"])
    wait_until(lambda: node_state(fed, f"c1-{fed.tag}") == "Ready", timeout=20, what="c1 Ready")

    fed.agents[victim].kill()
    wait_until(lambda: sum(node == f"c1-{fed.tag}" for node, *_ in sleepers(marker)) == 4,
               timeout=30, what="4 replacements running on c1")
    described = json.loads(edgefed("describe", "deployment", "workers", "-o", "json",
                                   server=fed.server).stdout)
    at = sorted(e["at"] for e in described["events"]
                if e["kind"] == "Scheduled" and " generation 1 " not in e["message"])
    print("\nreplacements scheduled at +" + ", ".join(f"{t - at[0]:.2f}" for t in at) + " s")
    assert len(at) == 4
    assert at[-1] - at[0] >= 3 * 0.9  # 1 per second, a little slack for the pass period


# -- the controller's presence -------------------------------------------------------------


def test_agents_log_the_controller_going_and_coming_back(make_federation, tmp_path):
    fed = make_federation("process")
    nodes = start(fed, [], 0.5)
    marker = str(random.randint(10**6, 10**7))
    apply(fed, tmp_path, "steady", marker, "    grace: 30s")
    pid = sleepers(marker)[0][3]
    agent_log = fed.agents[nodes[0]].log_path
    assert fed.controller is not None
    fed.controller.stop()
    wait_until(lambda: "controller offline since" in agent_log.read_text(), timeout=10,
               what="the agent noticing the controller is gone")
    fed.start_controller()
    wait_until(lambda: "controller back after" in agent_log.read_text(), timeout=15,
               what="the agent noticing the controller is back")
    assert [p for *_, p in sleepers(marker)] == [pid]  # ran through it all
