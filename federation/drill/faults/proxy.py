"""A TCP fault proxy: a degraded WAN link between a site and the broker.

    client ──▶ listen (host, port) ──[latency+jitter, stall, bandwidth, blackhole]──▶ upstream
           ◀──────────────────────────[the same faults, the other direction]◀──────

Public API (stable; drills and tests import it)::

    proxy = FaultProxy(("127.0.0.1", broker_port)).start()   # own thread and event loop
    FaultProxy("/var/run/docker.sock")        # upstream may be a unix socket path
    # or, inside a running loop: await proxy.start_async() ... await proxy.stop_async()
    proxy.port, proxy.address                 # where clients connect
    proxy.set(latency=0.05, jitter=0.02)      # seconds, one way, added in each direction
    proxy.set(bandwidth=20_000)               # bytes/s per direction, shared by connections
    proxy.set(blackhole=True)                 # accept and read, forward nothing (bytes lost)
    proxy.stall(2.0)                          # hold all traffic 2 s, then deliver it all
    proxy.reset()                             # RST every open connection, both sides
    proxy.refuse()  / proxy.refuse(False)     # stop / resume listening (ECONNREFUSED)
    proxy.clear()                             # no faults
    proxy.stats()                             # ProxyStats: connections, bytes, dropped
    proxy.stop()                              # closes everything; idempotent

Every control call is safe from any thread and takes effect at once for data not
yet forwarded. Order is kept per direction: jitter only ever delays a chunk to no
earlier than the chunk before it. Upstream is dialled for every accepted client
(also in blackhole mode, so the peer sees a connection that carries nothing); a
failed dial resets the client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

log = logging.getLogger("edgefed.drill.proxy")
T = TypeVar("T")
CHUNK = 65536
QUEUE_CHUNKS = 64  # per direction: beyond this the proxy stops reading (backpressure)
UP, DOWN = "up", "down"  # client -> upstream, upstream -> client


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyStats:
    accepted: int  # connections accepted since start
    open: int  # connections open now
    resets: int  # connections ended by reset()
    bytes_up: int  # forwarded client -> upstream
    bytes_down: int  # forwarded upstream -> client
    dropped: int  # bytes read but discarded (blackhole)


@dataclass(eq=False)
class _Link:
    """One proxied connection: its two sockets' writers."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """See the module docstring."""

    def __init__(self, upstream: tuple[str, int] | str, *,
                 listen: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.upstream = upstream
        self.listen = listen
        self.latency = 0.0
        self.jitter = 0.0
        self.bandwidth: float | None = None
        self.blackhole = False
        self.port = listen[1]
        self._held_until = 0.0  # loop time until which nothing is forwarded
        self._free_at = {UP: 0.0, DOWN: 0.0}  # bandwidth: when each direction is idle
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._accepted = self._resets = self._dropped = 0
        self._bytes = {UP: 0, DOWN: 0}

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen[0], self.port)

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Run in a thread of its own with its own event loop."""
        loop = asyncio.new_event_loop()
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def main() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._begin(loop)
            except BaseException as exc:
                ready.set_exception(exc)
                return
            ready.set_result(None)
            loop.run_forever()

        self._thread = threading.Thread(target=main, name=f"fault-proxy-{self.listen}",
                                        daemon=True)
        self._thread.start()
        try:
            ready.result(timeout=10)
        except BaseException:
            self._thread.join(5)
            loop.close()
            self._thread = None
            raise
        return self

    async def start_async(self) -> FaultProxy:
        """Run as part of the caller's (running) event loop."""
        self._begin(asyncio.get_running_loop())
        return self

    def _begin(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._listen()

    def stop(self) -> None:
        """Close the listener and every connection. Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        if thread is None:
            raise RuntimeError("started with start_async(): use await stop_async()")
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        self._loop = self._thread = None

    async def stop_async(self) -> None:
        if self._loop is not None:
            await self._shutdown()
            self._loop = None

    async def _shutdown(self) -> None:
        self._unlisten()
        for link in list(self._links):
            self._abort(link)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.stop()

    # -- faults (any thread) ---------------------------------------------------

    def set(self, *, latency: float | None = None, jitter: float | None = None,
            bandwidth: float | bool | None = False, blackhole: bool | None = None) -> None:
        """Change faults; arguments left out keep their value (``bandwidth=None``
        lifts the limit)."""
        if latency is not None:
            self.latency = max(0.0, latency)
        if jitter is not None:
            self.jitter = max(0.0, jitter)
        if bandwidth is not False:
            if bandwidth is not None and bandwidth <= 0:
                raise ValueError("bandwidth must be positive bytes/s (None: unlimited)")
            self.bandwidth = None if bandwidth is None else float(bandwidth)
        if blackhole is not None:
            self.blackhole = blackhole

    def clear(self) -> None:
        self.set(latency=0.0, jitter=0.0, bandwidth=None, blackhole=False)
        self._on_loop(lambda: setattr(self, "_held_until", 0.0))
        self.refuse(False)

    def stall(self, seconds: float) -> None:
        """Hold every byte, both directions, for ``seconds`` from now; then deliver."""
        def hold() -> None:
            assert self._loop is not None
            self._held_until = max(self._held_until, self._loop.time() + seconds)

        self._on_loop(hold)

    def reset(self) -> int:
        """Reset every open connection (RST to both peers); returns how many."""
        def reset_all() -> int:
            links = list(self._links)
            for link in links:
                self._abort(link)
            self._resets += len(links)
            return len(links)

        return self._on_loop(reset_all)

    def refuse(self, on: bool = True) -> None:
        """Stop listening (new connections are refused by the kernel) or resume on
        the same port. Open connections are not touched."""
        self._on_loop(self._unlisten if on else self._listen)

    def stats(self) -> ProxyStats:
        return self._on_loop(lambda: ProxyStats(
            accepted=self._accepted, open=len(self._links), resets=self._resets,
            bytes_up=self._bytes[UP], bytes_down=self._bytes[DOWN], dropped=self._dropped))

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the proxy's loop thread and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the proxy is not running")
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return done.result(timeout=10)

    # -- listening (loop thread) -----------------------------------------------

    def _listen(self) -> None:
        if self._sock is not None:
            return
        assert self._loop is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.listen[0], self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._loop.add_reader(sock, self._accept)

    def _unlisten(self) -> None:
        if self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._sock.close()
            self._sock = None

    def _accept(self) -> None:
        assert self._sock is not None and self._loop is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                return
            conn.setblocking(False)
            self._accepted += 1
            self._spawn(self._serve(conn))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one connection (loop thread) ------------------------------------------

    async def _serve(self, conn: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=conn)
        link = _Link(client=writer)
        self._links.add(link)
        try:
            try:
                if isinstance(self.upstream, str):
                    up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
                else:
                    up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError as exc:
                log.info("upstream %s: %s; resetting the client", self.upstream, exc)
                _rst(writer)
                return
            link.upstream = up_writer
            for sock_writer in (writer, up_writer):
                with contextlib.suppress(OSError, AttributeError):
                    sock_writer.get_extra_info("socket").setsockopt(
                        socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pumps = [asyncio.create_task(self._pump(reader, up_writer, UP)),
                     asyncio.create_task(self._pump(up_reader, writer, DOWN))]
            try:
                await asyncio.gather(*pumps)
            except (OSError, asyncio.IncompleteReadError):
                self._abort(link)  # one side failed: the other sees a reset too
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._links.discard(link)
            for w in (link.client, link.upstream):
                if w is not None and not w.transport.is_closing():
                    w.close()

    def _abort(self, link: _Link) -> None:
        for w in (link.client, link.upstream):
            if w is not None:
                _rst(w)
        self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    direction: str) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        sender = asyncio.create_task(self._send(queue, writer, direction))
        loop = asyncio.get_running_loop()
        last = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                # Due time fixed on arrival; never before the chunk ahead (order).
                due = loop.time() + self.latency + (random.uniform(0, self.jitter)
                                                    if self.jitter else 0.0)
                last = max(due, last)
                await queue.put((last, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()

    async def _send(self, queue: asyncio.Queue[tuple[float, bytes]],
                    writer: asyncio.StreamWriter, direction: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, data = await queue.get()
            # A deadline, re-checked after each sleep: a stall may begin meanwhile.
            while (wait := max(due, self._held_until) - loop.time()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            if self.blackhole:
                self._dropped += len(data)
                continue
            await self._write(writer, data, direction)

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, direction: str) -> None:
        loop = asyncio.get_running_loop()
        rate = self.bandwidth
        if rate is None:
            writer.write(data)
            self._bytes[direction] += len(data)
            await writer.drain()
            return
        # Paced in slices of ~20 ms so a big chunk does not go out as one burst.
        step = max(256, int(rate / 50))
        for i in range(0, len(data), step):
            piece = data[i:i + step]
            start = max(loop.time(), self._free_at[direction])
            self._free_at[direction] = start + len(piece) / rate
            if (wait := start - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(piece)
            self._bytes[direction] += len(piece)
            await writer.drain()
