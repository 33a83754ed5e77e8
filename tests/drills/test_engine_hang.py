"""A hung Docker engine must not cost a healthy node its place in the federation.

The agent reaches the machine's engine through a fault proxy that accepts every
connection and forwards nothing (blackhole): each engine call hangs until the
SDK's own timeout. Capacity reports are the node's heartbeats and must keep
flowing meanwhile, so the node stays Ready well past the controller's grace."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import IMAGES_TIMEOUT, LOGS_TIMEOUT
from federation.drill.faults import FaultProxy
from federation.localfed import LocalFederation, Proc
from tests.drills.test_node_failures import all_running, api, apply_worker
from tests.integration.conftest import TINY_IMAGE, tiny_image  # noqa: F401  (fixture)
from tests.support import wait_until

ENGINE_SOCKET = "/var/run/docker.sock"
LOST_AFTER = 2.0
INTERVAL = 0.5
GRACE = 3 * INTERVAL + LOST_AFTER  # silence after which the node would be Lost


def node_row(fed: LocalFederation, name: str) -> dict[str, Any]:
    return next((n for n in api(fed, "nodes") if n["name"] == name), {})


def log_says(proc: Proc, text: str) -> bool:
    return text in proc.log_path.read_text(errors="replace")


def start_agent_through(fed: LocalFederation, engine: FaultProxy) -> tuple[str, Proc]:
    """One docker agent whose engine calls go through ``engine``."""
    node = f"a1-{fed.tag}"
    agent = fed.start_agent(node, "site-a", extra=["--report-interval", str(INTERVAL)],
                            env={"DOCKER_HOST": f"tcp://127.0.0.1:{engine.port}"})
    return node, agent


@pytest.mark.docker
@pytest.mark.skipif(not os.path.exists(ENGINE_SOCKET), reason=f"no {ENGINE_SOCKET}")
def test_a_hung_docker_engine_does_not_stop_heartbeats(make_federation):
    fed = make_federation("docker")
    with FaultProxy(ENGINE_SOCKET) as engine:
        engine.set(blackhole=True)  # connections open, requests vanish, nothing answers
        fed.start_controller("--lost-after", str(LOST_AFTER))
        node, agent = start_agent_through(fed, engine)
        wait_until(lambda: node_row(fed, node).get("state") == "Ready", timeout=30,
                   what=f"{node} Ready while its engine hangs")
        wait_until(lambda: log_says(agent, "no image list within"), timeout=IMAGES_TIMEOUT + 10,
                   what="the agent saying its engine does not answer")
        hung_at = time.monotonic()
        seen: list[dict[str, Any]] = []

        def watched_past_the_grace() -> bool:
            seen.append(node_row(fed, node))
            return time.monotonic() - hung_at > GRACE + 2 * INTERVAL

        wait_until(watched_past_the_grace, timeout=GRACE + 10, what="the grace to pass",
                   interval=0.2)
        assert engine.stats().dropped > 0, "no request reached the stalled engine"
        assert engine.stats().bytes_down == 0, "the engine answered through the blackhole"

        # The engine recovers: hung requests are reset and the next listing succeeds.
        engine.clear()
        engine.reset()
        wait_until(lambda: log_says(agent, "engine answers again"), timeout=30,
                   what="the agent noticing its engine answers again")
        assert agent.alive()
    print(f"\nengine hang: node states seen {sorted({r.get('state') for r in seen})}, "
          f"longest silence {max(r.get('last_seen_seconds', 0) for r in seen)} s")
    assert {r.get("state") for r in seen} == {"Ready"}
    assert max(r.get("last_seen_seconds", 99) for r in seen) < 3 * INTERVAL


def logs_of(fed: LocalFederation, pod: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "federation.cli", "logs", pod, "--server",
                           fed.server], capture_output=True, text=True, timeout=60, check=False)
    return time.monotonic() - t0, proc


@pytest.mark.docker
@pytest.mark.usefixtures("tiny_image")
@pytest.mark.skipif(not os.path.exists(ENGINE_SOCKET), reason=f"no {ENGINE_SOCKET}")
def test_logs_from_a_hung_engine_are_refused_in_time_and_block_nothing(make_federation,
                                                                      tmp_path: Path):
    fed = make_federation("docker")
    with FaultProxy(ENGINE_SOCKET) as engine:
        fed.start_controller("--lost-after", str(LOST_AFTER))
        node, agent = start_agent_through(fed, engine)
        wait_until(lambda: node_row(fed, node).get("state") == "Ready", timeout=30,
                   what=f"{node} Ready")
        apply_worker(fed, tmp_path, 1, "3600", image=TINY_IMAGE)
        engine.set(blackhole=True)
        # Two at once: each waits on the engine by itself, neither behind the other.
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: logs_of(fed, "worker/0"), range(2)))
        for took, proc in answers:
            assert proc.returncode != 0
            assert f"the runtime did not answer within {LOGS_TIMEOUT:g} s" in proc.stderr, \
                proc.stderr
            assert took < LOGS_TIMEOUT + 1.5, f"answered after {took:.1f} s"
        assert node_row(fed, node).get("state") == "Ready"
        engine.clear()
        engine.reset()
        all_running(fed, 1, timeout=30)
        assert agent.alive()
