"""The agent's event outbox on a real SQLite file: kept across a reopen (an agent
restart), oldest first, removed once sent, bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent import state as state_module
from edge_agent.state import LocalState


def test_events_survive_a_reopen_in_order_until_sent(tmp_path: Path) -> None:
    first = LocalState(tmp_path)
    a, _ = first.queue_event("root/v1/nodes/n1/events", b"exited", 1.0)
    b, _ = first.queue_event("root/v1/nodes/n1/events", b"running", 2.0)
    first.close()

    again = LocalState(tmp_path)
    assert again.pending_events() == [(a, "root/v1/nodes/n1/events", b"exited"),
                                      (b, "root/v1/nodes/n1/events", b"running")]
    again.event_sent(a)
    assert [row for row, *_ in again.pending_events()] == [b]
    again.close()


def test_a_full_outbox_drops_the_oldest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "OUTBOX_LIMIT", 3)
    local = LocalState(tmp_path)
    dropped = [local.queue_event("t", str(i).encode(), float(i))[1] for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert [payload for _, _, payload in local.pending_events()] == [b"2", b"3", b"4"]
    local.close()
