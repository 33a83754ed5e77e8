"""The controller cut off from the broker while its nodes are fine.

The controller reaches the broker through a fault proxy; the agents reach it
directly. Cutting the proxy (a reset, or a link that silently drops everything,
which only the controller's echo through the broker notices in time) silences
every node for the controller at once:
that says nothing about the nodes, so none may become Suspect or Lost, and
after the reconnect each gets a fresh grace instead of being judged at once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from federation.drill.faults import FaultProxy
from federation.localfed import LocalFederation, Proc, edgefed_argv, free_port, wait_for_port
from tests.drills.test_node_failures import api
from tests.support import wait_until

LOST_AFTER = 2.0
INTERVAL = 0.5
GRACE = 3 * INTERVAL + LOST_AFTER  # silence after which a node would be Lost
NODES = ("a1", "b1")


def states(fed: LocalFederation) -> dict[str, str]:
    return {n["name"]: n["state"] for n in api(fed, "nodes")}


def log_says(proc: Proc, text: str) -> bool:
    return text in proc.log_path.read_text(errors="replace")


def watch(fed: LocalFederation, seconds: float, seen: list[dict[str, str]]) -> None:
    """Record every node's state, polled, for ``seconds``."""
    until = time.monotonic() + seconds

    def over() -> bool:
        seen.append(states(fed))
        return time.monotonic() > until

    wait_until(over, timeout=seconds + 10, what=f"{seconds} s to pass", interval=0.2)


def cut(link: FaultProxy, mode: str) -> None:
    if mode == "reset":  # the connection is reset and reconnects are refused
        link.refuse()
        link.reset()
    else:  # everything is dropped silently; the socket stays open
        link.set(blackhole=True)


def restore(link: FaultProxy, mode: str) -> None:
    if mode == "reset":
        link.refuse(False)
    else:  # what the blackhole swallowed left the stream unusable: start afresh
        link.clear()
        link.reset()


@pytest.mark.parametrize("mode", ["reset", "blackhole"])
def test_nodes_are_not_lost_while_the_controller_is_cut_off(make_federation, mode) -> None:
    fed = make_federation("process")
    with FaultProxy(("127.0.0.1", fed.broker_port)) as link:
        fed.api_port = free_port()
        argv = edgefed_argv("controller", "--broker", f"mqtt://127.0.0.1:{link.port}",
                            "--db", str(fed.workdir / "controller.db"),
                            "--listen", f"127.0.0.1:{fed.api_port}",
                            "--lost-after", str(LOST_AFTER))
        controller = fed.controller = Proc("controller", argv, fed.workdir / "controller.log",
                                           fed.env()).start()
        wait_for_port(fed.api_port, timeout=20, proc=controller.popen)
        nodes = [f"{n}-{fed.tag}" for n in NODES]
        for node in nodes:
            fed.start_agent(node, f"site-{node[0]}", extra=["--report-interval", str(INTERVAL)])
        wait_until(lambda: set(states(fed).values()) == {"Ready"} and len(states(fed)) == 2,
                   timeout=30, what="2 Ready nodes")

        # Only the controller's link goes.
        cut(link, mode)
        wait_until(lambda: log_says(controller, "cut off from the broker"), timeout=10,
                   what="the controller noticing it is cut off")
        during: list[dict[str, str]] = []
        watch(fed, GRACE + 2 * INTERVAL, during)

        restore(link, mode)
        wait_until(lambda: log_says(controller, "connected to the broker again"), timeout=30,
                   what="the controller reconnecting")
        after: list[dict[str, str]] = []
        watch(fed, GRACE, after)

        # The check is not vacuous: a node that really goes is still found out.
        fed.agents[nodes[0]].kill()
        wait_until(lambda: states(fed).get(nodes[0]) == "Lost", timeout=GRACE + 10,
                   what=f"{nodes[0]} Lost after its agent was killed")
    seen: set[Any] = {s for sample in during + after for s in sample.values()}
    print(f"\ncontroller cut off: node states seen {sorted(seen)}")
    assert during and after
    if mode == "reset":
        assert seen == {"Ready"}
    else:
        # A silent link is noticed by the echo (2 s), after the nodes' heartbeat deadline
        # here (1.5 s): they may turn Suspect (no new work), never Lost.
        assert seen <= {"Ready", "Suspect"}
        assert set(after[-1].values()) == {"Ready"}
