"""A request that asks for many dry runs (`plan` of many documents, a placement
policy that changes many deployments) lets the controller's event loop run
between them, so heartbeats and the controller's echo are read meanwhile.

The controller runs in this process with its real store (SQLite in tmp_path),
its kept fleet and its HTTP API on a loopback port; it is never connected to a
broker (nothing here needs one), and its inventory is given its nodes directly.
A task that runs whenever the loop is free reads the fleet's refresh counter:
a dry run refreshes the fleet, so the most refreshes seen between two of its
turns is how many dry runs ran without a break."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from federation.api import make_app
from federation.controller import Controller
from policies.model import Deployment, deployment_to_document
from tests.unit.core.test_planning import node, spec

DEPLOYMENTS = 12


def _deployments() -> list[Deployment]:
    return [replace(spec(f"app{i:02}", replicas=2, cpu=100, memory=64 * 1024**2),
                    labels={"data": "personal"}) for i in range(DEPLOYMENTS)]


async def _while_serving(c: Controller, method: str, path: str,
                         body: dict[str, Any]) -> tuple[int, dict[str, Any], int, int]:
    """The answer's status and body, the fleet's refreshes during the request, and
    the most of them between two turns of a task waiting for the loop."""
    runner = web.AppRunner(make_app(c))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    seen, most = c.fleet.refreshes, 0

    async def watch() -> None:
        nonlocal seen, most
        while True:
            most = max(most, c.fleet.refreshes - seen)
            seen = c.fleet.refreshes
            await asyncio.sleep(0)

    before = c.fleet.refreshes
    watcher = asyncio.create_task(watch())
    try:
        async with aiohttp.ClientSession() as session, session.request(
                method, f"http://127.0.0.1:{port}/api/v1{path}", json=body) as answer:
            status, payload = answer.status, await answer.json()
    finally:
        watcher.cancel()
        await runner.cleanup()
    return status, payload, c.fleet.refreshes - before, most


@pytest.fixture
def c(tmp_path: Path) -> Iterator[Controller]:
    controller = Controller(broker="mqtt://127.0.0.1:1", db=tmp_path / "controller.db")
    for n in (node("n1", cpu=8000), node("n2", site="s2", cpu=8000)):
        controller.inventory.nodes[n.name] = n
    yield controller
    controller.store.close()


def test_plan_of_many_documents_lets_the_loop_run_between_dry_runs(c: Controller) -> None:
    documents = [deployment_to_document(d) for d in _deployments()]
    status, payload, refreshes, most = asyncio.run(
        _while_serving(c, "POST", "/plan", {"documents": documents}))
    assert status == 200, payload
    assert [d["name"] for d in payload["deployments"]] == [f"app{i:02}"
                                                           for i in range(DEPLOYMENTS)]
    assert all(s["node"] in {"n1", "n2"} for d in payload["deployments"] for s in d["slots"])
    per_dry_run = refreshes // DEPLOYMENTS
    assert per_dry_run >= 1 and refreshes == per_dry_run * DEPLOYMENTS
    assert most == per_dry_run, (most, refreshes)


def test_a_policy_check_over_many_deployments_lets_the_loop_run(c: Controller) -> None:
    for d in _deployments():
        c.apply(d)
    policy = {"apiVersion": "edgefed.io/v1", "kind": "PlacementPolicy",
              "metadata": {"name": "stay-in-s9"},
              "spec": {"selector": {"matchLabels": {"data": "personal"}},
                       "placement": {"siteSelector": {"matchLabels": {"site": "s9"}}}}}
    status, payload, refreshes, most = asyncio.run(
        _while_serving(c, "PUT", "/placementpolicies/stay-in-s9", policy))
    assert status == 409, payload
    assert len(payload["unschedulable"]) == 2 * DEPLOYMENTS
    per_dry_run = refreshes // DEPLOYMENTS
    assert per_dry_run >= 1 and refreshes == per_dry_run * DEPLOYMENTS
    assert most == per_dry_run, (most, refreshes)
    assert c.policies == {}  # refused: nothing stored
