"""Rolling updates of the seed Compose example with real agents, the real broker and
Docker: one replica at a time with the seed's ``update_config`` (parallelism 1, delay
10s), and a revision whose containers exit 1 rolled back automatically; and (process
runtime, fast) a rollout that survives a controller restart.

Pacing is asserted from the event log the controller writes to its SQLite store, not
from the test's own clock."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from federation.localfed import LocalFederation
from tests.integration.conftest import REPO, tiny_image  # noqa: F401  (fixture)
from tests.support import edgefed, wait_until

SEED = REPO / "policies" / "examples" / "seed-compose.yaml"
SITES = ("a", "b", "c")


def api(fed: LocalFederation, path: str) -> Any:
    with urllib.request.urlopen(f"{fed.server}/api/v1/{path}", timeout=5) as answer:
        return json.load(answer)


def start(fed: LocalFederation) -> None:
    fed.start_controller()
    for site in SITES:
        fed.start_agent(f"{site}1-{fed.tag}", f"site-{site}", extra=["--report-interval", "0.5"])
    wait_until(lambda: sum(n["state"] == "Ready" for n in api(fed, "nodes")["items"]) == 3,
               timeout=30, what="3 Ready nodes")


def seed_copy(tmp_path: Path, name: str, *, version: str, command: list[str] | None = None,
              **update_config: object) -> Path:
    """The seed Compose file as it is, except: no host port (three replicas share this
    machine's one port 80), an environment that marks the revision, optionally a command
    and ``update_config`` entries added."""
    doc = yaml.safe_load(SEED.read_text())
    service = doc["services"]["myapp"]
    del service["ports"]
    service["environment"] = {"VERSION": version}
    if command is not None:
        service["command"] = command
    service["deploy"]["update_config"].update(update_config)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def events(fed: LocalFederation, kind: str) -> list[tuple[float, str]]:
    """(at, message) of the controller's stored events of ``kind``, oldest first."""
    db = sqlite3.connect(f"file:{fed.workdir / 'controller.db'}?mode=ro", uri=True)
    try:
        return list(db.execute("SELECT at, message FROM events WHERE deployment = 'myapp' AND "
                               "kind = ? ORDER BY id", (kind,)))
    finally:
        db.close()


def rollout_to(fed: LocalFederation, revision: int) -> None:
    """Wait for the controller to begin the rollout to ``revision`` (or a later one: a
    rollback may follow within a second)."""
    wait_until(lambda: (api(fed, "deployments/myapp").get("rollout") or {}).get(
        "to_revision", 0) >= revision, timeout=10, what=f"the rollout to revision {revision}")


def pods(fed: LocalFederation) -> list[dict[str, Any]]:
    return list(api(fed, "pods")["items"])


def all_running(fed: LocalFederation, revision: int | None = None) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        found = pods(fed)
        ok = len(found) == 3 and all(p["state"] == "Running" for p in found)
        if revision is not None:
            ok = ok and all(p["revision"] == revision for p in found)
        return found if ok else None

    return wait_until(check, timeout=60, what="3 running replicas"
                      + (f" at revision {revision}" if revision else ""), interval=0.2)


def running_versions(fed: LocalFederation) -> list[str]:
    """VERSION of every running container of this test, read from Docker itself."""
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=edgefed.test={fed.tag}"],
                         capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return []
    inspected = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True,
                                          text=True, check=True).stdout)
    return sorted(next((e.split("=", 1)[1] for e in c["Config"]["Env"]
                        if e.startswith("VERSION=")), "?") for c in inspected)


def test_seed_update_config_replaces_one_at_a_time_with_the_delay(make_federation, tmp_path,
                                                                   tiny_image):  # noqa: F811
    seed = yaml.safe_load(SEED.read_text())["services"]["myapp"]["deploy"]
    assert seed["update_config"] == {"parallelism": 1, "delay": "10s"}
    assert seed["restart_policy"] == {"condition": "on-failure"}
    fed = make_federation("docker")
    start(fed)
    edgefed("apply", "-f", str(seed_copy(tmp_path, "v1.yaml", version="1")), server=fed.server)
    all_running(fed, revision=1)

    applied = edgefed("apply", "-f", str(seed_copy(tmp_path, "v2.yaml", version="2")),
                      server=fed.server)
    assert "not enforced" not in applied.stderr  # the rollout is enforced: no warning
    rollout_to(fed, 2)
    followed = edgefed("rollout", "status", "myapp", "--timeout", "90", server=fed.server,
                       timeout=100)
    assert "revision 1 -> 2" in followed.stdout
    assert "3/3 updated: revision 2 rolled out: 3 replica(s) in 3 batch(es)" in followed.stdout
    final = all_running(fed, revision=2)
    assert running_versions(fed) == ["2", "2", "2"]

    batches = events(fed, "RolloutBatch")
    ready = events(fed, "RolloutBatchReady")
    assert [m for _, m in batches] == [f"batch {i}/3: replacing myapp/{i - 1} with revision 2"
                                       for i in (1, 2, 3)]
    assert len(ready) == 3
    for (started, _), (was_ready, _), (following, _) in zip(batches, ready, batches[1:],
                                                             strict=False):
        # One at a time: a batch starts only after the previous one runs, plus the delay.
        assert started < was_ready
        assert following - was_ready >= 10.0
    # And each replica was placed anew in its own batch, not before.
    scheduled = [(at, m) for at, m in events(fed, "Scheduled") if "template changed" in m]
    assert len(scheduled) == 3
    for (at, message), (started, _) in zip(scheduled, batches, strict=True):
        assert at >= started
        assert message.startswith(f"myapp/{batches.index((started, _))}")
    assert [e for e in events(fed, "RolloutComplete")]
    described = edgefed("describe", "deployment", "myapp", server=fed.server).stdout
    assert "Rollout:" in described and "revision 2 rolled out" in described
    assert len({p["node"] for p in final}) == 3


def test_a_failing_revision_is_rolled_back_automatically(make_federation, tmp_path,
                                                         tiny_image):  # noqa: F811
    fed = make_federation("docker")
    start(fed)
    # The seed's update_config (parallelism 1, delay 10s) with failure_action: rollback
    # (Swarm's default, like edgefed's, is pause). The 10 s delay is what lets the failure
    # be seen before the next batch starts, as in Swarm.
    edgefed("apply", "-f", str(seed_copy(tmp_path, "v1.yaml", version="1",
                                         failure_action="rollback")),
            server=fed.server)
    before = {p["slot"]: p for p in all_running(fed, revision=1)}

    bad = seed_copy(tmp_path, "v2.yaml", version="2", command=["sh", "-c", "exit 1"],
                    failure_action="rollback")
    t0 = time.time()
    edgefed("apply", "-f", str(bad), server=fed.server)
    rollout_to(fed, 2)
    followed = edgefed("rollout", "status", "myapp", "--timeout", "60", server=fed.server,
                       check=False, timeout=70)
    assert followed.returncode == 1, followed.stdout + followed.stderr
    assert "revision 2 rolled back: myapp/0 failed:" in followed.stderr

    failed = events(fed, "RolloutFailed")
    assert len(failed) == 1
    assert failed[0][1].startswith("revision 2 failed (myapp/0 failed: ")
    assert "rolling back to revision 1" in failed[0][1]
    assert failed[0][0] - t0 < 30
    # Revision 3 is revision 1's template again; only myapp/0 ever got revision 2.
    final = {p["slot"]: p for p in all_running(fed)}
    assert final[0]["revision"] == 3
    assert final[0]["generation"] > before[0]["generation"] + 1
    for slot in (1, 2):
        assert (final[slot]["generation"], final[slot]["revision"]) == (
            before[slot]["generation"], 1)
    assert wait_until(lambda: running_versions(fed) == ["1", "1", "1"], timeout=20,
                      what="only VERSION=1 containers running")
    history = edgefed("rollout", "history", "myapp", "-o", "json", server=fed.server).stdout
    assert [i["revision"] for i in json.loads(history)] == [1, 2, 3]
    deployment = api(fed, "deployments/myapp")
    assert deployment["document"]["spec"]["container"].get("command") is None
    assert deployment["rollout"]["rolled_back"].startswith("revision 2 rolled back: myapp/0 "
                                                           "failed: ")
    described = edgefed("describe", "deployment", "myapp", server=fed.server).stdout
    assert "revision 2 rolled back" in described


NATIVE = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: myapp
spec:
  replicas: 3
  container:
    image: none
    command: ["sh", "-c", "exec sleep {marker}"]
    env: {{VERSION: "{version}"}}
    resources: {{cpu: 50m, memory: 8Mi}}
  rollout: {{parallelism: 1, delay: 4s}}
"""


def test_a_controller_restart_mid_rollout_resumes_it(make_federation, tmp_path):
    """Process runtime (fast): the controller is restarted during the delay after batch 1;
    the restarted one goes on with batch 2 when the stored delay is over."""
    fed = make_federation("process")
    start(fed)
    marker = str(random.randint(10**6, 10**7))
    path = tmp_path / "myapp.yaml"
    path.write_text(NATIVE.format(marker=marker, version="1"))
    edgefed("apply", "-f", str(path), server=fed.server)
    all_running(fed, revision=1)
    path.write_text(NATIVE.format(marker=marker, version="2"))
    edgefed("apply", "-f", str(path), server=fed.server)
    wait_until(lambda: events(fed, "RolloutBatchReady"), timeout=20, what="batch 1 ready")
    assert fed.controller is not None
    fed.controller.stop()
    fed.start_controller()
    restarted_at = time.time()
    followed = edgefed("rollout", "status", "myapp", "--timeout", "60", server=fed.server,
                       timeout=70)
    assert "revision 2 rolled out: 3 replica(s) in 3 batch(es)" in followed.stdout
    all_running(fed, revision=2)
    assert len(events(fed, "RolloutStarted")) == 1  # resumed, not begun afresh
    batches, ready = events(fed, "RolloutBatch"), events(fed, "RolloutBatchReady")
    assert [m.split(":")[1] for _, m in batches] == [
        f" replacing myapp/{i} with revision 2" for i in range(3)]
    assert ready[0][0] < restarted_at < batches[1][0]  # batch 2 is the new controller's
    for (was_ready, _), (following, _) in zip(ready, batches[1:], strict=False):
        assert following - was_ready >= 4.0
