"""The core loop end to end: `edgefed apply` of the seed Kubernetes Deployment
to containers running in the real Docker engine on three agents (three sites),
scaling, deletion, and restarts of the controller and an agent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from federation.localfed import LocalFederation
from tests.support import edgefed, get_json, wait_until

REPO = Path(__file__).resolve().parents[2]
# The seed Kubernetes Deployment exactly as operators wrote it; only replicas vary.
SEED = (REPO / "policies" / "examples" / "seed-kubernetes.yaml").read_text()


def start(fed: LocalFederation, sites: tuple[str, ...] = ("a", "b", "c")) -> list[str]:
    fed.start_controller("--lost-after", "30")
    nodes = []
    for site in sites:
        node = f"{site}1-{fed.tag}"
        fed.start_agent(node, f"site-{site}", extra=["--report-interval", "1"])
        nodes.append(node)
    wait_until(lambda: len([n for n in get_json("nodes", fed.server) if n["state"] == "Ready"])
               == len(sites), timeout=30, what=f"{len(sites)} Ready nodes")
    return nodes


def apply_seed(fed: LocalFederation, tmp_path: Path, replicas: int) -> None:
    path = tmp_path / f"seed-{replicas}.yaml"
    path.write_text(SEED.replace("replicas: 3", f"replicas: {replicas}"))
    out = edgefed("apply", "-f", str(path), server=fed.server)
    assert "myapp" in out.stdout


def running_pods(fed: LocalFederation, count: int) -> list[dict[str, object]]:
    def check() -> list[dict[str, object]] | None:
        pods = get_json("pods", fed.server)
        ok = len(pods) == count and all(p["state"] == "Running" for p in pods)
        return pods if ok else None

    return wait_until(check, timeout=60, what=f"{count} running pods")


def containers(tag: str, *, running_only: bool = True) -> dict[str, dict[str, str]]:
    """The test's containers in the engine: name -> labels."""
    args = ["docker", "ps", "--filter", f"label=edgefed.test={tag}", "--format",
            "{{.Names}}\t{{.Label \"edgefed.slot\"}}\t{{.Label \"edgefed.generation\"}}\t"
            "{{.Label \"edgefed.node\"}}"]
    if not running_only:
        args.insert(2, "-a")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    result = {}
    for line in out.splitlines():
        name, slot, gen, node = line.split("\t")
        result[name] = {"slot": slot, "generation": gen, "node": node}
    return result


@pytest.mark.docker
def test_seed_deployment_runs_scales_and_deletes(make_federation, tiny_image, tmp_path):
    fed = make_federation("docker")
    start(fed)
    apply_seed(fed, tmp_path, 3)
    pods = running_pods(fed, 3)
    for pod in pods:
        assert {"deployment", "slot", "node", "site", "state", "generation"} <= pod.keys()
    assert len({p["site"] for p in pods}) >= 2
    assert len(containers(fed.tag)) == 3

    apply_seed(fed, tmp_path, 5)
    running_pods(fed, 5)
    wait_until(lambda: len(containers(fed.tag)) == 5, timeout=30, what="5 containers")

    apply_seed(fed, tmp_path, 2)
    pods = running_pods(fed, 2)
    assert sorted(p["slot"] for p in pods) == [0, 1]
    wait_until(lambda: len(containers(fed.tag, running_only=False)) == 2, timeout=30,
               what="scale-down to remove 3 containers")

    out = edgefed("delete", "deployment", "myapp", server=fed.server)
    assert "deleted" in out.stdout
    wait_until(lambda: not containers(fed.tag, running_only=False), timeout=30,
               what="every container gone after delete")
    wait_until(lambda: get_json("deployments", fed.server) == [], timeout=30,
               what="the deployment purged")


@pytest.mark.docker
def test_controller_restart_keeps_state_and_restarts_nothing(make_federation, tiny_image,
                                                            tmp_path):
    fed = make_federation("docker")
    start(fed)
    apply_seed(fed, tmp_path, 3)
    before = {(p["slot"], p["node"], p["generation"]) for p in running_pods(fed, 3)}
    running_before = containers(fed.tag)

    fed.stop_controller()
    fed.start_controller("--lost-after", "30")

    after = {(p["slot"], p["node"], p["generation"]) for p in running_pods(fed, 3)}
    assert after == before
    # Same containers, same ids: nothing was restarted or duplicated.
    assert containers(fed.tag) == running_before
    described = edgefed("describe", "deployment", "myapp", server=fed.server).stdout
    assert "nodes fit" in described


@pytest.mark.docker
def test_agent_restart_adopts_its_containers(make_federation, tiny_image, tmp_path):
    fed = make_federation("docker")
    nodes = start(fed)
    apply_seed(fed, tmp_path, 3)
    running_pods(fed, 3)
    before = containers(fed.tag)

    victim = nodes[0]
    epoch = next(n["epoch"] for n in get_json("nodes", fed.server) if n["name"] == victim)
    fed.agents[victim].stop()
    fed.start_agent(victim, "site-a", extra=["--report-interval", "1"])
    wait_until(lambda: any(n["name"] == victim and n["state"] == "Ready" and n["epoch"] != epoch
                           for n in get_json("nodes", fed.server)),
               timeout=30, what="the restarted agent (new epoch) Ready again")
    running_pods(fed, 3)
    assert containers(fed.tag) == before


@pytest.mark.docker
def test_missing_image_is_reported_failed_with_the_reason(make_federation, tiny_image, tmp_path):
    fed = make_federation("docker")
    start(fed, sites=("a",))
    path = tmp_path / "ghost.yaml"
    path.write_text("apiVersion: edgefed.io/v1\nkind: Deployment\nmetadata:\n  name: ghost\n"
                    "spec:\n  replicas: 1\n  container:\n    image: not-here:1.0\n")
    edgefed("apply", "-f", str(path), server=fed.server)
    pod = wait_until(lambda: [p for p in get_json("pods", fed.server) if p["state"] == "Failed"],
                     timeout=30, what="the pod to be reported Failed")[0]
    assert pod["reason"] == ("image not-here:1.0 is not present on this node and no registry "
                             "is configured")
