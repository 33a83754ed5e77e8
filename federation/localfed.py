"""A local federation on one machine: broker, controller and agents as real
processes. Used by the quickstart, the test suite and the benchmarks, so all
three run the same way an operator's federation does.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto")


class LocalFederationError(RuntimeError):
    pass


# Listening ports come from below the kernel's ephemeral range. While a
# listener is down, the kernel may give its port from that range to any other
# process (a socket bound to port 0, an outgoing connection's own end), and the
# listener then cannot bind it again when it restarts.
LISTEN_PORTS_FROM = 20000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def hold_port(port: int) -> socket.socket | None:
    """Bind ``port`` without listening, so clients are refused and no other
    process is given it until the socket is closed; None if it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def port_free(port: int) -> bool:
    sock = hold_port(port)
    if sock is None:
        return False
    sock.close()
    return True


def free_port() -> int:
    """A loopback port nothing is bound to, outside the ephemeral range."""
    top = ephemeral_low()
    if top - LISTEN_PORTS_FROM < 1000:  # a range moved down to make room for more clients
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    pick = random.SystemRandom()
    for _ in range(200):
        port = pick.randrange(LISTEN_PORTS_FROM, top)
        if port_free(port):
            return port
    raise LocalFederationError(f"no free loopback port in {LISTEN_PORTS_FROM}-{top - 1}")


def wait_for_port(port: int, *, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LocalFederationError(f"process exited with {proc.returncode} before port {port} opened")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise LocalFederationError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def find_mosquitto() -> str | None:
    for name in MOSQUITTO_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Proc:
    """A child process with its log file; stopped on exit."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.env, start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_broker(workdir: Path, *, port: int | None = None) -> tuple[Proc, int]:
    """A Mosquitto of our own on a loopback port, persistent sessions on disk."""
    exe = find_mosquitto()
    if exe is None:
        raise LocalFederationError(
            "mosquitto is not installed: run `sudo apt-get install -y mosquitto`"
        )
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        "\n".join([
            f"listener {port} 127.0.0.1",
            "allow_anonymous true",
            # Started as root, Mosquitto would switch to the `mosquitto` user and
            # could not write its persistence file into our work directory.
            f"user {getpass.getuser()}",
            "persistence true",
            f"persistence_location {workdir}/",
            # Queued QoS 1 messages for an offline persistent session (an agent's
            # commands, the controller's events) must not be dropped at 1000.
            "max_queued_messages 100000",
            "max_inflight_messages 100",
            "set_tcp_nodelay true",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "",
        ])
    )
    proc = Proc("mosquitto", [exe, "-c", str(conf)], workdir / "mosquitto.log").start()
    try:
        wait_for_port(port, timeout=10, proc=proc.popen)
    except LocalFederationError as e:
        proc.stop()
        raise LocalFederationError(f"mosquitto: {e}; its log ends:\n{proc.log_tail(10)}") from None
    return proc, port


def edgefed_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "federation.cli", *args]


@dataclass
class LocalFederation:
    """Broker + controller + agents under one work directory."""

    workdir: Path
    topic_root: str = "edgefed"
    runtime: str = "docker"
    container_labels: Sequence[str] = ()
    tag: str = ""  # appended to node names: several federations may share one engine
    broker: Proc | None = None
    broker_port: int = 0
    controller: Proc | None = None
    api_port: int = 0
    agents: dict[str, Proc] = field(default_factory=dict)
    _held_ports: dict[int, socket.socket] = field(default_factory=dict, repr=False)

    @property
    def broker_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.broker_port}"

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["EDGEFED_TOPIC_ROOT"] = self.topic_root
        return env

    def start_broker(self) -> None:
        self._release(self.broker_port)
        self.broker, self.broker_port = start_broker(self.workdir / "broker", port=self.broker_port or None)

    def stop_broker(self) -> None:
        """Stop the broker (if it runs) and keep its port until it starts: clients
        are refused meanwhile, and no other process can take the port."""
        self._stop_holding(self.broker, self.broker_port)

    def stop_controller(self) -> None:
        """Stop the controller and keep its API port, as ``stop_broker`` does."""
        self._stop_holding(self.controller, self.api_port)

    def _stop_holding(self, proc: Proc | None, port: int) -> None:
        if proc is not None:
            proc.stop()
        self._release(port)
        sock = hold_port(port)
        if sock is not None:
            self._held_ports[port] = sock

    def _release(self, port: int) -> None:
        sock = self._held_ports.pop(port, None)
        if sock is not None:
            sock.close()

    def start_controller(self, *extra: str) -> Proc:
        self._release(self.api_port)
        self.api_port = self.api_port or free_port()
        argv = edgefed_argv(
            "controller", "--broker", self.broker_url, "--db", str(self.workdir / "controller.db"),
            "--listen", f"127.0.0.1:{self.api_port}", *extra,
        )
        self.controller = Proc("controller", argv, self.workdir / "controller.log", self.env()).start()
        wait_for_port(self.api_port, timeout=20, proc=self.controller.popen)
        return self.controller

    def start_agent(self, node: str, site: str, *, labels: str = "", extra: Sequence[str] = (),
                    env: Mapping[str, str] | None = None, broker: str | None = None) -> Proc:
        """An agent process; ``env`` adds to its environment (e.g. DOCKER_HOST),
        ``broker`` is where it connects instead of the broker (e.g. a fault proxy)."""
        argv = edgefed_argv(
            "agent", "--broker", broker or self.broker_url, "--site", site, "--node", node,
            "--runtime", self.runtime, "--state-dir", str(self.workdir / "agents" / node),
        )
        if labels:
            argv += ["--labels", labels]
        for label in self.container_labels:
            argv += ["--container-label", label]
        argv += list(extra)
        proc = Proc(f"agent {node}", argv, self.workdir / f"agent-{node}.log",
                    {**self.env(), **(env or {})}).start()
        self.agents[node] = proc
        return proc

    def stop(self) -> None:
        for proc in self.agents.values():
            proc.stop()
        if self.controller is not None:
            self.controller.stop()
        if self.broker is not None:
            self.broker.stop()
        for port in list(self._held_ports):
            self._release(port)
