"""Which node a failover moved each slot from (keep-original) is in the controller's
SQLite file: kept across a reopen, forgotten with the slot or the deployment."""

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
