"""The TCP fault proxy against real sockets on loopback: an echo server upstream,
plain blocking clients, each fault measured from the client's side."""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from federation.drill.faults import FaultProxy
from tests.support import wait_until


class Echo(socketserver.ThreadingTCPServer):
    """Echoes every byte back and keeps a copy of what it received."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.received = bytearray()
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), EchoHandler)


class EchoHandler(socketserver.BaseRequestHandler):
    server: Echo

    def handle(self) -> None:
        with self.request as conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                with self.server.lock:
                    self.server.received += data
                try:
                    conn.sendall(data)
                except OSError:
                    return


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def proxy(echo: Echo) -> Iterator[FaultProxy]:
    with FaultProxy(echo.server_address[:2]) as running:
        yield running


def connect(proxy: FaultProxy, timeout: float = 5.0) -> socket.socket:
    conn = socket.create_connection(proxy.address, timeout=timeout)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise AssertionError(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def round_trip(conn: socket.socket, data: bytes = b"ping") -> float:
    t0 = time.monotonic()
    conn.sendall(data)
    assert recv_exactly(conn, len(data)) == data
    return time.monotonic() - t0


def test_forwards_both_ways_and_counts(proxy: FaultProxy, echo: Echo) -> None:
    with connect(proxy) as a, connect(proxy) as b:
        round_trip(a, b"hello")
        round_trip(b, b"world!")
        stats = proxy.stats()
    assert stats.accepted == 2
    assert stats.bytes_up == stats.bytes_down == 11
    assert bytes(echo.received) in (b"helloworld!", b"world!hello")
    wait_until(lambda: proxy.stats().open == 0, timeout=5, what="both connections closed")


def test_latency_is_added_in_each_direction(proxy: FaultProxy) -> None:
    with connect(proxy) as conn:
        base = round_trip(conn)
        proxy.set(latency=0.15)
        delayed = round_trip(conn)
        proxy.set(latency=0.0)
        after = round_trip(conn)
    assert delayed >= 0.3, f"round trip {delayed:.3f} s with 0.15 s each way"
    assert after < delayed and base < delayed


def test_jitter_keeps_order(proxy: FaultProxy) -> None:
    proxy.set(latency=0.01, jitter=0.05)
    messages = b"".join(b"%04d" % i for i in range(60))
    with connect(proxy) as conn:
        for i in range(60):
            conn.sendall(b"%04d" % i)
        assert recv_exactly(conn, len(messages)) == messages


def test_bandwidth_limit_paces_the_transfer(proxy: FaultProxy, echo: Echo) -> None:
    rate = 40_000
    proxy.set(bandwidth=rate)
    payload = bytes(range(256)) * 160  # 40 960 bytes: about 1 s each way at the limit
    with connect(proxy, timeout=15) as conn:
        t0 = time.monotonic()
        conn.sendall(payload)
        wait_until(lambda: len(echo.received) >= len(payload), timeout=10,
                   what="the payload upstream", interval=0.01)
        upstream = time.monotonic() - t0
        assert recv_exactly(conn, len(payload)) == payload
    assert upstream >= 0.9 * len(payload) / rate, f"{len(payload)} bytes upstream in {upstream:.2f} s"


def test_reset_closes_every_connection_on_both_sides(proxy: FaultProxy) -> None:
    conns = [connect(proxy) for _ in range(3)]
    try:
        for conn in conns:
            round_trip(conn)
        assert proxy.reset() == 3
        for conn in conns:
            with pytest.raises(ConnectionResetError):
                conn.sendall(b"x")
                if not conn.recv(1):
                    raise ConnectionResetError("closed")
        stats = proxy.stats()
        assert stats.open == 0 and stats.resets == 3
        with connect(proxy) as fresh:  # the listener is untouched
            round_trip(fresh)
    finally:
        for conn in conns:
            conn.close()


def test_refuse_then_accept_again_on_the_same_port(proxy: FaultProxy) -> None:
    port = proxy.port
    with connect(proxy) as held:
        round_trip(held)  # accepted by the proxy, not just queued in its backlog
        proxy.refuse()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(proxy.address, timeout=2)
        round_trip(held)  # open connections are not touched
        proxy.refuse(False)
        assert proxy.port == port
        with connect(proxy) as fresh:
            round_trip(fresh)


def test_blackhole_accepts_and_forwards_nothing(proxy: FaultProxy, echo: Echo) -> None:
    proxy.set(blackhole=True)
    with connect(proxy, timeout=0.5) as conn:
        conn.sendall(b"lost")
        with pytest.raises(TimeoutError):
            conn.recv(4)
        wait_until(lambda: proxy.stats().dropped == 4, timeout=5, what="4 bytes dropped")
        assert bytes(echo.received) == b""
        proxy.set(blackhole=False)
        conn.settimeout(5)
        assert round_trip(conn, b"back") < 5
    assert bytes(echo.received) == b"back"


def test_stall_holds_then_delivers_everything(proxy: FaultProxy) -> None:
    with connect(proxy) as conn:
        proxy.stall(0.5)
        t0 = time.monotonic()
        conn.sendall(b"held")
        assert recv_exactly(conn, 4) == b"held"
        assert time.monotonic() - t0 >= 0.45


def test_unreachable_upstream_resets_the_client(echo: Echo) -> None:
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()  # nothing listens there now
    # The reset can come so soon that connect() itself reports it (seen under load).
    with (FaultProxy(("127.0.0.1", port)) as proxy, pytest.raises(ConnectionResetError),
          connect(proxy) as conn):
        conn.sendall(b"x")
        if not conn.recv(1):
            raise ConnectionResetError("closed")


def test_runs_as_a_task_in_the_callers_loop(echo: Echo) -> None:
    async def main() -> tuple[bytes, int]:
        proxy = await FaultProxy(echo.server_address[:2]).start_async()
        try:
            proxy.set(latency=0.05)
            reader, writer = await asyncio.open_connection(*proxy.address)
            t0 = time.monotonic()
            writer.write(b"task")
            data = await reader.readexactly(4)
            elapsed = time.monotonic() - t0
            writer.close()
            assert elapsed >= 0.1
            return data, proxy.stats().accepted
        finally:
            await proxy.stop_async()

    assert asyncio.run(main()) == (b"task", 1)
