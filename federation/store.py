"""Desired state on disk: a SQLite file that survives controller restarts.

Holds deployments with their revision history, placement policies, slots
(where each replica is meant to run, at which generation, and why), the
highest generation ever issued per slot (fencing survives scale-down and up),
each deployment's rollout progress and an event log.
Observed state is not stored: agents' retained capacity reports rebuild it
within a second of the controller (re)connecting. Writes are tiny transactions
in WAL mode; the controller keeps the desired state in memory and writes
through.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from federation.model import DeploymentRecord, Desired, SlotKey, SlotRecord
from federation.revisions import normalized
from federation.rollout import RolloutState
from federation.rollout import from_document as rollout_from_document
from federation.rollout import to_document as rollout_to_document
from policies.model import (
    Deployment,
    PlacementPolicy,
    deployment_from_document,
    deployment_to_document,
    policy_from_document,
    policy_to_document,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    document TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS revisions (
    name TEXT NOT NULL,
    revision INTEGER NOT NULL,
    document TEXT NOT NULL,
    applied_at REAL NOT NULL,
    PRIMARY KEY (name, revision)
);
CREATE TABLE IF NOT EXISTS slots (
    deployment TEXT NOT NULL,
    idx INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    template TEXT NOT NULL,
    node TEXT,
    assigned_at REAL NOT NULL,
    explanation TEXT,
    PRIMARY KEY (deployment, idx)
);
CREATE TABLE IF NOT EXISTS generations (
    deployment TEXT NOT NULL,
    idx INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (deployment, idx)
);
CREATE TABLE IF NOT EXISTS replacements (
    deployment TEXT NOT NULL,
    idx INTEGER NOT NULL,
    from_node TEXT NOT NULL,
    PRIMARY KEY (deployment, idx)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    deployment TEXT,
    slot INTEGER,
    node TEXT,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_deployment ON events (deployment, id);
CREATE TABLE IF NOT EXISTS rollouts (
    deployment TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS placement_policies (
    name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


# Events kept in the store at most (the newest); the rest are deleted as new ones come,
# so a controller running for months on a small disk stays bounded (~200 bytes each).
EVENTS_KEPT = 100_000


class Store:
    def __init__(self, path: str | Path, *, events_kept: int = EVENTS_KEPT) -> None:
        if events_kept < 1:
            raise ValueError(f"events_kept must be at least 1, not {events_kept}")
        self.events_kept = events_kept
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # -- desired state ---------------------------------------------------------

    def load_desired(self) -> Desired:
        deployments = {}
        for name, revision, document, deleted in self.db.execute(
            "SELECT name, revision, document, deleted FROM deployments"
        ):
            spec = deployment_from_document(json.loads(document))
            deployments[name] = DeploymentRecord(spec=spec, revision=revision, deleted=bool(deleted))
        slots: dict[SlotKey, SlotRecord] = {}
        for dep, idx, gen, rev, template, node, at, expl in self.db.execute(
            "SELECT deployment, idx, generation, revision, template, node, assigned_at, explanation"
            " FROM slots"
        ):
            slots[(dep, idx)] = SlotRecord(deployment=dep, index=idx, generation=gen, revision=rev,
                                           template=template, node=node, assigned_at=at,
                                           explanation=json.loads(expl) if expl else None)
        return Desired(deployments=deployments, slots=slots)

    def apply(self, spec: Deployment, now: float) -> tuple[DeploymentRecord, bool]:
        """Store ``spec`` as the next revision unless it equals the current one."""
        document = _dumps(deployment_to_document(spec))
        row = self.db.execute(
            "SELECT revision, document, deleted FROM deployments WHERE name = ?", (spec.name,)
        ).fetchone()
        # Compared as the current model writes it: a document stored by an older
        # model that means the same spec is the same revision.
        if row is not None and _dumps(normalized(json.loads(row[1]))) == document and not row[2]:
            return DeploymentRecord(spec=spec, revision=row[0]), False
        last = self.db.execute(
            "SELECT MAX(revision) FROM revisions WHERE name = ?", (spec.name,)
        ).fetchone()[0] or 0
        revision = last + 1
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO deployments (name, revision, document, deleted, created_at, updated_at)"
                " VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT(name) DO UPDATE SET revision=excluded.revision,"
                " document=excluded.document, deleted=0, updated_at=excluded.updated_at",
                (spec.name, revision, document, now, now),
            )
            self.db.execute(
                "INSERT INTO revisions (name, revision, document, applied_at) VALUES (?, ?, ?, ?)",
                (spec.name, revision, document, now),
            )
        return DeploymentRecord(spec=spec, revision=revision), True

    def mark_deleted(self, name: str, now: float) -> bool:
        cur = self.db.execute(
            "UPDATE deployments SET deleted = 1, updated_at = ? WHERE name = ? AND deleted = 0",
            (now, name),
        )
        return cur.rowcount > 0

    def purge(self, name: str) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM deployments WHERE name = ?", (name,))
            self.db.execute("DELETE FROM slots WHERE deployment = ?", (name,))
            self.db.execute("DELETE FROM generations WHERE deployment = ?", (name,))
            self.db.execute("DELETE FROM revisions WHERE name = ?", (name,))
            self.db.execute("DELETE FROM rollouts WHERE deployment = ?", (name,))
            self.db.execute("DELETE FROM replacements WHERE deployment = ?", (name,))

    # -- placement policies ----------------------------------------------------

    def load_policies(self) -> dict[str, PlacementPolicy]:
        return {name: policy_from_document(json.loads(document)) for name, document in
                self.db.execute("SELECT name, document FROM placement_policies")}

    def put_policy(self, policy: PlacementPolicy, now: float) -> bool:
        """Store ``policy``; False when it equals the stored one (nothing changed)."""
        document = _dumps(policy_to_document(policy))
        row = self.db.execute("SELECT document FROM placement_policies WHERE name = ?",
                              (policy.name,)).fetchone()
        if row is not None and _dumps(policy_to_document(
                policy_from_document(json.loads(row[0])))) == document:
            return False
        self.db.execute(
            "INSERT INTO placement_policies (name, document, priority, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET document=excluded.document,"
            " priority=excluded.priority, updated_at=excluded.updated_at",
            (policy.name, document, policy.priority, now, now))
        return True

    def delete_policy(self, name: str) -> bool:
        return self.db.execute("DELETE FROM placement_policies WHERE name = ?",
                               (name,)).rowcount > 0

    def policy_created_at(self, name: str) -> float | None:
        row = self.db.execute("SELECT created_at FROM placement_policies WHERE name = ?",
                              (name,)).fetchone()
        return None if row is None else float(row[0])

    def revisions(self, name: str) -> list[tuple[int, float]]:
        return list(self.db.execute(
            "SELECT revision, applied_at FROM revisions WHERE name = ? ORDER BY revision", (name,)))

    def revision_documents(self, name: str) -> list[tuple[int, float, dict[str, Any]]]:
        """(revision, applied_at, document) of every stored revision, oldest first."""
        return [(rev, at, json.loads(doc)) for rev, at, doc in self.db.execute(
            "SELECT revision, applied_at, document FROM revisions WHERE name = ?"
            " ORDER BY revision", (name,))]

    def revision_document(self, name: str, revision: int) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT document FROM revisions WHERE name = ? AND revision = ?", (name, revision)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def created_at(self, name: str) -> float | None:
        row = self.db.execute("SELECT created_at FROM deployments WHERE name = ?", (name,)).fetchone()
        return None if row is None else float(row[0])

    # -- slots -----------------------------------------------------------------

    def next_generation(self, deployment: str, idx: int, at_least: int) -> int:
        """A generation higher than any ever issued for the slot (and >= at_least)."""
        row = self.db.execute(
            "SELECT generation FROM generations WHERE deployment = ? AND idx = ?", (deployment, idx)
        ).fetchone()
        return max(at_least, (row[0] + 1) if row else 1)

    def save_slot(self, slot: SlotRecord) -> None:
        expl = json.dumps(slot.explanation) if slot.explanation is not None else None
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO slots (deployment, idx, generation, revision, template,"
                " node, assigned_at, explanation) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (slot.deployment, slot.index, slot.generation, slot.revision, slot.template,
                 slot.node, slot.assigned_at, expl),
            )
            self.db.execute(
                "INSERT INTO generations (deployment, idx, generation) VALUES (?, ?, ?)"
                " ON CONFLICT(deployment, idx) DO UPDATE SET"
                " generation = MAX(generation, excluded.generation)",
                (slot.deployment, slot.index, slot.generation),
            )

    def forget_slot(self, deployment: str, idx: int) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM slots WHERE deployment = ? AND idx = ?",
                            (deployment, idx))
            self.db.execute("DELETE FROM replacements WHERE deployment = ? AND idx = ?",
                            (deployment, idx))

    # -- failover replacements (keep-original) ---------------------------------

    def load_replaced_from(self) -> dict[SlotKey, str]:
        """For each slot a failover replacement moved: the node it left."""
        return {(dep, idx): node for dep, idx, node in
                self.db.execute("SELECT deployment, idx, from_node FROM replacements")}

    def set_replaced_from(self, key: SlotKey, node: str | None) -> None:
        """Remember (or, with None, forget) the node a failover moved the slot from."""
        if node is None:
            self.db.execute("DELETE FROM replacements WHERE deployment = ? AND idx = ?", key)
        else:
            self.db.execute("INSERT OR REPLACE INTO replacements (deployment, idx, from_node)"
                            " VALUES (?, ?, ?)", (*key, node))

    # -- rollouts --------------------------------------------------------------

    def load_rollouts(self) -> dict[str, RolloutState]:
        """Every stored rollout; one that no longer reads is left out (the controller
        begins that deployment's rollout afresh)."""
        out = {}
        for name, document in self.db.execute("SELECT deployment, document FROM rollouts"):
            try:
                out[name] = rollout_from_document(json.loads(document))
            except (KeyError, ValueError, TypeError):
                continue
        return out

    def save_rollout(self, state: RolloutState, now: float) -> None:
        self.db.execute(
            "INSERT INTO rollouts (deployment, document, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(deployment) DO UPDATE SET document=excluded.document,"
            " updated_at=excluded.updated_at",
            (state.deployment, _dumps(rollout_to_document(state)), now))

    def delete_rollout(self, deployment: str) -> None:
        self.db.execute("DELETE FROM rollouts WHERE deployment = ?", (deployment,))

    # -- events ----------------------------------------------------------------

    def record_event(self, at: float, kind: str, message: str, *, deployment: str | None = None,
                     slot: int | None = None, node: str | None = None) -> None:
        row = self.db.execute(
            "INSERT INTO events (at, kind, deployment, slot, node, message) VALUES (?, ?, ?, ?, ?, ?)",
            (at, kind, deployment, slot, node, message),
        ).lastrowid
        # Ids only grow: every tenth of the bound, delete all but the newest events_kept
        # (so the table holds at most 1.1 times that many).
        if row is not None and row % max(1, self.events_kept // 10) == 0:
            self.db.execute("DELETE FROM events WHERE id <= ?", (row - self.events_kept,))

    def events(self, deployment: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if deployment is None:
            rows = self.db.execute(
                "SELECT at, kind, deployment, slot, node, message FROM events ORDER BY id DESC LIMIT ?",
                (limit,))
        else:
            rows = self.db.execute(
                "SELECT at, kind, deployment, slot, node, message FROM events WHERE deployment = ?"
                " ORDER BY id DESC LIMIT ?", (deployment, limit))
        keys = ("at", "kind", "deployment", "slot", "node", "message")
        return [dict(zip(keys, row, strict=True)) for row in rows][::-1]


def _dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True)
