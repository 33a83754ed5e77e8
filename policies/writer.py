"""The native model back to documents: the writers.

They emit only what differs from the defaults (plus placement and failover
fields set explicitly), so ``get -o yaml`` stays as short as what was applied
and a document read back by :mod:`policies.model` gives an equal model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from policies.duration import format_duration
from policies.quantity import format_cpu, format_memory
from policies.spec import (
    API_VERSION,
    FAILOVER_FIELDS,
    PLACEMENT_FIELDS,
    ROLLOUT_FIELDS,
    AffinityTerm,
    Container,
    Deployment,
    Failover,
    HealthCheck,
    Placement,
    PlacementPolicy,
    Port,
    Residency,
    RestartPolicy,
    Rollout,
    Scope,
    Security,
    Selector,
    Toleration,
    TolerationOperator,
    UserGroup,
)


def deployment_to_document(d: Deployment) -> dict[str, Any]:
    """The native document; ``deployment_from_document`` of it gives ``d`` back.
    Only what differs from the defaults is written (and placement and failover
    fields set explicitly), so ``get -o yaml`` stays as short as what was applied."""
    spec: dict[str, Any] = {"replicas": d.replicas, "container": _container_doc(d.container)}
    placement = _placement_doc(d.placement)
    if placement:
        spec["placement"] = placement
    if d.restart_policy is not RestartPolicy.ALWAYS:
        spec["restartPolicy"] = d.restart_policy.value
    rollout = _changed(d.rollout, Rollout(), ROLLOUT_FIELDS, _ROLLOUT_WRITERS)
    if rollout:
        spec["rollout"] = rollout
    failover = _failover_doc(d.failover)
    if failover:
        spec["failover"] = failover
    return {"apiVersion": API_VERSION, "kind": "Deployment", "metadata": _meta_doc(d.name, d.labels),
            "spec": spec}


def policy_to_document(p: PlacementPolicy) -> dict[str, Any]:
    """The native document; ``policy_from_document`` of it gives ``p`` back."""
    spec: dict[str, Any] = {"selector": _selector_doc(p.selector)}
    if p.priority:
        spec["priority"] = p.priority
    placement = _placement_doc(p.placement)
    if placement:
        spec["placement"] = placement
    failover = _failover_doc(p.failover)
    if failover:
        spec["failover"] = failover
    return {"apiVersion": API_VERSION, "kind": "PlacementPolicy",
            "metadata": _meta_doc(p.name, p.labels), "spec": spec}


def _meta_doc(name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = dict(labels)
    return meta


def _container_doc(c: Container) -> dict[str, Any]:
    container: dict[str, Any] = {"image": c.image}
    if c.command:
        container["command"] = list(c.command)
    if c.args:
        container["args"] = list(c.args)
    if c.env:
        container["env"] = dict(c.env)
    if c.ports:
        container["ports"] = [_port_doc(p) for p in c.ports]
    res: dict[str, Any] = {}
    if c.resources.cpu_millis:
        res["cpu"] = format_cpu(c.resources.cpu_millis)
    if c.resources.memory_bytes:
        res["memory"] = format_memory(c.resources.memory_bytes)
    if c.resources.disk_bytes:
        res["disk"] = format_memory(c.resources.disk_bytes)
    if c.resources.devices:
        res["devices"] = dict(c.resources.devices)
    if res:
        container["resources"] = res
    if c.health_check is not None:
        container["healthCheck"] = _health_check_doc(c.health_check)
    if c.volumes:
        container["volumes"] = [
            {"name": v.name, "hostPath": v.host_path, "mountPath": v.mount_path,
             **({"readOnly": True} if v.read_only else {})} for v in c.volumes]
    if c.data_sets:
        container["dataSets"] = [
            {"name": s.name, "mountPath": s.mount_path,
             **({} if s.read_only else {"readOnly": False})} for s in c.data_sets]
    security = _security_doc(c.security)
    if security:
        container["security"] = security
    return container


def _port_doc(p: Port) -> dict[str, Any]:
    out: dict[str, Any] = {"containerPort": p.container_port}
    if p.host_port:
        out["hostPort"] = p.host_port
    if p.protocol != "tcp":
        out["protocol"] = p.protocol
    return out


def _health_check_doc(h: HealthCheck) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if h.command:
        out["command"] = list(h.command)
    if h.http_get is not None:
        out["httpGet"] = {**({"path": h.http_get.path} if h.http_get.path != "/" else {}),
                          "port": h.http_get.port}
    if h.tcp_socket is not None:
        out["tcpSocket"] = {"port": h.tcp_socket.port}
    defaults = HealthCheck()
    for key, attr in (("interval", "interval"), ("timeout", "timeout"),
                      ("startPeriod", "start_period")):
        if getattr(h, attr) != getattr(defaults, attr):
            out[key] = format_duration(getattr(h, attr))
    if h.retries != defaults.retries:
        out["retries"] = h.retries
    return out


def _security_doc(s: Security) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if s.run_as_user is not None:
        out["runAsUser"] = s.run_as_user
    if s.read_only_root_filesystem:
        out["readOnlyRootFilesystem"] = True
    if s.privileged:
        out["privileged"] = True
    caps = {key: list(values) for key, values in (("add", s.cap_add), ("drop", s.cap_drop))
            if values}
    if caps:
        out["capabilities"] = caps
    return out


def _selector_doc(sel: Selector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if sel.match_labels:
        out["matchLabels"] = dict(sel.match_labels)
    if sel.match_expressions:
        out["matchExpressions"] = [
            {"key": e.key, "operator": e.operator.value, **({"values": list(e.values)}
                                                             if e.values else {})}
            for e in sel.match_expressions
        ]
    return out


def _affinity_doc(terms: tuple[AffinityTerm, ...]) -> list[dict[str, Any]]:
    return [{"selector": _selector_doc(t.selector),
             **({"scope": t.scope.value} if t.scope is not Scope.NODE else {}),
             **({"required": True} if t.required else {}),
             **({"weight": t.weight} if t.weight != 100 else {})} for t in terms]


def _user_doc(u: UserGroup) -> dict[str, Any]:
    out: dict[str, Any] = {"name": u.name}
    if u.site is not None:
        out["site"] = u.site
    if u.landmark is not None:
        out["landmark"] = u.landmark
    if u.share != 1.0:
        out["share"] = u.share
    if u.max_rtt is not None:
        out["maxRtt"] = format_duration(u.max_rtt)
    return out


def _toleration_doc(t: Toleration) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if t.key:
        out["key"] = t.key
    if t.operator is not TolerationOperator.EQUAL:
        out["operator"] = t.operator.value
    if t.value:
        out["value"] = t.value
    if t.effect is not None:
        out["effect"] = t.effect.value
    return out


def _residency_doc(res: Residency) -> dict[str, Any]:
    return {key: list(values) for key, values in (("countries", res.countries),
                                                  ("regions", res.regions)) if values}


_PLACEMENT_WRITERS: dict[str, Callable[[Any], Any]] = {
    "node_selector": _selector_doc, "site_selector": _selector_doc,
    "affinity": _affinity_doc, "anti_affinity": _affinity_doc,
    "spread": lambda spread: [
        {**({"scope": s.scope.value} if s.scope is not Scope.SITE else {}),
         **({"maxSkew": s.max_skew} if s.max_skew != 1 else {}),
         **({"required": True} if s.required else {})} for s in spread],
    "split": lambda split: [{"sites": _selector_doc(g.sites), "weight": g.weight}
                            for g in split],
    "users": lambda users: [_user_doc(u) for u in users],
    "residency": _residency_doc,
    "tolerations": lambda tolerations: [_toleration_doc(t) for t in tolerations],
    "weights": dict,
}
_FAILOVER_WRITERS: dict[str, Callable[[Any], Any]] = {
    "grace": format_duration, "disconnect_tolerance": format_duration,
    "on_reconnect": lambda value: value.value,
}
_ROLLOUT_WRITERS: dict[str, Callable[[Any], Any]] = {
    "delay": format_duration, "failure_action": lambda value: value.value,
    "progress_deadline": format_duration,
}


def _placement_doc(p: Placement) -> dict[str, Any]:
    return _written(p, p.set_fields, PLACEMENT_FIELDS, _PLACEMENT_WRITERS)


def _failover_doc(f: Failover) -> dict[str, Any]:
    return _written(f, f.set_fields, FAILOVER_FIELDS, _FAILOVER_WRITERS)


def _changed(value: Any, defaults: Any, fields: Mapping[str, str],
             writers: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    chosen = {attr for attr in fields.values() if getattr(value, attr) != getattr(defaults, attr)}
    return _written(value, chosen, fields, writers)


def _written(value: Any, chosen: frozenset[str] | set[str], fields: Mapping[str, str],
             writers: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    """The chosen attributes of ``value`` under their document keys, in document order."""
    out: dict[str, Any] = {}
    for key, attr in fields.items():
        if attr in chosen:
            item = getattr(value, attr)
            out[key] = writers.get(attr, lambda same: same)(item)
    return out
