"""The MQTT adapter against a real Mosquitto: delivery, the Last Will, and an
explicit reconnect after the broker restarts, with QoS 1 messages published
during the outage delivered afterwards."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.bus import BadBrokerURL, Bus, Will, parse_brokers
from federation.localfed import (
    LISTEN_PORTS_FROM,
    LocalFederation,
    LocalFederationError,
    ephemeral_low,
    free_port,
    port_free,
    start_broker,
)


def test_parse_brokers_accepts_a_list_and_refuses_bad_urls():
    assert [str(b) for b in parse_brokers("mqtt://a:1, b:2")] == ["mqtt://a:1", "mqtt://b:2"]
    for bad, reason in [("http://a:1", "scheme must be mqtt://"), ("mqtt://a:x", "invalid port"),
                        ("", "no broker URL given")]:
        try:
            parse_brokers(bad)
        except BadBrokerURL as exc:
            assert reason in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")


@pytest.fixture
def port_broker(tmp_path: Path) -> Iterator[LocalFederation]:
    """A federation of just a broker, on a fixed port a test stops and starts it on
    again (a restart). Not started yet: its port is held until it is, as while it
    is stopped; everything is stopped at the end."""
    fed = LocalFederation(tmp_path, broker_port=free_port())
    fed.stop_broker()
    yield fed
    fed.stop()


async def _next(bus: Bus, within: float = 10) -> tuple[str, bytes]:
    msg = await asyncio.wait_for(bus.messages.get(), within)
    return msg.topic, msg.payload


def test_last_will_is_published_when_a_client_vanishes(broker):
    root = f"bus-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        url = f"mqtt://127.0.0.1:{broker[1]}"
        watcher = Bus(url, client_id=f"{root}-w", subscriptions=[(f"{root}/#", 1)])
        doomed = Bus(url, client_id=f"{root}-d", will=lambda: Will(f"{root}/will", b"gone"))
        tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(doomed.run())]
        await asyncio.wait_for(asyncio.gather(watcher.connected.wait(), doomed.connected.wait()),
                               10)
        # Drop the socket without DISCONNECT: the broker must publish the will.
        doomed._client.socket().shutdown(socket.SHUT_RDWR)  # simulating a dead link
        assert await _next(watcher) == (f"{root}/will", b"gone")
        await watcher.close()
        await doomed.close()
        for task in tasks:
            task.cancel()

    asyncio.run(main())


def test_reconnects_after_broker_restart_and_delivers_queued_qos1(port_broker: LocalFederation):
    port_broker.start_broker()

    async def main() -> None:
        url = f"mqtt://127.0.0.1:{port_broker.broker_port}"
        sub = Bus(url, client_id="sub", subscriptions=[("q/#", 1)], max_backoff=0.5)
        pub = Bus(url, client_id="pub", max_backoff=0.5)
        tasks = [asyncio.create_task(sub.run()), asyncio.create_task(pub.run())]
        await asyncio.wait_for(asyncio.gather(sub.connected.wait(), pub.connected.wait()), 10)
        pub.publish("q/1", b"before")
        assert await _next(sub) == ("q/1", b"before")

        port_broker.stop_broker()
        await asyncio.wait_for(asyncio.gather(pub.lost.wait(), sub.lost.wait()), 10)
        pub.publish("q/2", b"during the outage")  # queued by the client, sent on reconnect
        port_broker.start_broker()
        # QoS 1 is at-least-once: "before" may come again if its
        # acknowledgement was still in flight when the broker stopped.
        got = await _next(sub, within=20)
        while got == ("q/1", b"before"):
            got = await _next(sub, within=20)
        assert got == ("q/2", b"during the outage")
        assert pub.connects == 2 and sub.connects == 2
        await sub.close()
        await pub.close()
        for task in tasks:
            task.cancel()

    asyncio.run(main())



def test_on_acked_runs_once_the_broker_has_a_message_queued_before_any_connection(
        port_broker: LocalFederation):

    async def main() -> None:
        url = f"mqtt://127.0.0.1:{port_broker.broker_port}"
        acked = asyncio.Event()
        pub = Bus(url, client_id="early", max_backoff=0.5)
        # No broker yet: the message waits in the client, and no acknowledgement runs.
        pub.publish("early/1", b"first", on_acked=acked.set)
        assert not acked.is_set()
        task = asyncio.create_task(pub.run())
        port_broker.start_broker()
        await asyncio.wait_for(acked.wait(), 20)
        assert pub.connects == 1
        try:
            pub.publish("early/2", b"x", qos=0, on_acked=acked.set)
        except ValueError as exc:
            assert "QoS 1" in str(exc)
        else:
            raise AssertionError("on_acked with QoS 0 was accepted")
        await pub.close()
        task.cancel()

    asyncio.run(main())


def test_listening_ports_come_from_below_the_ephemeral_range():
    # A port from the ephemeral range may be given to another process (a bind
    # to port 0, a connection's own end) while its broker restarts. Ours come
    # from below, where the kernel gives out none of its own accord.
    low = ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert all(LISTEN_PORTS_FROM <= p < low for p in ports), (low, ports)
    assert all(port_free(p) for p in ports)


def test_a_broker_that_cannot_bind_its_port_says_why(tmp_path: Path):
    with socket.socket() as taken:  # bound, not listening: as a client's own end would be
        taken.bind(("127.0.0.1", free_port()))
        port = taken.getsockname()[1]
        with pytest.raises(LocalFederationError) as failed:
            proc, _ = start_broker(tmp_path / "b", port=port)
            proc.stop()  # not reached unless the test fails: no broker is left behind
    assert f"before port {port} opened" in str(failed.value)
    assert "Address already in use" in str(failed.value)


def test_a_stopped_broker_keeps_its_port_until_it_starts_again(tmp_path: Path):
    fed = LocalFederation(tmp_path)
    fed.start_broker()
    try:
        port = fed.broker_port
        fed.stop_broker()
        assert not port_free(port)  # no other process may take it meanwhile
        with pytest.raises(ConnectionRefusedError):  # and clients are refused, not left hanging
            socket.create_connection(("127.0.0.1", port), 2).close()
        fed.start_broker()
        assert fed.broker_port == port and fed.broker is not None and fed.broker.alive()
    finally:
        fed.stop()
    assert port_free(port)
