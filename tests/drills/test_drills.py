"""The built-in drills (`edgefed drill list`), each run for real: its own broker,
controller and agents as processes, sites in network namespaces where the tests
run as root. Every drill's assertions must hold; then each runs once more with one
protection disabled and the harness must report the violation that protection
prevents, so a drill that cannot fail proves nothing."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from federation.drill.cli import summary
from federation.drill.runner import DrillRunError, RunOptions, RunResult, run_drill
from federation.drill.spec import Drill, builtin_names, load_drill


def run(drill: Drill, workdir: Path, **options: Any) -> RunResult:
    return asyncio.run(run_drill(drill, RunOptions(workdir=workdir, **options)))


def without_fencing(drill: Drill) -> Drill:
    """The singleton deployed as an ordinary one: its agent does not fence it."""
    return replace(drill, workloads=tuple(
        replace(w, text=w.text.replace("singleton: true", "singleton: false"))
        for w in drill.workloads))


def grace(seconds: float) -> Callable[[Drill], Drill]:
    return lambda drill: replace(drill, lost_after=seconds)


def no_cut_off_pause(drill: Drill) -> Drill:
    """A short grace, and the controller counts silence while it is cut off itself."""
    return replace(drill, lost_after=1.0,
                   controller_args=(*drill.controller_args, "--no-cut-off-pause"))


def on_a_fresh_database(drill: Drill) -> Drill:
    return replace(drill, faults=tuple(
        replace(f, action="restart-controller", fresh_database=True)
        if f.action in ("crash-controller", "restart-controller") else f
        for f in drill.faults))


# drill -> (the protection taken away, the assertion that must then fail)
DISABLED: dict[str, tuple[Callable[[Drill], Drill], str]] = {
    # A grace longer than the bound: the crashed node's slots are not back in time.
    "node-crash": (grace(30), "maxRecovery"),
    # No singleton fencing: the replacement starts while the cut-off original runs.
    "site-partition": (without_fencing, "duplicateLiveInstances"),
    # The controller does not pause node liveness while it is cut off from the broker,
    # and the grace is shorter than the outage: every node is declared Lost. (With the
    # pause, even this short grace holds: it starts again when the broker is back.)
    "broker-restart": (no_cut_off_pause, "maxRecovery"),
    # A grace shorter than one cut (with the reconnect after it): the work moves.
    "flapping-link": (grace(0.5), "maxReschedules"),
    # The restarted controller has lost its database (no durable desired state).
    "controller-restart": (on_a_fresh_database, "lostSlots"),
    # A grace shorter than the degraded link's delay: its node's work moves.
    "degraded-wan": (grace(0.2), "maxReschedules"),
}


def test_every_builtin_drill_has_a_disabled_variant():
    assert sorted(DISABLED) == builtin_names()


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_drill_holds(name: str, tmp_path: Path):
    result = run(load_drill(name), tmp_path)
    print("\n" + summary(result))
    assert result.outcome.passed, summary(result)
    assert result.outcome.metrics["slots"] > 0
    faults = [r for r in result.records if r["kind"] == "fault" and not r.get("declared")]
    assert len(faults) == len(result.drill.faults)
    assert all(f["mechanism"] for f in faults)


@pytest.mark.parametrize("name", builtin_names())
def test_drill_reports_the_violation_with_a_protection_disabled(name: str, tmp_path: Path):
    disable, expected = DISABLED[name]
    result = run(disable(load_drill(name)), tmp_path)
    print("\n" + summary(result))
    assert not result.outcome.passed
    assert expected in {v.assertion for v in result.outcome.violations}, summary(result)




def test_without_network_namespaces_a_cut_is_made_by_the_fault_proxy(tmp_path):
    """The fallback for machines without root or nft: the same drill holds."""
    result = run(load_drill("site-partition"), tmp_path, network="proxy")
    print("\n" + summary(result))
    assert result.network == "proxy"
    assert result.outcome.passed, summary(result)
    cut = next(r for r in result.records if r["kind"] == "fault" and r["action"] == "cut-link")
    assert cut["mechanism"].startswith("fault proxy holds all traffic")


@pytest.mark.parametrize(("name", "root", "refusal"), [
    ("node-crash", "edgefed", "'edgefed' is not a drill root"),
    ("node-crash", "t-drill", "not a drill root"),
    ("broker-restart", "drill-x", "crash-broker would stop the shared broker"),
])
def test_attach_mode_refuses_what_would_touch_others(name, root, refusal, tmp_path):
    with pytest.raises(DrillRunError, match=refusal):
        run(load_drill(name), tmp_path, attach="mqtt://127.0.0.1:1", topic_root=root)


def test_attach_mode_runs_on_a_shared_broker_under_its_own_topic_root(broker, tmp_path):
    """Everything the drill publishes is under its root; nothing else is touched."""
    root = f"ops-drill-{uuid.uuid4().hex[:6]}"
    seen: list[str] = []
    lock = threading.Lock()

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if not msg.retain and not msg.topic.startswith("$SYS"):
            with lock:
                seen.append(msg.topic)

    spy = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"spy-{root}")
    spy.on_message = on_message
    spy.connect("127.0.0.1", broker[1])
    spy.subscribe("#", qos=0)
    spy.loop_start()
    try:
        drill = replace(load_drill("node-crash"), duration=10.0)
        result = run(drill, tmp_path, attach=f"mqtt://127.0.0.1:{broker[1]}", topic_root=root)
    finally:
        spy.loop_stop()
        spy.disconnect()
    print("\n" + summary(result))
    assert result.outcome.passed, summary(result)
    assert result.records[0]["attached"] is True
    assert seen, "the spy saw nothing: the drill ran elsewhere"
    assert all(topic.startswith(f"{root}/") for topic in seen), sorted(
        {t for t in seen if not t.startswith(f"{root}/")})
    assert retained_under(broker[1], root) == [], "retained messages left on the shared broker"


def retained_under(port: int, root: str) -> list[str]:
    """Topics under ``root`` still holding a retained message (waits for a marker
    message to know the broker sent every retained one first)."""
    found: list[str] = []
    done = threading.Event()
    marker = f"{root}-marker/{uuid.uuid4().hex}"

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.topic == marker:
            done.set()
        elif msg.retain and msg.payload:
            found.append(msg.topic)

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"check-{uuid.uuid4().hex}")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.subscribe([(f"{root}/#", 1), (marker, 1)])
        client.publish(marker, b"x", qos=1).wait_for_publish(5)
        assert done.wait(10), "the marker never came back"
    finally:
        client.loop_stop()
        client.disconnect()
    return found
