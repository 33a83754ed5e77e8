"""Fixtures for integration tests: a real Docker engine, real processes."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from cloud_adapters.docker_runtime import docker_available

REPO = Path(__file__).resolve().parents[2]
TINY_IMAGE = "edgefed/tiny:latest"
TINY_TAGS = (TINY_IMAGE, "myapp:latest")


def _image_present(ref: str) -> bool:
    found = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False)
    return found.returncode == 0


def _engine_answers(within: float = 30.0) -> bool:
    """Whether the engine answers a ping within ``within`` seconds: a busy engine
    (the other test worker starting containers, a loaded machine) can take longer
    than one ping's 2 s to answer."""
    deadline = time.monotonic() + within
    while True:
        if docker_available():
            return True
        if time.monotonic() >= deadline or shutil.which("docker") is None:
            return False
        time.sleep(0.5)  # between pings of an engine that refused or timed out


@pytest.fixture(scope="session")
def tiny_image() -> str:
    """The busybox test image (also tagged myapp:latest), built once if absent."""
    if not _engine_answers():
        if os.environ.get("EDGEFED_REQUIRE_DOCKER") == "1":
            pytest.fail("EDGEFED_REQUIRE_DOCKER=1 but no Docker engine answers")
        pytest.skip("no Docker engine answers on this machine")
    # xdist workers share the engine: one builds while the others wait.
    lock_path = Path(tempfile.gettempdir()) / "edgefed-tiny-image.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all(_image_present(tag) for tag in TINY_TAGS):
            built = subprocess.run(
                [str(REPO / "deploy" / "build-test-image.sh")],
                capture_output=True,
                text=True,
                check=False,
            )
            if built.returncode != 0:
                pytest.fail(f"building {TINY_IMAGE} failed:\n{built.stdout}{built.stderr}")
    return TINY_IMAGE
