"""RTT probes on the agent: peer book bounds, peer sampling, smoothing and
staleness (time injected), and real probes against a real echo listener on loopback."""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import eventually

from edge_agent.config import AgentConfig, ConfigError, add_arguments, from_args
from edge_agent.probes import (
    FAILURES_BEFORE_SWAP,
    MAX_PEERS_KNOWN,
    RESAMPLE_EVERY,
    STALE_AFTER,
    EchoListener,
    PeerBook,
    Prober,
    Probes,
    facing_address,
    format_address,
    measure,
)
from federation.wire import Presence, PresenceState, split_address


def online(probe: str) -> Presence:
    return Presence(state=PresenceState.ONLINE, site="s", probe=probe)


OFFLINE = Presence(state=PresenceState.OFFLINE, site="s")


class Clock:
    """Injected monotonic time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def prober(peers: int = 3, landmarks: dict[str, str] | None = None) -> tuple[Prober, Clock]:
    clock = Clock()
    return Prober("me", landmarks or {}, peers=peers, rng=random.Random(4), clock=clock), clock


# -- addresses -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "host", "port"), [
    ("10.0.0.5:7946", "10.0.0.5", 7946),
    ("[fd00::7]:80", "fd00::7", 80),
    ("probe.example.net:65535", "probe.example.net", 65535),
])
def test_addresses_round_trip(text: str, host: str, port: int) -> None:
    assert split_address(text) == (host, port)
    assert format_address(host, port) == text


@pytest.mark.parametrize("text", ["10.0.0.5", ":80", "h:0", "h:70000", "h:x", "fd00::7:80",
                                  "a b:80"])
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        split_address(text)


# -- the peer book -----------------------------------------------------------------


def test_peer_book_ignores_itself_and_forgets_peers_that_go_offline() -> None:
    book = PeerBook("me", random.Random(1))
    book.learn("me", online("10.0.0.1:1"))
    book.learn("pi-2", online("10.0.0.2:2"))
    book.learn("pi-3", Presence(state=PresenceState.ONLINE, site="s"))  # no listener
    assert book.addresses == {"pi-2": "10.0.0.2:2"}
    book.learn("pi-2", online("10.0.0.2:3"))  # restarted on a new port
    assert book.addresses == {"pi-2": "10.0.0.2:3"}
    book.learn("pi-2", OFFLINE)
    assert book.addresses == {}


def test_peer_book_is_bounded_and_keeps_a_sample_of_every_peer_seen() -> None:
    book = PeerBook("me", random.Random(2))
    for k in range(10 * MAX_PEERS_KNOWN):
        book.learn(f"pi-{k}", online(f"10.0.{k // 250}.{k % 250}:7"))
    assert len(book.addresses) == MAX_PEERS_KNOWN
    late = sum(1 for p in book.addresses if int(p.split("-")[1]) >= 5 * MAX_PEERS_KNOWN)
    # Uniform over all seen: about half come from the later half, not only the first.
    assert MAX_PEERS_KNOWN // 4 < late < 3 * MAX_PEERS_KNOWN // 4


# -- choosing targets -----------------------------------------------------------------


def test_prober_samples_at_most_its_peer_count_and_refills_when_one_leaves() -> None:
    p, clock = prober(peers=3)
    for k in range(6):
        p.learn(f"pi-{k}", online(f"10.0.0.{k}:7"))
    assert p.sampled == {}  # chosen before the next probe, from every peer learned by then
    p.resample(clock.now)
    assert len(p.sampled) == 3
    gone = sorted(p.sampled)[0]
    p.learn(gone, OFFLINE)
    assert gone not in p.sampled
    p.resample(clock.now)
    assert len(p.sampled) == 3 and gone not in p.sampled


def test_the_sample_is_drawn_from_every_peer_learned_not_the_first_ones() -> None:
    p, clock = prober(peers=8)
    for k in range(200):  # the retained presences of a fleet, in one burst
        p.learn(f"pi-{k:03}", online(f"10.0.{k // 250}.{k % 250}:7"))
    p.resample(clock.now)
    assert len(p.sampled) == 8
    assert sum(1 for name in p.sampled if int(name[3:]) >= 100) >= 2


def test_round_robin_over_landmarks_and_peers() -> None:
    p, clock = prober(peers=2, landmarks={"users-eu": "10.9.9.9:443"})
    p.learn("pi-1", online("10.0.0.1:7"))
    p.learn("pi-2", online("10.0.0.2:7"))
    p.resample(clock.now)
    seen = [t.name for t in (p.next_target() for _ in range(6)) if t is not None]
    assert sorted(seen[:3]) == ["pi-1", "pi-2", "users-eu"]
    assert seen[3:] == seen[:3]
    assert [t.peer for t in p.targets()] == [False, True, True]


def test_a_peer_that_keeps_failing_is_swapped_and_one_peer_rotates_slowly() -> None:
    p, clock = prober(peers=2)
    for k in range(4):
        p.learn(f"pi-{k}", online(f"10.0.0.{k}:7"))
    p.resample(clock.now)
    first = sorted(p.sampled)
    p.sampled[first[0]].failures = FAILURES_BEFORE_SWAP
    p.resample(clock.now)
    assert first[0] not in p.sampled and first[1] in p.sampled and len(p.sampled) == 2
    before = set(p.sampled)
    p.resample(clock.now + 1)  # well before the next rotation: nothing changes
    assert set(p.sampled) == before
    clock.now += 1.5 * RESAMPLE_EVERY + 1
    p.resample(clock.now)
    assert len(p.sampled) == 2 and len(set(p.sampled) & before) == 1


# -- smoothing and staleness -----------------------------------------------------------


def test_reported_rtt_is_the_median_of_the_last_five_and_stale_ones_drop_out() -> None:
    p, clock = prober(peers=1, landmarks={"users-eu": "10.9.9.9:443"})
    p.learn("pi-1", online("10.0.0.1:7"))
    p.resample(clock.now)
    assert p.rtt_ms() == {}  # nothing measured yet: nothing reported
    eu, peer = p.targets()
    for value in (50.0, 10.0, 12.0, 11.0, 13.0, 900.0):
        eu.add(value, clock.now)
    assert p.rtt_ms() == {"users-eu": 12.0}  # median of 10, 12, 11, 13, 900
    peer.add(2.5, clock.now)
    clock.now += STALE_AFTER - 1
    assert p.rtt_ms() == {"users-eu": 12.0, "pi-1": 2.5}
    peer.add(3.5, clock.now)
    clock.now += 2
    assert p.rtt_ms() == {"pi-1": 3.0}  # users-eu not measured for too long


# -- real probes on loopback -------------------------------------------------------


def test_probe_of_an_echo_listener_and_of_a_closed_port() -> None:
    async def go() -> tuple[float | str, float | str, str]:
        echo = EchoListener()
        address = await echo.start("127.0.0.1")
        try:
            return (await measure(address, echo=True, within=2.0),
                    await measure(address, echo=False, within=2.0), address)
        finally:
            await echo.close()

    with_echo, connect_only, address = asyncio.run(go())
    assert isinstance(with_echo, float) and 0 < with_echo < 1000
    assert isinstance(connect_only, float) and 0 < connect_only < 1000
    refused = asyncio.run(measure(address, echo=False, within=2.0))  # listener closed now
    assert isinstance(refused, str) and refused


def test_landmarks_only_get_a_connect_and_nothing_is_written_to_them() -> None:
    received: list[bytes] = []

    async def go() -> float | str:
        async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.read(100))  # b"" when the prober just closes
            writer.close()

        server = await asyncio.start_server(service, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            rtt = await measure(f"127.0.0.1:{port}", echo=False, within=2.0)

            async def served() -> bool:
                return bool(received)

            await eventually(served, within=5)
            return rtt
        finally:
            server.close()
            await server.wait_closed()

    assert isinstance(asyncio.run(go()), float)
    assert received == [b""]


def test_unresolvable_or_silent_targets_fail_within_the_bound() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the connect but never echoes
    try:
        host, port = listener.getsockname()
        slow = asyncio.run(measure(f"{host}:{port}", echo=True, within=0.3))
    finally:
        listener.close()
    # The connect succeeded but the echo never came: a failure, bounded by the timeout.
    assert isinstance(slow, str) and "no answer within 0.3 s" in slow
    assert isinstance(asyncio.run(measure("no-such-host.invalid:80", echo=False, within=2.0)),
                      str)


def test_prober_run_measures_a_landmark_and_a_peer() -> None:
    async def go() -> dict[str, float]:
        landmark, peer = EchoListener(), EchoListener()
        p = Prober("me", {"users-eu": await landmark.start("127.0.0.1")}, peers=8,
                   interval=0.01)
        p.learn("pi-2", online(await peer.start("127.0.0.1")))
        task = asyncio.create_task(p.run())
        try:
            async def both() -> dict[str, float]:
                got = p.rtt_ms()
                return got if len(got) == 2 else {}

            return await eventually(both, within=10)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await landmark.close()
            await peer.close()

    got = asyncio.run(go())
    assert set(got) == {"users-eu", "pi-2"}
    assert all(0 < v < 1000 for v in got.values())


def test_auto_listener_binds_the_broker_facing_address() -> None:
    assert facing_address("127.0.0.1", 1883) == "127.0.0.1"

    async def go() -> tuple[str, str]:
        auto, off = Probes("me", {}), Probes("me", {}, listen="off")
        await auto.listen("127.0.0.1", 1883)
        await off.listen("127.0.0.1", 1883)
        try:
            return auto.address, off.address
        finally:
            await auto.close()

    auto_address, off_address = asyncio.run(go())
    host, port = split_address(auto_address)
    assert host == "127.0.0.1" and port > 0
    assert off_address == ""


def test_the_agent_side_never_imports_numpy() -> None:
    code = ("import sys, edge_agent.probes, edge_agent.agent; "
            "print(sorted(m for m in ('numpy', 'scipy', 'aiohttp.web') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


# -- configuration -------------------------------------------------------------------


def parse(*argv: str) -> AgentConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_args(parser.parse_args(["--broker", "mqtt://b:1883", "--site", "s",
                                        "--node", "n1", *argv]))


def test_landmarks_and_probe_settings_from_flags_and_file(tmp_path: Path) -> None:
    assert parse().landmarks == {}
    assert (parse().probe_listen, parse().probe_peers, parse().probe_interval) == ("auto", 8, 1.0)
    config = parse("--landmark", "users-eu=10.0.0.9:443", "--landmark", "users-us=probe.example:80",
                   "--probe-listen", "off", "--probe-peers", "0", "--probe-interval", "5")
    assert config.landmarks == {"users-eu": "10.0.0.9:443", "users-us": "probe.example:80"}
    assert (config.probe_listen, config.probe_peers, config.probe_interval) == ("off", 0, 5.0)
    path = tmp_path / "agent.yaml"
    path.write_text("landmarks: {users-eu: '10.0.0.9:443', users-asia: '[fd00::9]:80'}\n"
                    "probe_listen: '0.0.0.0:7946'\nprobe_peers: 4\n")
    config = parse("--config", str(path), "--landmark", "users-eu=10.0.0.10:443")
    assert config.landmarks == {"users-eu": "10.0.0.10:443", "users-asia": "[fd00::9]:80"}
    assert (config.probe_listen, config.probe_peers) == ("0.0.0.0:7946", 4)


@pytest.mark.parametrize(("argv", "message"), [
    (["--landmark", "users-eu"], "--landmark 'users-eu' must be written NAME=HOST:PORT"),
    (["--landmark", "users eu=h:1"], "landmark 'users eu': use letters, digits, '.', '_' or '-' "
                                     "(at most 63 characters)"),
    (["--landmark", "users-eu=h"], "landmark users-eu: 'h' is not HOST:PORT (port 1-65535; "
                                   "[IPv6]:PORT)"),
    (["--probe-listen", "somewhere"], "probe listen 'somewhere': expected auto, off or "
                                      "HOST:PORT (port 0 for any free port)"),
    (["--probe-peers", "65"], "probe peers must be an integer between 0 and 64"),
    (["--probe-interval", "0"], "probe interval must be between 0.05 and 3600 seconds"),
])
def test_bad_probe_settings_say_what_is_wrong(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(*argv)
    assert str(caught.value) == message
