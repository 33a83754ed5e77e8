"""The controller and the agent stop cleanly, and at once, on SIGTERM."""

from __future__ import annotations

import signal
import subprocess

from federation.localfed import LocalFederation
from tests.support import get_json, wait_until


def test_controller_and_agent_exit_0_soon_after_sigterm(make_federation) -> None:
    fed: LocalFederation = make_federation("process")
    fed.start_controller()
    agent = fed.start_agent(f"a1-{fed.tag}", "site-a", extra=["--report-interval", "0.5"])
    wait_until(lambda: [n["state"] for n in get_json("nodes", fed.server)] == ["Ready"],
               timeout=30, what="the agent Ready")
    for proc in (agent, fed.controller):
        assert proc is not None and proc.popen is not None
        proc.popen.send_signal(signal.SIGTERM)
        try:
            code = proc.popen.wait(5)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{proc.name} still running 5 s after SIGTERM:\n"
                                 f"{proc.log_tail(10)}") from None
        assert code == 0, proc.log_tail(10)
