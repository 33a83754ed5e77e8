"""Resident memory and idle cpu of one agent per runtime, against a real broker.

    python bench/agent_footprint.py [--settle 8] [--window 10]

The design budget for a Raspberry Pi is < 40 MB resident and near-zero idle
cpu. Prints one JSON document; a bare `python -c pass` is measured in the
same run as the baseline.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from federation.localfed import start_broker


def measure(argv: list[str], settle: float, window: float) -> dict[str, float]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle)  # let it connect, probe and report before measuring idle
        ps = psutil.Process(proc.pid)
        before = ps.cpu_times()
        time.sleep(window)
        after = ps.cpu_times()
        used = (after.user + after.system) - (before.user + before.system)
        return {"rss_mib": round(ps.memory_info().rss / 2**20, 1),
                "idle_cpu_percent": round(100 * used / window, 2)}
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgefed-footprint-"))
    broker, port = start_broker(work / "broker")
    result: dict[str, object] = {"python": sys.version.split()[0],
                                 "window_seconds": args.window}
    try:
        result["baseline_python_sleep"] = measure(
            [sys.executable, "-c", "import time; time.sleep(60)"], 1.0, args.window)
        for runtime in ("docker", "process"):
            print(f"measuring the agent with the {runtime} runtime", file=sys.stderr)
            result[f"agent_{runtime}"] = measure(
                [sys.executable, "-m", "edge_agent.cli", "--broker", f"mqtt://127.0.0.1:{port}",
                 "--site", "bench", "--node", f"footprint-{runtime}", "--runtime", runtime,
                 "--state-dir", str(work / runtime), "--log-level", "WARNING"],
                args.settle, args.window)
    finally:
        broker.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
