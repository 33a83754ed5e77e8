"""A site in its own network namespace, wired to the host by a veth pair.

    root namespace                          namespace ef-1a2b3c4d-berlin
    ┌───────────────────────────┐  veth     ┌──────────────────────────┐
    │ efh1a2b3c4d 10.231.7.1/30 ├───────────┤ efn1a2b3c4d 10.231.7.2/30 │
    │ nft table inet ef-1a2b…   │           │ lo up, default via .1     │
    │ FaultProxy on .1:PORT ──▶ broker on 127.0.0.1                    │
    └───────────────────────────┘           └──────────────────────────┘

Public API (stable; drills and tests import it)::

    with SiteNamespace("berlin") as ns:       # creates netns, veth, addresses, route
        proxy = ns.bridge(broker_port)        # FaultProxy: ns.host_addr:proxy.port -> broker
        agent = ns.spawn(["python", "-m", ...])   # or ns.argv([...]) for your own Popen
        ns.cut()       # nft drop on the host-side veth, both directions (or one)
        ns.restore()   # remove the drop rules
        ns.link_down() / ns.link_up()         # carrier loss: host-side veth admin down
        ns.shape("1mbit", "32kb")             # tbf on both ends of the veth
        ns.unshape()
        ns.run(["ip", "addr"])                # CompletedProcess, raises NetFaultError
    # close(): kills what still runs inside, deletes nft table, veth and netns;
    # idempotent, also after a failed open.

Every name carries a random 8-hex id, so parallel tests and drills never collide:
netns ``ef-<id>-<site>``, veth ``efh<id>``/``efn<id>``, nft table ``inet ef-<id>-<site>``
(one table per namespace, so cleanup never touches anyone else's rules). The /30
comes from 10.231.0.0/16, picked at random among blocks no address or route of the
root namespace uses, under a file lock shared by every process on the machine.

Needs root and the ``ip``, ``nft`` and ``tc`` commands. ``netem`` is not assumed:
latency and loss belong to :class:`~federation.drill.faults.proxy.FaultProxy`.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import random
import re
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from federation.drill.faults.proxy import FaultProxy

POOL = ipaddress.IPv4Network("10.231.0.0/16")
PREFIX = "ef-"
_LOCK = Path(tempfile.gettempdir()) / "edgefed-netns.lock"
Direction = Literal["both", "to_site", "from_site"]


class NetFaultError(RuntimeError):
    """A network command failed; the message holds the command and its stderr."""


def sh(argv: Sequence[str], *, check: bool = True, timeout: float = 30
       ) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; on failure raise :class:`NetFaultError` naming it with its stderr."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetFaultError(f"{' '.join(argv)}: {exc}") from exc
    if check and done.returncode != 0:
        raise NetFaultError(f"{' '.join(argv)} exited {done.returncode}: "
                            f"{done.stderr.strip() or done.stdout.strip()}")
    return done


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 address (as its network) and route of the root namespace."""
    used: list[ipaddress.IPv4Network] = []
    for link in json.loads(sh(["ip", "-j", "-4", "addr"]).stdout or "[]"):
        for a in link.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{a['local']}/{a['prefixlen']}", strict=False))
    for route in json.loads(sh(["ip", "-j", "-4", "route"]).stdout or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            used.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
    return used


def _free_block(used: Sequence[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    blocks = list(POOL.subnets(new_prefix=30))
    for _ in range(200):
        block = random.choice(blocks)
        if not any(block.overlaps(u) for u in used):
            return block
    raise NetFaultError(f"no free /30 left in {POOL} after 200 tries")


class SiteNamespace:
    """One site's network namespace; see the module docstring for the API."""

    def __init__(self, site: str, *, ident: str | None = None) -> None:
        self.site = site
        self.ident = ident or uuid.uuid4().hex[:8]
        short = re.sub(r"[^a-z0-9-]", "-", site.lower())[:16].strip("-") or "site"
        self.name = f"{PREFIX}{self.ident}-{short}"
        self.table = self.name  # nft table (family inet) for this namespace's rules
        self.host_if = f"efh{self.ident}"
        self.ns_if = f"efn{self.ident}"
        self.host_addr = ""
        self.ns_addr = ""
        self.block: ipaddress.IPv4Network | None = None
        self._bridges: list[FaultProxy] = []
        self._opened = False

    # -- lifecycle -------------------------------------------------------------

    def open(self) -> SiteNamespace:
        """Create the namespace, veth pair, addresses, route and nft table."""
        if self._opened:
            return self
        self._opened = True
        try:
            sh(["ip", "netns", "add", self.name])
            with open(_LOCK, "w") as lock:
                # Pick and claim the /30 atomically w.r.t. other tests and drills.
                fcntl.flock(lock, fcntl.LOCK_EX)
                self.block = _free_block(_used_networks())
                hosts = list(self.block.hosts())
                self.host_addr, self.ns_addr = str(hosts[0]), str(hosts[1])
                sh(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name",
                    self.ns_if, "netns", self.name])
                sh(["ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if])
            sh(["ip", "link", "set", self.host_if, "up"])
            ip_ns = ["ip", "-n", self.name]
            sh([*ip_ns, "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if])
            sh([*ip_ns, "link", "set", self.ns_if, "up"])
            sh([*ip_ns, "link", "set", "lo", "up"])
            sh([*ip_ns, "route", "add", "default", "via", self.host_addr])
            self._make_table()
        except BaseException:
            self.close()
            raise
        return self

    def _make_table(self) -> None:
        # Base chains at priority -10 see packets before docker's iptables-nft tables.
        sh(["nft", "add", "table", "inet", self.table])
        for chain, hook in (("inbound", "input"), ("outbound", "output"),
                            ("through", "forward")):
            sh(["nft", "add", "chain", "inet", self.table, chain,
                f"{{ type filter hook {hook} priority -10; policy accept; }}"])

    def close(self) -> None:
        """Delete everything this namespace made. Idempotent; never raises for
        parts already gone. Processes still inside are killed (SIGKILL)."""
        for proxy in self._bridges:
            with contextlib.suppress(Exception):
                proxy.stop()
        self._bridges.clear()
        if self._netns_exists():
            for pid in sh(["ip", "netns", "pids", self.name], check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        sh(["nft", "delete", "table", "inet", self.table], check=False)
        sh(["ip", "link", "del", self.host_if], check=False)
        sh(["ip", "netns", "del", self.name], check=False)
        self._opened = False

    def remains(self) -> list[str]:
        """What of this namespace still exists (empty after :meth:`close`)."""
        left = []
        if self._netns_exists():
            left.append(f"netns {self.name}")
        if sh(["ip", "link", "show", self.host_if], check=False).returncode == 0:
            left.append(f"link {self.host_if}")
        if sh(["nft", "list", "table", "inet", self.table], check=False).returncode == 0:
            left.append(f"nft table inet {self.table}")
        return left

    def _netns_exists(self) -> bool:
        return self.name in _netns_names()

    def __enter__(self) -> SiteNamespace:
        return self.open()

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None,
                 _tb: TracebackType | None) -> None:
        self.close()

    # -- faults ----------------------------------------------------------------

    def cut(self, direction: Direction = "both") -> None:
        """Drop packets on the host-side veth: ``to_site`` (root -> namespace),
        ``from_site`` (namespace -> root) or ``both``. TCP connections stay open
        on both ends and stall, as across a real cut cable; nothing is reset."""
        self.restore()
        rules: list[tuple[str, str]] = []
        if direction in ("both", "from_site"):
            rules += [("inbound", f"iifname {self.host_if} drop"),
                      ("through", f"iifname {self.host_if} drop")]
        if direction in ("both", "to_site"):
            rules += [("outbound", f"oifname {self.host_if} drop"),
                      ("through", f"oifname {self.host_if} drop")]
        for chain, rule in rules:
            sh(["nft", "add", "rule", "inet", self.table, chain, *rule.split()])

    def restore(self) -> None:
        """Undo :meth:`cut`."""
        for chain in ("inbound", "outbound", "through"):
            sh(["nft", "flush", "chain", "inet", self.table, chain])

    def link_down(self) -> None:
        """Carrier loss: the host-side veth goes down (the namespace side sees
        NO-CARRIER and keeps its routes, so :meth:`link_up` needs nothing else)."""
        sh(["ip", "link", "set", self.host_if, "down"])

    def link_up(self) -> None:
        sh(["ip", "link", "set", self.host_if, "up"])

    def shape(self, rate: str, burst: str, *, latency: str = "100ms",
              direction: Direction = "both") -> None:
        """Token-bucket limit (``tc ... tbf``; units as tc spells them: ``1mbit``,
        ``32kb``). ``latency`` bounds the queue: packets waiting longer are dropped."""
        tbf = ["tbf", "rate", rate, "burst", burst, "latency", latency]
        if direction in ("both", "to_site"):
            sh(["tc", "qdisc", "replace", "dev", self.host_if, "root", *tbf])
        if direction in ("both", "from_site"):
            sh(["tc", "-n", self.name, "qdisc", "replace", "dev", self.ns_if, "root", *tbf])

    def unshape(self) -> None:
        sh(["tc", "qdisc", "del", "dev", self.host_if, "root"], check=False)
        sh(["tc", "-n", self.name, "qdisc", "del", "dev", self.ns_if, "root"], check=False)

    # -- processes and bridges -------------------------------------------------

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside the namespace (``ip netns exec`` execs it,
        so the process id is the program's own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30
            ) -> subprocess.CompletedProcess[str]:
        return sh(self.argv(argv), check=check, timeout=timeout)

    def spawn(self, argv: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside the namespace; ``popen`` goes to subprocess.Popen."""
        return subprocess.Popen(self.argv(argv), **popen)

    def bridge(self, port: int, *, upstream_host: str = "127.0.0.1") -> FaultProxy:
        """A started :class:`FaultProxy` on ``host_addr`` forwarding to
        ``upstream_host:port`` in the root namespace (e.g. the broker on loopback);
        processes inside reach it at ``(ns.host_addr, proxy.port)``. Stopped by close."""
        from federation.drill.faults.proxy import FaultProxy

        proxy = FaultProxy((upstream_host, port), listen=(self.host_addr, 0)).start()
        self._bridges.append(proxy)
        return proxy


def _netns_names() -> list[str]:
    out = sh(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    return [str(n["name"]) for n in json.loads(out or "[]")]


def leftovers(prefix: str = PREFIX) -> list[str]:
    """Namespaces, veths and nft tables whose names start with ``prefix`` (``ef-``
    by default; a per-run prefix such as ``ef-1a2b3c4d`` narrows it to one)."""
    ident = prefix[len(PREFIX):] if prefix.startswith(PREFIX) else None
    left = [f"netns {n}" for n in _netns_names() if n.startswith(prefix)]
    tables = json.loads(sh(["nft", "-j", "list", "tables"], check=False).stdout or "{}")
    for item in tables.get("nftables", []):
        table = item.get("table")
        if table and table["family"] == "inet" and str(table["name"]).startswith(prefix):
            left.append(f"nft table inet {table['name']}")
    for link in json.loads(sh(["ip", "-j", "link"], check=False).stdout or "[]"):
        name = str(link.get("ifname", ""))
        if name.startswith("efh") and (ident is None or name[3:].startswith(ident)):
            left.append(f"link {name}")
    return left
