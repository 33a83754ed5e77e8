"""The agent's desired state on local disk (SQLite), so it keeps running its
workloads without broker or controller, including across a reboot; and its
outbox: instance events not yet acknowledged by the broker, so what happened
while offline reaches the controller even if the agent restarts first."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from pathlib import Path

from edge_agent.commands import LocalSlot, Want
from federation.wire import PortBody, WorkloadBody

SCHEMA = """
CREATE TABLE IF NOT EXISTS slots (
    deployment TEXT NOT NULL,
    slot INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    want TEXT NOT NULL,
    workload TEXT,
    PRIMARY KEY (deployment, slot)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queued_at REAL NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""
# Events kept for the broker at most; past it the oldest go (a node offline for days
# keeps its latest history, and the disk use stays bounded: ~1 KiB each).
OUTBOX_LIMIT = 10_000


def _workload_from_json(text: str | None) -> WorkloadBody | None:
    if not text:
        return None
    raw = json.loads(text)
    raw["command"] = tuple(raw["command"])
    raw["args"] = tuple(raw["args"])
    raw["ports"] = tuple(PortBody(**p) for p in raw["ports"])
    return WorkloadBody(**raw)


class LocalState:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(state_dir / "agent.db", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)

    def all(self) -> dict[tuple[str, int], LocalSlot]:
        out = {}
        for dep, slot, gen, rev, want, workload in self.db.execute(
            "SELECT deployment, slot, generation, revision, want, workload FROM slots"
        ):
            out[(dep, slot)] = LocalSlot(deployment=dep, slot=slot, generation=gen, revision=rev,
                                         want=Want(want), workload=_workload_from_json(workload))
        return out

    def put(self, slot: LocalSlot) -> None:
        workload = json.dumps(asdict(slot.workload)) if slot.workload else None
        self.db.execute(
            "INSERT OR REPLACE INTO slots (deployment, slot, generation, revision, want, workload)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (slot.deployment, slot.slot, slot.generation, slot.revision, slot.want.value, workload),
        )

    def queue_event(self, topic: str, payload: bytes, now: float) -> tuple[int, int]:
        """Keep an event until the broker acknowledges it: (its id, how many of the
        oldest were dropped to stay within OUTBOX_LIMIT)."""
        row = self.db.execute("INSERT INTO outbox (queued_at, topic, payload) VALUES (?, ?, ?)",
                              (now, topic, payload)).lastrowid
        assert row is not None
        dropped = self.db.execute("DELETE FROM outbox WHERE id <= ?", (row - OUTBOX_LIMIT,))
        return row, dropped.rowcount

    def pending_events(self) -> list[tuple[int, str, bytes]]:
        """Events not yet acknowledged, oldest first."""
        return [(row, topic, bytes(payload)) for row, topic, payload in
                self.db.execute("SELECT id, topic, payload FROM outbox ORDER BY id")]

    def event_sent(self, row: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE id = ?", (row,))

    def close(self) -> None:
        self.db.close()
