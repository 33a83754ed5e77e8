"""Kubernetes-style resource quantities: ``250m`` cpu, ``64Mi`` memory."""

from __future__ import annotations

import re

_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")
_MEM = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_MEM_FACTOR = {
    None: 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


class QuantityError(ValueError):
    pass


def parse_cpu(value: object) -> int:
    """Cpu in millicores: ``2`` -> 2000, ``0.5`` -> 500, ``250m`` -> 250."""
    if isinstance(value, bool):
        raise QuantityError("expected a cpu quantity like 250m or 0.5")
    if isinstance(value, int | float):
        text = repr(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise QuantityError("expected a cpu quantity like 250m or 0.5")
    match = _CPU.match(text)
    if not match:
        raise QuantityError(f"{value!r} is not a cpu quantity (expected like 250m or 0.5)")
    number, milli = float(match.group(1)), match.group(2)
    return round(number) if milli else round(number * 1000)


def parse_memory(value: object) -> int:
    """Memory in bytes: ``64Mi`` -> 67108864, ``1G`` -> 10**9, ``512`` -> 512."""
    if isinstance(value, bool):
        raise QuantityError("expected a memory quantity like 64Mi or 1Gi")
    if isinstance(value, int):
        if value < 0:
            raise QuantityError(f"{value} is negative")
        return value
    if not isinstance(value, str):
        raise QuantityError("expected a memory quantity like 64Mi or 1Gi")
    match = _MEM.match(value.strip())
    if not match:
        raise QuantityError(f"{value!r} is not a memory quantity (expected like 64Mi or 1Gi)")
    return round(float(match.group(1)) * _MEM_FACTOR[match.group(2)])


def format_cpu(millis: int) -> str:
    return f"{millis // 1000}" if millis % 1000 == 0 else f"{millis}m"


def format_memory(n: int) -> str:
    """Shortest exact binary form: 67108864 -> 64Mi; falls back to bytes."""
    for suffix, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{suffix}"
    return str(n)


def human_memory(n: int) -> str:
    """Rounded, for messages: 1536Mi -> 1.5Gi."""
    for suffix, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= factor:
            value = n / factor
            return f"{value:.0f}{suffix}" if value >= 10 or value.is_integer() else f"{value:.1f}{suffix}"
    return f"{n}B"
