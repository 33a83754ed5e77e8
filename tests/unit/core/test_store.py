"""The controller's SQLite store: which node a failover moved each slot from is
kept across a reopen and forgotten with the slot or the deployment; the event
history is bounded."""

from __future__ import annotations

from pathlib import Path

from federation.store import Store


def test_replaced_from_survives_a_reopen_and_goes_with_its_slot(tmp_path: Path) -> None:
    db = tmp_path / "controller.db"
    store = Store(db)
    store.set_replaced_from(("cache", 0), "pi-berlin-1")
    store.set_replaced_from(("cache", 1), "pi-berlin-2")
    store.set_replaced_from(("web", 0), "edge-lisbon-1")
    store.set_replaced_from(("cache", 1), None)  # placed again for another reason
    store.close()

    store = Store(db)
    assert store.load_replaced_from() == {("cache", 0): "pi-berlin-1",
                                          ("web", 0): "edge-lisbon-1"}
    store.forget_slot("cache", 0)
    store.purge("web")
    assert store.load_replaced_from() == {}
    store.close()


def test_only_the_newest_events_are_kept(tmp_path: Path) -> None:
    store = Store(tmp_path / "controller.db", events_kept=10)
    for i in range(1, 36):
        store.record_event(float(i), "Scheduled", f"event {i}", deployment="web")
    kept = store.events("web", limit=100)
    assert len(kept) <= 11  # pruned every tenth of the bound
    assert [e["message"] for e in kept[-10:]] == [f"event {i}" for i in range(26, 36)]
    store.close()
