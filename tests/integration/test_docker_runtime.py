"""DockerRuntime against the real engine and the locally built tiny image.

Each test runs as its own node (a unique name), so tests can run in parallel
on one engine and each removes exactly what it created.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest

from cloud_adapters.docker_runtime import DockerRuntime
from cloud_adapters.errors import InstanceNotFound, PermanentRuntimeError
from cloud_adapters.runtime import InstanceSpec, InstanceState, PortSpec
from federation.localfed import free_port
from tests.support import eventually

pytestmark = pytest.mark.docker

TEST_LABELS = {"edgefed.test": "docker-runtime"}




@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def node(tiny_image: str, engine: docker.DockerClient) -> Iterator[str]:
    """A node name of this test's own; its containers are removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    owned = {"label": [f"edgefed.node={name}"]}
    for container in engine.containers.list(all=True, filters=owned):
        container.remove(force=True)
    assert engine.containers.list(all=True, filters=owned) == []


def make_spec(node: str, **fields: Any) -> InstanceSpec:
    base: dict[str, Any] = {
        "deployment": "web",
        "slot": 0,
        "generation": 1,
        "revision": 1,
        "node": node,
        "image": "edgefed/tiny:latest",
        "labels": TEST_LABELS,
    }
    return InstanceSpec(**(base | fields))


def http_get(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
            return str(reply.read().decode())
    except OSError:
        return ""


def test_start_list_logs_stop_round_trip(node: str) -> None:
    port = free_port()
    spec = make_spec(node, ports=(PortSpec(container_port=80, host_port=port),))

    async def scenario() -> None:
        runtime = DockerRuntime(node)
        try:
            status = await runtime.start(spec)
            assert status.state is InstanceState.RUNNING
            assert (status.deployment, status.slot, status.generation, status.node) == (
                "web",
                0,
                1,
                node,
            )
            assert status.started_at is not None and abs(status.started_at - time.time()) < 60
            assert [s.runtime_id for s in await runtime.list()] == [status.runtime_id]

            page = await eventually(lambda: asyncio.to_thread(http_get, port))
            assert "edgefed tiny" in page

            async def request_logged() -> str:
                logs = await runtime.logs(status.runtime_id)
                return logs if "response:200" in logs else ""

            await eventually(request_logged)

            await runtime.stop(status.runtime_id, grace=2)
            assert await runtime.list() == []
            with pytest.raises(InstanceNotFound):
                await runtime.stop(status.runtime_id)
            with pytest.raises(InstanceNotFound):
                await runtime.logs(status.runtime_id)
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_start_is_idempotent(node: str) -> None:
    spec = make_spec(node)

    async def scenario() -> None:
        runtime = DockerRuntime(node)
        try:
            first = await runtime.start(spec)
            again = await runtime.start(spec)
            racing = await asyncio.gather(*(runtime.start(make_spec(node, slot=1)) for _ in range(3)))
            assert again.runtime_id == first.runtime_id
            assert len({s.runtime_id for s in racing}) == 1
            assert len(await runtime.list()) == 2
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_same_name_with_other_labels_is_refused(node: str) -> None:
    async def scenario() -> None:
        runtime = DockerRuntime(node)
        try:
            await runtime.start(make_spec(node, revision=1))
            with pytest.raises(PermanentRuntimeError, match="labels that do not match"):
                await runtime.start(make_spec(node, revision=2))
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_a_new_runtime_adopts_running_instances(node: str) -> None:
    async def scenario() -> None:
        before, after = DockerRuntime(node), DockerRuntime(node)
        stranger = DockerRuntime(f"{node}-other")
        try:
            started = await before.start(make_spec(node))
            await before.close()
            adopted = await after.list()
            assert [(s.runtime_id, s.state) for s in adopted] == [(started.runtime_id, InstanceState.RUNNING)]
            assert adopted[0].started_at == started.started_at
            assert await stranger.list() == []
            await after.stop(started.runtime_id)
            assert await after.list() == []
        finally:
            await after.close()
            await stranger.close()

    asyncio.run(scenario())


def test_exit_code_of_an_instance_that_ends_by_itself(node: str) -> None:
    spec = make_spec(node, command=("/bin/busybox", "sh", "-c"), args=("echo bye; exit 3",))

    async def scenario() -> None:
        runtime = DockerRuntime(node)
        try:
            first = await runtime.start(spec)

            async def exited() -> list[Any]:
                return [s for s in await runtime.list() if s.state is InstanceState.EXITED]

            (status,) = await eventually(exited)
            assert (status.runtime_id, status.exit_code, status.reason) == (first.runtime_id, 3, "")
            assert "bye" in await runtime.logs(first.runtime_id)

            # Starting an ended instance again replaces its container.
            second = await runtime.start(spec)
            assert second.runtime_id != first.runtime_id
            assert [s.runtime_id for s in await runtime.list()] == [second.runtime_id]
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_absent_image_fails_permanently_with_the_reason(node: str) -> None:
    image = f"edgefed/absent-{uuid.uuid4().hex[:8]}:latest"

    async def scenario() -> None:
        runtime = DockerRuntime(node)
        try:
            with pytest.raises(PermanentRuntimeError) as failure:
                await runtime.start(make_spec(node, image=image))
            assert type(failure.value) is PermanentRuntimeError
            assert str(failure.value) == (
                f"image {image} is not present on this node and no registry is configured"
            )
            assert await runtime.list() == []
        finally:
            await runtime.close()

    asyncio.run(scenario())


def test_limits_env_labels_and_init_reach_the_engine(node: str, engine: docker.DockerClient) -> None:
    spec = make_spec(node, cpu_millis=250, memory_bytes=64 << 20, env={"GREETING": "hello"})

    async def start() -> str:
        runtime = DockerRuntime(node)
        try:
            return (await runtime.start(spec)).runtime_id
        finally:
            await runtime.close()

    container = engine.containers.get(asyncio.run(start()))
    host = container.attrs["HostConfig"]
    assert host["NanoCpus"] == 250_000_000
    assert host["Memory"] == 64 << 20
    assert host["Init"] is True
    assert host["RestartPolicy"]["Name"] in ("", "no")
    assert "GREETING=hello" in container.attrs["Config"]["Env"]
    assert {**TEST_LABELS, **spec.identity_labels()}.items() <= container.labels.items()

    # The kernel enforces them too (cgroup v1 or v2 file names).
    probe = (
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max"
        " /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu.max 2>/dev/null; true"
    )
    exit_code, output = container.exec_run(["/bin/busybox", "sh", "-c", probe])
    assert exit_code == 0
    assert str(64 << 20) in output.decode() and "25000" in output.decode()


def test_images_lists_the_local_tags(node: str) -> None:
    async def scenario() -> list[str]:
        runtime = DockerRuntime(node)
        try:
            return await runtime.images()
        finally:
            await runtime.close()

    images = asyncio.run(scenario())
    assert {"edgefed/tiny:latest", "myapp:latest"} <= set(images)
    assert images == sorted(images)
