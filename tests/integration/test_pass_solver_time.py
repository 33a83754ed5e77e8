"""A pass that leaves an optimal batch for a later one (its solver time is
spent) shows the batch's new replicas as Pending and says why, rather than not
at all; replicas that already have a reason keep it.

The controller runs in this process with its real store (SQLite in tmp_path)
and is never connected to a broker: its one node fits nothing, so a pass sends
no command."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from federation.api import _pods
from federation.controller import Controller
from policies.model import Placement
from tests.unit.core.test_planning import node, spec

WAITING = "waiting for the exact solver (strategy optimal)"


@pytest.fixture
def c(tmp_path: Path) -> Iterator[Controller]:
    controller = Controller(broker="mqtt://127.0.0.1:1", db=tmp_path / "controller.db",
                            solver_seconds=0)
    controller.inventory.nodes["n1"] = node("n1", cpu=500)
    for name in ("alpha", "beta"):
        controller.apply(replace(spec(name, replicas=2, cpu=1000),
                                 placement=Placement(strategy="optimal")))
    yield controller
    controller.store.close()


def _reasons(c: Controller) -> dict[str, tuple[str, str]]:
    return {p["name"]: (p["state"], p["reason"]) for p in _pods(c)}


def test_a_new_replica_left_for_a_later_pass_is_pending_and_says_why(c: Controller) -> None:
    c.pass_once(time.time())
    first = _reasons(c)
    assert sorted(first) == ["alpha/0", "alpha/1", "beta/0", "beta/1"]
    assert {state for state, _ in first.values()} == {"Pending"}
    waiting = {name.split("/")[0] for name, (_, why) in first.items() if why.startswith(WAITING)}
    assert len(waiting) == 1, first  # a pass solves its first batch, leaves the other
    (left,) = waiting
    solved = ({"alpha", "beta"} - waiting).pop()
    assert "0/1 nodes fit: 1 insufficient cpu" in first[f"{solved}/0"][1], first

    c.pass_once(time.time())  # the batch left first is solved first; the other keeps its reason
    second = _reasons(c)
    assert "0/1 nodes fit: 1 insufficient cpu" in second[f"{left}/0"][1], second
    assert second[f"{solved}/0"] == first[f"{solved}/0"]
    assert not any(why.startswith(WAITING) for _, why in second.values()), second
