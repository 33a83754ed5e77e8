"""RTT probes end to end: real agents (process runtime) against the real broker
measure a landmark echo listener on loopback and each other, report it in their
capacity, and the controller's RTT matrix shows it under GET /api/v1/rtt."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from edge_agent.probes import EchoListener
from tests.support import edgefed, wait_until


@pytest.fixture
def landmark() -> Iterator[str]:
    """An echo listener (the agent's own) on loopback, in a thread of its own."""
    loop = asyncio.new_event_loop()
    echo = EchoListener()
    address = loop.run_until_complete(echo.start("127.0.0.1"))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield address
    asyncio.run_coroutine_threadsafe(echo.close(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def rtt(server: str, query: str = "") -> Any:
    with urllib.request.urlopen(f"{server}/api/v1/rtt{query}", timeout=10) as answer:
        return json.load(answer)


def test_agents_report_landmark_and_peer_rtts_and_the_controller_shows_them(
        make_federation: Any, landmark: str) -> None:
    fed = make_federation(runtime="process")
    fed.start_controller()
    nodes = {"rtt-a1": "site-a", "rtt-b1": "site-b", "rtt-b2": "site-b"}
    for node, site in nodes.items():
        fed.start_agent(node, site, extra=["--landmark", f"users-eu={landmark}",
                                           "--probe-interval", "0.1", "--report-interval", "1"])

    def measured() -> set[tuple[str, str]] | None:
        pairs = {(p["a"], p["b"]) for p in rtt(fed.server)["measured"]}
        wanted = {*((n, "users-eu") for n in nodes), ("rtt-a1", "rtt-b1"),
                  ("rtt-a1", "rtt-b2"), ("rtt-b1", "rtt-b2")}
        return pairs if wanted <= pairs else None

    wait_until(measured, timeout=60, what="every agent's landmark and peer RTTs in /api/v1/rtt")
    doc = rtt(fed.server)
    for pair in doc["measured"]:
        assert 0 < pair["rtt_ms"] < 1000, pair  # loopback: well under a second
        assert pair["age_seconds"] < 60
    kinds = {e["name"]: (e["kind"], e["site"]) for e in doc["endpoints"]}
    assert kinds["users-eu"] == ("landmark", None)
    assert kinds["rtt-b2"] == ("node", "site-b")
    rows = {(r["from"], r["node"]): r for r in doc["sources"]}
    for node in nodes:
        assert rows[("users-eu", node)]["measured"] is True
        assert 0 < rows[("users-eu", node)]["rtt_ms"] < 1000
    # Users at site-b reach its own nodes over the measured intra-site RTT; site-a
    # has one node, which gets the intra-site default.
    assert rows[("site-b", "rtt-b1")]["basis"] == "measured"
    assert rows[("site-a", "rtt-a1")]["basis"] == "intra-site default"
    assert rows[("site-a", "rtt-b1")]["basis"] == "measured"

    one = rtt(fed.server, "?from=users-eu")
    assert {r["from"] for r in one["sources"]} == {"users-eu"}
    answer = edgefed("get", "rtt", "--from", "users-eu", "-o", "json", server=fed.server)
    assert {r["node"] for r in json.loads(answer.stdout)} == set(nodes)
    table = edgefed("get", "rtt", server=fed.server).stdout
    assert "users-eu" in table and "rtt-b2" in table and "measured" in table


def deployment(name: str, landmark: str) -> dict[str, Any]:
    return {"apiVersion": "edgefed.io/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "container": {
                "image": "none", "command": ["sleep", "3600"],
                "resources": {"cpu": "10m", "memory": "8Mi"}},
                "placement": {"users": [{"name": "people", "landmark": landmark,
                                         "maxRtt": "1s"}]}}}


def plan(server: str, *documents: dict[str, Any]) -> Any:
    request = urllib.request.Request(f"{server}/api/v1/plan", method="POST",
                                     data=json.dumps({"documents": list(documents)}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


def test_the_scheduler_sees_the_measured_rtt(make_federation: Any, landmark: str) -> None:
    """The controller hands its matrix to the scheduler: a replica whose users sit
    at the measured landmark fits; one whose landmark nobody measured fits nowhere."""
    fed = make_federation(runtime="process")
    fed.start_controller()
    fed.start_agent("rtt-s1", "site-s", extra=["--landmark", f"users-eu={landmark}",
                                               "--probe-interval", "0.1",
                                               "--report-interval", "1"])
    wait_until(lambda: rtt(fed.server)["measured"], timeout=60,
               what="the landmark RTT in /api/v1/rtt")
    answer = plan(fed.server, deployment("near", "users-eu"), deployment("far", "users-mars"))
    by_name = {d["name"]: d["slots"][0] for d in answer["deployments"]}
    assert by_name["near"]["node"] == "rtt-s1", by_name["near"]
    assert by_name["far"]["node"] is None
    assert "rtt from people unknown" in by_name["far"]["message"], by_name["far"]


def test_unknown_source_is_refused_with_what_exists(make_federation: Any) -> None:
    fed = make_federation(runtime="process")
    fed.start_controller()
    with pytest.raises(urllib.error.HTTPError) as caught:
        rtt(fed.server, "?from=users-mars")
    assert caught.value.code == 404
    assert json.load(caught.value)["error"] == (
        "no landmark or site 'users-mars' in the RTT matrix (landmarks: none; sites: none)")
