"""Session-wide fixtures: one real Mosquitto per test session (per xdist worker),
and local federations (controller + agents as real processes) per test, each
under its own MQTT topic root so tests never see each other's nodes."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.localfed import LocalFederation, Proc, start_broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, int]]:
    proc, port = start_broker(tmp_path_factory.mktemp("broker"))
    yield proc, port
    proc.stop()


def _remove_containers(label: str) -> None:
    if shutil.which("docker") is None:
        return
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                         capture_output=True, text=True, check=False).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


def _stop_processes(state_dir: Path, node: str) -> None:
    """Instances of the process runtime outlive their agent by design; end them."""
    from cloud_adapters.process_runtime import ProcessRuntime

    async def stop_all() -> None:
        runtime = ProcessRuntime(node, state_dir / "process")
        for inst in await runtime.list():
            await runtime.stop(inst.runtime_id, grace=1)

    if (state_dir / "process").exists():
        asyncio.run(stop_all())


@pytest.fixture
def make_federation(broker: tuple[Proc, int], tmp_path: Path) -> Iterator[object]:
    """Factory: make_federation(runtime=...) -> a LocalFederation on the session broker."""
    made: list[LocalFederation] = []
    test_id = uuid.uuid4().hex[:10]

    def make(runtime: str = "docker") -> LocalFederation:
        fed = LocalFederation(tmp_path / f"fed{len(made)}", topic_root=f"t-{test_id}",
                              runtime=runtime, container_labels=[f"edgefed.test={test_id}"],
                              tag=test_id)
        fed.broker_port = broker[1]
        made.append(fed)
        return fed

    yield make
    for fed in made:
        fed.stop()
        for node in fed.agents:
            _stop_processes(fed.workdir / "agents" / node, node)
    _remove_containers(f"edgefed.test={test_id}")
