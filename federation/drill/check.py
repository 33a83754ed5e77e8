"""Assertions checked from a drill log after the run, Jepsen-style: from what was
recorded, never from what the harness believes it did.

Pure: takes the records (see :mod:`federation.drill.record`) and the bounds.

Words used here:

- An instance is *live* from the first report that it is starting or running until
  a report that it stopped, exited, failed or is gone from its node's reports.
- A node is *out of contact* from its last message before the controller declared
  it Lost until the controller trusts it again (Ready): a crashed, hung or cut-off
  node, and then a returning one, held Suspect while the controller stops what it
  ran for slots that moved. Its instances are not counted meanwhile: nobody could
  reach them, and the federation has, by declaring the node Lost, given their
  slots to other nodes. Once it is Ready they count again, so an old instance
  still running after healing is a duplicate until it is reported stopped.
- Deployments named in ``singletons`` get the strict check: their instances
  count while out of contact too (the agent fences a singleton itself and says
  so, with the time it did, once it is back), so two live instances of such a
  slot at any instant, partition or not, is a violation.
- A slot is *served* at an instant when at least one live instance of it on a
  node in contact exists. Recovery from a fault is the time until every slot
  that went unserved after it is served again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from federation.drill.spec import Assertions as Bounds

LIVE_STATES = frozenset({"starting", "running"})
# Faults after which slots may go unserved: recovery is measured from them.
DISRUPTIVE = frozenset({"kill-node", "hang-node", "cut-link", "flap-link", "degrade-link",
                        "reset-link",
                        "crash-broker", "restart-broker", "crash-controller",
                        "restart-controller", "restart-node"})
# Faults that must be noticed by the controller (a node goes Suspect or Lost).
DETECTED = frozenset({"kill-node", "hang-node", "cut-link", "flap-link"})
# Faults that end what an earlier fault on the same target started.
ENDS = {"resume-node": "hang-node", "restore-link": "cut-link"}

Record = Mapping[str, Any]
SlotName = str  # deployment/index


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    assertion: str  # the bound's name in the drill file
    message: str
    at: float | None = None  # seconds into the drill
    slot: str | None = None
    lasted: float | None = None  # seconds, for an episode (a duplicate)
    evidence: tuple[Mapping[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"assertion": self.assertion, "message": self.message, "at": self.at,
                "slot": self.slot, "lasted": self.lasted,
                "evidence": [dict(e) for e in self.evidence]}


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultOutcome:
    at: float
    action: str
    target: str
    mechanism: str
    detection: float | None  # seconds until an affected node went Suspect or Lost
    recovery: float | None  # seconds until every slot that went unserved was served again
    unserved: tuple[str, ...]  # slots that went unserved after it

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "action": self.action, "target": self.target,
                "mechanism": self.mechanism, "detection_seconds": self.detection,
                "recovery_seconds": self.recovery, "unserved_slots": list(self.unserved)}


@dataclass(frozen=True, slots=True, kw_only=True)
class Interval:
    """One instance live on a node, [start, end)."""

    slot: SlotName
    node: str
    generation: int
    start: float
    end: float
    started_by: Mapping[str, Any]

    def describe(self) -> str:
        return f"{self.slot} generation {self.generation} on {self.node}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    passed: bool
    violations: tuple[Violation, ...]
    faults: tuple[FaultOutcome, ...]
    metrics: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "metrics": dict(self.metrics),
                "faults": [f.to_dict() for f in self.faults],
                "violations": [v.to_dict() for v in self.violations]}


# -- building blocks -------------------------------------------------------------


def _slot(r: Record) -> SlotName:
    return f"{r['deployment']}/{r['slot']}"


def _phase(records: Sequence[Record], phase: str) -> float | None:
    return next((float(r["t"]) for r in records
                 if r["kind"] == "drill" and r.get("phase") == phase), None)


def _end(records: Sequence[Record]) -> float:
    return _phase(records, "end") or (float(records[-1]["t"]) if records else 0.0)


def _when(r: Record) -> float:
    """When a report says the thing happened: the agent's send time if known."""
    return float(r.get("at", r["t"]))


def live_intervals(records: Sequence[Record], end: float) -> list[Interval]:
    """Every instance's live span, from its agent's reports."""
    open_: dict[tuple[SlotName, str, int], tuple[float, Record]] = {}
    out: list[Interval] = []
    reports = sorted((r for r in records if r["kind"] == "instance"), key=_when)
    for r in reports:
        key = (_slot(r), str(r["node"]), int(r["generation"]))
        if r["state"] in LIVE_STATES:
            open_.setdefault(key, (_when(r), r))
        elif key in open_:
            start, first = open_.pop(key)
            out.append(Interval(slot=key[0], node=key[1], generation=key[2], start=start,
                                end=max(start, _when(r)), started_by=first))
    for key, (start, first) in open_.items():
        out.append(Interval(slot=key[0], node=key[1], generation=key[2], start=start, end=end,
                            started_by=first))
    return sorted(out, key=lambda i: (i.start, i.slot, i.node))


def _contact(r: Record) -> str | None:
    """The node a record proves was in contact at that instant, if any."""
    if r.get("retained"):
        return None
    if r["kind"] in ("heard", "instance", "answer"):
        return str(r["node"])
    if r["kind"] == "presence" and r.get("state") == "online":
        return str(r["node"])
    return None


def out_of_contact(records: Sequence[Record], end: float) -> dict[str, list[tuple[float, float]]]:
    """Per node, the spans from its last message before it was declared Lost until
    the controller trusts it again (Ready), or the end of the log."""
    last: dict[str, float] = {}
    lost_since: dict[str, float] = {}  # node -> span start, while out of contact
    spans: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        node = _contact(r)
        if node is not None:
            last[node] = float(r["t"])
        elif r["kind"] == "node" and r["state"] == "Lost" and r["node"] not in lost_since:
            lost_since[r["node"]] = last.get(r["node"], float(r["t"]))
        elif r["kind"] == "node" and r["state"] == "Ready" and r["node"] in lost_since:
            spans.setdefault(r["node"], []).append((lost_since.pop(r["node"]), float(r["t"])))
    for node, since in lost_since.items():
        spans.setdefault(node, []).append((since, end))
    return spans


def counted(intervals: Iterable[Interval],
            away: Mapping[str, list[tuple[float, float]]]) -> list[Interval]:
    """The live intervals minus the spans their node was out of contact."""
    out = []
    for iv in intervals:
        pieces = [(iv.start, iv.end)]
        for a, b in away.get(iv.node, []):
            cut = []
            for s, e in pieces:
                if b <= s or a >= e:
                    cut.append((s, e))
                    continue
                if s < a:
                    cut.append((s, a))
                if b < e:
                    cut.append((b, e))
            pieces = cut
        out += [Interval(slot=iv.slot, node=iv.node, generation=iv.generation, start=s,
                         end=e, started_by=iv.started_by) for s, e in pieces if e > s]
    return out


def _sweep(intervals: Sequence[Interval]) -> list[tuple[float, list[Interval]]]:
    """Instants where the set of intervals changes, with the set live from then on."""
    points = sorted({iv.start for iv in intervals} | {iv.end for iv in intervals})
    return [(t, [iv for iv in intervals if iv.start <= t < iv.end]) for t in points]


def duplicates(live: Sequence[Interval], origin: float = 0.0) -> list[Violation]:
    """Every episode with two or more counted live instances of one slot (times in
    messages are seconds since ``origin``, the workloads' convergence)."""
    out = []
    by_slot: dict[SlotName, list[Interval]] = {}
    for iv in live:
        by_slot.setdefault(iv.slot, []).append(iv)
    for slot, ivs in sorted(by_slot.items()):
        episode: tuple[float, list[Interval]] | None = None
        for t, now in [*_sweep(ivs), (float("inf"), [])]:
            if len(now) >= 2 and episode is None:
                episode = (t, now)
            elif len(now) < 2 and episode is not None:
                start, both = episode
                names = " and ".join(iv.describe().split(" ", 1)[1] for iv in both)
                out.append(Violation(
                    assertion="duplicateLiveInstances", slot=slot, at=start, lasted=t - start,
                    message=f"{slot}: {len(both)} live instances at t={start - origin:.2f} s "
                    f"({names}) for {t - start:.2f} s",
                    evidence=tuple(iv.started_by for iv in both)))
                episode = None
    return out


def _overlap(v: Violation) -> float:
    return v.lasted or 0.0


def _served_spans(live: Sequence[Interval], slots: Iterable[SlotName], start: float,
                  end: float) -> dict[SlotName, list[tuple[float, float]]]:
    """Per slot, the spans within [start, end) without a counted live instance."""
    gaps: dict[SlotName, list[tuple[float, float]]] = {}
    for slot in slots:
        ivs = sorted((iv.start, iv.end) for iv in live if iv.slot == slot and iv.end > start)
        cursor = start
        for s, e in ivs:
            if s > cursor:
                gaps.setdefault(slot, []).append((cursor, min(s, end)))
            cursor = max(cursor, e)
            if cursor >= end:
                break
        if cursor < end:
            gaps.setdefault(slot, []).append((cursor, end))
    return {k: [g for g in v if g[1] > g[0]] for k, v in gaps.items() if v}


def _faults(records: Sequence[Record]) -> list[Record]:
    return [r for r in records if r["kind"] == "fault"]


def _affected(fault: Record, nodes_of_site: Mapping[str, list[str]]) -> list[str]:
    if fault.get("node"):
        return [str(fault["node"])]
    if fault.get("site"):
        return list(nodes_of_site.get(str(fault["site"]), []))
    return []


def _sites(records: Sequence[Record]) -> dict[str, list[str]]:
    sites: dict[str, list[str]] = {}
    for r in records:
        if r["kind"] == "node" and r.get("site") and r["node"] not in sites.get(r["site"], []):
            sites.setdefault(str(r["site"]), []).append(str(r["node"]))
    return sites


def fault_outcomes(records: Sequence[Record], live: Sequence[Interval],
                   slots: Sequence[SlotName], end: float) -> list[FaultOutcome]:
    sites = _sites(records)
    faults = _faults(records)
    gaps = _served_spans(live, slots, _phase(records, "converged") or 0.0, end)
    out = []
    disruptive = [f for f in faults if f["action"] in DISRUPTIVE]
    for f in faults:
        at = float(f["t"])
        nodes = _affected(f, sites)
        detection = None
        if f["action"] in DETECTED:
            hit = next((r for r in records if r["kind"] == "node" and r["t"] >= at
                        and r["node"] in nodes and r["state"] in ("Suspect", "Lost")), None)
            detection = None if hit is None else float(hit["t"]) - at
        recovery: float | None = None
        unserved: list[str] = []
        if f["action"] in DISRUPTIVE:
            later = [float(g["t"]) for g in disruptive if float(g["t"]) > at]
            horizon = min(later) if later else end
            recovery = 0.0
            for slot, spans in gaps.items():
                for s, e in spans:
                    if at <= s < horizon or s < at < e:
                        unserved.append(slot)
                        recovery = None if recovery is None or e >= end else max(recovery, e - at)
        out.append(FaultOutcome(at=at, action=str(f["action"]), target=str(f.get("target", "")),
                                mechanism=str(f.get("mechanism", "")), detection=detection,
                                recovery=recovery, unserved=tuple(sorted(set(unserved)))))
    return out


def _slots(records: Sequence[Record]) -> list[SlotName]:
    converged = _phase(records, "converged")
    return sorted({_slot(r) for r in records if r["kind"] == "placement"
                   and (converged is None or r["t"] <= converged)})


def reschedules(records: Sequence[Record]) -> list[Record]:
    """Run commands that moved a slot to a new generation after it first ran."""
    converged = _phase(records, "converged") or 0.0
    highest: dict[SlotName, int] = {}
    moved = []
    for r in records:
        if r["kind"] != "cmd" or r["op"] != "run":
            continue
        slot, gen = _slot(r), int(r["generation"])
        if slot in highest and gen > highest[slot] and r["t"] >= converged:
            moved.append(r)
        highest[slot] = max(gen, highest.get(slot, gen))
    return moved


def _quiet_windows(records: Sequence[Record]) -> list[tuple[str, float, float]]:
    """(target, start, end) while a fault made a node or site unreachable on purpose."""
    end = _end(records)
    out = []
    for f in _faults(records):
        target, at = str(f.get("target", "")), float(f["t"])
        if f["action"] in ("cut-link", "hang-node"):
            closing = ENDS_BY_START[str(f["action"])]
            stop = next((float(g["t"]) for g in _faults(records) if g["action"] == closing
                         and g.get("target") == target and g["t"] > at), end)
            out.append((target, at, stop))
        elif f["action"] in ("kill-node", "flap-link", "restart-node"):
            out.append((target, at, float(f.get("until", end))))
    return out


ENDS_BY_START = {start: stop for stop, start in ENDS.items()}


def command_latencies(records: Sequence[Record]) -> tuple[list[tuple[float, Record]], int]:
    """(latency, command) for answered commands to nodes not cut off on purpose,
    and how many such commands went unanswered."""
    sites = _sites(records)
    site_of = {n: s for s, ns in sites.items() for n in ns}
    quiet = _quiet_windows(records)
    answers: dict[str, float] = {}
    for r in records:
        if r["kind"] == "answer":
            answers.setdefault(str(r["command_id"]), float(r["t"]))
    seen: set[str] = set()
    out, unanswered = [], 0
    for r in records:
        if r["kind"] != "cmd" or r["command_id"] in seen:
            continue
        seen.add(str(r["command_id"]))
        node, t = str(r["node"]), float(r["t"])
        targets = {f"node {node}", f"site {site_of.get(node, '')}"}
        if any(target in targets and a <= t <= b for target, a, b in quiet):
            continue
        answered = answers.get(str(r["command_id"]))
        if answered is None:
            unanswered += 1
        else:
            out.append((answered - t, r))
    return out, unanswered


# -- the check -----------------------------------------------------------------


def check(records: Sequence[Record], bounds: Bounds) -> Outcome:
    records = sorted(records, key=lambda r: float(r["t"]))
    end = _end(records)
    intervals = live_intervals(records, end)
    away = out_of_contact(records, end)
    live = counted(intervals, away)
    slots = _slots(records)
    faults = fault_outcomes(records, live, slots, end)
    violations: list[Violation] = []

    # Messages give times since the workloads converged, as the report and plot do;
    # ``at`` fields stay on the log's clock.
    origin = _phase(records, "converged") or 0.0
    strict = set(bounds.singletons)
    overlaps = duplicates([iv for iv in live if iv.slot.split("/")[0] not in strict]
                          + [iv for iv in intervals if iv.slot.split("/")[0] in strict], origin)
    dups = [v for v in overlaps if v.slot is not None and (
        v.slot.split("/")[0] in strict or _overlap(v) > bounds.duplicate_tolerance)]
    if bounds.duplicate_live_instances is not None and len(dups) > bounds.duplicate_live_instances:
        violations += dups

    for f in faults:
        where = f"{f.action} {f.target} at t={f.at - origin:.2f} s"
        if bounds.max_detection is not None and f.action in DETECTED:
            if f.detection is None:
                violations.append(Violation(assertion="maxDetection", at=f.at,
                                            message=f"{where}: never detected"))
            elif f.detection > bounds.max_detection:
                violations.append(Violation(
                    assertion="maxDetection", at=f.at + f.detection,
                    message=f"{where}: detected after {f.detection:.2f} s "
                    f"(bound {bounds.max_detection:g} s)"))
        if bounds.max_recovery is not None and f.unserved:
            if f.recovery is None:
                violations.append(Violation(
                    assertion="maxRecovery", at=f.at,
                    message=f"{where}: {', '.join(f.unserved)} not served again by the end "
                    f"(t={end - origin:.2f} s, bound {bounds.max_recovery:g} s)"))
            elif f.recovery > bounds.max_recovery:
                violations.append(Violation(
                    assertion="maxRecovery", at=f.at + f.recovery,
                    message=f"{where}: {', '.join(f.unserved)} served again only after "
                    f"{f.recovery:.2f} s (bound {bounds.max_recovery:g} s)"))

    served_at_end = {iv.slot for iv in live if iv.end >= end}
    lost = [s for s in slots if s not in served_at_end]
    if bounds.lost_slots is not None and len(lost) > bounds.lost_slots:
        violations.append(Violation(assertion="lostSlots", at=end,
                                    message=f"{len(lost)} slot(s) without a live instance at "
                                    f"the end: {', '.join(lost)} (bound {bounds.lost_slots})"))

    moved = reschedules(records)
    if bounds.max_reschedules is not None and len(moved) > bounds.max_reschedules:
        listed = ", ".join(f"{_slot(r)} -> {r['node']} at t={r['t'] - origin:.2f} s"
                           for r in moved[:8])
        violations.append(Violation(
            assertion="maxReschedules", at=float(moved[bounds.max_reschedules]["t"]),
            message=f"{len(moved)} reschedule(s), bound {bounds.max_reschedules}: {listed}",
            evidence=tuple(moved[:8])))

    latencies, unanswered = command_latencies(records)
    worst = max(latencies, key=lambda p: p[0], default=None)
    if bounds.max_command_latency is not None and worst is not None \
            and worst[0] > bounds.max_command_latency:
        cmd = worst[1]
        violations.append(Violation(
            assertion="maxCommandLatency", at=float(cmd["t"]), slot=_slot(cmd),
            message=f"{cmd['op']} {_slot(cmd)} to {cmd['node']} answered after "
            f"{worst[0]:.3f} s (bound {bounds.max_command_latency:g} s)", evidence=(cmd,)))

    values = sorted(v for v, _ in latencies)
    detections = [f.detection for f in faults if f.detection is not None]
    recoveries = [f.recovery for f in faults if f.recovery is not None and f.unserved]
    metrics = {
        "slots": len(slots), "lost_slots": lost, "duplicate_episodes": len(dups),
        "tolerated_overlaps": len(overlaps) - len(dups),
        "max_overlap_seconds": max((_overlap(v) for v in overlaps), default=None),
        "reschedules": len(moved),
        "max_detection_seconds": max(detections, default=None),
        "max_recovery_seconds": max(recoveries, default=None),
        "commands_answered": len(values), "commands_unanswered": unanswered,
        "command_latency_p50": values[len(values) // 2] if values else None,
        "command_latency_max": values[-1] if values else None,
        "duration_seconds": end,
    }
    violations.sort(key=lambda v: (v.at if v.at is not None else -1.0, v.assertion))
    return Outcome(passed=not violations, violations=tuple(violations), faults=tuple(faults),
                   metrics=metrics)
