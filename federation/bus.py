"""The MQTT adapter: paho-mqtt driven by the asyncio event loop.

paho does the protocol; the event loop does the I/O. The socket is watched
with ``add_reader``/``add_writer`` (no paho thread, no ``select()``), so one
process can hold many connections. paho callbacks do no work: they hand
messages and connection changes to the loop through a queue and events.

Reconnecting is an explicit loop (:meth:`Bus.run`): connect with bounded,
jittered backoff over the list of broker URLs, hold the connection until it
drops, repeat. The caller sees each (re)connection through ``on_connect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

log = logging.getLogger("edgefed.bus")


class BusError(Exception):
    """Base of the MQTT adapter's errors.

    BusError
    ├── BrokerUnavailable   connect failed (refused, unreachable, bad CONNACK); transient
    └── BadBrokerURL        the URL itself is wrong; permanent
    """


class BrokerUnavailable(BusError):
    pass


class BadBrokerURL(BusError, ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def parse_brokers(urls: str | Sequence[str]) -> list[Broker]:
    """``mqtt://HOST:PORT[,mqtt://HOST2:PORT]`` -> brokers, tried in order."""
    items = urls.split(",") if isinstance(urls, str) else list(urls)
    brokers = []
    for raw in (i.strip() for i in items):
        if not raw:
            continue
        parts = urlsplit(raw if "://" in raw else f"mqtt://{raw}")
        if parts.scheme != "mqtt":
            raise BadBrokerURL(f"broker URL {raw!r}: scheme must be mqtt://")
        if not parts.hostname:
            raise BadBrokerURL(f"broker URL {raw!r} has no host")
        try:
            port = parts.port or 1883
        except ValueError:
            raise BadBrokerURL(f"broker URL {raw!r} has an invalid port") from None
        brokers.append(Broker(parts.hostname, port))
    if not brokers:
        raise BadBrokerURL("no broker URL given")
    return brokers


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    retain: bool


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes


def _map_error(exc: BaseException, broker: Broker | None = None) -> BusError:
    """The one place paho and socket errors become ours."""
    if isinstance(exc, BusError):
        return exc
    where = f"{broker}: " if broker is not None else ""
    return BrokerUnavailable(f"{where}{type(exc).__name__}: {exc}")


class Bus:
    """One MQTT session. Publish from the event loop; read ``messages``."""

    def __init__(
        self,
        brokers: str | Sequence[str],
        *,
        client_id: str,
        subscriptions: Sequence[tuple[str, int]] = (),
        will: Callable[[], Will] | None = None,
        keepalive: int = 10,
        persistent: bool = True,
        max_backoff: float = 10.0,
    ) -> None:
        self.brokers = parse_brokers(brokers)
        self.client_id = client_id
        self.subscriptions = list(subscriptions)
        self._will = will
        self.keepalive = keepalive
        self.max_backoff = max_backoff
        self.messages: asyncio.Queue[Incoming] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.broker: Broker | None = None
        self.connects = 0
        self.lost = asyncio.Event()  # set while disconnected (after a first connect)
        # Set whenever there is no connection, before the first one too: lets a caller
        # wait for an outage (``connected`` only lets it wait for its end).
        self.offline = asyncio.Event()
        self.offline.set()
        self._loop = asyncio.get_running_loop()
        self._misc: asyncio.Task[None] | None = None
        self._closing = False
        self._connack: asyncio.Future[None] | None = None
        self._acked: dict[int, Callable[[], object]] = {}  # mid -> called on its PUBACK
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=not persistent,
            protocol=paho.MQTTv311,
        )
        # paho's own in-flight window is the only cap on unacknowledged QoS 1
        # messages; keep it well under the broker's and paho's limits.
        self._client.max_inflight_messages_set(100)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_register_write
        self._client.on_socket_unregister_write = self._on_unregister_write

    # -- paho callbacks: hand over, never work ---------------------------------

    def _in_loop(self, fn: Callable[[], object]) -> None:
        if self._loop.is_closed():
            return  # paho cleaning up after the loop ended: nothing left to tell
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def _on_socket_open(self, client: paho.Client, _u: object, sock: Any) -> None:
        # Commands and acks are small packets: without TCP_NODELAY, Nagle plus delayed
        # ACKs hold each one back ~40 ms.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._in_loop(lambda: self._loop.add_reader(sock, client.loop_read))

    def _on_socket_close(self, client: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(lambda: self._loop.remove_reader(sock))

    def _on_register_write(self, client: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(lambda: self._loop.add_writer(sock, client.loop_write))

    def _on_unregister_write(self, client: paho.Client, _u: object, sock: Any) -> None:
        self._in_loop(lambda: self._loop.remove_writer(sock))

    def _on_connect(self, _c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        def settle() -> None:
            if self._connack is not None and not self._connack.done():
                if getattr(reason, "is_failure", False):
                    self._connack.set_exception(BrokerUnavailable(f"broker refused: {reason}"))
                else:
                    self._connack.set_result(None)

        self._in_loop(settle)

    def _on_disconnect(self, _c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        def lost() -> None:
            self.connected.clear()
            self.offline.set()
            self.lost.set()
            if self._connack is not None and not self._connack.done():
                self._connack.set_exception(BrokerUnavailable(f"disconnected: {reason}"))

        self._in_loop(lost)

    def _on_publish(self, _c: object, _u: object, mid: int, _reason: object, _p: object) -> None:
        def settle() -> None:
            done = self._acked.pop(mid, None)
            if done is not None:
                done()

        self._in_loop(settle)

    def _on_message(self, _c: object, _u: object, msg: paho.MQTTMessage) -> None:
        self.messages.put_nowait(Incoming(msg.topic, bytes(msg.payload), bool(msg.retain)))

    # -- connection loop -------------------------------------------------------

    async def _misc_loop(self) -> None:
        # paho's keepalive pings and timeouts need a tick; once a second is its contract.
        while True:
            self._client.loop_misc()
            await asyncio.sleep(1.0)

    async def _connect_once(self, broker: Broker) -> None:
        if self._will is not None:
            will = self._will()
            self._client.will_set(will.topic, will.payload, qos=1, retain=True)
        self._connack = self._loop.create_future()
        self.lost.clear()
        try:
            # The TCP connect blocks (DNS, SYN); keep it off the event loop.
            await asyncio.to_thread(self._client.connect, broker.host, broker.port, self.keepalive)
        except (OSError, paho.WebsocketConnectionError, ValueError) as exc:
            raise _map_error(exc, broker) from exc
        if self._misc is None:
            self._misc = asyncio.create_task(self._misc_loop())
        try:
            await asyncio.wait_for(self._connack, timeout=10)
        except TimeoutError as exc:
            self._client.disconnect()
            raise BrokerUnavailable(f"{broker}: no CONNACK within 10 s") from exc
        for topic, qos in self.subscriptions:
            self._client.subscribe(topic, qos)
        self.broker = broker
        self.connects += 1
        self.offline.clear()
        self.connected.set()

    async def run(self, on_connect: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stay connected until :meth:`close`; call ``on_connect`` after each connect."""
        attempt = 0
        while not self._closing:
            async for retry in AsyncRetrying(
                retry=retry_if_exception_type(BrokerUnavailable),
                wait=wait_random_exponential(multiplier=0.2, max=self.max_backoff),
                before_sleep=self._log_retry,
                reraise=True,
            ):
                with retry:
                    broker = self.brokers[attempt % len(self.brokers)]
                    attempt += 1
                    await self._connect_once(broker)
            log.info("connected to %s as %s", self.broker, self.client_id)
            if on_connect is not None:
                await on_connect()
            await self.lost.wait()
            if not self._closing:
                log.warning("lost connection to %s; reconnecting", self.broker)

    def _log_retry(self, state: RetryCallState) -> None:
        # The first failure of an outage is a warning; the retries after it (an edge
        # site may be cut off for hours) are routine.
        outcome = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.log(logging.WARNING if state.attempt_number == 1 else logging.INFO,
                "broker unreachable (%s); attempt %d failed, next in %.1f s",
                outcome, state.attempt_number, wait)

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                on_acked: Callable[[], object] | None = None) -> None:
        """Queue a message. QoS 1 messages queued while disconnected (before the first
        connection too) go out on reconnect; ``on_acked`` runs on the loop when the
        broker has acknowledged one (QoS 1 only)."""
        if on_acked is not None and qos == 0:
            raise ValueError("on_acked needs QoS 1: a QoS 0 message is never acknowledged")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if on_acked is not None:
            self._acked[info.mid] = on_acked

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.subscriptions.append((topic, qos))
        if self.connected.is_set():
            self._client.subscribe(topic, qos)

    async def close(self, *, final: tuple[str, bytes] | None = None) -> None:
        """Disconnect cleanly, optionally publishing a last retained message first
        (a clean disconnect suppresses the Last Will)."""
        self._closing = True
        if final is not None and self.connected.is_set():
            info = self._client.publish(final[0], final[1], qos=1, retain=True)
            # paho reports the PUBACK through a thread-safe flag only; poll it, bounded.
            deadline = self._loop.time() + 2.0
            while not info.is_published() and self._loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        self._client.disconnect()
        self.offline.set()
        self.lost.set()
        if self._misc is not None:
            self._misc.cancel()


def new_epoch() -> str:
    """A fresh id per process start: peers detect restarts by its change."""
    return uuid.uuid4().hex[:12]
