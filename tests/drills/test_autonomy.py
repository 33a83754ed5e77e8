"""Edge autonomy drills (DESIGN.md, "Failover model"): the broker restarts, the
controller is gone for a minute, an agent restarts or its host reboots while
the broker is unreachable. Replicas are real processes (process runtime),
checked with psutil; each test has its own broker, since it stops it."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from federation.localfed import LocalFederation, free_port
from tests.integration.conftest import tiny_image  # noqa: F401  (the engine's test image fixture)
from tests.integration.test_core_loop import apply_seed, containers, running_pods, start
from tests.integration.test_process_flow import DEPLOYMENT, sleepers
from tests.support import edgefed, get_json, wait_until

REPORT = ["--report-interval", "1"]


@pytest.fixture
def own_federation(make_federation: Callable[[str], LocalFederation]
                   ) -> Callable[[str], LocalFederation]:
    """A process-runtime federation with a broker of its own (the drills stop it)."""

    def make(runtime: str = "process") -> LocalFederation:
        fed = make_federation(runtime)
        fed.broker_port = free_port()
        fed.start_broker()
        return fed

    return make


def apply(fed: LocalFederation, tmp_path: Path, replicas: int, marker: str) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text(DEPLOYMENT.format(replicas=replicas, marker=marker))
    edgefed("apply", "-f", str(path), server=fed.server)


def placement(fed: LocalFederation) -> dict[int, tuple[str, int]]:
    """slot -> (node, generation), once every pod is Running."""
    return {p["slot"]: (p["node"], p["generation"]) for p in get_json("pods", fed.server)}


def pids(marker: str, count: int) -> list[int]:
    found = wait_until(lambda: len(s := sleepers(marker)) == count and s, timeout=30,
                       what=f"{count} replica processes")
    return sorted(p.pid for p in found)


def api(fed: LocalFederation, path: str) -> Any:
    with urllib.request.urlopen(f"{fed.server}/api/v1/{path}", timeout=5) as resp:
        return json.loads(resp.read())


def scheduled_events(fed: LocalFederation) -> list[str]:
    described = json.loads(edgefed("describe", "deployment", "worker", "-o", "json",
                                   server=fed.server).stdout)
    return [e["message"] for e in described["events"] if e["kind"] == "Scheduled"]


def connects_logged(fed: LocalFederation, node: str) -> int:
    return fed.agents[node].log_path.read_text(errors="replace").count("connected to mqtt://")


def logged(fed: LocalFederation, node: str, text: str) -> bool:
    return text in fed.agents[node].log_path.read_text(errors="replace")


def hold(seconds: float, check: Callable[[], None], *, every: float = 3.0) -> int:
    """Assert ``check`` again and again for ``seconds``: the condition under test
    is that it holds the whole time. Returns how many times it was checked."""
    deadline = time.monotonic() + seconds
    checks = 0
    while True:
        check()
        checks += 1
        left = deadline - time.monotonic()
        if left <= 0:
            return checks
        time.sleep(min(every, left))


def kill_replicas(marker: str) -> None:
    """SIGKILL each replica's process group (wrapper shell and command) at once,
    as a power cut would: nothing gets to record an exit status."""
    for proc in sleepers(marker):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
    wait_until(lambda: not sleepers(marker), timeout=10, what="the replicas to be dead")


def all_alive(procs: list[int]) -> bool:
    return all(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
               for p in procs)


def test_broker_restart_reconnects_everyone_and_restarts_nothing(own_federation, tmp_path):
    fed = own_federation()
    nodes = start(fed, sites=("a", "b"))
    marker = str(random.randint(10**6, 10**7))
    apply(fed, tmp_path, 3, marker)
    running_pods(fed, 3)
    before, running = placement(fed), pids(marker, 3)
    connects = api(fed, "stats")["broker_connects"]

    fed.stop_broker()
    wait_until(lambda: not api(fed, "healthz")["broker_connected"], timeout=15,
               what="the controller to notice the broker is gone")
    fed.start_broker()
    wait_until(lambda: api(fed, "stats")["broker_connects"] > connects, timeout=30,
               what="the controller to reconnect")
    for node in nodes:
        wait_until(lambda n=node: connects_logged(fed, n) >= 2, timeout=30,
                   what=f"agent {node} to reconnect")

    running_pods(fed, 3)
    assert placement(fed) == before
    assert sorted(p.pid for p in sleepers(marker)) == running

    apply(fed, tmp_path, 4, marker)  # commands after the restart still work
    running_pods(fed, 4)
    assert set(running) < set(pids(marker, 4))
    assert {k: v for k, v in placement(fed).items() if k in before} == before


def test_controller_down_a_minute_changes_nothing(own_federation, tmp_path):
    fed = own_federation()
    nodes = start(fed, sites=("a", "b"))
    marker = str(random.randint(10**6, 10**7))
    apply(fed, tmp_path, 3, marker)
    running_pods(fed, 3)
    before, running = placement(fed), pids(marker, 3)
    scheduled = scheduled_events(fed)

    fed.stop_controller()

    def everything_still_runs() -> None:
        assert all(fed.agents[n].alive() for n in nodes), "an agent died"
        assert all_alive(running), "a replica died while the controller was away"
        assert sorted(p.pid for p in sleepers(marker)) == running

    assert hold(60, everything_still_runs) >= 15

    fed.start_controller("--lost-after", "30")
    running_pods(fed, 3)
    assert placement(fed) == before
    assert sorted(p.pid for p in sleepers(marker)) == running
    assert scheduled_events(fed) == scheduled

    apply(fed, tmp_path, 4, marker)  # back in control
    running_pods(fed, 4)
    assert set(running) < set(pids(marker, 4))


def two_running_replicas(fed, tmp_path):  # type: ignore[no-untyped-def]
    """One agent running two replicas: (node, marker, placement, pids, Scheduled events)."""
    (node,) = start(fed, sites=("a",))
    marker = str(random.randint(10**6, 10**7))
    apply(fed, tmp_path, 2, marker)
    running_pods(fed, 2)
    return node, marker, placement(fed), pids(marker, 2), scheduled_events(fed)


def test_agent_restart_without_broker_keeps_its_replicas(own_federation, tmp_path):
    fed = own_federation()
    node, marker, before, running, scheduled = two_running_replicas(fed, tmp_path)

    fed.stop_broker()
    fed.agents[node].kill()
    fed.start_agent(node, "site-a", extra=REPORT)
    wait_until(lambda: logged(fed, node, "broker unreachable, running 2 instance(s) "
                              "from local state"), timeout=30,
               what="the agent to run from local state with the broker down")
    assert fed.agents[node].alive()
    assert sorted(p.pid for p in sleepers(marker)) == running

    fed.start_broker()
    wait_until(lambda: connects_logged(fed, node) >= 2, timeout=30,
               what="the restarted agent to connect")
    running_pods(fed, 2)
    assert placement(fed) == before
    assert sorted(p.pid for p in sleepers(marker)) == running
    assert scheduled_events(fed) == scheduled
    assert not logged(fed, node, "restarting"), "the agent restarted an instance"


def test_reboot_without_broker_restores_replicas_from_disk(own_federation, tmp_path):
    fed = own_federation()
    node, marker, before, running, scheduled = two_running_replicas(fed, tmp_path)

    fed.stop_broker()
    fed.agents[node].kill()  # the host loses power: agent and replicas die together
    kill_replicas(marker)
    fed.start_agent(node, "site-a", extra=REPORT)
    restored = pids(marker, 2)  # no broker, no controller: from the agent's disk alone
    assert not set(restored) & set(running)
    wait_until(lambda: logged(fed, node, "broker unreachable, running 2 instance(s) "
                              "from local state"), timeout=15, what="the offline notice")

    fed.start_broker()
    running_pods(fed, 2)
    assert placement(fed) == before  # same nodes, same generations: nothing rescheduled
    assert scheduled_events(fed) == scheduled
    assert sorted(p.pid for p in sleepers(marker)) == restored
    # What the agent saw while offline reaches the controller once the broker is back.
    def ended_offline() -> list[str]:
        events = json.loads(edgefed("describe", "deployment", "worker", "-o", "json",
                                    server=fed.server).stdout)["events"]
        return sorted(e["message"].split()[0] for e in events if e["kind"] == "InstanceExited"
                      and "killed, or the host rebooted" in e["message"])

    assert wait_until(ended_offline, timeout=10, what="the offline exits as events") == [
        "worker/0", "worker/1"]
    assert {p["slot"]: p["restarts"] for p in get_json("pods", fed.server)} == {0: 1, 1: 1}


def test_a_crash_while_offline_reaches_the_controller_across_an_agent_restart(
        own_federation, tmp_path):
    """A replica crashes while the broker is down, and the agent restarts before the
    broker is back: the crash was kept on the agent's disk, not only in its MQTT
    client's memory, so the controller still learns of it."""
    fed = own_federation()
    node, _, _, running, _ = two_running_replicas(fed, tmp_path)

    fed.stop_broker()
    victim = psutil.Process(running[0])
    slot = int(victim.environ()["EDGEFED_SLOT"])
    victim.kill()  # the program crashes; its wrapper records the exit status
    wait_until(lambda: logged(fed, node, f"restarting worker/{slot}"), timeout=20,
               what="the agent to restart the crashed replica")
    fed.agents[node].kill()  # before the broker is back
    fed.start_agent(node, "site-a", extra=REPORT)
    wait_until(lambda: logged(fed, node, "instance event(s) stored before this start"),
               timeout=15, what="the restarted agent to forward its stored events")

    fed.start_broker()

    def crash_events() -> list[str]:
        events = json.loads(edgefed("describe", "deployment", "worker", "-o", "json",
                                    server=fed.server).stdout)["events"]
        return [e["message"] for e in events if e["kind"] == "InstanceExited"
                and e["message"].startswith(f"worker/{slot} ")]

    (crash,) = wait_until(crash_events, timeout=20, what="the offline crash as an event")
    assert "(exit 137)" in crash, crash
    running_pods(fed, 2)


@pytest.mark.docker
@pytest.mark.usefixtures("tiny_image")
def test_docker_agent_restart_without_broker_keeps_its_containers(own_federation, tmp_path):
    fed = own_federation("docker")
    (node,) = start(fed, sites=("a",))
    apply_seed(fed, tmp_path, 2)
    running_pods(fed, 2)
    before, running = placement(fed), containers(fed.tag)
    assert len(running) == 2

    fed.stop_broker()
    fed.agents[node].kill()
    fed.start_agent(node, "site-a", extra=REPORT)
    wait_until(lambda: logged(fed, node, "broker unreachable, running 2 instance(s) "
                              "from local state"), timeout=30,
               what="the agent to run from local state with the broker down")
    assert containers(fed.tag) == running

    fed.start_broker()
    wait_until(lambda: connects_logged(fed, node) >= 2, timeout=30,
               what="the restarted agent to connect")
    running_pods(fed, 2)
    assert placement(fed) == before
    assert containers(fed.tag) == running
