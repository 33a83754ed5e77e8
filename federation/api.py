"""REST API under /api/v1 (aiohttp): JSON in, JSON out, errors as {"error": ...}."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from aiohttp import web

from federation.controller import Controller
from federation.planning import dry_run, unenforced, unenforced_policy
from federation.revisions import history
from policies.checks import deployment_problems
from policies.errors import PolicyError, format_path
from policies.model import (
    Deployment,
    PlacementPolicy,
    deployment_from_document,
    deployment_to_document,
    policy_from_document,
    policy_to_document,
)

CONTROLLER: web.AppKey[Controller] = web.AppKey("controller", Controller)
MAX_BODY = 1024 * 1024
MAX_RTT_ROWS = 50_000  # GET /api/v1/rtt lists every source's RTT to every node up to this


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f'{{"error": "body is not JSON: {exc}"}}',
                                 content_type="application/json") from None


def _parse(document: Any) -> Deployment | web.Response:
    try:
        return deployment_from_document(document)
    except PolicyError as exc:
        return _error(422, "invalid deployment", problems=[p.to_dict() for p in exc.problems])


def _controller(request: web.Request) -> Controller:
    return request.app[CONTROLLER]


async def healthz(request: web.Request) -> web.Response:
    c = _controller(request)
    connected = c.bus is not None and c.bus.connected.is_set()
    return web.json_response({"status": "ok", "broker_connected": connected,
                              "rejected_messages": dict(c.rejected)})


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def stats(request: web.Request) -> web.Response:
    """Counters for operators and benchmarks: command round trips, refusals, what a
    reconcile pass costs and how much of the nodes' columns it read again."""
    c = _controller(request)
    acks = sorted(c.ack_latencies)
    passes = sorted(c.pass_seconds)
    fleet = c.fleet
    return web.json_response({
        "command_ack_seconds": {"count": len(acks), "p50": _quantile(acks, 0.50),
                                "p99": _quantile(acks, 0.99), "max": acks[-1] if acks else None},
        "reconcile_pass_seconds": {"passes": c.passes, "p50": _quantile(passes, 0.50),
                                   "p99": _quantile(passes, 0.99),
                                   "max": passes[-1] if passes else None},
        "scheduler_columns": {"nodes": len(fleet.nodes), "refreshes": fleet.refreshes,
                              "layouts_built": fleet.layouts, "rows_read": fleet.rows_total},
        "commands_inflight": len(c.inflight),
        "rejected_messages": dict(c.rejected),
        "broker_connects": c.bus.connects if c.bus is not None else 0,
    })


async def get_nodes(request: web.Request) -> web.Response:
    c = _controller(request)
    now = time.time()
    items = []
    for node in sorted(c.inventory.nodes.values(), key=lambda n: (n.site, n.name)):
        cap = node.capacity
        zero = {"cpu_millis": 0, "memory_bytes": 0, "disk_bytes": 0}
        items.append({
            "name": node.name, "site": node.site, "state": node.state.value,
            "online": node.online, "reason": node.reason, "epoch": node.epoch,
            "arch": cap.arch if cap else "", "os": cap.os if cap else "",
            "runtime": cap.runtime if cap else "", "labels": node.labels,
            "allocatable": _res(cap.allocatable) if cap else zero,
            "used": _res(cap.used) if cap else zero,
            "devices": dict(cap.devices) if cap else {},
            "instances": len(node.instances), "images": list(cap.images) if cap else [],
            "last_seen_seconds": round(now - node.last_seen, 1),
            # Failover (docs/failover.md): how long out of contact (0 while in contact),
            # until when a flapping node is held Suspect, an operator's confirmation.
            "out_of_contact_seconds": round(node.out_of_contact(now), 1),
            "held_until": node.held_until if node.held_until > now else None,
            "confirmed_lost": node.confirmed_lost,
        })
    return web.json_response({"items": items})


async def confirm_lost(request: web.Request) -> web.Response:
    """An operator confirms a node out of contact is gone: its replicas, singletons
    included, are replaced now instead of after their grace."""
    c = _controller(request)
    name = request.match_info["node"]
    try:
        c.confirm_lost(name)
    except LookupError as exc:
        return _error(404, str(exc).strip("'\""))
    except ValueError as exc:
        return _error(409, str(exc))
    node = c.inventory.nodes[name]
    return web.json_response({"name": name, "state": node.state.value, "reason": node.reason})


def _res(r: Any) -> dict[str, int]:
    return {"cpu_millis": r.cpu_millis, "memory_bytes": r.memory_bytes,
            "disk_bytes": r.disk_bytes}


async def get_sites(request: web.Request) -> web.Response:
    c = _controller(request)
    items = [{"name": s.name, "labels": dict(s.labels), "nodes": list(s.nodes), "ready": s.ready}
             for s in c.inventory.sites()]
    return web.json_response({"items": items})


def _deployment_item(c: Controller, name: str) -> dict[str, Any]:
    record = c.deployments[name]
    spec = record.spec
    return {
        "name": name, "replicas": spec.replicas, "running": c.live_instances(name),
        "placed": sum(1 for (d, _), s in c.slots.items() if d == name and s.node),
        "revision": record.revision, "image": spec.container.image,
        "strategy": spec.placement.strategy, "deleted": record.deleted,
        "rollout": c.rollout_status(name),
    }


async def get_deployments(request: web.Request) -> web.Response:
    c = _controller(request)
    return web.json_response({"items": [_deployment_item(c, n) for n in sorted(c.deployments)]})


def _pods(c: Controller, deployment: str | None = None) -> list[dict[str, Any]]:
    now = time.time()
    items = []
    for (dep, index), slot in sorted(c.slots.items()):
        if deployment is not None and dep != deployment:
            continue
        node = c.inventory.nodes.get(slot.node) if slot.node else None
        inst = c.instances.get((slot.node, dep, index)) if slot.node else None
        current = inst is not None and inst.generation == slot.generation
        if slot.node is None:
            state = "Pending"
        elif not current:
            state = "Scheduled"
        else:
            assert inst is not None
            state = inst.state.capitalize()
        if node is not None and node.state.value != "Ready" and slot.node:
            state = f"{state} (node {node.state.value})"
        items.append({
            "deployment": dep, "slot": index, "name": f"{dep}/{index}", "node": slot.node,
            "site": node.site if node else None, "state": state,
            "generation": slot.generation, "revision": slot.revision,
            "restarts": inst.restarts if inst and current else 0,
            "exit_code": inst.exit_code if inst and current else None,
            "reason": (inst.reason if inst and current else "") or (
                str((slot.explanation or {}).get("message", "")) if slot.node is None else ""),
            "since_seconds": round(now - slot.assigned_at, 1) if slot.assigned_at else None,
        })
    return items


async def get_pods(request: web.Request) -> web.Response:
    return web.json_response({"items": _pods(_controller(request))})


async def get_deployment(request: web.Request) -> web.Response:
    c = _controller(request)
    name = request.match_info["name"]
    if name not in c.deployments:
        return _error(404, f"deployment {name} not found")
    record = c.deployments[name]
    slots = []
    for pod in _pods(c, name):
        slot = c.slots[(name, pod["slot"])]
        expl = slot.explanation or {}
        slots.append({**pod, "slot": pod["name"], "why": expl.get("message", ""),
                      "explanation": expl})
    effective, bound = c.effective(name)
    return web.json_response({
        **_deployment_item(c, name), "document": deployment_to_document(record.spec),
        "effective": deployment_to_document(effective),
        "policies": [{"name": p, "priority": c.policies[p].priority} for p in bound],
        "warnings": unenforced(effective),
        "revisions": [{"revision": r, "applied_at": at} for r, at in c.store.revisions(name)],
        "slots": slots, "events": c.store.events(name, limit=30),
    })


async def put_deployment(request: web.Request) -> web.Response:
    c = _controller(request)
    parsed = _parse(await _json_body(request))
    if isinstance(parsed, web.Response):
        return parsed
    if parsed.name != request.match_info["name"]:
        return _error(422, f"metadata.name {parsed.name!r} does not match the URL "
                      f"{request.match_info['name']!r}")
    return _apply_checked(c, parsed, allow_pending=_allow_pending(request))


def _allow_pending(request: web.Request) -> bool:
    return request.query.get("allow_pending", "").lower() in ("1", "true", "yes")


def _apply_checked(c: Controller, spec: Deployment, *, allow_pending: bool, cause: str = "",
                   **extra: Any) -> web.Response:
    """Apply ``spec`` unless a replica would fit on no node (409, nothing stored).
    The same spec again changes nothing, so it is never refused. Either answer
    carries the warnings for what the effective deployment sets and nothing enforces."""
    current = c.deployments.get(spec.name)
    unchanged = current is not None and not current.deleted and (
        deployment_to_document(current.spec) == deployment_to_document(spec))
    effective, bound = c.merged(spec)
    # Policies can contradict what the deployment says (residency vs its site selector):
    # check the merged result as the scheduler will see it.
    problems = deployment_problems(effective)
    errors = [p for p in problems if not p.warning]
    if errors and bound:
        return _error(422, f"{spec.name} with placement policies {', '.join(bound)} applied is "
                      "invalid; nothing was changed", problems=[p.to_dict() for p in errors])
    # The deployment's own warnings were shown when its file was loaded; only what the
    # policies add is new here.
    merged_warnings = [f"{format_path(p.path)}: {p.message}" for p in problems
                       if p.warning and bound]
    extra = {**extra, "policies": bound, "warnings": unenforced(effective) + merged_warnings}
    if not allow_pending and not unchanged:
        plan = dry_run(effective, list(c.inventory.nodes.values()), c.slots, c.specs(),
                       rtt=c.latency, fleet=c.fleet)
        stuck = [p for p in plan if p.node is None]
        if stuck:
            return _error(409, f"{len(stuck)} of {spec.replicas} replica(s) of {spec.name} "
                          "fit on no node; nothing was changed (use --allow-pending to accept "
                          "it anyway)",
                          unschedulable=[{"slot": f"{spec.name}/{p.slot}", "message": p.message}
                                         for p in stuck], **extra)
    record, changed = c.apply(spec, cause=cause)
    return web.json_response({"name": spec.name, "revision": record.revision,
                              "changed": changed, **extra})


async def get_revisions(request: web.Request) -> web.Response:
    c = _controller(request)
    name = request.match_info["name"]
    record = c.deployments.get(name)
    if record is None:
        return _error(404, f"deployment {name} not found")
    return web.json_response({"name": name, "items": history(c.store.revision_documents(name),
                                                             record.revision)})


async def rollback_deployment(request: web.Request) -> web.Response:
    """Apply an earlier revision's document as a new revision (``rollout undo``)."""
    c = _controller(request)
    name = request.match_info["name"]
    body = await _json_body(request) if request.can_read_body else {}
    revision = body.get("revision") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not (
            revision is None or (type(revision) is int and revision >= 1)):
        return _error(422, 'expected {"revision": N} with N >= 1, or {"revision": null} for the '
                      "revision before the current one")
    record = c.deployments.get(name)
    if record is not None and record.deleted:
        return _error(409, f"deployment {name} is being deleted; apply it again to bring it back")
    try:
        target, spec = c.rollback_target(name, revision)
    except LookupError as exc:
        return _error(404, str(exc))
    except PolicyError as exc:
        return _error(422, f"revision {revision} of {name} no longer validates",
                      problems=[p.to_dict() for p in exc.problems])
    assert record is not None
    if deployment_to_document(spec) == deployment_to_document(record.spec):
        return web.json_response({"name": name, "revision": record.revision, "changed": False,
                                  "rolled_back_to": target,
                                  "message": f"already at revision {target}'s template"})
    return _apply_checked(c, spec, allow_pending=_allow_pending(request),
                          cause=f"rolled back to revision {target}", rolled_back_to=target)


async def delete_deployment(request: web.Request) -> web.Response:
    c = _controller(request)
    name = request.match_info["name"]
    if not c.delete(name):
        return _error(404, f"deployment {name} not found")
    return web.json_response({"name": name, "deleted": True})


async def plan(request: web.Request) -> web.Response:
    """Where deployments would run if ``documents`` were applied now, each on its own
    against what runs today: per replica the node and why, what changes for it
    (stays, new, moves from a node, replaced, unschedulable), plus warnings.

    Placement policies in ``documents`` count as applied. Planned are the
    deployments of ``documents`` and every stored deployment those policies change."""
    c = _controller(request)
    body = await _json_body(request)
    documents = body.get("documents") if isinstance(body, dict) else None
    if not isinstance(documents, list):
        return _error(422, 'expected {"documents": [...]}')
    specs: list[Deployment] = []
    policies: dict[str, PlacementPolicy] = {}
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "PlacementPolicy":
            try:
                policy = policy_from_document(document)
            except PolicyError as exc:
                return _error(422, "invalid placement policy",
                              problems=[p.to_dict() for p in exc.problems])
            policies[policy.name] = policy
            continue
        parsed = _parse(document)
        if isinstance(parsed, web.Response):
            return parsed
        specs.append(parsed)
    after = {**c.policies, **policies}
    if policies:
        named = {s.name for s in specs}
        specs += [r.spec for n, r in sorted(c.deployments.items())
                  if n not in named and not r.deleted and c.merged(r.spec, after) != c.effective(n)]
    planned = []
    for spec in specs:
        planned.append(_plan_one(c, spec, after))
        await _let_the_loop_run()
    return web.json_response({
        "deployments": planned,
        "policies": [{"name": p.name, "warnings": unenforced_policy(p)}
                     for p in policies.values()]})


async def _let_the_loop_run() -> None:
    """Between the dry runs of one request: a dry run holds the controller's event
    loop (about a tenth of a second at 50,000 nodes, or an optimal batch's time
    limit), and a request may ask for many; the messages that came meanwhile are
    read before the next (heartbeats, and the echo by which the controller knows it
    is in contact with the broker)."""
    await asyncio.sleep(0)


def _plan_one(c: Controller, spec: Deployment,
              policies: dict[str, PlacementPolicy]) -> dict[str, Any]:
    effective, bound = c.merged(spec, policies)
    planned = dry_run(effective, list(c.inventory.nodes.values()), c.slots, c.specs(),
                      rtt=c.latency, fleet=c.fleet)
    return {
        "name": spec.name, "policies": bound, "warnings": unenforced(effective),
        "summary": dict(Counter(p.change.value for p in planned)),
        "slots": [{"slot": f"{spec.name}/{p.slot}", "node": p.node, "site": p.site,
                   "message": p.message, "moves": p.moves, "change": p.change.value,
                   "from": p.from_node, "reason": p.reason} for p in planned],
    }


# -- placement policies ----------------------------------------------------------


def _policy_item(c: Controller, policy: PlacementPolicy) -> dict[str, Any]:
    created = c.store.policy_created_at(policy.name)
    return {"name": policy.name, "priority": policy.priority,
            "selector": policy_to_document(policy)["spec"].get("selector", {}),
            "deployments": c.bound_to(policy.name), "document": policy_to_document(policy),
            "age_seconds": None if created is None else round(time.time() - created, 1)}


async def get_policies(request: web.Request) -> web.Response:
    c = _controller(request)
    return web.json_response({"items": [_policy_item(c, c.policies[n])
                                        for n in sorted(c.policies)]})


async def get_policy(request: web.Request) -> web.Response:
    c = _controller(request)
    policy = c.policies.get(request.match_info["name"])
    if policy is None:
        return _error(404, f"placement policy {request.match_info['name']} not found")
    return web.json_response(_policy_item(c, policy))


async def put_policy(request: web.Request) -> web.Response:
    """Store a placement policy unless a replica of a deployment it binds (or stops
    binding) would then fit on no node (409, nothing stored)."""
    c = _controller(request)
    try:
        policy = policy_from_document(await _json_body(request))
    except PolicyError as exc:
        return _error(422, "invalid placement policy",
                      problems=[p.to_dict() for p in exc.problems])
    if policy.name != request.match_info["name"]:
        return _error(422, f"metadata.name {policy.name!r} does not match the URL "
                      f"{request.match_info['name']!r}")
    after = {**c.policies, policy.name: policy}
    extra = {"warnings": unenforced_policy(policy)}
    if not _allow_pending(request):
        stuck = await _stuck_under(c, after)
        if stuck:
            return _error(409, f"{len(stuck)} replica(s) would fit on no node under placement "
                          f"policy {policy.name}; nothing was changed (use --allow-pending to "
                          "accept it anyway)", unschedulable=stuck, **extra)
    changed = c.apply_policy(policy)
    return web.json_response({"name": policy.name, "changed": changed,
                              "deployments": c.bound_to(policy.name), **extra})


async def _stuck_under(c: Controller,
                       policies: dict[str, PlacementPolicy]) -> list[dict[str, str]]:
    """Replicas that would fit on no node if ``policies`` replaced the stored ones,
    each deployment planned on its own against what runs then."""
    stuck = []
    for name, record in sorted(c.deployments.items()):
        specs = c.specs()
        if record.deleted or name not in specs:
            continue
        effective, _ = c.merged(record.spec, policies)
        if effective == specs[name]:
            continue
        stuck += [{"slot": f"{name}/{p.slot}", "message": p.message}
                  for p in dry_run(effective, list(c.inventory.nodes.values()), c.slots, specs,
                                   rtt=c.latency, fleet=c.fleet)
                  if p.node is None]
        await _let_the_loop_run()
    return stuck


async def delete_policy(request: web.Request) -> web.Response:
    c = _controller(request)
    name = request.match_info["name"]
    if not c.delete_policy(name):
        return _error(404, f"placement policy {name} not found")
    return web.json_response({"name": name, "deleted": True})


async def get_rtt(request: web.Request) -> web.Response:
    """The RTT matrix, read-only: endpoints (nodes and landmarks) with their Vivaldi
    coordinates and error, measured pairs with age and estimate, and the RTT from
    each source (every landmark and site, or ``?from=NAME``) to every node."""
    c = _controller(request)
    source = request.query.get("from")
    if source is not None and source not in c.latency.landmarks() + c.latency.sites():
        return _error(404, f"no landmark or site {source!r} in the RTT matrix (landmarks: "
                      f"{', '.join(c.latency.landmarks()) or 'none'}; sites: "
                      f"{', '.join(c.latency.sites()) or 'none'})")
    sources = None if source is None else [source]
    everything = len(c.latency.nodes()) * (len(c.latency.landmarks()) + len(c.latency.sites()))
    if sources is None and everything > MAX_RTT_ROWS:
        sources = []  # a big fleet: every source to every node is too much for one answer
    doc = c.latency.snapshot(time.time(), sources)
    if sources == [] and source is None:
        doc["sources_omitted"] = (f"{everything} source/node rows; ask for one source with "
                                  "?from=NAME")
    return web.json_response(doc)


async def pod_logs(request: web.Request) -> web.Response:
    c = _controller(request)
    deployment = request.match_info["deployment"]
    try:
        slot = int(request.match_info["slot"])
        tail = int(request.query.get("tail", "100"))
    except ValueError:
        return _error(400, "slot and tail must be integers")
    try:
        event = await c.logs(deployment, slot, max(1, min(tail, 10_000)))
    except LookupError as exc:
        return _error(404, str(exc))
    except TimeoutError:
        return _error(504, f"the agent running {deployment}/{slot} did not answer within 10 s")
    if event.type.value == "reject":
        return _error(404, event.reason)
    return web.json_response({"logs": event.logs})


def make_app(controller: Controller) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[CONTROLLER] = controller
    app.add_routes([
        web.get("/api/v1/healthz", healthz),
        web.get("/api/v1/stats", stats),
        web.get("/api/v1/nodes", get_nodes),
        web.post("/api/v1/nodes/{node}/confirm-lost", confirm_lost),
        web.get("/api/v1/sites", get_sites),
        web.get("/api/v1/rtt", get_rtt),
        web.get("/api/v1/deployments", get_deployments),
        web.get("/api/v1/deployments/{name}", get_deployment),
        web.put("/api/v1/deployments/{name}", put_deployment),
        web.delete("/api/v1/deployments/{name}", delete_deployment),
        web.get("/api/v1/deployments/{name}/revisions", get_revisions),
        web.post("/api/v1/deployments/{name}/rollback", rollback_deployment),
        web.get("/api/v1/pods", get_pods),
        web.get("/api/v1/pods/{deployment}/{slot}/logs", pod_logs),
        web.post("/api/v1/plan", plan),
        web.get("/api/v1/placementpolicies", get_policies),
        web.get("/api/v1/placementpolicies/{name}", get_policy),
        web.put("/api/v1/placementpolicies/{name}", put_policy),
        web.delete("/api/v1/placementpolicies/{name}", delete_policy),
    ])
    return app


async def serve_api(controller: Controller, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(controller), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
