"""What changed between two revisions of a deployment, in an operator's words.

Pure: works on the native documents the store keeps per revision, so a
history can be shown for revisions written by any earlier version of the
model. ``edgefed rollout history`` prints one summary per revision:

    1   created: 3 replicas of myapp:1.0
    2   replicas 3 -> 5
    3   image myapp:1.0 -> myapp:1.1, cpu 100m -> 250m
    4   placement changed
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.errors import PolicyError
from policies.model import deployment_from_document, deployment_to_document

Document = Mapping[str, Any]


def normalized(document: Document) -> dict[str, Any]:
    """The document as the current model writes it, so that revisions stored by an
    older model compare equal when they mean the same; unchanged if it no longer parses."""
    try:
        return deployment_to_document(deployment_from_document(dict(document)))
    except PolicyError:
        return dict(document)


def summarize(previous: Document | None, current: Document) -> str:
    """``replicas 3 -> 5, image a -> b``: what ``current`` changes against ``previous``."""
    cur = normalized(current)
    spec, container = _part(cur, "spec"), _part(_part(cur, "spec"), "container")
    if previous is None:
        replicas = spec.get("replicas", 1)
        return (f"created: {replicas} replica{'s' if replicas != 1 else ''} of "
                f"{container.get('image', '?')}")
    prev = normalized(previous)
    old_spec = _part(prev, "spec")
    old_container = _part(old_spec, "container")
    changes: list[str] = []
    if _part(prev, "metadata").get("labels") != _part(cur, "metadata").get("labels"):
        changes.append("labels changed")
    if old_spec.get("replicas", 1) != spec.get("replicas", 1):
        changes.append(f"replicas {old_spec.get('replicas', 1)} -> {spec.get('replicas', 1)}")
    changes += _container_changes(old_container, container)
    old_restart = old_spec.get("restartPolicy", "Always")
    if old_restart != spec.get("restartPolicy", "Always"):
        changes.append(f"restartPolicy {old_restart} -> {spec.get('restartPolicy', 'Always')}")
    for key in sorted(set(old_spec) | set(spec)):
        if key not in ("replicas", "container", "restartPolicy") and (
                old_spec.get(key) != spec.get(key)):
            changes.append(f"{key} changed")
    return ", ".join(changes) or "no change"


def _container_changes(old: Document, new: Document) -> list[str]:
    out = []
    if old.get("image") != new.get("image"):
        out.append(f"image {old.get('image')} -> {new.get('image')}")
    old_res, new_res = _part(old, "resources"), _part(new, "resources")
    for key in sorted(set(old_res) | set(new_res)):
        if old_res.get(key) != new_res.get(key):
            out.append(f"{key} {old_res.get(key, 'none')} -> {new_res.get(key, 'none')}")
    for key in sorted(set(old) | set(new)):
        if key not in ("image", "resources") and old.get(key) != new.get(key):
            out.append(f"{key} changed")
    return out


def _part(document: Document, key: str) -> Mapping[str, Any]:
    value = document.get(key)
    return value if isinstance(value, Mapping) else {}


def history(revisions: Sequence[tuple[int, float, Document]], current: int) -> list[dict[str, Any]]:
    """One item per revision, oldest first, as ``GET .../revisions`` answers."""
    items = []
    previous: Document | None = None
    for revision, applied_at, document in revisions:
        items.append({"revision": revision, "applied_at": applied_at,
                      "current": revision == current, "summary": summarize(previous, document)})
        previous = document
    return items
