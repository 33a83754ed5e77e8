"""The Docker engine as a :class:`~cloud_adapters.runtime.Runtime`.

Every container carries the instance's identity labels, so a restarted agent
finds (and adopts) what it started before. Docker restart policies are never
set: the agent decides about restarts. ``init=True`` puts a tiny init as PID 1
so SIGTERM stops a container promptly.

The SDK blocks, so each call runs in a worker thread; docker and requests
exceptions are mapped onto :mod:`cloud_adapters.errors` in :func:`_map_error`
only, and transient ones are retried by the one policy :data:`_RETRY`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import docker
import requests
import tenacity
from docker import errors as docker_errors

from cloud_adapters.errors import (
    InstanceNotFound,
    PermanentRuntimeError,
    RuntimeAdapterError,
    TransientRuntimeError,
)
from cloud_adapters.runtime import (
    LABEL_MANAGED,
    LABEL_NODE,
    InstanceSpec,
    InstanceState,
    InstanceStatus,
)

log = logging.getLogger("edgefed.runtime.docker")

T = TypeVar("T")

# Seconds for one HTTP call to the engine (stop adds its grace on top).
_API_TIMEOUT = 30

_RETRY = tenacity.retry(
    retry=tenacity.retry_if_exception_type(TransientRuntimeError),
    wait=tenacity.wait_random_exponential(multiplier=0.2, max=5),
    stop=tenacity.stop_after_attempt(5) | tenacity.stop_after_delay(30),
    reraise=True,
    before_sleep=tenacity.before_sleep_log(log, logging.WARNING),
)

# Failures to reach the engine at all: socket refused or reset, timeouts.
_UNREACHABLE = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    ConnectionError,
    TimeoutError,
)

# Container states of the list API; a state not here is reported as starting.
_STATES = {
    "created": InstanceState.STARTING,
    "restarting": InstanceState.STARTING,
    "running": InstanceState.RUNNING,
    "paused": InstanceState.RUNNING,
    "removing": InstanceState.STOPPED,
    "exited": InstanceState.EXITED,
    "dead": InstanceState.FAILED,
}


def _map_error(exc: Exception, *, image: str = "") -> RuntimeAdapterError:
    """The one place docker/requests exceptions become ours. ``image`` names
    the image a failed create asked for, for a reason an operator can act on."""
    if isinstance(exc, RuntimeAdapterError):
        return exc
    if isinstance(exc, docker_errors.ImageNotFound):
        image = image or "requested"
        return PermanentRuntimeError(
            f"image {image} is not present on this node and no registry is configured"
        )
    if isinstance(exc, docker_errors.NotFound):
        return InstanceNotFound(str(exc.explanation or exc))
    if isinstance(exc, docker_errors.APIError):
        # APIError subclasses requests' HTTPError, so it must be checked first.
        status = exc.status_code or 0
        detail = f"docker engine: {exc.explanation or exc} (HTTP {status})"
        return TransientRuntimeError(detail) if status >= 500 else PermanentRuntimeError(detail)
    # The SDK raises its bare base class when it cannot reach the engine to ask
    # for its API version; its subclasses (bad arguments, TLS setup) are permanent.
    if isinstance(exc, _UNREACHABLE) or type(exc) is docker_errors.DockerException:
        return TransientRuntimeError(f"docker engine unreachable: {exc}")
    return PermanentRuntimeError(f"docker runtime: {exc!r}")


def docker_available(base_url: str | None = None) -> bool:
    """Whether an engine answers a ping within ~2 s. Blocks; call it at startup."""
    try:
        client = _client(base_url, timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _client(base_url: str | None, *, timeout: int) -> docker.DockerClient:
    if base_url is None:
        return docker.from_env(timeout=timeout)
    return docker.DockerClient(base_url=base_url, timeout=timeout)


def _labels_match(labels: Mapping[str, str], spec: InstanceSpec) -> bool:
    wanted = {**spec.labels, **spec.identity_labels()}
    return all(labels.get(key) == value for key, value in wanted.items())


def _parse_time(value: str | None) -> float | None:
    if not value or value.startswith("0001-01-01"):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _status(attrs: dict[str, Any]) -> InstanceStatus:
    """An InstanceStatus from a container's inspect document."""
    labels = attrs["Config"]["Labels"] or {}
    state = attrs["State"]
    kind = _STATES.get(state.get("Status", ""), InstanceState.STARTING)
    reason = "OOMKilled" if state.get("OOMKilled") else state.get("Error") or ""
    if kind is InstanceState.EXITED and state.get("Error"):
        kind = InstanceState.FAILED  # the engine could not run it at all
    done = kind in (InstanceState.EXITED, InstanceState.FAILED)
    return InstanceStatus.from_labels(
        labels,
        state=kind,
        runtime_id=attrs["Id"],
        exit_code=state.get("ExitCode") if done else None,
        reason=reason,
        started_at=_parse_time(state.get("StartedAt")),
    )


class DockerRuntime:
    """Instances as containers on one Docker engine, shared safely by several
    agents (each sees only containers labelled with its node)."""

    name = "docker"

    def __init__(self, node: str, *, base_url: str | None = None) -> None:
        self.node = node
        self._base_url = base_url
        self._docker: docker.DockerClient | None = None
        self._docker_lock = threading.Lock()
        # container id -> (list-API state, inspect document): list() inspects a
        # container again only when its state changed, so a steady poll costs
        # one API call however many containers run.
        self._seen: dict[str, tuple[str, dict[str, Any]]] = {}

    def _api(self) -> docker.DockerClient:
        # Created lazily in a worker thread: the SDK asks the engine for its
        # API version on construction, which blocks and may fail.
        with self._docker_lock:
            if self._docker is None:
                self._docker = _client(self._base_url, timeout=_API_TIMEOUT)
            return self._docker

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        result: T = await self._retried(fn, *args)
        return result

    @_RETRY
    async def _retried(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except Exception as exc:
            raise _map_error(exc) from exc

    async def start(self, spec: InstanceSpec) -> InstanceStatus:
        return _status(await self._call(self._start, spec))

    async def stop(self, runtime_id: str, *, grace: float = 5.0) -> None:
        await self._call(self._stop, runtime_id, grace)

    async def list(self) -> list[InstanceStatus]:
        return await self._call(self._list)

    async def logs(self, runtime_id: str, *, tail: int = 100) -> str:
        raw: bytes = await self._call(
            lambda: self._api().api.logs(runtime_id, stdout=True, stderr=True, tail=tail)
        )
        return raw.decode("utf-8", errors="replace")

    async def images(self) -> builtins.list[str]:
        return await self._call(self._images)

    async def close(self) -> None:
        if self._docker is not None:
            await asyncio.to_thread(self._docker.close)
            self._docker = None

    # The blocking halves below run in worker threads.

    def _start(self, spec: InstanceSpec) -> dict[str, Any]:
        existing = self._inspect(spec.name)
        if existing is not None:
            if existing["State"]["Status"] not in ("exited", "dead"):
                return self._same_instance(existing, spec)
            self._remove(existing["Id"])  # ended: start afresh
        container_id = self._create(spec)
        try:
            self._api().api.start(container_id)
        except Exception:
            self._remove(container_id)  # leave nothing half-made behind
            raise
        attrs = self._inspect(container_id)
        if attrs is None:  # removed by someone else right away; a retry recreates it
            raise TransientRuntimeError(f"container {spec.name} vanished after its start")
        return attrs

    def _same_instance(self, existing: dict[str, Any], spec: InstanceSpec) -> dict[str, Any]:
        """A retried or concurrent start of an instance whose container exists."""
        if not _labels_match(existing["Config"]["Labels"] or {}, spec):
            raise PermanentRuntimeError(
                f"container {spec.name} exists with labels that do not match this instance"
            )
        if existing["State"]["Status"] != "created":
            return existing
        # Maybe a start still in flight: start it too (harmless twice), never remove it.
        self._api().api.start(existing["Id"])
        return self._inspect(existing["Id"]) or existing

    def _create(self, spec: InstanceSpec) -> str:
        api = self._api().api
        bound = [p for p in spec.ports if p.host_port]
        try:
            created = api.create_container(
                spec.image,
                name=spec.name,
                entrypoint=list(spec.command) or None,
                command=list(spec.args) or None,
                environment=dict(spec.env),
                labels={**spec.labels, **spec.identity_labels()},
                ports=[(p.container_port, p.protocol) for p in bound],
                host_config=api.create_host_config(
                    port_bindings={f"{p.container_port}/{p.protocol}": p.host_port for p in bound},
                    nano_cpus=spec.cpu_millis * 1_000_000 or None,
                    mem_limit=spec.memory_bytes or None,
                    init=True,  # no restart_policy: restarts are the agent's call
                ),
            )
        except docker_errors.ImageNotFound as exc:
            raise _map_error(exc, image=spec.image) from exc
        except docker_errors.APIError as exc:
            if exc.status_code == 409:  # a concurrent start took the name; look again
                raise TransientRuntimeError(f"container name {spec.name} in use") from exc
            raise
        container_id: str = created["Id"]
        return container_id

    def _remove(self, container_id: str) -> None:
        try:
            self._api().api.remove_container(container_id, force=True, v=True)
        except docker_errors.NotFound:
            pass  # gone already: what the caller wanted
        except docker_errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal is already in progress
                raise

    def _inspect(self, name: str) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = self._api().api.inspect_container(name)
        except docker_errors.NotFound:
            return None
        return attrs

    def _stop(self, runtime_id: str, grace: float) -> None:
        self._api().api.stop(runtime_id, timeout=math.ceil(grace))
        self._remove(runtime_id)

    def _list(self) -> builtins.list[InstanceStatus]:
        api = self._api().api
        summaries = api.containers(
            all=True, filters={"label": [f"{LABEL_NODE}={self.node}", f"{LABEL_MANAGED}=true"]}
        )
        seen: dict[str, tuple[str, dict[str, Any]]] = {}
        statuses = []
        for summary in summaries:
            cid, state = summary["Id"], summary.get("State", "")
            cached = self._seen.get(cid)
            attrs = cached[1] if cached and cached[0] == state else self._inspect(cid)
            if attrs is None:
                continue  # removed between the list and the inspect
            seen[cid] = (state, attrs)
            try:
                statuses.append(_status(attrs))
            except (KeyError, ValueError):
                log.warning("container %s has malformed edgefed labels; ignored", cid[:12])
        self._seen = seen
        return statuses

    def _images(self) -> builtins.list[str]:
        tags = {
            tag
            for image in self._api().api.images()
            for tag in image.get("RepoTags") or ()
            if tag != "<none>:<none>"
        }
        return sorted(tags)
