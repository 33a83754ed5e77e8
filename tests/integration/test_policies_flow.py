"""Deployment policies end to end with the real controller and process-runtime
agents: revision history and undo, `get -o yaml` round trips, PlacementPolicy
objects, residency, `plan` moves and warnings for what is not enforced yet."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

from federation.localfed import LocalFederation
from tests.integration.test_core_loop import SEED
from tests.support import edgefed, get_json, wait_until

WORKER = """\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}, data: personal}}
spec:
  replicas: {replicas}
  container:
    image: none
    command: ["sh", "-c", "exec sleep {marker}"]
    resources:
      cpu: 50m
      memory: 8Mi
"""


def marker() -> str:
    return str(random.randint(10**6, 10**7))


def start(fed: LocalFederation, sites: dict[str, str]) -> dict[str, str]:
    """A controller plus one agent per site (site -> labels); returns site -> node."""
    fed.start_controller("--lost-after", "30")
    nodes = {}
    for site, labels in sites.items():
        node = f"{site}-{fed.tag}"
        fed.start_agent(node, site, labels=labels, extra=["--report-interval", "1"])
        nodes[site] = node
    wait_until(lambda: len([n for n in get_json("nodes", fed.server) if n["state"] == "Ready"])
               == len(sites), timeout=30, what=f"{len(sites)} Ready nodes")
    return nodes


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def running(fed: LocalFederation, deployment: str, count: int, *,
            revision: int | None = None) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        pods = [p for p in get_json("pods", fed.server) if p["deployment"] == deployment]
        ok = len(pods) == count and all(
            p["state"] == "Running" and (revision is None or p["revision"] == revision)
            for p in pods)
        return pods if ok else None

    return wait_until(check, timeout=60, what=f"{count} running pods of {deployment}"
                      + (f" at revision {revision}" if revision else ""))


# -- revisions ------------------------------------------------------------------------


def test_rollout_history_and_undo(make_federation, tmp_path):
    fed = make_federation("process")
    start(fed, {"site-a": "", "site-b": ""})
    mark = marker()
    path = tmp_path / "worker.yaml"
    write(path, WORKER.format(name="worker", replicas=2, marker=mark))
    edgefed("apply", "-f", str(path), server=fed.server)
    write(path, WORKER.format(name="worker", replicas=3, marker=mark))
    edgefed("apply", "-f", str(path), server=fed.server)
    write(path, WORKER.format(name="worker", replicas=3, marker=mark).replace("exec sleep",
                                                                              "exec  sleep"))
    edgefed("apply", "-f", str(path), server=fed.server)
    running(fed, "worker", 3, revision=3)

    items = json.loads(edgefed("rollout", "history", "worker", "-o", "json",
                               server=fed.server).stdout)
    assert [(i["revision"], i["current"], i["summary"]) for i in items] == [
        (1, False, "created: 2 replicas of none"),
        (2, False, "replicas 2 -> 3"),
        (3, True, "command changed"),
    ]
    table = edgefed("rollout", "history", "worker", server=fed.server).stdout.splitlines()
    assert table[0].split() == ["REVISION", "AGE", "CURRENT", "CHANGE"]
    assert table[3].split()[0] == "3" and table[3].split()[2:] == ["*", "command", "changed"]

    undo = edgefed("rollout", "undo", "worker", server=fed.server)
    assert undo.stdout == "deployment.edgefed.io/worker rolled back to revision 2 (revision 4)\n"
    running(fed, "worker", 3, revision=4)
    items = yaml.safe_load(edgefed("rollout", "history", "deployment/worker", "-o", "yaml",
                                   server=fed.server).stdout)
    assert [(i["revision"], i["current"]) for i in items][-2:] == [(3, False), (4, True)]
    assert items[-1]["summary"] == "command changed"
    document = yaml.safe_load(edgefed("get", "deployment", "worker", "-o", "yaml",
                                      server=fed.server).stdout)
    assert document["spec"]["container"]["command"][2] == f"exec sleep {mark}"

    same = edgefed("rollout", "undo", "worker", "--to-revision", "2", server=fed.server)
    assert same.stdout == ("deployment.edgefed.io/worker unchanged: already at revision 2's "
                           "template (revision 4)\n")
    missing = edgefed("rollout", "undo", "worker", "--to-revision", "9", server=fed.server,
                      check=False)
    assert (missing.returncode, missing.stderr) == (
        1, "error: deployment worker has no revision 9 (revisions: 1-4)\n")
    unknown = edgefed("rollout", "history", "nope", server=fed.server, check=False)
    assert (unknown.returncode, unknown.stderr) == (1, "error: deployment nope not found\n")


def test_get_yaml_round_trips_through_apply(make_federation, tmp_path):
    fed = make_federation("process")
    fed.start_controller()
    seed = write(tmp_path / "seed.yaml", SEED.format(replicas=3))
    first = edgefed("apply", "--allow-pending", "-f", seed, server=fed.server)
    assert first.stdout == "deployment.edgefed.io/myapp configured (revision 1)\n"
    for fmt in ("yaml", "json"):
        shown = edgefed("get", "deployment", "myapp", "-o", fmt, server=fed.server).stdout
        again = write(tmp_path / f"myapp.{fmt}", shown)
        document = yaml.safe_load(shown)
        assert (document["kind"], document["spec"]["replicas"]) == ("Deployment", 3)
        # Nothing changes, so nothing is checked against the (empty) inventory either.
        out = edgefed("apply", "-f", again, server=fed.server)
        assert out.stdout == "deployment.edgefed.io/myapp unchanged (revision 1)\n"
    listed = yaml.safe_load(edgefed("get", "deployments", "-o", "yaml", server=fed.server).stdout)
    assert [d["name"] for d in listed] == ["myapp"]
    missing = edgefed("get", "deployment", "nope", "-o", "yaml", server=fed.server, check=False)
    assert (missing.returncode, missing.stderr) == (1, "error: deployment nope not found\n")


# -- placement policies and plan ---------------------------------------------------------

EU_RESIDENCY = """\
apiVersion: edgefed.io/v1
kind: PlacementPolicy
metadata:
  name: eu-residency
spec:
  selector: {matchLabels: {data: personal}}
  priority: 10
  placement:
    residency: {countries: [de]}
"""

COUNTRIES = {"site-de": "country=de,region=eu-central", "site-us": "country=us,region=us-east"}


def pods_of(fed: LocalFederation, deployment: str) -> dict[int, dict[str, Any]]:
    return {p["slot"]: p for p in get_json("pods", fed.server) if p["deployment"] == deployment}


def test_residency_policy_moves_replicas_to_the_allowed_country(make_federation, tmp_path):
    fed = make_federation("process")
    nodes = start(fed, COUNTRIES)
    de, us = nodes["site-de"], nodes["site-us"]
    worker = write(tmp_path / "worker.yaml", WORKER.format(name="worker", replicas=2,
                                                           marker=marker()))
    edgefed("apply", "-f", worker, server=fed.server)
    before = {p["slot"]: p for p in running(fed, "worker", 2)}
    assert {p["node"] for p in before.values()} == {de, us}  # spread over both sites
    on_us = next(s for s, p in before.items() if p["node"] == us)
    on_de = 1 - on_us

    policy = write(tmp_path / "eu.yaml", EU_RESIDENCY)
    plan = json.loads(edgefed("plan", "-f", policy, "-o", "json", server=fed.server).stdout)
    (planned,) = plan["deployments"]
    assert (planned["name"], planned["policies"]) == ("worker", ["eu-residency"])
    assert planned["summary"] == {"stays": 1, "moves": 1}
    moving = planned["slots"][on_us]
    assert (moving["change"], moving["from"], moving["node"]) == ("moves", us, de)
    assert moving["reason"] == f"node {us} no longer fits: country is us, residency allows de"
    assert moving["message"].startswith(f"1/2 nodes fit; chose {de} ")
    assert moving["message"].endswith("refused: 1 country is us, residency allows de")
    table = edgefed("plan", "-f", policy, server=fed.server).stdout
    assert f"moves from {us}" in table
    assert table.splitlines()[-1] == "worker: 1 staying, 1 moving (policies: eu-residency)"
    assert pods_of(fed, "worker")[on_us]["node"] == us  # a plan changes nothing

    out = edgefed("apply", "-f", policy, server=fed.server)
    assert out.stdout == "placementpolicy.edgefed.io/eu-residency configured\n"
    wait_until(lambda: all(p["node"] == de and p["state"] == "Running"
                           for p in pods_of(fed, "worker").values()),
               timeout=60, what="both replicas running on the de node")
    after = pods_of(fed, "worker")
    # Only the replica in the us moved; the other kept running, untouched.
    assert after[on_de]["generation"] == before[on_de]["generation"]
    assert after[on_us]["generation"] > before[on_us]["generation"]

    listed = edgefed("get", "pp", server=fed.server).stdout.splitlines()
    assert listed[0].split() == ["NAME", "PRIORITY", "SELECTOR", "DEPLOYMENTS", "AGE"]
    assert listed[1].split()[:4] == ["eu-residency", "10", "data=personal", "worker"]
    shown = edgefed("get", "placementpolicy", "eu-residency", "-o", "yaml", server=fed.server)
    again = write(tmp_path / "eu-again.yaml", shown.stdout)
    assert edgefed("apply", "-f", again, server=fed.server).stdout == (
        "placementpolicy.edgefed.io/eu-residency unchanged\n")
    described = edgefed("describe", "deployment", "worker", server=fed.server).stdout
    assert "Policies:       eu-residency (priority 10)\n" in described
    assert "  Residency:     countries de\n" in described
    # The event log says why the replica moved (its MESSAGE column wraps).
    assert f"node {us} no longer fits: country is us, residency allows de" in " ".join(
        described.split())

    deleted = edgefed("delete", "placementpolicy", "eu-residency", server=fed.server)
    assert deleted.stdout == "placementpolicy.edgefed.io/eu-residency deleted\n"
    assert edgefed("get", "placementpolicies", server=fed.server).stderr == (
        "no placement policies found\n")
    gone = edgefed("delete", "pp", "eu-residency", server=fed.server, check=False)
    assert (gone.returncode, gone.stderr) == (1, "error: placement policy eu-residency not "
                                                 "found\n")
    # Without the policy both replicas may stay where they are, and nothing restarts; a
    # third replica (placed by a later pass) may go to the us again.
    write(Path(worker), Path(worker).read_text().replace("replicas: 2", "replicas: 3"))
    edgefed("apply", "-f", worker, server=fed.server)
    scaled = {p["slot"]: p for p in running(fed, "worker", 3)}
    assert {s: scaled[s]["generation"] for s in after} == {
        s: p["generation"] for s, p in after.items()}
    assert scaled[2]["node"] == us  # spread over sites again


def test_policies_of_a_file_are_applied_first(make_federation, tmp_path):
    fed = make_federation("process")
    nodes = start(fed, COUNTRIES)
    both = write(tmp_path / "both.yaml", WORKER.format(name="worker", replicas=2, marker=marker())
                 + "---\n" + EU_RESIDENCY)
    out = edgefed("apply", "-f", both, server=fed.server)
    assert out.stdout == ("placementpolicy.edgefed.io/eu-residency configured\n"
                          "deployment.edgefed.io/worker configured (revision 1)\n")
    pods = running(fed, "worker", 2)
    assert {p["node"] for p in pods} == {nodes["site-de"]}


def test_plan_shows_the_unschedulable_histogram_and_warnings(make_federation, tmp_path):
    fed = make_federation("process")
    start(fed, COUNTRIES)
    text = WORKER.format(name="far", replicas=2, marker=marker()) + (
        "    volumes: [{name: data, hostPath: /srv/data, mountPath: /data}]\n"
        "  placement:\n"
        "    residency: {countries: [fr]}\n")
    path = write(tmp_path / "far.yaml", text)
    histogram = ("0/2 nodes fit: 1 country is de, residency allows fr, "
                 "1 country is us, residency allows fr")
    warning = ("warning: far: spec.container.volumes: host path volumes are not mounted yet; "
               "the runtime ignores them\n")

    plan = edgefed("plan", "-f", path, server=fed.server)
    assert plan.stderr == warning
    lines = plan.stdout.splitlines()
    assert lines[1].split()[:4] == ["far/0", "<none>", "<none>", "unschedulable"]
    assert histogram in " ".join(plan.stdout.split())
    assert lines[-1] == "far: 2 unschedulable"
    raw = json.loads(edgefed("plan", "-f", path, "-o", "json", server=fed.server).stdout)
    assert raw["deployments"][0]["warnings"] == [warning.split("far: ", 1)[1].strip()]
    assert [s["message"] for s in raw["deployments"][0]["slots"]] == [histogram] * 2

    refused = edgefed("apply", "-f", path, server=fed.server, check=False)
    assert refused.returncode == 1
    assert refused.stderr == (warning + "error: 2 of 2 replica(s) of far fit on no node; "
                              "nothing was changed (use --allow-pending to accept it anyway)\n"
                              f"  far/0: {histogram}\n  far/1: {histogram}\n")
    pending = edgefed("apply", "--allow-pending", "-f", path, server=fed.server)
    assert (pending.stdout, pending.stderr) == (
        "deployment.edgefed.io/far configured (revision 1)\n", warning)


def test_a_policy_that_strands_replicas_is_refused(make_federation, tmp_path):
    fed = make_federation("process")
    start(fed, COUNTRIES)
    worker = write(tmp_path / "worker.yaml", WORKER.format(name="worker", replicas=2,
                                                           marker=marker()))
    edgefed("apply", "-f", worker, server=fed.server)
    before = {p["slot"]: (p["node"], p["generation"]) for p in running(fed, "worker", 2)}
    france = write(tmp_path / "fr.yaml", EU_RESIDENCY.replace("[de]", "[fr]").replace(
        "    residency", "    split: [{sites: {matchLabels: {tier: edge}}, weight: 100}]\n"
                        "    residency"))
    split = ""  # the split is enforced: no warning, a reason in the histogram
    histogram = ("0/2 nodes fit: 2 site not in split group 1 (tier=edge, 100%: 0 of 2 placed), "
                 "1 country is de, residency allows fr, 1 country is us, residency allows fr")

    refused = edgefed("apply", "-f", france, server=fed.server, check=False)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        split + "error: 2 replica(s) would fit on no node under placement policy "
        "eu-residency; nothing was changed (use --allow-pending to accept it anyway)\n"
        f"  worker/0: {histogram}\n  worker/1: {histogram}\n")
    assert edgefed("get", "pp", server=fed.server).stderr == "no placement policies found\n"

    accepted = edgefed("apply", "--allow-pending", "-f", france, server=fed.server)
    assert (accepted.stdout, accepted.stderr) == (
        "placementpolicy.edgefed.io/eu-residency configured\n", split)
    # Nowhere else to go: the replicas keep running where they are, and say why.
    wait_until(lambda: " ".join(edgefed("describe", "deployment", "worker",
                                        server=fed.server).stdout.split()).count(histogram) >= 2,
               timeout=30, what="the unschedulable message on both running replicas")
    assert {p["slot"]: (p["node"], p["generation"]) for p in running(fed, "worker", 2)} == before


def test_a_policy_that_contradicts_the_deployment_is_refused_with_the_reason(make_federation,
                                                                              tmp_path):
    fed = make_federation("process")
    fed.start_controller()
    path = tmp_path / "contradiction.yaml"
    path.write_text(
        "apiVersion: edgefed.io/v1\nkind: PlacementPolicy\nmetadata:\n  name: eu-only\n"
        "spec:\n  selector: {matchLabels: {data: personal}}\n  placement:\n"
        "    residency: {countries: [de, fr]}\n"
        "---\n"
        "apiVersion: edgefed.io/v1\nkind: Deployment\nmetadata:\n  name: us-app\n"
        "  labels: {data: personal}\nspec:\n  container:\n    image: none\n"
        "    command: [sleep, '60']\n  placement:\n"
        "    siteSelector: {matchLabels: {country: us}}\n")
    out = edgefed("apply", "-f", str(path), "--allow-pending", server=fed.server, check=False)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "us-app with placement policies eu-only applied is invalid" in out.stderr
    assert "allows only de, fr, but siteSelector requires country=us" in out.stderr
    assert [d["name"] for d in get_json("deployments", fed.server)] == []


def test_optimal_strategy_places_the_batch_and_says_so(make_federation, tmp_path):
    fed = make_federation("process")
    nodes = start(fed, {"site-a": "", "site-b": ""})
    text = WORKER.format(name="solved", replicas=4, marker=marker()) + (
        "  placement:\n"
        "    strategy: optimal\n"
        "    maxPerNode: 2\n")
    path = write(tmp_path / "solved.yaml", text)
    plan = json.loads(edgefed("plan", "-f", path, "-o", "json", server=fed.server).stdout)
    assert all(s["message"].startswith("optimal (gap") for s in plan["deployments"][0]["slots"])
    edgefed("apply", "-f", path, server=fed.server)
    pods = running(fed, "solved", 4)
    assert sorted(p["node"] for p in pods) == sorted([nodes["site-a"], nodes["site-b"]] * 2)
    described = json.loads(edgefed("describe", "deployment", "solved", "-o", "json",
                                   server=fed.server).stdout)
    whys = [s["why"] for s in described["slots"]]
    assert len(whys) == 4 and all(w.startswith("optimal (gap") for w in whys), whys


def test_optimal_batches_past_a_pass_solver_time_wait_for_a_later_pass(make_federation,
                                                                          tmp_path):
    """With no solver time a pass solves only its first optimal batch and leaves the
    rest for the next, which solves them first: a batch that never fits (``held``,
    first in every pass's order) does not keep another from being solved."""
    fed = make_federation("process")
    fed.start_controller("--lost-after", "30", "--solver-seconds", "0")
    optimal = "  placement:\n    strategy: optimal\n"
    texts = [WORKER.format(name="held", replicas=1, marker=marker()) + optimal
             + "    nodeSelector: {matchLabels: {disk: none}}\n",
             WORKER.format(name="solved", replicas=2, marker=marker()) + optimal]
    path = write(tmp_path / "both.yaml", "---\n".join(texts))
    # Accepted before any node is there, both wait in every pass until one is.
    edgefed("apply", "-f", path, "--allow-pending", server=fed.server)
    log = fed.workdir / "controller.log"
    wait_until(lambda: "left for the next pass" in log.read_text(), timeout=20,
               what="a pass leaving an optimal batch")
    for site in ("site-a", "site-b"):
        fed.start_agent(f"{site}-{fed.tag}", site, extra=["--report-interval", "1"])
    running(fed, "solved", 2)
    described = json.loads(edgefed("describe", "deployment", "solved", "-o", "json",
                                   server=fed.server).stdout)
    whys = [s["why"] for s in described["slots"]]
    assert len(whys) == 2 and all(w.startswith("optimal (gap") for w in whys), whys
    held = json.loads(edgefed("describe", "deployment", "held", "-o", "json",
                               server=fed.server).stdout)
    assert [s["node"] for s in held["slots"]] == [None]
    # Said once when passes began leaving batches, not on every pass since.
    assert log.read_text().count("left for the next pass") == 1


def test_device_requests_go_to_the_nodes_that_report_them(make_federation, tmp_path):
    fed = make_federation("process")
    fed.start_controller("--lost-after", "30")
    plain, tpu = f"plain-{fed.tag}", f"tpu-{fed.tag}"
    fed.start_agent(plain, "site-a", extra=["--report-interval", "1"])
    fed.start_agent(tpu, "site-b", extra=["--report-interval", "1", "--device",
                                          "example.com/tpu=2"])

    def ready() -> list[dict[str, Any]] | None:
        listed = get_json("nodes", fed.server)
        return listed if sum(n["state"] == "Ready" for n in listed) == 2 else None

    nodes = wait_until(ready, timeout=30, what="2 Ready nodes")
    assert {n["name"]: n.get("devices", {}) for n in nodes} == {
        plain: {}, tpu: {"example.com/tpu": 2}}
    text = WORKER.format(name="infer", replicas=3, marker=marker()).replace(
        "      memory: 8Mi\n", "      memory: 8Mi\n      devices: {example.com/tpu: 1}\n")
    path = write(tmp_path / "infer.yaml", text)
    plan = json.loads(edgefed("plan", "-f", path, "-o", "json", server=fed.server).stdout)
    slots = plan["deployments"][0]["slots"]
    assert [s["node"] for s in slots[:2]] == [tpu, tpu]
    assert slots[2]["message"] == ("0/2 nodes fit: 2 insufficient example.com/tpu (need 1, most "
                                   "free 0)")
    edgefed("apply", "--allow-pending", "-f", path, server=fed.server)
    wait_until(lambda: sorted(p["node"] or "" for p in get_json("pods", fed.server)
                              if p["deployment"] == "infer" and p["state"] == "Running")
               == [tpu, tpu], timeout=30, what="2 device replicas running on the device node")
