"""Broker URL lists: the controller and the agents are given two brokers
(``--broker mqtt://A,mqtt://B``); when the one they use dies they move to the
other, and the federation goes on placing work.

Retained messages and persistent sessions live in one broker and do not move
with a client. What makes the move work is that every (re)connect republishes
what the other side needs: the agent its presence (and, right after, a capacity
report with its instances), the controller its presence; both subscribe again.
Commands published to the new broker before an agent has subscribed there are
lost with nothing queued for it; the controller sends a command again after
RESEND_AFTER when no instance shows up."""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from federation.localfed import (
    LocalFederation,
    Proc,
    edgefed_argv,
    free_port,
    start_broker,
    wait_for_port,
)
from tests.integration.test_process_flow import DEPLOYMENT, sleepers
from tests.support import edgefed, wait_until

REPORT = ["--report-interval", "0.5"]


def api(fed: LocalFederation, path: str) -> Any:
    with urllib.request.urlopen(f"{fed.server}/api/v1/{path}", timeout=5) as resp:
        return json.loads(resp.read())


def ready(fed: LocalFederation) -> int:
    return sum(n["state"] == "Ready" for n in api(fed, "nodes")["items"])


def start_on(fed: LocalFederation, brokers: list[str], nodes: dict[str, str]) -> None:
    """Controller and agents (node -> site) of ``fed``, all given the list ``brokers``:
    the controller and the first agent as repeated --broker flags, the others as one
    comma-separated --broker (both spellings are accepted)."""
    repeated = [arg for url in brokers for arg in ("--broker", url)]
    joined = ["--broker", ",".join(brokers)]
    fed.api_port = free_port()
    fed.controller = Proc("controller", edgefed_argv(
        "controller", *repeated, "--db", str(fed.workdir / "controller.db"),
        "--listen", f"127.0.0.1:{fed.api_port}"), fed.workdir / "controller.log",
        fed.env()).start()
    wait_for_port(fed.api_port, timeout=20, proc=fed.controller.popen)
    for i, (node, site) in enumerate(nodes.items()):
        argv = edgefed_argv("agent", *(repeated if i == 0 else joined), "--site", site,
                            "--node", node,
                            "--runtime", "process", "--state-dir",
                            str(fed.workdir / "agents" / node), *REPORT)
        fed.agents[node] = Proc(f"agent {node}", argv, fed.workdir / f"agent-{node}.log",
                                fed.env()).start()
    wait_until(lambda: ready(fed) == len(nodes),
               timeout=30, what=f"{len(nodes)} Ready nodes")


def connected_to(proc: Proc, port: int) -> int:
    """How often ``proc`` logged a connect to the broker on ``port``."""
    return proc.log_path.read_text(errors="replace").count(f"connected to mqtt://127.0.0.1:{port} ")


def apply(fed: LocalFederation, tmp_path: Path, name: str, replicas: int, marker: str) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(DEPLOYMENT.format(replicas=replicas, marker=marker)
                    .replace("name: worker", f"name: {name}"))
    edgefed("apply", "-f", str(path), server=fed.server)


def running(fed: LocalFederation, name: str, count: int) -> list[dict[str, Any]] | None:
    pods = [p for p in api(fed, "pods")["items"] if p["deployment"] == name]
    return pods if len(pods) == count and all(p["state"] == "Running" for p in pods) else None


def test_agents_and_controller_fail_over_to_the_next_broker_and_back(make_federation,
                                                                       tmp_path):
    fed = make_federation("process")
    first, p1 = start_broker(tmp_path / "broker-1")
    second: Proc | None = None
    try:
        second, p2 = start_broker(tmp_path / "broker-2")
        tag = fed.tag
        nodes = {f"a1-{tag}": "site-a", f"b1-{tag}": "site-b"}
        start_on(fed, [f"mqtt://127.0.0.1:{p1}", f"mqtt://127.0.0.1:{p2}"], nodes)
        everyone = [fed.controller, *fed.agents.values()]
        assert all(connected_to(p, p1) == 1 and connected_to(p, p2) == 0 for p in everyone
                   if p is not None)

        marker = str(random.randint(10**6, 10**7))
        apply(fed, tmp_path, "worker", 2, marker)
        before = wait_until(lambda: running(fed, "worker", 2), timeout=30,
                            what="worker running via the first broker")

        first.kill()
        wait_until(lambda: all(connected_to(p, p2) >= 1 for p in everyone if p is not None),
                   timeout=30, what="controller and agents connected to the second broker")
        wait_until(lambda: ready(fed) == 2,
                   timeout=20, what="both nodes Ready through the second broker")
        apply(fed, tmp_path, "after", 2, marker + "1")
        wait_until(lambda: running(fed, "after", 2), timeout=30,
                   what="a deployment applied after the failover running")
        # Nothing moved or restarted meanwhile.
        assert {(p["slot"], p["node"], p["generation"]) for p in before} == {
            (p["slot"], p["node"], p["generation"]) for p in running(fed, "worker", 2) or []}
        assert len(sleepers(marker)) == 2

        # Back: the first broker returns (empty), the second dies.
        first, _ = start_broker(tmp_path / "broker-1b", port=p1)
        second.kill()
        wait_until(lambda: all(connected_to(p, p1) >= 2 for p in everyone if p is not None),
                   timeout=30, what="everyone back on the first broker")
        wait_until(lambda: ready(fed) == 2,
                   timeout=20, what="both nodes Ready through the first broker again")
        apply(fed, tmp_path, "after", 4, marker + "1")
        wait_until(lambda: running(fed, "after", 4), timeout=30,
                   what="scaled up after failing back")
        assert api(fed, "stats")["broker_connects"] >= 3
    finally:
        fed.stop()
        first.stop()
        if second is not None:
            second.stop()


def test_a_bad_broker_url_in_the_list_is_refused_at_start(tmp_path):
    for role, extra in (("controller", ["--db", str(tmp_path / "c.db")]),
                        ("agent", ["--site", "s", "--node", "n"])):
        done = subprocess.run(edgefed_argv(role, "--broker", "mqtt://127.0.0.1:1",
                                           "--broker", "http://127.0.0.1:2", *extra),
                              capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 2, (role, done.stderr)
        assert "broker URL 'http://127.0.0.1:2': scheme must be mqtt://" in done.stderr, role


def test_every_spelling_of_a_broker_list_gives_the_same_brokers(tmp_path):
    from edge_agent.config import add_arguments, from_args
    from federation.bus import parse_brokers

    urls = ["mqtt://10.0.0.1:1883", "mqtt://10.0.0.2:1884"]
    (tmp_path / "agent.yaml").write_text(f"broker: [{urls[0]}, {urls[1]}]\nsite: s\nnode: n\n")
    spellings = (["--broker", urls[0], "--broker", urls[1]], ["--broker", ",".join(urls)],
                 ["--config", str(tmp_path / "agent.yaml")])
    for argv in spellings:
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        extra = [] if "--config" in argv else ["--site", "s", "--node", "n"]
        config = from_args(parser.parse_args([*argv, *extra]))
        assert [str(b) for b in parse_brokers(config.broker)] == urls, argv
