"""Revision summaries say what changed, in the words `rollout history` prints."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from federation.revisions import history, normalized, summarize


def doc(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"replicas": 3, "container": {"image": "web:1"}}
    for key, value in spec.items():
        if key == "container":
            base["container"] = {**base["container"], **value}
        else:
            base[key] = value
    return {"apiVersion": "edgefed.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": base}


def labelled(document: dict[str, Any], **labels: str) -> dict[str, Any]:
    out = copy.deepcopy(document)
    out["metadata"]["labels"] = labels
    return out


@pytest.mark.parametrize(("previous", "current", "summary"), [
    pytest.param(None, doc(), "created: 3 replicas of web:1", id="first"),
    pytest.param(None, doc(replicas=1), "created: 1 replica of web:1", id="first-one"),
    pytest.param(doc(), doc(replicas=5), "replicas 3 -> 5", id="scale"),
    pytest.param(doc(), doc(container={"image": "web:2"}), "image web:1 -> web:2", id="image"),
    pytest.param(doc(), doc(container={"resources": {"cpu": "250m"}}), "cpu none -> 250m",
                 id="cpu-added"),
    pytest.param(doc(container={"resources": {"cpu": "100m", "memory": "64Mi"}}),
                 doc(container={"resources": {"cpu": "200m", "memory": "64Mi"}}),
                 "cpu 100m -> 200m", id="cpu"),
    pytest.param(doc(), doc(container={"env": {"A": "1"}, "command": ["sh"]}),
                 "command changed, env changed", id="other-container-fields"),
    pytest.param(doc(), doc(restartPolicy="Never"), "restartPolicy Always -> Never",
                 id="restart-policy"),
    pytest.param(doc(), doc(placement={"nodeSelector": {"matchLabels": {"arch": "arm64"}}}),
                 "placement changed", id="placement"),
    pytest.param(doc(), labelled(doc(), app="web"), "labels changed", id="labels"),
    pytest.param(doc(), doc(replicas=5, container={"image": "web:2"}),
                 "replicas 3 -> 5, image web:1 -> web:2", id="several"),
    pytest.param(doc(), doc(), "no change", id="same"),
    # Written with a default spelled out: it means the same spec.
    pytest.param(doc(), doc(restartPolicy="Always"), "no change", id="default-spelled-out"),
])
def test_summarize(previous: dict[str, Any] | None, current: dict[str, Any],
                   summary: str) -> None:
    assert summarize(previous, current) == summary


def test_a_document_that_no_longer_validates_is_compared_as_stored() -> None:
    broken = doc(replicas="many")
    assert normalized(broken) == broken
    assert summarize(doc(), broken) == "replicas 3 -> many"


def test_history_marks_the_current_revision_and_summarizes_each() -> None:
    revisions = [(1, 10.0, doc()), (2, 20.0, doc(replicas=5)), (3, 30.0, doc())]
    assert history(revisions, current=3) == [
        {"revision": 1, "applied_at": 10.0, "current": False,
         "summary": "created: 3 replicas of web:1"},
        {"revision": 2, "applied_at": 20.0, "current": False, "summary": "replicas 3 -> 5"},
        {"revision": 3, "applied_at": 30.0, "current": True, "summary": "replicas 5 -> 3"},
    ]
