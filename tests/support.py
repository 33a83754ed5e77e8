"""Helpers shared by integration tests: waiting on conditions, running the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], *, timeout: float, what: str,
               interval: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {last!r}")


def edgefed(*args: str, server: str, check: bool = True, timeout: float = 30,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `edgefed` command line against ``server``."""
    proc = subprocess.run([sys.executable, "-m", "federation.cli", *args, "--server", server],
                          capture_output=True, text=True, timeout=timeout, input=stdin,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgefed {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def get_json(kind: str, server: str) -> Any:
    return json.loads(edgefed("get", kind, "-o", "json", server=server).stdout)


async def eventually(check: Callable[[], Awaitable[T]], *, within: float = 15.0) -> T:
    """The asyncio form of :func:`wait_until`: await ``check`` until it is truthy."""
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s (last: {result!r})")
        await asyncio.sleep(0.05)
