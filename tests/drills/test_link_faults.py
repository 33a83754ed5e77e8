"""Link faults with real namespaces: every site's agent runs in a network namespace
of its own and reaches the session broker through a fault proxy on its veth's host
address (federation.drill.faults). A link is cut with an nft drop rule, or taken
down and up again; replicas are real processes (process runtime), checked with
psutil, and the controller is asked through /api/v1.

One drill cuts an agent off its Docker engine instead: the agent talks to
the engine through a fault proxy in front of the engine's socket, which resets
every connection and refuses new ones for a while, as a restarting dockerd does
(the machine's real engine is shared with other tests and is never restarted).

Another checks the tbf shaping of a namespace's link.

Namespace drills need root and ip/nft/tc and are skipped otherwise. Every
namespace is deleted in a finalizer, which also checks that nothing of it is left."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from federation.drill.faults import FaultProxy, SiteNamespace
from federation.drill.faults.netns import sh
from federation.localfed import LocalFederation, Proc, edgefed_argv
from tests.drills.test_node_failures import (
    REPORT_INTERVAL,
    SITES,
    all_running,
    api,
    apply_worker,
    assert_healed,
    busiest,
    fail_over,
    node_state,
    one_process_per_slot,
    sleepers,
)
from tests.integration.conftest import TINY_IMAGE, tiny_image  # noqa: F401  (fixture)
from tests.support import edgefed, wait_until

LOST_AFTER = 3.0
GENERATION = re.compile(r"^(\S+)/(\d+) generation (\d+) -> (\S+) ")

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "tc")),
    reason="network namespaces need root and the ip, nft and tc commands")

MakeNamespace = Callable[[str], SiteNamespace]


@pytest.fixture
def make_namespace() -> Iterator[MakeNamespace]:
    """Factory: make_namespace(site) -> an open SiteNamespace, deleted after the test."""
    made: list[SiteNamespace] = []

    def make(site: str) -> SiteNamespace:
        ns = SiteNamespace(site)
        made.append(ns)
        return ns.open()

    yield make
    for ns in made:
        ns.close()
    left = [part for ns in made for part in ns.remains()]
    assert not left, f"left behind: {left}"


def start_sites(fed: LocalFederation, make_namespace: MakeNamespace, *controller: str,
                sites: tuple[str, ...] = SITES) -> dict[str, SiteNamespace]:
    """Controller in the root namespace, one agent per site in the site's namespace."""
    fed.start_controller(*controller)
    placed: dict[str, SiteNamespace] = {}
    for site in sites:
        ns = make_namespace(f"site-{site}")
        proxy = ns.bridge(fed.broker_port)
        node = f"{site}1-{fed.tag}"
        argv = edgefed_argv("agent", "--broker", f"mqtt://{ns.host_addr}:{proxy.port}",
                            "--site", f"site-{site}", "--node", node, "--runtime", "process",
                            "--state-dir", str(fed.workdir / "agents" / node),
                            "--report-interval", str(REPORT_INTERVAL))
        for label in fed.container_labels:
            argv += ["--container-label", label]
        # Registered with the federation, so its finalizer stops the agent and the
        # replica processes it started.
        fed.agents[node] = Proc(f"agent {node}", ns.argv(argv),
                                fed.workdir / f"agent-{node}.log", fed.env()).start()
        placed[node] = ns
    wait_until(lambda: sum(n["state"] == "Ready" for n in api(fed, "nodes")) == len(sites),
               timeout=30, what=f"{len(sites)} Ready nodes behind their namespaces")
    return placed


def events(fed: LocalFederation) -> list[dict[str, Any]]:
    described = json.loads(edgefed("describe", "deployment", "worker", "-o", "json",
                                   server=fed.server).stdout)
    return list(described["events"])


def reschedules(fed: LocalFederation) -> list[tuple[int, int, str]]:
    """(slot, generation, node) of every placement after a slot's first."""
    out = []
    for e in events(fed):
        found = GENERATION.match(e["message"]) if e["kind"] == "Scheduled" else None
        if found and int(found[3]) > 1:
            out.append((int(found[2]), int(found[3]), found[4]))
    return sorted(out)


@needs_netns
def test_cut_link_node_lost_replaced_and_stale_instances_stopped_on_restore(
        make_federation, make_namespace, tmp_path):
    fed = make_federation("process")
    namespaces = start_sites(fed, make_namespace, "--lost-after", str(LOST_AFTER))
    marker = str(random.randint(10**6, 10**7))
    before = apply_worker(fed, tmp_path, 6, marker)
    victim = busiest(before)
    stale = [s for s in sleepers(marker) if s[0] == victim]
    assert stale

    t0 = time.monotonic()
    namespaces[victim].cut()  # both directions: nothing in, nothing out
    try:
        times, pods = fail_over(fed, victim, before, t0, 6)
        # The agent is alive and keeps its replicas running while cut off.
        assert fed.agents[victim].alive()
        assert {pid for *_, pid in stale} <= {pid for *_, pid in sleepers(marker)}
    finally:
        namespaces[victim].restore()
    print(f"\nnft cut {victim}: " + ", ".join(f"cut->{k} {v:.2f} s" for k, v in times.items()))
    assert times["lost"] < 3 * REPORT_INTERVAL + LOST_AFTER + 3
    assert {p["node"] for p in pods} <= set(namespaces) - {victim}

    # The controller's view agrees: the same placement, and the agents report
    # exactly one instance per slot between them.
    assert_healed(fed, victim, stale, pods, marker, set(namespaces),
                  after="the link is restored")
    wait_until(lambda: sum(n["instances"] for n in api(fed, "nodes")) == 6, timeout=10,
               what="6 instances reported by the agents")
    # Each stale instance was reported stopped by the node that ran it.
    stopped = {m["message"] for m in events(fed) if m["kind"] == "InstanceStopped"}
    for node, slot, generation, _ in stale:
        assert any(msg.startswith(f"worker/{slot} generation {generation} on {node} is stopped")
                   for msg in stopped), (slot, generation, sorted(stopped))


FLAP_GRACE = 4.0  # longer than one 2 s outage plus TCP's retransmission catch-up
HOLD_DOWN = 6.0


@needs_netns
def test_flapping_link_is_damped_no_reschedules_and_no_new_work(make_federation,
                                                                  make_namespace, tmp_path):
    """Damping policy (controller defaults: 3 disconnects in 60 s make a node flapping):
    a flapping node is held Suspect, keeps its replicas and gets no new work; while
    no single outage outlasts the grace it is never Lost, so it allows no reschedule."""
    fed = make_federation("process")
    namespaces = start_sites(fed, make_namespace, "--lost-after", str(FLAP_GRACE),
                             "--hold-down", str(HOLD_DOWN))
    marker = str(random.randint(10**6, 10**7))
    before = apply_worker(fed, tmp_path, 6, marker)
    victim = busiest(before)
    ns = namespaces[victim]

    # The link changes every 2 s (down, up, down, ...) for 30 s: the fault schedule
    # itself, not a wait for an event; the node's state is sampled meanwhile.
    seen: set[tuple[str, str]] = set()
    start = time.monotonic()
    for k in range(15):
        ns.link_up() if k % 2 else ns.link_down()
        if k == 8:  # flapping by now (4 disconnects): scale up, new slots must avoid it
            (tmp_path / "worker.yaml").write_text(
                (tmp_path / "worker.yaml").read_text().replace("replicas: 6", "replicas: 9"))
            edgefed("apply", "-f", str(tmp_path / "worker.yaml"), server=fed.server)
        while time.monotonic() < start + 2 * (k + 1):
            seen |= {(n["state"], n["reason"]) for n in api(fed, "nodes") if n["name"] == victim}
            time.sleep(0.2)
    ns.link_up()
    states = {state for state, _ in seen}
    print(f"\nflapping {victim}: states seen {sorted(states)}; reasons "
          f"{sorted({r for _, r in seen if r})[:3]}")
    assert any("flapping" in reason for _, reason in seen), seen  # damping held it
    assert "Lost" not in states

    pods = all_running(fed, 9, timeout=HOLD_DOWN + 30)
    assert reschedules(fed) == []  # no replica moved
    assert {(p["slot"], p["node"], p["generation"]) for p in before} <= {
        (p["slot"], p["node"], p["generation"]) for p in pods}
    assert all(p["node"] != victim for p in pods if p["slot"] >= 6)
    wait_until(lambda: one_process_per_slot(marker, pods, set(namespaces)), timeout=20,
               what="exactly one process per slot after the flapping")


@needs_netns
def test_namespace_cleanup_leaves_nothing(tmp_path: Path) -> None:
    ns = SiteNamespace("cleanup")
    with ns:
        proxy = ns.bridge(1)  # nothing listens upstream: only the listener matters here
        sleeper = ns.spawn(["sleep", "600"])
        assert ns.remains() and proxy.stats().open == 0
    assert sleeper.wait(5) != 0  # killed by close()
    assert ns.remains() == []
    ns.close()  # idempotent
    assert ns.remains() == []


ENGINE_SOCKET = "/var/run/docker.sock"


@pytest.mark.docker
@pytest.mark.usefixtures("tiny_image")
@pytest.mark.skipif(not os.path.exists(ENGINE_SOCKET), reason=f"no {ENGINE_SOCKET}")
def test_agent_survives_its_docker_engine_restarting(make_federation, tmp_path):
    fed = make_federation("docker")
    with FaultProxy(ENGINE_SOCKET) as engine:
        fed.start_controller()  # the default grace: an engine outage must not cost the node
        node = f"a1-{fed.tag}"
        agent = fed.start_agent(node, "site-a", extra=["--report-interval", "1"],
                                env={"DOCKER_HOST": f"tcp://127.0.0.1:{engine.port}"})
        wait_until(lambda: node_state(fed, node) == "Ready", timeout=30, what=f"{node} Ready")
        before = apply_worker(fed, tmp_path, 1, "3600", image=TINY_IMAGE)

        # The engine goes away: open connections reset, new ones refused, for 8 s.
        engine.refuse()
        engine.reset()
        states: set[str] = set()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:  # the outage itself, sampled
            states.add(node_state(fed, node))
            time.sleep(0.2)
        engine.refuse(False)

        assert agent.alive()
        assert "docker engine unreachable" in agent.log_path.read_text(errors="replace")
        # A scale-up after the engine is back runs: the runtime reconnected by itself.
        after = apply_worker(fed, tmp_path, 2, "3600", image=TINY_IMAGE)
        assert engine.stats().accepted > 1
    print(f"\nengine outage: node states seen {sorted(states)}")
    assert "Lost" not in states
    # The replica from before the outage was neither moved nor replaced.
    assert (before[0]["node"], before[0]["generation"]) == next(
        (p["node"], p["generation"]) for p in after if p["slot"] == before[0]["slot"])


@needs_netns
def test_shaped_link_limits_throughput_both_ways() -> None:
    """tbf on both ends of the veth: bytes from the site and to it are paced."""
    payload = 150_000  # bytes; 1mbit is 125 000 bytes/s
    with SiteNamespace("shaped") as ns:
        ns.shape("1mbit", "16kb")
        for direction in ("from_site", "to_site"):
            with socket.socket() as server:
                server.bind((ns.host_addr, 0))
                server.listen(1)
                port = server.getsockname()[1]
                if direction == "from_site":  # the site sends, the root side reads
                    code = (f"import socket; s = socket.create_connection(('{ns.host_addr}', "
                            f"{port}), 10); s.sendall(bytes({payload})); s.close()")
                else:  # the root side sends, the site reads to the end
                    code = (f"import socket; s = socket.create_connection(('{ns.host_addr}', "
                            f"{port}), 10)\nwhile s.recv(65536): pass")
                child = ns.spawn([sys.executable, "-c", code])
                try:
                    conn, _ = server.accept()
                    t0 = time.monotonic()
                    with conn:
                        if direction == "from_site":
                            got = 0
                            while chunk := conn.recv(65536):
                                got += len(chunk)
                            assert got == payload
                        else:
                            conn.sendall(bytes(payload))
                            conn.shutdown(socket.SHUT_WR)
                            assert child.wait(30) == 0
                    elapsed = time.monotonic() - t0
                finally:
                    child.kill()
                    child.wait(5)
            # Less the bucket's burst, the payload needs ~1.1 s at the rate.
            assert elapsed >= 0.8, f"{direction}: {payload} bytes in {elapsed:.2f} s"
        ns.unshape()
        assert "tbf" not in sh(["tc", "qdisc", "show", "dev", ns.host_if]).stdout


def _datagram_arrives(ns: SiteNamespace, server: socket.socket, wait: float) -> bool:
    """Send one UDP datagram from inside ``ns`` to ``server``; did it arrive?"""
    host, port = server.getsockname()
    ns.run([sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, "
            f"socket.SOCK_DGRAM).sendto(b'x', ('{host}', {port}))"])
    server.settimeout(wait)
    try:
        return server.recv(16) == b"x"
    except TimeoutError:
        return False


@needs_netns
def test_cut_drops_only_the_direction_asked_for() -> None:
    with SiteNamespace("oneway") as ns, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((ns.host_addr, 0))
        assert _datagram_arrives(ns, udp, 5)
        ns.cut("to_site")  # root -> site dropped; site -> root still flows
        assert _datagram_arrives(ns, udp, 5)
        ns.cut("from_site")  # replaces the rules: now site -> root is dropped
        assert not _datagram_arrives(ns, udp, 0.5)
        ns.restore()
        assert _datagram_arrives(ns, udp, 5)


@needs_netns
def test_parallel_namespaces_get_disjoint_addresses_and_clean_up() -> None:
    with ThreadPoolExecutor(max_workers=6) as pool:
        opened = list(pool.map(lambda i: SiteNamespace(f"par{i}").open(), range(6)))
    try:
        blocks = [ns.block for ns in opened]
        assert all(b is not None for b in blocks)
        assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:]
                       if a is not None and b is not None)
        assert len({ns.name for ns in opened}) == 6
    finally:
        for ns in opened:
            ns.close()
    assert [part for ns in opened for part in ns.remains()] == []
