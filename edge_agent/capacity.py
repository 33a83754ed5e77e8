"""What this host has: cpu, memory, disk, arch and os, read with psutil."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from federation.wire import Resources

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
         "armv7l": "arm", "armv6l": "arm", "i686": "386", "riscv64": "riscv64"}


def host_arch() -> str:
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine)


def host_os() -> str:
    return platform.system().lower()


GPU = "nvidia.com/gpu"
_NVIDIA_GPU = re.compile(r"^nvidia\d+$")  # /dev/nvidia0, /dev/nvidia1, ... (not nvidiactl)


def detected_devices(dev: Path = Path("/dev")) -> dict[str, int]:
    """Devices this host has that replicas can ask for: NVIDIA GPUs, one
    ``/dev/nvidiaN`` each (the driver creates them)."""
    try:
        names = os.listdir(dev)
    except OSError:
        return {}
    gpus = sum(1 for name in names if _NVIDIA_GPU.match(name))
    return {GPU: gpus} if gpus else {}


def devices(declared: Mapping[str, int], dev: Path = Path("/dev")) -> dict[str, int]:
    """What the node reports: the detected devices, with the operator's declared
    counts over them by kind (``nvidia.com/gpu=0`` hides detected GPUs)."""
    merged = {**detected_devices(dev), **declared}
    return {kind: count for kind, count in sorted(merged.items()) if count > 0}


@dataclass(frozen=True, slots=True)
class HostProbe:
    """Allocatable resources; overrides let an operator reserve part of a host."""

    disk_path: Path
    cpu_millis: int | None = None
    memory_bytes: int | None = None

    def allocatable(self) -> Resources:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            psutil.cpu_count() or 1)
        disk = psutil.disk_usage(str(self.disk_path))
        return Resources(
            cpu_millis=self.cpu_millis if self.cpu_millis is not None else cpus * 1000,
            memory_bytes=self.memory_bytes if self.memory_bytes is not None
            else psutil.virtual_memory().total,
            disk_bytes=disk.free,
        )
