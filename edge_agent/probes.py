"""RTT probes: a tiny echo listener that peers measure this node against, and a
prober that measures this node's RTT to a few peers and to every landmark.

    presence of peers (probe: HOST:PORT) ──learn──▶ PeerBook (≤ 256, uniform sample)
    Prober: one probe per ~second (jittered) ──▶ TCP connect (+ 1-byte echo to peers)
         ──▶ last 5 samples per target ──median──▶ capacity.rtt_ms

An RTT sample is the TCP connect time (SYN to SYN-ACK: one round trip, answered
by the peer's kernel); to a peer's echo listener a one-byte echo follows on the
same connection and the smaller of the two counts. Landmarks may be any TCP
service (a web server, a broker), so they only get the connect: nothing is
written to them. Failures are logged at debug and never reported as an RTT.

Each node probes at most ``peers`` (default 8) of the peers it knows and swaps
one of them every few minutes, so the controller's Vivaldi coordinates see a
stable neighbourhood that still reaches across the fleet over time.

Stdlib only: the agent must stay small (no numpy here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from federation.wire import Presence, PresenceState, split_address

log = logging.getLogger("edgefed.agent.probes")

PROBE_INTERVAL = 1.0  # seconds between two probes (of any target), jittered ±50%
PROBE_TIMEOUT = 2.0  # seconds for one probe, connect and echo together
SAMPLES_KEPT = 5  # the reported RTT is the median of the last this many samples
STALE_AFTER = 300.0  # seconds without a good sample before a target leaves the report
RESAMPLE_EVERY = 300.0  # seconds (jittered) between swapping one probed peer for another
FAILURES_BEFORE_SWAP = 3  # consecutive failures after which a peer is swapped at once
MAX_PEERS_KNOWN = 256  # peer addresses remembered (a uniform sample of all seen)
ECHO_MAX_CONNECTIONS = 32  # concurrent echo connections; more are closed at once
ECHO_IDLE = 2.0  # seconds an echo connection may wait for its byte


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def facing_address(host: str, port: int) -> str:
    """This host's address on the route to ``host`` (no packet is sent: a UDP
    socket is connected only to look up the route). Blocking: resolves ``host``."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(sockaddr)
        return str(sock.getsockname()[0])


# -- the echo listener -------------------------------------------------------------


class EchoListener:
    """Accepts a connection, echoes one byte, closes. Bounded in connections and
    time, so a scan or a stuck peer costs nothing that lasts."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._open = 0
        self.address = ""

    async def start(self, host: str, port: int = 0) -> str:
        self._server = await asyncio.start_server(self._echo, host, port, backlog=16)
        bound = self._server.sockets[0].getsockname()
        self.address = format_address(host, int(bound[1]))
        return self.address

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open <= ECHO_MAX_CONNECTIONS:
                with contextlib.suppress(TimeoutError, OSError):
                    data = await asyncio.wait_for(reader.read(1), timeout=ECHO_IDLE)
                    if data:
                        writer.write(data)
                        await asyncio.wait_for(writer.drain(), timeout=ECHO_IDLE)
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), timeout=ECHO_IDLE)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=ECHO_IDLE)
            self._server = None


# -- what is known about peers and targets ---------------------------------------


class PeerBook:
    """Peer node -> probe address, learned from presence; at most ``limit`` kept,
    a uniform sample of every peer seen (reservoir sampling), so a fleet of
    thousands costs a few kilobytes."""

    def __init__(self, node: str, rng: random.Random, limit: int = MAX_PEERS_KNOWN) -> None:
        self.node = node
        self.limit = limit
        self.addresses: dict[str, str] = {}
        self._rng = rng
        self._seen = 0

    def learn(self, peer: str, presence: Presence) -> None:
        if peer == self.node:
            return
        if presence.state is not PresenceState.ONLINE or not presence.probe:
            self.addresses.pop(peer, None)
            return
        if peer in self.addresses or len(self.addresses) < self.limit:
            if peer not in self.addresses:
                self._seen += 1
            self.addresses[peer] = presence.probe
            return
        self._seen += 1
        if self._rng.random() < self.limit / self._seen:
            del self.addresses[self._rng.choice(sorted(self.addresses))]
            self.addresses[peer] = presence.probe


@dataclass
class Target:
    name: str
    address: str
    peer: bool  # a peer's echo listener (else a landmark: connect only)
    samples: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))
    last_ok: float | None = None  # monotonic time of the last good sample
    failures: int = 0  # consecutive

    def add(self, rtt_ms: float, now: float) -> None:
        self.samples.append(rtt_ms)
        self.last_ok = now
        self.failures = 0

    def smoothed(self, now: float) -> float | None:
        if not self.samples or self.last_ok is None or now - self.last_ok > STALE_AFTER:
            return None
        ordered = sorted(self.samples)  # at most SAMPLES_KEPT: no statistics import for this
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# -- the prober ------------------------------------------------------------------


class Prober:
    """Measures RTT to ``landmarks`` and to up to ``peers`` peers, one probe at a
    time; :meth:`rtt_ms` is what the next capacity report carries."""

    def __init__(self, node: str, landmarks: Mapping[str, str], *, peers: int = 8,
                 interval: float = PROBE_INTERVAL, timeout: float = PROBE_TIMEOUT,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.peers = peers
        self.interval = interval
        self.timeout = timeout
        self._rng = rng or random.Random()
        self._clock = clock
        self.book = PeerBook(node, self._rng)
        self.landmarks = {name: Target(name, address, peer=False)
                          for name, address in sorted(landmarks.items())}
        self.sampled: dict[str, Target] = {}
        self._next_resample = clock() + self._jitter(RESAMPLE_EVERY)
        self._turn = 0

    def _jitter(self, seconds: float) -> float:
        return seconds * self._rng.uniform(0.5, 1.5)

    def learn(self, peer: str, presence: Presence) -> None:
        """A peer's presence: remember (or forget) its probe address."""
        self.book.learn(peer, presence)
        current = self.sampled.get(peer)
        address = self.book.addresses.get(peer)
        if current is not None and address != current.address:
            del self.sampled[peer]  # gone offline, forgotten, or moved to a new port
            if address is not None:
                self.sampled[peer] = Target(peer, address, peer=True)
        # Empty places are filled before the next probe (resample), not here: the
        # retained presences of the whole fleet arrive in one burst at connect, and
        # the first peers of that burst would otherwise always be the ones probed.

    def _fill(self) -> None:
        if len(self.sampled) >= self.peers:
            return  # the common case, on every presence of a big fleet: nothing to do
        spare = [p for p in sorted(self.book.addresses) if p not in self.sampled]
        while len(self.sampled) < self.peers and spare:
            peer = spare.pop(self._rng.randrange(len(spare)))
            self.sampled[peer] = Target(peer, self.book.addresses[peer], peer=True)

    def resample(self, now: float) -> None:
        """Swap peers that keep failing at once, and one peer every RESAMPLE_EVERY."""
        for name in [n for n, t in self.sampled.items() if t.failures >= FAILURES_BEFORE_SWAP]:
            del self.sampled[name]
        if now >= self._next_resample:
            self._next_resample = now + self._jitter(RESAMPLE_EVERY)
            spare = len(self.book.addresses) - len(self.sampled)
            if self.sampled and spare > 0:
                del self.sampled[self._rng.choice(sorted(self.sampled))]
        self._fill()

    def targets(self) -> list[Target]:
        return [*self.landmarks.values(), *(self.sampled[n] for n in sorted(self.sampled))]

    def next_target(self) -> Target | None:
        """Round robin over landmarks and sampled peers."""
        targets = self.targets()
        if not targets:
            return None
        self._turn = (self._turn + 1) % len(targets)
        return targets[self._turn]

    def rtt_ms(self) -> dict[str, float]:
        now = self._clock()
        out = {}
        for target in self.targets():
            value = target.smoothed(now)
            if value is not None:
                out[target.name] = round(value, 3)
        return out

    async def run(self) -> None:
        """Probe forever, one target at a time. Never raises (a failure of one
        probe is that target's failure, not the agent's)."""
        while True:
            await asyncio.sleep(self._jitter(self.interval))
            try:
                self.resample(self._clock())
                target = self.next_target()
                if target is None:
                    continue
                rtt = await measure(target.address, echo=target.peer, within=self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not end the agent's other tasks
                log.exception("rtt probe pass failed")
                continue
            if isinstance(rtt, str):
                target.failures += 1
                log.debug("rtt probe to %s (%s) failed: %s", target.name, target.address, rtt)
            else:
                target.add(rtt, self._clock())


async def measure(address: str, *, echo: bool, within: float) -> float | str:
    """One RTT sample to ``address`` in ms, or why there is none."""
    loop = asyncio.get_running_loop()
    try:
        host, port = split_address(address)
        async with asyncio.timeout(within):
            # Resolve first, so a slow DNS answer is not counted as network RTT.
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                started = time.perf_counter()
                await loop.sock_connect(sock, sockaddr)
                best = time.perf_counter() - started
                if echo:
                    started = time.perf_counter()
                    await loop.sock_sendall(sock, b"\x01")
                    if await loop.sock_recv(sock, 1) == b"\x01":
                        best = min(best, time.perf_counter() - started)
            finally:
                sock.close()
    except TimeoutError:
        return f"no answer within {within:g} s"
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return best * 1000.0


# -- what the agent holds ----------------------------------------------------------


class Probes:
    """The agent's RTT probing: the echo listener and the prober, as one.

    ``listen`` is ``auto`` (an ephemeral port on the address this host reaches
    the broker from: the address peers in the same network can reach it at),
    ``off`` (no listener: peers cannot measure this node, it still measures
    them), or ``HOST:PORT`` (port 0 for an ephemeral one)."""

    def __init__(self, node: str, landmarks: Mapping[str, str], *, listen: str = "auto",
                 peers: int = 8, interval: float = PROBE_INTERVAL) -> None:
        self.listen_at = listen
        self.prober = Prober(node, landmarks, peers=peers, interval=interval)
        self.echo = EchoListener()
        self._started = False

    @property
    def address(self) -> str:
        """What presence advertises; '' while no listener runs."""
        return self.echo.address

    async def listen(self, broker_host: str, broker_port: int) -> None:
        """Start the echo listener, once (call on every broker connect)."""
        if self._started or self.listen_at == "off":
            return
        self._started = True
        try:
            if self.listen_at == "auto":
                host = await asyncio.to_thread(facing_address, broker_host, broker_port)
                port = 0
            else:
                host, _, text = self.listen_at.rpartition(":")
                host, port = host.strip("[]"), int(text)
            log.info("rtt echo listener on %s", await self.echo.start(host, port))
        except OSError as exc:
            log.warning("no rtt echo listener (peers cannot measure this node): %s", exc)

    def learn(self, peer: str, presence: Presence) -> None:
        self.prober.learn(peer, presence)

    def rtt_ms(self) -> dict[str, float]:
        return self.prober.rtt_ms()

    async def run(self) -> None:
        await self.prober.run()

    async def close(self) -> None:
        await self.echo.close()
