"""What the command line prints: tables, descriptions, JSON and YAML.

Every function here is pure: it takes the controller's JSON (and ``now`` or a
width where they matter) and returns the text to print, so the rendering is
tested without a controller or a terminal. ``rich`` and ``yaml`` are imported
only by the formats that need them; ``-o json`` stays as cheap as it can.

``-o json`` and ``-o yaml`` are a stable interface (scripts parse them): they
print the controller's items unchanged, with sorted keys.
"""

from __future__ import annotations

import io
import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from policies.quantity import format_cpu, human_memory

FORMATS = ("table", "wide", "json", "yaml")
KINDS = ("nodes", "sites", "deployments", "pods", "placementpolicies")
_ALIASES = {
    "node": "nodes", "no": "nodes",
    "site": "sites",
    "deployment": "deployments", "deploy": "deployments",
    "pod": "pods", "po": "pods",
    "placementpolicy": "placementpolicies", "pp": "placementpolicies",
}
NONE = "<none>"
UNKNOWN_AGE = "<unknown>"
# Wide enough that a `get` table never wraps: like kubectl, long rows stay one
# line each so that grep and awk keep working.
_NO_WRAP_WIDTH = 100_000
_GAP = 3  # spaces between columns, as kubectl prints them
_MIN_FOLD_WIDTH = 20  # narrowest a wrapped column (WHY, MESSAGE) is made

Item = Mapping[str, Any]
Row = Sequence[str]


def resource_kind(text: str) -> str:
    """``po`` -> ``pods``; raises ValueError naming the accepted kinds."""
    kind = text.lower()
    if kind in KINDS:
        return kind
    if kind in _ALIASES:
        return _ALIASES[kind]
    raise ValueError(f"unknown resource type {text!r} (expected one of: {', '.join(KINDS)})")


# -- small formats --------------------------------------------------------------


def format_age(seconds: object) -> str:
    """``5s``, ``3m``, ``2h``, ``4d``: the largest whole unit, as kubectl shows ages."""
    value = _seconds(seconds)
    if value is None:
        return UNKNOWN_AGE
    s = max(0, int(value))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def format_labels(labels: object) -> str:
    if not isinstance(labels, Mapping) or not labels:
        return NONE
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _text(value: object) -> str:
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _pair(used: object, total: object, fmt: Any) -> str:
    u, t = _int(used), _int(total)
    return f"{'?' if u is None else fmt(u)}/{'?' if t is None else fmt(t)}"


def _resources(item: Item, key: str) -> Mapping[str, Any]:
    value = item.get(key)
    return value if isinstance(value, Mapping) else {}


def pod_name(item: Item) -> str:
    """``web/0``: the controller's name, else built from deployment and slot."""
    name = item.get("name")
    if isinstance(name, str) and name:
        return name
    return f"{item.get('deployment')}/{item.get('slot')}"


# -- get ------------------------------------------------------------------------


def select(kind: str, items: Iterable[Item], name: str | None) -> list[Item]:
    """The items ``edgefed get KIND NAME`` shows; for pods NAME may also be a deployment."""
    items = list(items)
    if name is None:
        return items
    if kind != "pods":
        return [i for i in items if i.get("name") == name]
    return [
        i for i in items
        if name in (i.get("deployment"), pod_name(i), f"{i.get('deployment')}-{i.get('slot')}")
    ]


def table_rows(kind: str, items: Sequence[Item], *, wide: bool = False) -> tuple[Row, list[Row]]:
    """Headers and rows of ``edgefed get KIND`` (``-o wide`` adds columns at the end)."""
    headers, row = _TABLES[kind]
    rows = [row(item, wide) for item in items]
    if wide:
        headers = (*headers, *_WIDE_HEADERS.get(kind, ()))
    return headers, rows


def _node_row(n: Item, wide: bool) -> Row:
    used, alloc = _resources(n, "used"), _resources(n, "allocatable")
    row = [
        _text(n.get("name")), _text(n.get("site")), _text(n.get("state")),
        _text(n.get("runtime")), _text(n.get("arch")),
        _pair(used.get("cpu_millis"), alloc.get("cpu_millis"), format_cpu),
        _pair(used.get("memory_bytes"), alloc.get("memory_bytes"), human_memory),
        _text(n.get("instances")), format_age(n.get("last_seen_seconds")),
    ]
    if wide:
        row += [format_labels(n.get("labels")), _text(n.get("epoch")), _text(n.get("reason"))]
    return row


def _site_row(s: Item, wide: bool) -> Row:
    nodes = s.get("nodes")
    count = len(nodes) if isinstance(nodes, list) else nodes
    return [_text(s.get("name")), _text(count), _text(s.get("ready")), format_labels(s.get("labels"))]


def _deployment_row(d: Item, wide: bool) -> Row:
    ready = f"{_text(d.get('running'))}/{_text(d.get('replicas'))}"
    row = [_text(d.get("name")), ready, _text(d.get("revision")), _text(d.get("image")),
           _text(d.get("strategy"))]
    if wide:
        row += [_text(d.get("placed")), _text(bool(d.get("deleted")))]
    return row


def _pod_row(p: Item, wide: bool) -> Row:
    row = [
        pod_name(p), _text(p.get("node")), _text(p.get("site")), _text(p.get("state")),
        _text(p.get("generation")), _text(p.get("restarts")), format_age(p.get("since_seconds")),
    ]
    if wide:
        row += [_text(p.get("revision")), _text(p.get("exit_code")), _text(p.get("reason"))]
    return row


def _policy_row(p: Item, wide: bool) -> Row:
    deployments = p.get("deployments")
    bound = ",".join(map(str, deployments)) if isinstance(deployments, list) else None
    return [_text(p.get("name")), _text(p.get("priority")), format_selector(p.get("selector")),
            _text(bound), format_age(p.get("age_seconds"))]


_TABLES: dict[str, tuple[Row, Any]] = {
    "nodes": (("NAME", "SITE", "STATE", "RUNTIME", "ARCH", "CPU", "MEMORY", "INSTANCES", "AGE"),
              _node_row),
    "sites": (("NAME", "NODES", "READY", "LABELS"), _site_row),
    "deployments": (("NAME", "READY", "REVISION", "IMAGE", "STRATEGY"), _deployment_row),
    "pods": (("NAME", "NODE", "SITE", "STATE", "GENERATION", "RESTARTS", "AGE"), _pod_row),
    "placementpolicies": (("NAME", "PRIORITY", "SELECTOR", "DEPLOYMENTS", "AGE"), _policy_row),
}
_WIDE_HEADERS: dict[str, Row] = {
    "nodes": ("LABELS", "EPOCH", "REASON"),
    "deployments": ("PLACED", "DELETING"),
    "pods": ("REVISION", "EXIT", "REASON"),
}


def render_rtt(rows: Sequence[Item], matrix: Item, *, wide: bool = False) -> str:
    """``edgefed get rtt``: one line per (source, node); ``-o wide`` adds the node's
    Vivaldi error estimate (how far its estimates may be off, relative)."""
    endpoints = matrix.get("endpoints")
    error = {e.get("name"): e.get("error") for e in endpoints
             if isinstance(e, Mapping)} if isinstance(endpoints, list) else {}
    headers: Row = ("FROM", "NODE", "RTT", "SOURCE", *(("ERROR",) if wide else ()))
    table = []
    for r in rows:
        value = r.get("rtt_ms")
        shown = NONE
        if isinstance(value, int | float):
            shown = f"{value:.2f}ms" if value < 10 else f"{value:.1f}ms"
        row = [_text(r.get("from")), _text(r.get("node")), shown, _text(r.get("basis"))]
        if wide:
            row.append(_text(error.get(r.get("node"))))
        table.append(row)
    return render_table(headers, table)


def render_items(kind: str, items: Sequence[Item], fmt: str) -> str:
    """The whole output of ``edgefed get KIND -o FMT`` for these items."""
    if fmt in ("json", "yaml"):
        return render_data(list(items), fmt)
    headers, rows = table_rows(kind, items, wide=fmt == "wide")
    return render_table(headers, rows)


def render_data(data: Any, fmt: str) -> str:
    """JSON or YAML with sorted keys: stable for scripts and diffs."""
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    import yaml

    return str(yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True))


# -- tables ---------------------------------------------------------------------


def render_table(
    headers: Row, rows: Sequence[Row], *, width: int | None = None, fold: Iterable[str] = ()
) -> str:
    """A borderless table, kubectl style. Columns named in ``fold`` wrap at
    word boundaries to fit ``width``; all others stay on one line. Without a
    width nothing wraps."""
    from rich.table import Table
    from rich.text import Text

    folding = set(fold)
    if width is not None and folding:
        # Never cut a cell: on a narrow terminal the lines get longer than the
        # terminal (which wraps them) rather than squeezing the folding columns.
        fixed = sum(max(len(h), *(len(r[i]) for r in rows)) + _GAP
                    for i, h in enumerate(headers) if h not in folding)
        width = max(width, fixed + _MIN_FOLD_WIDTH * len(folding))
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, _GAP, 0, 0),
                  header_style="", expand=False)
    for header in headers:
        if header in folding:
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return _render(table, width or _NO_WRAP_WIDTH)


def _render(renderable: Any, width: int) -> str:
    from rich.console import Console

    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False,
                      markup=False, highlight=False, emoji=False, legacy_windows=False)
    console.print(renderable)
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


def _indent(text: str, prefix: str = "  ") -> str:
    return "".join(prefix + line + "\n" if line else "\n" for line in text.splitlines())


# -- plan -----------------------------------------------------------------------


_CHANGES = ("stays", "new", "replaced", "moves", "unschedulable")
_CHANGE_WORDS = {"stays": "staying", "moves": "moving"}


def render_plan(response: Mapping[str, Any], *, width: int) -> str:
    """``edgefed plan``: where each slot would go, what changes and why (wrapped,
    never cut), then one line per deployment counting the changes."""
    rows: list[Row] = []
    totals = []
    for deployment in _list(response.get("deployments")):
        for slot in _list(deployment.get("slots")):
            reason, message = slot.get("reason"), _text(slot.get("message"))
            rows.append([_text(slot.get("slot")), _text(slot.get("node")),
                         _text(slot.get("site")), _change(slot),
                         f"{reason}; {message}" if reason else message])
        totals.append(_plan_total(deployment))
    table = render_table(("SLOT", "NODE", "SITE", "CHANGE", "WHY"), rows, width=width,
                         fold=("WHY",))
    return table + "".join(line + "\n" for line in totals if line)


def _change(slot: Mapping[str, Any]) -> str:
    change = slot.get("change")
    if change == "moves" and slot.get("from"):
        return f"moves from {slot['from']}"
    return _text(change)


def _plan_total(deployment: Mapping[str, Any]) -> str:
    """``web: 1 staying, 2 moving (policies: eu-residency)``."""
    summary = _mapping(deployment, "summary")
    counts = [f"{summary[c]} {_CHANGE_WORDS.get(c, c)}" for c in _CHANGES if summary.get(c)]
    if not counts:
        return ""
    policies = deployment.get("policies")
    bound = f" (policies: {', '.join(map(str, policies))})" if isinstance(policies, list) and \
        policies else ""
    return f"{_text(deployment.get('name'))}: {', '.join(counts)}{bound}"


# -- rollout history -----------------------------------------------------------------


def render_history(items: Sequence[Item], *, now: float, width: int) -> str:
    """``edgefed rollout history``: each revision, when it was applied, what it changed."""
    rows: list[Row] = [
        [_text(i.get("revision")), _event_age(i.get("applied_at"), now),
         "*" if i.get("current") is True else "", _text(i.get("summary"))]
        for i in items]
    return render_table(("REVISION", "AGE", "CURRENT", "CHANGE"), rows, width=width,
                        fold=("CHANGE",))


def format_rollout(r: Mapping[str, Any]) -> str:
    """``revision 1 -> 2, 2/3 updated: batch 2/3 ready; next batch in 7s (delay 10s)``;
    the reason when it was paused or rolled back."""
    if not r:
        return NONE
    head = f"revision {_text(r.get('from_revision'))} -> {_text(r.get('to_revision'))}"
    if r.get("rolled_back"):
        head += f" ({_text(r.get('rolled_back'))})"
    head += f", {_text(r.get('updated'))}/{_text(r.get('replicas'))} updated"
    if r.get("failed"):
        head += f", {_text(r.get('failed'))} failed"
    return f"{head}: {_text(r.get('message') or r.get('phase'))}"


def _list(value: object) -> list[Item]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


# -- describe -------------------------------------------------------------------


def describe_deployment(resp: Mapping[str, Any], *, now: float, width: int) -> str:
    """``edgefed describe deployment``: the spec, then where each replica runs and why."""
    doc = _mapping(resp, "document")
    meta = _mapping(doc, "metadata")
    spec = _mapping(doc, "spec")
    container = _mapping(spec, "container")
    # The placement in force: the deployment's own merged with its policies.
    placement = _mapping(_mapping(_mapping(resp, "effective") or doc, "spec"), "placement")
    out = _fields([
        ("Name", _text(resp.get("name"))),
        ("Revision", _revision(resp, now)),
        ("Rollout", format_rollout(_mapping(resp, "rollout"))),
        ("Replicas", f"{_text(resp.get('replicas'))} desired, {_text(resp.get('running'))} running"),
        ("Labels", format_labels(meta.get("labels"))),
        ("Restart policy", _text(spec.get("restartPolicy") or "Always")),
        ("Policies", ", ".join(f"{p.get('name')} (priority {p.get('priority')})"
                               for p in _list(resp.get("policies"))) or NONE),
    ])
    out += "Container:\n" + _indent(_fields(_container_fields(container)))
    out += "Placement:\n" + _indent(_fields(_placement_fields(placement)))
    warnings = [str(w) for w in resp.get("warnings") or [] if isinstance(w, str)]
    if warnings:
        out += "Not enforced:\n" + "".join(f"  {w}\n" for w in warnings)
    out += _section("Slots", _replica_table(_list(resp.get("slots")), width - 2))
    out += _section("Events", _event_table(_list(resp.get("events")), _text(resp.get("name")),
                                           now, width - 2))
    return out


def _revision(resp: Mapping[str, Any], now: float) -> str:
    """``3 (applied 5m ago)`` when the controller lists when revisions were applied."""
    revision = resp.get("revision")
    for r in _list(resp.get("revisions")):
        applied = _seconds(r.get("applied_at"))
        if r.get("revision") == revision and applied is not None:
            return f"{revision} (applied {format_age(now - applied)} ago)"
    return _text(revision)


def _mapping(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def _fields(pairs: Sequence[tuple[str, str]]) -> str:
    pad = max(len(label) for label, _ in pairs) + 2
    return "".join(f"{label + ':':<{pad}}{value}\n" for label, value in pairs)


def _section(title: str, table: str) -> str:
    return f"{title}:" + ("\n" + _indent(table) if table else f"  {NONE}\n")


def _container_fields(c: Mapping[str, Any]) -> list[tuple[str, str]]:
    res = _mapping(c, "resources")
    resources = ", ".join(f"{k} {res[k]}" for k in ("cpu", "memory") if k in res) or NONE
    return [
        ("Image", _text(c.get("image"))),
        ("Command", _argv(c.get("command"))),
        ("Args", _argv(c.get("args"))),
        ("Env", format_labels(c.get("env"))),
        ("Resources", resources),
        ("Ports", ", ".join(_port(p) for p in _list(c.get("ports"))) or NONE),
    ]


def _placement_fields(p: Mapping[str, Any]) -> list[tuple[str, str]]:
    residency = _mapping(p, "residency")
    limits = [f"{p[k]} per {word}" for k, word in (("maxPerNode", "node"), ("maxPerSite", "site"))
              if p.get(k)]
    return [
        ("Strategy", _text(p.get("strategy") or "two-phase")),
        ("Node selector", format_selector(p.get("nodeSelector"))),
        ("Site selector", format_selector(p.get("siteSelector"))),
        ("Residency", "; ".join(f"{k} {','.join(map(str, v))}" for k, v in sorted(
            residency.items()) if isinstance(v, list) and v) or NONE),
        ("Limits", ", ".join(limits) or NONE),
        ("Anti-affinity", "; ".join(
            f"{format_selector(t.get('selector'))} ({t.get('scope') or 'node'}"
            + (")" if t.get("required") else f", preferred, weight {t.get('weight', 100)})")
            for t in _list(p.get("antiAffinity"))) or NONE),
        ("Weights", format_labels(p.get("weights"))),
    ]


def _argv(value: object) -> str:
    if not isinstance(value, list) or not value:
        return NONE
    return shlex.join(str(v) for v in value)


def _port(p: Mapping[str, Any]) -> str:
    text = f"{p.get('containerPort')}/{p.get('protocol') or 'tcp'}"
    return text + (f" (host {p['hostPort']})" if p.get("hostPort") else "")


def format_selector(sel: object) -> str:
    """``tier=edge, zone In (a,b)``: the document's selector as one line."""
    if not isinstance(sel, Mapping):
        return NONE
    parts = [f"{k}={v}" for k, v in sorted(_mapping(sel, "matchLabels").items())]
    for expr in _list(sel.get("matchExpressions")):
        values = expr.get("values")
        text = f"{expr.get('key')} {expr.get('operator')}"
        if isinstance(values, list) and values:
            text += f" ({','.join(str(v) for v in values)})"
        parts.append(text)
    return ", ".join(parts) or NONE


def _replica_table(slots: Sequence[Item], width: int) -> str:
    if not slots:
        return ""
    rows = [[_text(s.get("slot")), _text(s.get("node")), _text(s.get("site")),
             _text(s.get("generation")), _text(s.get("revision")), _text(s.get("state")),
             _text(s.get("why"))] for s in slots]
    return render_table(("SLOT", "NODE", "SITE", "GEN", "REV", "STATE", "WHY"), rows,
                        width=width, fold=("WHY",))


def _event_table(events: Sequence[Item], deployment: str, now: float, width: int) -> str:
    if not events:
        return ""
    ordered = sorted(events, key=lambda e: _seconds(e.get("at")) or 0.0)
    rows = [[_event_age(e.get("at"), now), _text(e.get("kind")), _event_slot(e, deployment),
             _text(e.get("node")), _text(e.get("message"))] for e in ordered]
    return render_table(("AGE", "KIND", "SLOT", "NODE", "MESSAGE"), rows, width=width,
                        fold=("MESSAGE",))


def _event_slot(event: Item, deployment: str) -> str:
    """Events name a slot by its index; show it as the pod name, ``web/0``."""
    slot = event.get("slot")
    if isinstance(slot, int) and not isinstance(slot, bool):
        return f"{event.get('deployment') or deployment}/{slot}"
    return _text(slot)


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _event_age(at: object, now: float) -> str:
    seconds = _seconds(at)
    return UNKNOWN_AGE if seconds is None else format_age(now - seconds)
