"""The README's first command, minus machine setup: the quickstart brings up a
local federation, places the example, shows it, and tears everything down."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from tests.integration.test_core_loop import containers


@pytest.mark.parametrize("runtime", ["docker", "process"])
def test_quickstart_places_the_example_and_cleans_up(runtime, tmp_path, request):
    if runtime == "docker":
        request.getfixturevalue("tiny_image")
    tag = uuid.uuid4().hex[:10]
    proc = subprocess.run(
        [sys.executable, "-m", "federation.quickstart", "--once", "--runtime", runtime,
         "--workdir", str(tmp_path / "qs"), "--api-port", "0", "--container-label", f"edgefed.test={tag}"],
        capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    name = "myapp" if runtime == "docker" else "hello"
    for site in ("factory-berlin", "edge-lisbon", "aws-eu-west-1"):
        assert site in out
    # `get pods` output: three replicas of the example, each Running.
    rows = [line for line in out.splitlines() if line.startswith(f"{name}/")]
    assert len(rows) == 3 and all("Running" in row for row in rows), out
    assert f"describe deployment {name}" in out
    assert not containers(tag, running_only=False)
