"""The `edgefed` command line end to end: argument parsing, HTTP, rendering, exit codes.

The controller here is a stand-in: a small aiohttp server started by the test
on a free loopback port, answering with canned JSON in the shape of the REST
contract (``/api/v1/...``) and recording each request it gets. It checks what
the CLI sends and how it shows each answer, not what the real controller
decides; tests/integration/test_core_loop.py runs the CLI against the real one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from federation.localfed import free_port
from policies.loader import load_path
from policies.model import deployment_to_document

NODES = [{
    "name": "pi-1", "site": "factory-berlin", "state": "Ready", "online": True, "reason": None,
    "arch": "arm64", "os": "linux", "runtime": "docker", "labels": {"tier": "edge"},
    "allocatable": {"cpu_millis": 2000, "memory_bytes": 8160437862, "disk_bytes": 10**10},
    "used": {"cpu_millis": 250, "memory_bytes": 67108864, "disk_bytes": 0},
    "instances": 2, "last_seen_seconds": 2.0, "epoch": "b7f3", "images": ["nginx:1.25"],
}]
SITES = [{"name": "factory-berlin", "labels": {"tier": "edge"}, "nodes": ["pi-1"], "ready": 1}]
DEPLOYMENTS = [{"name": "web", "replicas": 2, "running": 1, "placed": 2, "revision": 3,
                "image": "nginx:1.25", "strategy": "two-phase", "deleted": False}]
PODS = [
    {"deployment": "web", "slot": 0, "name": "web/0", "node": "pi-1", "site": "factory-berlin",
     "state": "Running", "generation": 4, "revision": 3, "restarts": 0, "exit_code": None,
     "reason": "", "since_seconds": 125.0},
    {"deployment": "web", "slot": 1, "name": "web/1", "node": None, "site": None,
     "state": "Pending", "generation": 0, "revision": 3, "restarts": 0, "exit_code": None,
     "reason": "0/1 nodes fit: 1 insufficient memory", "since_seconds": None},
    {"deployment": "db", "slot": 0, "name": "db/0", "node": "pi-1", "site": "factory-berlin",
     "state": "Running", "generation": 1, "revision": 1, "restarts": 2, "exit_code": None,
     "reason": "", "since_seconds": 7200.0},
]
WHY = ("1/1 nodes fit; chose pi-1 (site factory-berlin) score 87.5 (least-load 40.0 x1, "
       "spread 30.0 x1, locality 17.5 x1)")
DESCRIBED = {
    "name": "web", "revision": 3, "replicas": 2, "running": 1,
    "document": {"apiVersion": "edgefed.io/v1", "kind": "Deployment",
                 "metadata": {"name": "web"},
                 "spec": {"replicas": 2, "container": {"image": "nginx:1.25",
                                                       "resources": {"cpu": "100m"}}}},
    "slots": [
        {"slot": "web/0", "node": "pi-1", "site": "factory-berlin", "generation": 4,
         "revision": 3, "state": "Running", "why": WHY},
        {"slot": "web/1", "node": None, "site": None, "generation": 0, "revision": 3,
         "state": "Pending", "why": "0/1 nodes fit: 1 insufficient memory (need 1000Gi, most "
                                    "free 7.5Gi)"},
    ],
    "events": [{"at": 1.0, "kind": "Scheduled", "message": "web/0 generation 4 -> pi-1",
                "deployment": "web", "slot": 0, "node": "pi-1"}],
}
UNSCHEDULABLE = {"error": "1 of 2 replica(s) of big fit on no node; nothing was changed",
                 "unschedulable": [{"slot": "big/1", "message": "0/3 nodes fit: 3 insufficient "
                                    "memory (need 1000Gi, most free 12Gi)"}]}
USERS_WARNING = ("spec.placement.users: latency-aware placement is not enforced yet; the "
                 "scheduler ignores it")
REVISIONS = [
    {"revision": 1, "applied_at": 1.0, "current": False, "summary": "created: 2 replicas of a"},
    {"revision": 2, "applied_at": 2.0, "current": False, "summary": "image a -> b"},
    {"revision": 3, "applied_at": 3.0, "current": True, "summary": "replicas 2 -> 3"},
]
INVALID = {"error": "invalid deployment",
           "problems": [{"message": "must be at most 1000", "field": "spec.replicas",
                         "file": None, "line": None, "column": None, "severity": "error"}]}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class FakeController:
    """Canned answers by path; remembers what it was asked."""

    requests: list[Request] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.add_routes([
            web.get("/api/v1/nodes", _items(NODES)),
            web.get("/api/v1/sites", _items(SITES)),
            web.get("/api/v1/deployments", _items(DEPLOYMENTS)),
            web.get("/api/v1/pods", _items(PODS)),
            web.get("/api/v1/deployments/{name}", self._describe),
            web.get("/api/v1/deployments/{name}/revisions", self._revisions),
            web.post("/api/v1/deployments/{name}/rollback", self._rollback),
            web.put("/api/v1/deployments/{name}", self._put),
            web.delete("/api/v1/deployments/{name}", self._delete),
            web.post("/api/v1/plan", self._plan),
            web.get("/api/v1/pods/{deployment}/{slot}/logs", self._logs),
        ])
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append(Request(request.method, request.path, dict(request.query), body))
        response: web.StreamResponse = await handler(request)
        return response

    async def _describe(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != "web":
            return _error(404, f"deployment {request.match_info['name']} not found")
        return web.json_response(DESCRIBED)

    async def _put(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "big" and request.query.get("allow_pending") != "true":
            return web.json_response(UNSCHEDULABLE, status=409)
        if name == "far":
            return web.json_response({**UNSCHEDULABLE, "warnings": [USERS_WARNING]}, status=409)
        if name == "huge":
            return web.json_response(INVALID, status=422)
        changed = name != "same"
        return web.json_response({"name": name, "revision": 4 if changed else 3,
                                  "changed": changed,
                                  "warnings": [USERS_WARNING] if name == "near" else []})

    async def _revisions(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != "web":
            return _error(404, f"deployment {request.match_info['name']} not found")
        return web.json_response({"name": "web", "items": REVISIONS})

    async def _rollback(self, request: web.Request) -> web.Response:
        revision = (await request.json())["revision"]
        if revision == 9:
            return _error(404, "deployment web has no revision 9 (revisions: 1-3)")
        if revision == 3:
            return web.json_response({"name": "web", "revision": 3, "changed": False,
                                      "rolled_back_to": 3,
                                      "message": "already at revision 3's template"})
        return web.json_response({"name": "web", "revision": 4, "changed": True,
                                  "rolled_back_to": revision or 2, "warnings": []})

    async def _delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name != "web":
            return _error(404, f"deployment {name} not found")
        return web.json_response({"name": name, "deleted": True})

    async def _plan(self, request: web.Request) -> web.Response:
        documents = (await request.json())["documents"]
        return web.json_response({"deployments": [
            {"name": d["metadata"]["name"], "policies": [], "warnings": [USERS_WARNING],
             "summary": {"moves": 1, "unschedulable": d["spec"]["replicas"] - 1}, "slots": [
                 {"slot": f"{d['metadata']['name']}/{i}", "node": "pi-1" if i == 0 else None,
                  "site": "factory-berlin" if i == 0 else None,
                  "change": "moves" if i == 0 else "unschedulable",
                  "from": "pi-2" if i == 0 else None, "reason": "",
                  "message": WHY if i == 0 else "0/1 nodes fit: 1 insufficient cpu"}
                 for i in range(d["spec"]["replicas"])]}
            for d in documents]})

    async def _logs(self, request: web.Request) -> web.Response:
        pod = f"{request.match_info['deployment']}/{request.match_info['slot']}"
        if pod == "web/0":
            return web.json_response({"logs": "listening on :80\nGET / 200\nno newline at end"})
        if pod == "slow/0":
            return _error(504, "the agent running slow/0 did not answer within 10 s")
        return _error(404, f"no instance of {pod} is running")


def _items(items: list[dict[str, Any]]) -> Any:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"items": items})

    return handler


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _not_a_controller(request: web.Request) -> web.Response:
    if request.path == "/api/v1/sites":
        return _error(500, "database is locked")
    return web.Response(text="<html>welcome</html>", content_type="text/html")


@contextmanager
def serving(app: web.Application) -> Iterator[str]:
    """Serve ``app`` on a free loopback port from a thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", 0).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="fake-controller", daemon=True)
    thread.start()
    assert ready.wait(10), "the stand-in controller did not start"
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeController, str]]:
    controller = FakeController()
    with serving(controller.app()) as url:
        yield controller, url


@pytest.fixture
def controller(fake: tuple[FakeController, str]) -> FakeController:
    fake[0].requests.clear()
    return fake[0]


@pytest.fixture
def server(fake: tuple[FakeController, str]) -> str:
    return fake[1]


@pytest.fixture(scope="module")
def other_server() -> Iterator[str]:
    app = web.Application()
    app.router.add_route("*", "/api/v1/{tail:.*}", _not_a_controller)
    with serving(app) as url:
        yield url


def edgefed(*args: str, env: dict[str, str] | None = None,
            columns: int = 100) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a fresh process, as an operator would."""
    clean = {k: v for k, v in os.environ.items()
             if k != "EDGEFED_SERVER" and not k.lower().endswith("_proxy")}
    clean["COLUMNS"] = str(columns)
    proc = subprocess.run([sys.executable, "-m", "federation.cli", *args],
                          env=clean | (env or {}), capture_output=True, text=True, timeout=60,
                          check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def native(path: Path, name: str = "web", replicas: int = 2) -> Path:
    path.write_text(f"""\
apiVersion: edgefed.io/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  container:
    image: nginx:1.25
    resources:
      cpu: 100m
      memory: 64Mi
""")
    return path


# -- get ------------------------------------------------------------------------


def test_get_nodes_table(server: str) -> None:
    proc = edgefed("get", "nodes", "--server", server)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        "NAME   SITE             STATE   RUNTIME   ARCH    CPU      MEMORY       INSTANCES   AGE\n"
        "pi-1   factory-berlin   Ready   docker    arm64   250m/2   64Mi/7.6Gi   2           2s\n"
    )


@pytest.mark.parametrize(("args", "items"), [
    (("pods",), PODS),
    (("po", "web"), PODS[:2]),
    (("pod", "web/1"), PODS[1:2]),
    (("pod", "db-0"), PODS[2:]),
    (("nodes",), NODES),
    (("site", "factory-berlin"), SITES),
    (("deploy",), DEPLOYMENTS),
])
def test_get_json_prints_exactly_the_items(server: str, args: tuple[str, ...],
                                           items: list[dict[str, Any]]) -> None:
    proc = edgefed("get", *args, "-o", "json", "--server", server)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == items
    assert proc.stdout == json.dumps(items, indent=2, sort_keys=True) + "\n"


def test_get_pods_yaml(server: str) -> None:
    proc = edgefed("get", "pods", "-o", "yaml", "--server", server)
    assert proc.returncode == 0, proc.stderr
    pods = yaml.safe_load(proc.stdout)
    assert pods == PODS
    for pod in pods:
        assert {"deployment", "slot", "node", "site", "state", "generation"} <= pod.keys()


def test_get_pods_wide(server: str) -> None:
    proc = edgefed("get", "pods", "web", "-o", "wide", "--server", server)
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[:4] for line in proc.stdout.splitlines()] == [
        ["NAME", "NODE", "SITE", "STATE"],
        ["web/0", "pi-1", "factory-berlin", "Running"],
        ["web/1", "<none>", "<none>", "Pending"],
    ]
    assert proc.stdout.splitlines()[2].endswith("0/1 nodes fit: 1 insufficient memory")


@pytest.mark.parametrize(("kind", "first_row"), [
    ("sites", ["factory-berlin", "1", "1", "tier=edge"]),
    ("deployments", ["web", "1/2", "3", "nginx:1.25", "two-phase"]),
])
def test_get_tables(server: str, kind: str, first_row: list[str]) -> None:
    proc = edgefed("get", kind, "--server", server)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].split() == first_row


def test_get_unknown_name_fails(server: str) -> None:
    proc = edgefed("get", "node", "pi-9", "--server", server)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", "error: node pi-9 not found\n")


def test_server_from_environment_and_before_the_subcommand(controller: FakeController,
                                                            server: str) -> None:
    assert edgefed("get", "nodes", "-o", "json", env={"EDGEFED_SERVER": server}).returncode == 0
    proc = edgefed("--server", server, "-v", "get", "nodes", "-o", "json",
                   env={"EDGEFED_SERVER": "http://127.0.0.1:1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"GET {server}/api/v1/nodes -> 200 (")
    assert [r.path for r in controller.requests] == ["/api/v1/nodes", "/api/v1/nodes"]


# -- describe, delete, logs -------------------------------------------------------------


def test_describe_shows_why_each_replica_went_where_it_did(server: str) -> None:
    proc = edgefed("describe", "deployment", "web", "--server", server, columns=80)
    assert proc.returncode == 0, proc.stderr
    assert "Name:           web\n" in proc.stdout
    assert "  Image:     nginx:1.25\n" in proc.stdout
    assert all(len(line) <= 80 for line in proc.stdout.splitlines())
    # Wrapped in its column, never cut: every word of the explanation is there, in order.
    assert WHY in " ".join(proc.stdout.split())
    assert "web/0 generation 4 -> pi-1" in proc.stdout


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_describe_raw(server: str, fmt: str) -> None:
    proc = edgefed("describe", "deploy", "web", "-o", fmt, "--server", server)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout) == DESCRIBED


def test_describe_unknown_deployment(server: str) -> None:
    proc = edgefed("describe", "deployment", "nope", "--server", server)
    assert (proc.returncode, proc.stderr) == (1, "error: deployment nope not found\n")


def test_delete(controller: FakeController, server: str) -> None:
    proc = edgefed("delete", "deployment", "web", "gone", "--server", server)
    assert proc.returncode == 1
    assert proc.stdout == "deployment.edgefed.io/web deleted\n"
    assert proc.stderr == "error: deployment gone not found\n"
    assert [(r.method, r.path) for r in controller.requests] == [
        ("DELETE", "/api/v1/deployments/web"), ("DELETE", "/api/v1/deployments/gone")]


@pytest.mark.parametrize("pod", ["web/0", "web-0"])
def test_logs_verbatim(controller: FakeController, server: str, pod: str) -> None:
    proc = edgefed("logs", pod, "--tail", "5", "--server", server)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "listening on :80\nGET / 200\nno newline at end"
    assert controller.requests[-1].path == "/api/v1/pods/web/0/logs"
    assert controller.requests[-1].query == {"tail": "5"}


@pytest.mark.parametrize(("pod", "stderr"), [
    ("web/7", "error: no instance of web/7 is running\n"),
    ("slow/0", "error: the agent running slow/0 did not answer within 10 s "
               "(HTTP 504 from GET /api/v1/pods/slow/0/logs)\n"),
])
def test_logs_errors_show_the_controllers_message(server: str, pod: str, stderr: str) -> None:
    proc = edgefed("logs", pod, "--server", server)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", stderr)


# -- apply, plan, validate -----------------------------------------------------------


def test_apply_puts_the_native_document(controller: FakeController, server: str,
                                        tmp_path: Path) -> None:
    path = native(tmp_path / "web.yaml")
    proc = edgefed("apply", "-f", str(path), "--server", server)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == "deployment.edgefed.io/web configured (revision 4)\n"
    (request,) = controller.requests
    assert (request.method, request.path, request.query) == ("PUT", "/api/v1/deployments/web", {})
    assert request.body == deployment_to_document(load_path(path).deployments[0])


def test_apply_several_files_and_unchanged(server: str, tmp_path: Path) -> None:
    a, b = native(tmp_path / "a.yaml"), native(tmp_path / "b.yaml", name="same")
    proc = edgefed("apply", "-f", str(a), "-f", str(b), "--server", server)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ("deployment.edgefed.io/web configured (revision 4)\n"
                           "deployment.edgefed.io/same unchanged (revision 3)\n")


def test_apply_unschedulable_lists_each_slot(server: str, tmp_path: Path) -> None:
    path = native(tmp_path / "big.yaml", name="big")
    proc = edgefed("apply", "-f", str(path), "--server", server)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        f"error: {UNSCHEDULABLE['error']}\n"
        "  big/1: 0/3 nodes fit: 3 insufficient memory (need 1000Gi, most free 12Gi)\n")


def test_apply_allow_pending(controller: FakeController, server: str, tmp_path: Path) -> None:
    path = native(tmp_path / "big.yaml", name="big")
    proc = edgefed("apply", "--allow-pending", "-f", str(path), "--server", server)
    assert proc.returncode == 0, proc.stderr
    assert controller.requests[0].query == {"allow_pending": "true"}


def test_apply_refused_by_the_controller_as_invalid(server: str, tmp_path: Path) -> None:
    path = native(tmp_path / "huge.yaml", name="huge")
    proc = edgefed("apply", "-f", str(path), "--server", server)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {path}: invalid deployment\n  spec.replicas: must be at most 1000\n"


def test_apply_invalid_file_contacts_no_one(controller: FakeController, server: str,
                                            tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: edgefed.io/v1\nkind: Deployment\nmetadata: {name: web}\n"
                   "spec:\n  replicas: lots\n  container: {image: nginx}\n")
    good = native(tmp_path / "good.yaml")
    proc = edgefed("apply", "-f", str(good), "-f", str(bad), "--server", server)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith(f"{bad}:5:")
    assert "error: spec.replicas: expected an integer" in proc.stderr
    assert controller.requests == []


@pytest.mark.parametrize("command", ["apply", "plan", "validate"])
def test_missing_file_is_a_clean_usage_error(controller: FakeController, server: str,
                                             tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nope.yaml"
    proc = edgefed(command, "-f", str(missing), "--server", server)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"{missing}: error: cannot read: No such file or directory\n"
    assert controller.requests == []


def test_apply_same_name_in_two_files(server: str, tmp_path: Path) -> None:
    a, b = native(tmp_path / "a.yaml"), native(tmp_path / "b.yaml")
    proc = edgefed("apply", "-f", str(a), "-f", str(b), "--server", server)
    assert proc.returncode == 2
    assert proc.stderr == f"{b}: error: deployment web is also defined in {a}\n"


def test_plan_table_and_json(controller: FakeController, server: str, tmp_path: Path) -> None:
    path = native(tmp_path / "web.yaml")
    proc = edgefed("plan", "-f", str(path), "--server", server, columns=200)
    assert proc.returncode == 0, proc.stderr
    assert [re.split(r" {3,}", line, maxsplit=4) for line in proc.stdout.splitlines()] == [
        ["SLOT", "NODE", "SITE", "CHANGE", "WHY"],
        ["web/0", "pi-1", "factory-berlin", "moves from pi-2", WHY],
        ["web/1", "<none>", "<none>", "unschedulable", "0/1 nodes fit: 1 insufficient cpu"],
        ["web: 1 moving, 1 unschedulable"],
    ]
    assert proc.stderr == f"warning: web: {USERS_WARNING}\n"
    assert controller.requests[0].body == {
        "documents": [deployment_to_document(load_path(path).deployments[0])]}
    raw = edgefed("plan", "-f", str(path), "-o", "json", "--server", server)
    assert json.loads(raw.stdout)["deployments"][0]["slots"][1]["node"] is None


def test_validate(tmp_path: Path) -> None:
    good = native(tmp_path / "web.yaml")
    k8s = tmp_path / "k8s.yaml"
    k8s.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: myapp}\n"
                   "spec:\n  template:\n    spec:\n      containers:\n"
                   "      - {name: myapp, image: 'myapp:latest'}\nstatus: {replicas: 3}\n")
    proc = edgefed("validate", "-f", str(good), "-f", str(k8s))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{good}: 1 deployment(s) valid\n{k8s}: 1 deployment(s) valid\n"
    assert proc.stderr == f"{k8s}:9:1: warning: status: is written by the cluster; ignored\n"


# -- failures -----------------------------------------------------------------------


def test_connection_refused() -> None:
    port = free_port()
    proc = edgefed("get", "pods", "--server", f"http://127.0.0.1:{port}")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        f"error: cannot reach the controller at http://127.0.0.1:{port}: connection refused "
        "(is `edgefed controller` running? set --server or EDGEFED_SERVER)\n")


@pytest.mark.parametrize(("args", "stderr"), [
    (("get", "nodes"), "error: the server at {url} answered GET /api/v1/nodes with something "
                       "that is not JSON (text/html; charset=utf-8); is it an edgefed "
                       "controller?\n"),
    (("get", "sites"), "error: database is locked (HTTP 500 from GET /api/v1/sites)\n"),
])
def test_answers_that_are_not_the_contract(other_server: str, args: tuple[str, ...],
                                           stderr: str) -> None:
    proc = edgefed(*args, "--server", other_server)
    assert (proc.returncode, proc.stderr) == (1, stderr.format(url=other_server))


@pytest.mark.parametrize(("args", "message"), [
    (("get", "services"), "unknown resource type 'services'"),
    (("logs", "web"), "'web': expected DEPLOYMENT/SLOT, e.g. web/0"),
    (("delete", "node", "pi-1"), "invalid choice: 'node'"),
    (("apply",), "the following arguments are required: -f/--filename"),
    (("get", "pods", "--bogus"), "unrecognized arguments: --bogus"),
    (("get", "pods", "--server", "ftp://x"), "--server 'ftp://x': expected an http:// or "
                                             "https:// URL"),
    ((), "usage: edgefed"),
])
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    proc = edgefed(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.mark.parametrize("command", ["apply", "plan", "validate", "get", "describe", "delete",
                                     "logs", "rollout"])
def test_help_has_an_example(command: str) -> None:
    proc = edgefed(command, "--help")
    assert proc.returncode == 0
    assert f"example:\n  edgefed {command} " in proc.stdout
    assert "--server URL" in proc.stdout


@pytest.mark.parametrize("argv", [["controller", "--help"], ["-v", "controller", "--help"],
                                  ["agent", "--help"]])
def test_controller_and_agent_get_their_own_arguments(argv: list[str]) -> None:
    proc = edgefed(*argv)
    assert proc.returncode == 0, proc.stderr
    assert "--broker" in proc.stdout
    assert "--server" not in proc.stdout


def test_client_commands_import_neither_aiohttp_nor_rich() -> None:
    code = ("import sys, federation.cli; "
            "print(sorted(m for m in ('aiohttp', 'rich', 'yaml') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert proc.stdout == "[]\n"


# -- rollout, get -o yaml, warnings ------------------------------------------------------


def test_rollout_history(controller: FakeController, server: str) -> None:
    proc = edgefed("rollout", "history", "deployment/web", "--server", server)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["REVISION", "AGE", "CURRENT", "CHANGE"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3"]
    assert lines[3].split()[2:] == ["*", "replicas", "2", "->", "3"]
    assert controller.requests[0].path == "/api/v1/deployments/web/revisions"
    raw = edgefed("rollout", "history", "web", "-o", "json", "--server", server)
    assert json.loads(raw.stdout) == REVISIONS


@pytest.mark.parametrize(("args", "body", "code", "stdout", "stderr"), [
    ((), {"revision": None}, 0,
     "deployment.edgefed.io/web rolled back to revision 2 (revision 4)\n", ""),
    (("--to-revision", "1"), {"revision": 1}, 0,
     "deployment.edgefed.io/web rolled back to revision 1 (revision 4)\n", ""),
    (("--to-revision", "3"), {"revision": 3}, 0,
     "deployment.edgefed.io/web unchanged: already at revision 3's template (revision 3)\n", ""),
    (("--to-revision", "9"), {"revision": 9}, 1, "",
     "error: deployment web has no revision 9 (revisions: 1-3)\n"),
])
def test_rollout_undo(controller: FakeController, server: str, args: tuple[str, ...],
                      body: dict[str, Any], code: int, stdout: str, stderr: str) -> None:
    proc = edgefed("rollout", "undo", "web", *args, "--server", server)
    assert (proc.returncode, proc.stdout, proc.stderr) == (code, stdout, stderr)
    (request,) = controller.requests
    assert (request.method, request.path, request.body) == (
        "POST", "/api/v1/deployments/web/rollback", body)


@pytest.mark.parametrize(("args", "message"), [
    (("rollout", "undo", "web", "--to-revision", "0"), "'0': expected a revision number"),
    (("rollout", "undo"), "the following arguments are required: NAME"),
    (("rollout",), "expected `edgefed rollout history|undo|status NAME`"),
])
def test_rollout_usage_errors(server: str, args: tuple[str, ...], message: str) -> None:
    proc = edgefed(*args, "--server", server)
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_get_one_deployment_prints_its_document(server: str, fmt: str) -> None:
    proc = edgefed("get", "deployment", "web", "-o", fmt, "--server", server)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout) == DESCRIBED["document"]
    listed = edgefed("get", "deployments", "-o", fmt, "--server", server)
    assert yaml.safe_load(listed.stdout) == DEPLOYMENTS


def test_apply_prints_the_controllers_warnings(server: str, tmp_path: Path) -> None:
    proc = edgefed("apply", "-f", str(native(tmp_path / "near.yaml", name="near")),
                   "--server", server)
    assert (proc.returncode, proc.stdout) == (0, "deployment.edgefed.io/near configured "
                                                 "(revision 4)\n")
    assert proc.stderr == f"warning: near: {USERS_WARNING}\n"
    refused = edgefed("apply", "-f", str(native(tmp_path / "far.yaml", name="far")),
                      "--server", server)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"warning: far: {USERS_WARNING}\nerror: ")
