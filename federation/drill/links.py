"""Each site's link to the broker, and the faults injected on it.

With root and the ``ip``/``nft`` tools, a site lives in a network namespace of its
own behind a veth pair, its agents run inside it and reach the broker through a
fault proxy on the host side: a cut is an nft drop on the veth (TCP stalls as on a
cut cable, nothing is reset). Without them, the site's agents reach the broker
through a loopback fault proxy that holds all traffic while cut. Either way latency,
jitter, loss-like stalls and bandwidth are the proxy's. Every call returns the
mechanism it used, in words, for the drill log and report.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
from collections.abc import Sequence

from federation.drill.spec import Link

STALL = 0.25  # seconds one simulated loss holds the link (a TCP retransmission)
STALL_TICK = 0.1
CUT_HOLD = 24 * 3600.0  # seconds: a cut without a namespace holds traffic until restored


def netns_possible() -> bool:
    return os.geteuid() == 0 and all(shutil.which(t) for t in ("ip", "nft", "tc"))


class SiteLink:
    """One site's path to the broker: a namespace plus proxy, or a proxy alone."""

    def __init__(self, site: str, broker: tuple[str, int], *, use_netns: bool) -> None:
        from federation.drill.faults.netns import SiteNamespace
        from federation.drill.faults.proxy import FaultProxy

        self.site = site
        self.namespace: SiteNamespace | None = None
        if use_netns:
            self.namespace = SiteNamespace(site).open()
            self.proxy = self.namespace.bridge(broker[1], upstream_host=broker[0])
            self.address = (self.namespace.host_addr, self.proxy.port)
        else:
            self.proxy = FaultProxy(broker).start()
            self.address = self.proxy.address
        self._stalls: asyncio.Task[None] | None = None
        self.cut_now = False

    @property
    def broker_url(self) -> str:
        return f"mqtt://{self.address[0]}:{self.address[1]}"

    @property
    def where(self) -> str:
        return f"netns {self.namespace.name}" if self.namespace else "loopback"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return self.namespace.argv(argv) if self.namespace else list(argv)

    def cut(self) -> str:
        self.cut_now = True
        if self.namespace is not None:
            self.namespace.cut()
            return f"nft drop on veth {self.namespace.host_if} ({self.where}), both directions"
        # Held, not dropped: across a cut cable TCP delivers what it had sent once the
        # link is back; a blackhole would lose bytes TCP had already acknowledged.
        self.proxy.stall(CUT_HOLD)
        return ("fault proxy holds all traffic, both directions (no network namespace: "
                "not root or no nft)")

    def restore(self) -> str:
        self.cut_now = False
        self.shape(Link())
        self.proxy.clear()
        if self.namespace is not None:
            self.namespace.restore()
            return f"nft rules flushed ({self.where}); fault proxy cleared"
        return "fault proxy cleared: held traffic delivered"

    def reset(self) -> str:
        """A NAT or middlebox drops its state: every connection gets a RST."""
        count = self.proxy.reset()
        return f"fault proxy ({self.where}): RST to {count} open connection(s), both peers"

    def shape(self, link: Link) -> str:
        """Set the proxy's latency, jitter, bandwidth and loss-like stalls."""
        self.proxy.set(latency=link.latency, jitter=link.jitter,
                       bandwidth=link.bandwidth or None)
        if self._stalls is not None:
            self._stalls.cancel()
            self._stalls = None
        if link.loss > 0:
            self._stalls = asyncio.get_running_loop().create_task(self._stall(link.loss))
        parts = [f"latency {link.latency * 1000:g} ms"] if link.latency else []
        if link.jitter:
            parts.append(f"jitter {link.jitter * 1000:g} ms")
        if link.bandwidth:
            parts.append(f"bandwidth {link.bandwidth} B/s")
        if link.loss:
            parts.append(f"loss {link.loss:.0%} as {STALL * 1000:g} ms stalls")
        return f"fault proxy ({self.where}): " + (", ".join(parts) or "no faults")

    async def _stall(self, loss: float) -> None:
        # TCP turns loss into delay: each lost segment holds the stream for about
        # one retransmission timeout. Stall the link with probability ``loss`` per
        # tick, so the share of stalled time tracks the loss rate.
        rng = random.Random()
        while True:
            await asyncio.sleep(STALL_TICK)
            if rng.random() < loss:
                self.proxy.stall(STALL)

    def close(self) -> None:
        if self._stalls is not None:
            self._stalls.cancel()
        with contextlib.suppress(Exception):
            self.proxy.stop()
        if self.namespace is not None:
            self.namespace.close()
