"""What `edgefed get/describe/plan` print for given controller answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from federation.output import (
    describe_deployment,
    format_age,
    format_selector,
    render_history,
    render_items,
    render_plan,
    resource_kind,
    select,
    table_rows,
)

GI, MI = 1024**3, 1024**2


def node(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": "pi-1", "site": "factory-berlin", "state": "Ready", "online": True,
        "reason": None, "arch": "arm64", "os": "linux", "runtime": "docker",
        "labels": {"zone": "a", "tier": "edge"}, "epoch": "b7f3",
        "allocatable": {"cpu_millis": 2000, "memory_bytes": int(7.6 * GI), "disk_bytes": 0},
        "used": {"cpu_millis": 250, "memory_bytes": 64 * MI, "disk_bytes": 0},
        "instances": 2, "last_seen_seconds": 2.4, "images": [],
    }
    return item | overrides


def pod(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "deployment": "web", "slot": 0, "name": "web/0", "node": "pi-1",
        "site": "factory-berlin", "state": "Running", "generation": 3, "revision": 2,
        "restarts": 1, "exit_code": None, "reason": "", "since_seconds": 190.0,
    }
    return item | overrides


@pytest.mark.parametrize(("seconds", "shown"), [
    (0, "0s"), (5.9, "5s"), (59, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"),
    (7300, "2h"), (86399, "23h"), (86400, "1d"), (4 * 86400 + 5, "4d"),
    (-3, "0s"), (None, "<unknown>"), ("soon", "<unknown>"), (True, "<unknown>"),
])
def test_format_age(seconds: Any, shown: str) -> None:
    assert format_age(seconds) == shown


@pytest.mark.parametrize(("text", "kind"), [
    ("nodes", "nodes"), ("node", "nodes"), ("no", "nodes"), ("site", "sites"),
    ("deployments", "deployments"), ("deployment", "deployments"), ("deploy", "deployments"),
    ("pods", "pods"), ("pod", "pods"), ("po", "pods"), ("PODS", "pods"),
    ("placementpolicies", "placementpolicies"), ("placementpolicy", "placementpolicies"),
    ("pp", "placementpolicies"),
])
def test_resource_kind_accepts_kubectl_forms(text: str, kind: str) -> None:
    assert resource_kind(text) == kind


def test_resource_kind_names_the_accepted_kinds() -> None:
    with pytest.raises(ValueError, match=r"unknown resource type 'svc' \(expected one of: "
                                         r"nodes, sites, deployments, pods, placementpolicies\)"):
        resource_kind("svc")


@pytest.mark.parametrize(("kind", "item", "wide", "row"), [
    ("nodes", node(), False,
     ["pi-1", "factory-berlin", "Ready", "docker", "arm64", "250m/2", "64Mi/7.6Gi", "2", "2s"]),
    ("nodes", node(), True,
     ["pi-1", "factory-berlin", "Ready", "docker", "arm64", "250m/2", "64Mi/7.6Gi", "2", "2s",
      "tier=edge,zone=a", "b7f3", "<none>"]),
    ("nodes", node(state="Lost", reason="missed 3 heartbeats", used={}, labels={},
                   last_seen_seconds=4000), True,
     ["pi-1", "factory-berlin", "Lost", "docker", "arm64", "?/2", "?/7.6Gi", "2", "1h",
      "<none>", "b7f3", "missed 3 heartbeats"]),
    ("sites", {"name": "aws-eu-west-1", "labels": {"tier": "cloud"}, "nodes": ["c1", "c2"],
               "ready": 1}, False,
     ["aws-eu-west-1", "2", "1", "tier=cloud"]),
    ("deployments", {"name": "web", "replicas": 3, "running": 2, "placed": 3, "revision": 4,
                     "image": "nginx:1.25", "strategy": "two-phase", "deleted": False}, False,
     ["web", "2/3", "4", "nginx:1.25", "two-phase"]),
    ("deployments", {"name": "web", "replicas": 3, "running": 0, "placed": 1, "revision": 4,
                     "image": "nginx:1.25", "strategy": "two-phase", "deleted": True}, True,
     ["web", "0/3", "4", "nginx:1.25", "two-phase", "1", "true"]),
    ("pods", pod(), False, ["web/0", "pi-1", "factory-berlin", "Running", "3", "1", "3m"]),
    ("pods", pod(node=None, site=None, state="Pending", exit_code=None,
                 reason="0/3 nodes fit", since_seconds=None), True,
     ["web/0", "<none>", "<none>", "Pending", "3", "1", "<unknown>", "2", "<none>",
      "0/3 nodes fit"]),
    ("pods", pod(name=None, slot=7, exit_code=137, reason="OOMKilled"), True,
     ["web/7", "pi-1", "factory-berlin", "Running", "3", "1", "3m", "2", "137", "OOMKilled"]),
    ("placementpolicies", {"name": "eu-residency", "priority": 10,
                           "selector": {"matchLabels": {"data": "personal"}},
                           "deployments": ["api", "web"], "age_seconds": 130.0}, False,
     ["eu-residency", "10", "data=personal", "api,web", "2m"]),
    ("placementpolicies", {"name": "all", "priority": 0, "selector": {}, "deployments": []},
     False, ["all", "0", "<none>", "<none>", "<unknown>"]),
])
def test_table_rows(kind: str, item: dict[str, Any], wide: bool, row: list[str]) -> None:
    headers, rows = table_rows(kind, [item], wide=wide)
    assert rows == [row]
    assert len(headers) == len(row)


@pytest.mark.parametrize(("kind", "wide", "headers"), [
    ("nodes", False, ("NAME", "SITE", "STATE", "RUNTIME", "ARCH", "CPU", "MEMORY", "INSTANCES",
                      "AGE")),
    ("nodes", True, ("NAME", "SITE", "STATE", "RUNTIME", "ARCH", "CPU", "MEMORY", "INSTANCES",
                     "AGE", "LABELS", "EPOCH", "REASON")),
    ("sites", False, ("NAME", "NODES", "READY", "LABELS")),
    ("deployments", False, ("NAME", "READY", "REVISION", "IMAGE", "STRATEGY")),
    ("pods", False, ("NAME", "NODE", "SITE", "STATE", "GENERATION", "RESTARTS", "AGE")),
    ("pods", True, ("NAME", "NODE", "SITE", "STATE", "GENERATION", "RESTARTS", "AGE",
                    "REVISION", "EXIT", "REASON")),
    ("placementpolicies", False, ("NAME", "PRIORITY", "SELECTOR", "DEPLOYMENTS", "AGE")),
])
def test_table_headers(kind: str, wide: bool, headers: tuple[str, ...]) -> None:
    assert tuple(table_rows(kind, [], wide=wide)[0]) == headers


def test_table_is_aligned_without_borders_and_never_wraps() -> None:
    long_reason = "missed heartbeats " * 20
    text = render_items("nodes", [node(), node(name="cloud-1", reason=long_reason)], "wide")
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == ["NAME", "SITE", "STATE", "RUNTIME", "ARCH", "CPU", "MEMORY",
                                "INSTANCES", "AGE", "LABELS", "EPOCH", "REASON"]
    assert lines[2].endswith(long_reason.strip())
    assert lines[1].index("factory-berlin") == lines[0].index("SITE")
    assert all(line == line.rstrip() for line in lines)


def test_table_cells_are_not_markup() -> None:
    text = render_items("pods", [pod(state="[bold]Failed[/bold]")], "table")
    assert "[bold]Failed[/bold]" in text


@pytest.mark.parametrize("kind", ["nodes", "sites", "deployments", "pods"])
def test_json_is_the_items_list_with_sorted_keys(kind: str) -> None:
    items: list[dict[str, Any]] = [{"name": "b", "zeta": 1, "alpha": {"y": 2, "x": 1}},
                                   {"name": "a"}]
    text = render_items(kind, items, "json")
    assert json.loads(text) == items
    assert text == json.dumps(items, indent=2, sort_keys=True) + "\n"


def test_yaml_is_the_items_list() -> None:
    items = [pod(), pod(slot=1, name="web/1")]
    text = render_items("pods", items, "yaml")
    assert yaml.safe_load(text) == items
    assert text.startswith("- deployment: web\n")


def test_empty_json_is_an_empty_list() -> None:
    assert render_items("pods", [], "json") == "[]\n"


@pytest.mark.parametrize(("kind", "name", "shown"), [
    ("pods", None, ["web/0", "web/1", "db/0"]),
    ("pods", "web", ["web/0", "web/1"]),
    ("pods", "web/1", ["web/1"]),
    ("pods", "web-1", ["web/1"]),
    ("pods", "db", ["db/0"]),
    ("pods", "cache", []),
    ("deployments", "web", []),
    ("deployments", "web/1", ["web/1"]),
])
def test_select(kind: str, name: str | None, shown: list[str]) -> None:
    items = [pod(), pod(slot=1, name="web/1"), pod(deployment="db", slot=0, name="db/0")]
    # Only pods match a deployment name; everything else matches its own name.
    assert [i["name"] for i in select(kind, items, name)] == shown


@pytest.mark.parametrize(("selector", "shown"), [
    (None, "<none>"),
    ({}, "<none>"),
    ({"matchLabels": {"tier": "edge", "arch": "arm64"}}, "arch=arm64, tier=edge"),
    ({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]},
                           {"key": "gpu", "operator": "DoesNotExist"}]},
     "zone In (a,b), gpu DoesNotExist"),
])
def test_format_selector(selector: Any, shown: str) -> None:
    assert format_selector(selector) == shown


WHY = ("3/3 nodes fit; chose pi-1 (site factory-berlin) score 87.5 (least-load 40.0 x1, "
       "spread 30.0 x1, locality 17.5 x1); runner-up cloud-1 score 60.1")
DESCRIBED: dict[str, Any] = {
    "name": "web", "revision": 2, "replicas": 2, "running": 1,
    "revisions": [{"revision": 1, "applied_at": 100.0}, {"revision": 2, "applied_at": 700.0}],
    "document": {
        "apiVersion": "edgefed.io/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "container": {"image": "nginx:1.25", "command": ["sh", "-c", "echo hi; sleep 9"],
                          "resources": {"cpu": "250m", "memory": "64Mi"},
                          "ports": [{"containerPort": 80, "hostPort": 8080},
                                    {"containerPort": 53, "protocol": "udp"}]},
            "placement": {"siteSelector": {"matchLabels": {"tier": "edge"}},
                          "weights": {"latency": 2}},
        },
    },
    "slots": [
        {"slot": "web/0", "node": "pi-1", "site": "factory-berlin", "generation": 4,
         "revision": 2, "state": "Running", "why": WHY},
        {"slot": "web/1", "node": None, "site": None, "generation": 0, "revision": 2,
         "state": "Pending", "why": "0/3 nodes fit: 3 insufficient memory (need 1000Gi, most "
                                    "free 12Gi)"},
    ],
    "events": [
        {"at": 900.0, "kind": "Scheduled", "message": "web/0 generation 4 -> pi-1",
         "slot": 0, "node": "pi-1"},
        {"at": 700.0, "kind": "Applied", "message": "revision 2", "slot": None, "node": None},
    ],
}


def _column(text: str, section: str, header: str) -> list[str]:
    """The cells of one column of a table in a describe section, wrapped lines joined."""
    lines = text.split(f"{section}:\n", 1)[1].splitlines()
    names = lines[0].split()
    starts = [lines[0].index(name) for name in names]
    start = lines[0].index(header)
    end = next((s for s in starts if s > start), None)
    cells: list[str] = []
    for line in lines[1:]:
        if not line.startswith("  "):
            break
        cell = line[start:end].strip()
        if line[starts[0]] != " ":  # a new row; otherwise a wrapped continuation
            cells.append(cell)
        elif cell:
            cells[-1] += " " + cell
    return cells


@pytest.mark.parametrize("width", [80, 100, 200])
def test_describe_wraps_why_to_the_width_and_never_cuts_it(width: int) -> None:
    text = describe_deployment(DESCRIBED, now=1000.0, width=width)
    assert all(len(line) <= width for line in text.splitlines())
    assert _column(text, "Slots", "WHY") == [WHY, DESCRIBED["slots"][1]["why"]]
    assert len(text.split("Slots:\n")[1].splitlines()[1]) > width - 20  # uses the room it has


@pytest.mark.parametrize("width", [10, 40, 60])
def test_describe_on_a_narrow_terminal_keeps_every_word(width: int) -> None:
    text = describe_deployment(DESCRIBED, now=1000.0, width=width)
    assert _column(text, "Slots", "WHY") == [WHY, DESCRIBED["slots"][1]["why"]]
    assert _column(text, "Slots", "SITE") == ["factory-berlin", "<none>"]
    assert _column(text, "Events", "MESSAGE") == ["revision 2", "web/0 generation 4 -> pi-1"]


def test_describe_shows_spec_placement_and_events() -> None:
    text = describe_deployment(DESCRIBED, now=1000.0, width=100)
    for line in [
        "Name:           web",
        "Revision:       2 (applied 5m ago)",
        "Replicas:       2 desired, 1 running",
        "Labels:         app=web",
        "  Image:     nginx:1.25",
        "  Command:   sh -c 'echo hi; sleep 9'",
        "  Resources: cpu 250m, memory 64Mi",
        "  Ports:     80/tcp (host 8080), 53/udp",
        "  Site selector: tier=edge",
        "  Node selector: <none>",
        "  Weights:       latency=2",
    ]:
        assert line in text.splitlines(), line
    # Oldest event first, ages relative to `now`.
    assert _column(text, "Events", "MESSAGE") == ["revision 2", "web/0 generation 4 -> pi-1"]
    assert _column(text, "Events", "AGE") == ["5m", "1m"]
    assert _column(text, "Events", "SLOT") == ["<none>", "web/0"]


def test_describe_survives_a_sparse_answer() -> None:
    text = describe_deployment({"name": "web"}, now=0.0, width=80)
    assert "Name:           web\n" in text
    assert "Slots:  <none>\n" in text
    assert text.endswith("Events:  <none>\n")


def test_plan_table() -> None:
    resp = {"deployments": [
        {"name": "web", "summary": {"stays": 1, "unschedulable": 1}, "slots": [
            {"slot": "web/0", "node": "n1", "site": "a", "message": "stays on n1",
             "change": "stays", "from": None, "reason": ""},
            {"slot": "web/1", "node": None, "site": None, "message": WHY,
             "change": "unschedulable", "from": None, "reason": ""},
        ]},
    ]}
    text = render_plan(resp, width=70)
    lines = text.splitlines()
    assert lines[0].split() == ["SLOT", "NODE", "SITE", "CHANGE", "WHY"]
    assert lines[1].split() == ["web/0", "n1", "a", "stays", "stays", "on", "n1"]
    assert lines[2].startswith("web/1   <none>   <none>   unschedulable   ")
    assert " ".join(" ".join(lines[2:-1]).split()[4:]) == WHY
    assert lines[-1] == "web: 1 staying, 1 unschedulable"
    assert all(len(line) <= 70 for line in lines)


def test_plan_table_shows_what_moves_from_where_and_why() -> None:
    resp = {"deployments": [
        {"name": "web", "policies": ["eu-residency"], "summary": {"moves": 1, "new": 1},
         "slots": [
             {"slot": "web/0", "node": "de-1", "site": "berlin", "change": "moves",
              "from": "us-1", "reason": "node us-1 no longer fits: country is us, residency "
                                        "allows de", "message": "1/2 nodes fit; chose de-1"},
             {"slot": "web/1", "node": "de-1", "site": "berlin", "change": "new", "from": None,
              "reason": "", "message": "1/2 nodes fit; chose de-1"},
         ]},
    ]}
    lines = render_plan(resp, width=300).splitlines()
    assert [line.split("   ")[:4] for line in lines[1:3]] == [
        ["web/0", "de-1", "berlin", "moves from us-1"], ["web/1", "de-1", "berlin", "new"]]
    assert lines[1].endswith("node us-1 no longer fits: country is us, residency allows de; "
                             "1/2 nodes fit; chose de-1")
    assert lines[-1] == "web: 1 new, 1 moving (policies: eu-residency)"


def test_history_table_marks_the_current_revision() -> None:
    items = [
        {"revision": 1, "applied_at": 400.0, "current": False,
         "summary": "created: 3 replicas of web:1"},
        {"revision": 2, "applied_at": 700.0, "current": False, "summary": "replicas 3 -> 5"},
        {"revision": 3, "applied_at": 990.0, "current": True, "summary": "replicas 5 -> 3"},
    ]
    text = render_history(items, now=1000.0, width=100)
    assert text.splitlines() == [
        "REVISION   AGE   CURRENT   CHANGE",
        "1          10m             created: 3 replicas of web:1",
        "2          5m              replicas 3 -> 5",
        "3          10s   *         replicas 5 -> 3",
    ]


def test_describe_shows_policies_the_placement_in_force_and_what_is_not_enforced() -> None:
    effective = {"apiVersion": "edgefed.io/v1", "kind": "Deployment",
                 "metadata": {"name": "web"},
                 "spec": {"replicas": 2, "container": {"image": "nginx:1.25"}, "placement": {
                     "residency": {"countries": ["de", "fr"], "regions": ["eu-central"]},
                     "maxPerNode": 1, "maxPerSite": 2,
                     "antiAffinity": [
                         {"selector": {"matchLabels": {"app": "web"}}, "scope": "node",
                          "required": True},
                         {"selector": {"matchLabels": {"app": "db"}}, "scope": "site",
                          "weight": 50}],
                     "users": [{"name": "eu", "site": "berlin"}]}}}
    resp = {**DESCRIBED, "effective": effective,
            "policies": [{"name": "eu-residency", "priority": 10},
                         {"name": "spread", "priority": 0}],
            "warnings": ["spec.placement.users: latency-aware placement is not enforced yet; "
                         "the scheduler ignores it"]}
    lines = describe_deployment(resp, now=1000.0, width=120).splitlines()
    for line in [
        "Policies:       eu-residency (priority 10), spread (priority 0)",
        "  Residency:     countries de,fr; regions eu-central",
        "  Limits:        1 per node, 2 per site",
        "  Anti-affinity: app=web (node); app=db (site, preferred, weight 50)",
        "  Site selector: <none>",
        "Not enforced:",
        "  spec.placement.users: latency-aware placement is not enforced yet; the scheduler "
        "ignores it",
    ]:
        assert line in lines, line
    plain = describe_deployment(DESCRIBED, now=1000.0, width=120).splitlines()
    assert "Policies:       <none>" in plain
    assert "  Site selector: tier=edge" in plain
    assert "Not enforced:" not in plain
