"""Node liveness: Ready -> Suspect -> Lost and back, driven only by messages and ``now``."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from federation import wire
from federation.inventory import Inventory, Liveness, Node, NodeState, Site, site_labels

GiB = 1024**3
ONLINE = wire.Presence(state=wire.PresenceState.ONLINE, site="berlin", agent_version="0.1.0")
OFFLINE = wire.Presence(state=wire.PresenceState.OFFLINE, site="berlin", agent_version="0.1.0")


def capacity(*, site: str = "berlin", arch: str = "arm64", labels: Mapping[str, str] | None = None,
             interval: float = 5.0) -> wire.Capacity:
    return wire.Capacity(
        site=site, arch=arch, os="linux", runtime="docker", labels=dict(labels or {}),
        allocatable=wire.Resources(cpu_millis=4000, memory_bytes=4 * GiB, disk_bytes=0),
        used=wire.Resources(cpu_millis=0, memory_bytes=0, disk_bytes=0),
        images=(), instances=(), interval=interval)


def reported(at: float = 0.0, liveness: Liveness | None = None) -> Inventory:
    """An inventory where n1 sent its first capacity report at ``at``."""
    inv = Inventory(liveness=liveness or Liveness())
    inv.observe_capacity("n1", "boot-1", capacity(), at)
    return inv


def state(inv: Inventory, name: str = "n1") -> tuple[NodeState, float, str]:
    node = inv.nodes[name]
    return node.state, node.state_since, node.reason


def test_first_capacity_report_makes_a_node_ready() -> None:
    inv = Inventory()
    node = inv.observe_capacity("n1", "boot-1", capacity(labels={"tier": "edge"}), 100.0)
    assert node == Node(name="n1", site="berlin", epoch="boot-1", online=True,
                        state=NodeState.READY, state_since=100.0, last_seen=100.0,
                        capacity=capacity(labels={"tier": "edge"}), report_at=100.0)
    assert inv.ready() == [node]
    assert node.labels == {"tier": "edge", "node": "n1", "site": "berlin", "arch": "arm64",
                           "os": "linux", "runtime": "docker"}


def test_offline_presence_makes_a_ready_node_suspect_at_once() -> None:
    inv = reported(0.0)
    node = inv.observe_presence("n1", "boot-1", OFFLINE, 3.0)
    assert (node.state, node.state_since, node.reason, node.online) == (
        NodeState.SUSPECT, 3.0, "agent went offline", False)
    assert inv.ready() == []


@pytest.mark.parametrize(("now", "expected"), [
    (12.9, (NodeState.SUSPECT, 3.0, "agent went offline")),
    (13.0, (NodeState.LOST, 13.0, "agent went offline; grace of 10 s over")),
    (500.0, (NodeState.LOST, 500.0, "agent went offline; grace of 10 s over")),
])
def test_suspect_becomes_lost_only_after_lost_after(now: float,
                                                    expected: tuple[NodeState, float, str]) -> None:
    inv = reported(0.0)
    inv.observe_presence("n1", "boot-1", OFFLINE, 3.0)
    changed = inv.tick(now)
    assert state(inv) == expected
    assert changed == ([inv.nodes["n1"]] if expected[0] is NodeState.LOST else [])


@pytest.mark.parametrize(("liveness", "interval", "now", "expected"), [
    # interval 5 s x 3 misses: overdue strictly after 15 s
    (Liveness(), 5.0, 14.0, (NodeState.READY, 0.0, "")),
    (Liveness(), 5.0, 15.0, (NodeState.READY, 0.0, "")),
    (Liveness(), 5.0, 16.0, (NodeState.SUSPECT, 16.0, "no heartbeat for 16.0 s")),
    (Liveness(heartbeat_misses=2), 1.0, 2.5, (NodeState.SUSPECT, 2.5, "no heartbeat for 2.5 s")),
    (Liveness(heartbeat_misses=2), 30.0, 59.0, (NodeState.READY, 0.0, "")),
])
def test_overdue_heartbeat_makes_a_node_suspect(liveness: Liveness, interval: float, now: float,
                                                expected: tuple[NodeState, float, str]) -> None:
    inv = Inventory(liveness=liveness)
    inv.observe_capacity("n1", "boot-1", capacity(interval=interval), 0.0)
    inv.tick(now)
    assert state(inv) == expected


def test_missed_heartbeats_walk_ready_suspect_lost() -> None:
    inv = reported(0.0)
    assert inv.tick(16.0) == [inv.nodes["n1"]]
    assert state(inv) == (NodeState.SUSPECT, 16.0, "no heartbeat for 16.0 s")
    assert inv.tick(25.9) == []
    assert inv.tick(26.0) == [inv.nodes["n1"]]
    assert state(inv) == (NodeState.LOST, 26.0, "no heartbeat for 16.0 s; grace of 10 s over")
    assert inv.tick(1000.0) == []


def test_custom_grace() -> None:
    inv = reported(0.0, liveness=Liveness(lost_after=60.0))
    inv.observe_presence("n1", "boot-1", OFFLINE, 1.0)
    inv.tick(60.9)
    assert state(inv)[0] is NodeState.SUSPECT
    inv.tick(61.0)
    assert state(inv) == (NodeState.LOST, 61.0, "agent went offline; grace of 60 s over")


@pytest.mark.parametrize("lost", [False, True], ids=["from-suspect", "from-lost"])
def test_capacity_report_returns_a_node_to_ready(lost: bool) -> None:
    inv = reported(0.0)
    inv.observe_presence("n1", "boot-1", OFFLINE, 1.0)
    if lost:
        inv.tick(11.0)
        assert state(inv)[0] is NodeState.LOST
    inv.observe_presence("n1", "boot-2", ONLINE, 20.0)
    assert state(inv)[0] is (NodeState.LOST if lost else NodeState.SUSPECT)
    if lost:  # back from Lost: Ready on the second consecutive report (the default)
        node = inv.observe_capacity("n1", "boot-2", capacity(), 20.5)
        assert (node.state, node.returning) == (NodeState.SUSPECT, 1)
    node = inv.observe_capacity("n1", "boot-2", capacity(), 23.0)
    assert (node.state, node.state_since, node.reason, node.online, node.epoch,
            node.returning) == (NodeState.READY, 23.0, "", True, "boot-2", 0)


def lost_at_11() -> Inventory:
    """n1 reported at 0 (interval 5), went offline at 1, was Lost at 11."""
    inv = reported(0.0)
    inv.observe_presence("n1", "boot-1", OFFLINE, 1.0)
    inv.tick(11.0)
    return inv


# Steps after lost_at_11(): ("cap", t) a capacity report, ("off", t) an offline
# presence, ("tick", t) a liveness tick. Expected: (state, state_since, reason) at the end.
HYSTERESIS = [
    pytest.param(1, [("cap", 20.0)], (NodeState.READY, 20.0, ""), id="one-report-needed"),
    pytest.param(2, [("cap", 20.0)],
                 (NodeState.SUSPECT, 20.0,
                  "back after Lost; Ready after 2 consecutive reports (1 so far)"),
                 id="first-report-holds"),
    pytest.param(2, [("cap", 20.0), ("cap", 25.0)], (NodeState.READY, 25.0, ""),
                 id="second-report-ready"),
    pytest.param(3, [("cap", 20.0), ("cap", 25.0)],
                 (NodeState.SUSPECT, 20.0,
                  "back after Lost; Ready after 3 consecutive reports (2 so far)"),
                 id="holds-since-the-first-report"),
    pytest.param(3, [("cap", 20.0), ("cap", 25.0), ("tick", 29.0), ("cap", 30.0)],
                 (NodeState.READY, 30.0, ""), id="ticks-in-time-keep-the-count"),
    pytest.param(2, [("cap", 20.0), ("off", 21.0)],
                 (NodeState.LOST, 21.0, "agent went offline again while back from Lost"),
                 id="offline-during-hold-is-lost-again"),
    pytest.param(2, [("cap", 20.0), ("off", 21.0), ("cap", 22.0)],
                 (NodeState.SUSPECT, 22.0,
                  "back after Lost; Ready after 2 consecutive reports (1 so far)"),
                 id="count-starts-again-after-offline"),
    pytest.param(2, [("cap", 20.0), ("tick", 35.0)],
                 (NodeState.SUSPECT, 20.0,
                  "back after Lost; Ready after 2 consecutive reports (1 so far)"),
                 id="not-yet-overdue"),
    pytest.param(2, [("cap", 20.0), ("tick", 35.1)],
                 (NodeState.LOST, 35.1, "no heartbeat for 15.1 s again while back from Lost"),
                 id="missed-heartbeats-during-hold-is-lost-again"),
    pytest.param(2, [("cap", 20.0), ("tick", 35.1), ("cap", 36.0), ("cap", 38.5)],
                 (NodeState.READY, 38.5, ""), id="ready-after-a-fresh-run-of-reports"),
]


@pytest.mark.parametrize(("needed", "steps", "expected"), HYSTERESIS)
def test_a_node_back_from_lost_is_ready_after_consecutive_reports(
        needed: int, steps: list[tuple[str, float]],
        expected: tuple[NodeState, float, str]) -> None:
    inv = lost_at_11()
    inv.liveness = Liveness(ready_after_reports=needed)
    for op, at in steps:
        if op == "cap":
            inv.observe_capacity("n1", "boot-2", capacity(), at)
        elif op == "off":
            inv.observe_presence("n1", "boot-2", OFFLINE, at)
        else:
            inv.tick(at)
    assert state(inv) == expected
    assert (inv.nodes["n1"].returning == 0) == (expected[0] is not NodeState.SUSPECT)


def test_a_suspect_node_never_lost_is_ready_on_its_first_report() -> None:
    inv = reported(0.0)
    inv.tick(16.0)
    assert inv.observe_capacity("n1", "boot-1", capacity(), 17.0).state is NodeState.READY


def test_online_presence_alone_does_not_make_a_node_ready() -> None:
    inv = reported(0.0)
    inv.tick(16.0)
    inv.observe_presence("n1", "boot-1", ONLINE, 17.0)
    assert state(inv) == (NodeState.SUSPECT, 16.0, "no heartbeat for 16.0 s")
    # Seen recently and online: the grace does not run out while it keeps talking.
    assert inv.tick(26.0) == []
    assert state(inv)[0] is NodeState.SUSPECT


def test_ready_node_keeps_state_since_across_reports() -> None:
    inv = reported(0.0)
    inv.observe_capacity("n1", "boot-1", capacity(), 5.0)
    inv.observe_capacity("n1", "boot-1", capacity(), 10.0)
    assert state(inv) == (NodeState.READY, 0.0, "")
    assert inv.nodes["n1"].last_seen == 10.0
    assert inv.tick(24.0) == []


def test_presence_without_capacity_waits_and_is_never_lost() -> None:
    inv = Inventory()
    node = inv.observe_presence("n1", "boot-1", ONLINE, 0.0)
    assert (node.state, node.reason, node.site, node.capacity) == (
        NodeState.SUSPECT, "waiting for the first capacity report", "berlin", None)
    assert node.labels == {"node": "n1", "site": "berlin"}
    assert inv.tick(10_000.0) == []
    inv.observe_presence("n1", "boot-1", OFFLINE, 10_001.0)
    assert inv.tick(20_000.0) == []
    assert state(inv) == (NodeState.SUSPECT, 0.0, "waiting for the first capacity report")
    assert inv.observe_capacity("n1", "boot-1", capacity(), 20_001.0).state is NodeState.READY


def test_presence_without_site_keeps_the_known_site() -> None:
    inv = reported(0.0)
    node = inv.observe_presence("n1", "boot-1", wire.Presence(state=wire.PresenceState.ONLINE), 1.0)
    assert node.site == "berlin"


def test_tick_reports_only_changed_nodes() -> None:
    inv = Inventory()
    inv.observe_capacity("fresh", "b", capacity(), 10.0)
    inv.observe_capacity("stale", "b", capacity(), 0.0)
    changed = inv.tick(16.0)
    assert [n.name for n in changed] == ["stale"]
    assert [n.name for n in inv.ready()] == ["fresh"]


def test_sites_carry_the_labels_their_nodes_share() -> None:
    inv = Inventory()
    inv.observe_capacity("b2", "e", capacity(labels={"region": "eu", "tier": "edge", "rack": "2"}),
                         0.0)
    inv.observe_capacity("b1", "e", capacity(labels={"region": "eu", "tier": "edge", "rack": "1"}),
                         0.0)
    inv.observe_capacity("p1", "e", capacity(site="paris", arch="amd64",
                                              labels={"region": "eu", "country": "fr"}), 0.0)
    inv.observe_presence("b1", "e", OFFLINE, 1.0)
    assert inv.sites() == [
        Site(name="berlin", labels={"region": "eu", "tier": "edge", "site": "berlin",
                                    "arch": "arm64", "os": "linux", "runtime": "docker"},
             nodes=("b1", "b2"), ready=1),
        Site(name="paris", labels={"region": "eu", "country": "fr", "site": "paris",
                                   "arch": "amd64", "os": "linux", "runtime": "docker"},
             nodes=("p1",), ready=1),
    ]


def test_site_labels_drop_labels_the_nodes_disagree_on() -> None:
    inv = Inventory()
    inv.observe_capacity("a", "e", capacity(arch="arm64", labels={"zone": "1"}), 0.0)
    inv.observe_capacity("b", "e", capacity(arch="amd64", labels={"zone": "1"}), 0.0)
    assert site_labels("berlin", inv.nodes.values()) == {
        "zone": "1", "site": "berlin", "os": "linux", "runtime": "docker"}
    assert site_labels("empty", []) == {"site": "empty"}


def test_a_node_waiting_for_its_first_report_does_not_erase_site_labels() -> None:
    inv = Inventory()
    inv.observe_capacity("b1", "e", capacity(labels={"region": "eu"}), 0.0)
    inv.observe_presence("b2", "e", ONLINE, 1.0)
    assert inv.sites()[0].labels["region"] == "eu"


@pytest.mark.parametrize(("steps", "expected"), [
    pytest.param([], 15.001, id="ready-heartbeat-deadline"),
    pytest.param([("off", 1.0)], 11.0, id="offline-grace-from-suspect"),
    pytest.param([("tick", 16.0)], 26.0, id="silent-grace-from-suspect"),
    pytest.param([("on", 17.0)], 32.001, id="online-but-silent-waits-for-both"),
    pytest.param([("off", 1.0), ("tick", 11.0)], None, id="lost-waits-for-messages"),
    pytest.param([("off", 1.0), ("tick", 11.0), ("cap", 20.0)], 35.001,
                 id="back-from-lost-heartbeat-deadline"),
])
def test_next_change_is_when_tick_would_act(steps: list[tuple[str, float]],
                                            expected: float | None) -> None:
    inv = reported(0.0)
    for op, at in steps:
        if op == "off":
            inv.observe_presence("n1", "boot-1", OFFLINE, at)
        elif op == "on":
            inv.tick(16.0)
            inv.observe_presence("n1", "boot-1", ONLINE, at)
        elif op == "cap":
            inv.observe_capacity("n1", "boot-1", capacity(), at)
        else:
            inv.tick(at)
    due = inv.next_change()
    assert due == (pytest.approx(expected) if expected is not None else None)
    if due is not None:  # nothing changes just before it; something just after
        assert Inventory(liveness=inv.liveness, nodes=dict(inv.nodes)).tick(due - 0.01) == []
        assert inv.tick(due + 1e-6) != []


# -- only timely reports bring a node back from Lost -------------------------------------

SKEW = 1000.0  # the agent's clock runs this far ahead of the controller's: must not matter


def report(inv: Inventory, arrived: float, sent: float | None = None) -> Node:
    """A capacity report (interval 5) sent at ``sent`` (default: as it arrives), by the
    agent's clock, which is SKEW ahead."""
    sent_at = (arrived if sent is None else sent) + SKEW
    return inv.observe_capacity("n1", "boot-1", capacity(), arrived, sent_at=sent_at)


def lost_with_skew() -> Inventory:
    """n1 reported in step at 0 and 5, then fell silent; Lost at 25."""
    inv = Inventory()
    report(inv, 0.0)
    report(inv, 5.0)
    inv.tick(20.1)
    inv.tick(30.1)
    assert inv.nodes["n1"].state is NodeState.LOST
    return inv


@pytest.mark.parametrize(("arrivals", "expected"), [
    pytest.param([(40.0, None)], (NodeState.SUSPECT, 1), id="first-report-on-time-counts"),
    pytest.param([(40.0, 25.0), (40.0, 30.0), (40.0, 35.0)], (NodeState.LOST, 0),
                 id="reports-queued-in-the-outage-do-not-count"),
    pytest.param([(40.0, 25.0), (40.0, 30.0), (40.0, 35.0), (40.1, None), (45.0, None)],
                 (NodeState.SUSPECT, 1), id="counting-starts-once-reports-arrive-in-step"),
    pytest.param([(40.0, 25.0), (40.0, 35.0), (40.1, None), (45.0, None), (50.0, None)],
                 (NodeState.READY, 0), id="ready-after-two-timely-reports"),
    pytest.param([(40.0, None), (40.1, None), (40.2, None)], (NodeState.SUSPECT, 1),
                 id="a-burst-counts-once"),
    pytest.param([(40.0, None), (40.1, None), (42.5, None)], (NodeState.READY, 0),
                 id="half-an-interval-apart-counts-again"),
    pytest.param([(40.0, None), (45.0, 40.0 - 3.0)], (NodeState.SUSPECT, 1),
                 id="a-report-late-by-more-than-half-an-interval-does-not-count"),
])
def test_a_node_back_from_lost_counts_only_timely_reports(
        arrivals: list[tuple[float, float | None]], expected: tuple[NodeState, int]) -> None:
    inv = lost_with_skew()
    for arrived, sent in arrivals:
        node = report(inv, arrived, sent)
    assert (node.state, node.returning) == expected
    assert node.unreachable_since is None  # in contact all along: the grace does not run


def test_stale_reports_keep_a_lost_node_lost_and_say_why() -> None:
    inv = lost_with_skew()
    node = report(inv, 40.0, 30.0)
    assert (node.state, node.state_since) == (NodeState.LOST, 30.1)
    assert node.reason == "back after Lost; Ready after 2 consecutive reports (0 so far)"
    # Silent again: Lost again, and the count starts from zero.
    inv.tick(55.1)
    assert state(inv) == (NodeState.LOST, 55.1,
                          "no heartbeat for 15.1 s again while back from Lost")


# -- the controller's own outage pauses node liveness ------------------------------------


def test_a_paused_inventory_moves_no_node_however_long_the_silence() -> None:
    inv = reported(0.0)
    inv.pause(2.0)
    assert inv.next_change() is None
    assert inv.tick(1000.0) == []
    assert state(inv) == (NodeState.READY, 0.0, "")


def test_after_resume_every_ready_node_gets_a_fresh_grace() -> None:
    inv = reported(0.0)
    inv.pause(2.0)
    inv.resume(100.0)
    assert inv.next_change() == pytest.approx(115.001)  # 3 intervals from the resume
    assert inv.tick(115.0) == []
    assert [n.state for n in inv.tick(115.01)] == [NodeState.SUSPECT]
    assert inv.tick(125.0) == []
    assert [n.state for n in inv.tick(125.01)] == [NodeState.LOST]


def test_after_resume_a_suspect_node_starts_its_grace_again_and_a_lost_one_stays_lost() -> None:
    inv = reported(0.0)
    inv.observe_capacity("gone", "boot-1", capacity(), 0.0)
    inv.observe_presence("gone", "boot-1", OFFLINE, 1.0)  # Lost at 11
    inv.observe_capacity("n1", "boot-1", capacity(), 8.0)
    inv.observe_presence("n1", "boot-1", OFFLINE, 9.0)  # Suspect: grace over at 19
    inv.tick(11.0)
    assert (inv.nodes["n1"].state, inv.nodes["gone"].state) == (
        NodeState.SUSPECT, NodeState.LOST)
    inv.pause(12.0)
    assert inv.tick(40.0) == []  # n1's grace would have been over at 19
    inv.resume(40.0)
    assert inv.nodes["n1"].out_of_contact(45.0) == 5.0
    assert inv.tick(49.9) == []
    assert [(n.name, n.state) for n in inv.tick(50.0)] == [("n1", NodeState.LOST)]
    assert inv.nodes["gone"].state is NodeState.LOST


def test_with_the_pause_off_silence_counts_while_the_controller_is_cut_off() -> None:
    inv = reported(0.0, Liveness(pause_when_cut_off=False))
    inv.pause(2.0)
    assert inv.paused_since is None
    assert [n.state for n in inv.tick(15.01)] == [NodeState.SUSPECT]
    inv.resume(20.0)  # no fresh grace either
    assert [n.state for n in inv.tick(25.01)] == [NodeState.LOST]
