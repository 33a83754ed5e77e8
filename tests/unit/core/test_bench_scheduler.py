"""The scheduler bench's evidence holds up: on a small fleet its array scheduler
and its plain-loop reference decide alike, and its verdict on the marks reads the
figures it is given. (The figures themselves are the bench's to print, not a
test's: speed is not asserted here.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "scheduler.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scheduler", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_arrays_and_loop_agree_on_a_small_fleet(bench: ModuleType) -> None:
    result = bench.run(500, 300, 120, seed=7, repeat=2)
    assert result["loop"]["replicas"] == 120
    assert result["loop_same_feasibility"] == 1.0
    assert result["loop_same_node"] == 1.0
    assert 0 < result["arrays"]["placed"] <= 300
    assert len(result["arrays"]["runs_placements_per_s"]) == 2


def _result(nodes: int, rate: float, p99: float) -> dict[str, Any]:
    return {"nodes": nodes, "arrays": {"placements_per_s": rate, "p99_ms": p99}}


@pytest.mark.parametrize(("results", "met"), [
    ([_result(5_000, 10_000.0, 2.0), _result(50_000, 1_000.0, 9.0)], True),
    ([_result(5_000, 9_999.9, 0.1)], False),
    ([_result(5_000, 20_000.0, 2.01)], False),
    ([_result(5_000, 20_000.0, 0.1), _result(50_000, 999.0, 0.1)], False),
    ([_result(500, 1.0, 99.0)], None),  # no mark at 500 nodes
])
def test_target_verdict(bench: ModuleType, results: list[dict[str, Any]],
                        met: bool | None) -> None:
    verdict = bench.target(results)
    assert verdict["met"] is met
    assert set(verdict["by_nodes"]) == {str(r["nodes"]) for r in results} - {"500"}
