"""A drill's results: the JSON document, a Markdown report and a PNG timeline.

The JSON document is stable and machine-readable (``schema: edgefed.drill-result/1``)
so CI can track detection and recovery times across runs. matplotlib is imported
here only, lazily, with the Agg backend: nothing else pays for it.
"""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path
from typing import Any

from federation.drill.check import counted, live_intervals, out_of_contact

SCHEMA = "edgefed.drill-result/1"
STATE_COLOURS = {"Ready": "#4caf50", "Suspect": "#ffb300", "Lost": "#e53935"}


def result_document(result: Any) -> dict[str, Any]:
    drill = result.drill
    a = drill.assertions
    return {
        "schema": SCHEMA,
        "drill": drill.name,
        "source": drill.source,
        "passed": result.outcome.passed,
        "topic_root": result.topic_root,
        "network": result.network,
        "settings": {"lost_after_seconds": drill.lost_after,
                     "report_interval_seconds": drill.report_interval,
                     "controller_args": list(drill.controller_args),
                     "duration_seconds": drill.duration},
        "assertions": {"max_detection_seconds": a.max_detection,
                       "max_recovery_seconds": a.max_recovery, "lost_slots": a.lost_slots,
                       "duplicate_live_instances": a.duplicate_live_instances,
                       "max_reschedules": a.max_reschedules,
                       "max_command_latency_seconds": a.max_command_latency,
                       "duplicate_tolerance_seconds": a.duplicate_tolerance,
                       "singletons": list(a.singletons)},
        **result.outcome.to_dict(),
        "log": str(result.log_path),
        "host": {"python": platform.python_version(), "machine": platform.machine()},
    }


def write_report(result: Any, directory: Path) -> dict[str, Any]:
    """result.json, drill.jsonl (copied), report.md and timeline.png in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    log_copy = directory / "drill.jsonl"
    if result.log_path.resolve() != log_copy.resolve():
        shutil.copyfile(result.log_path, log_copy)
    document = result_document(result)
    document["log"] = log_copy.name
    (directory / "result.json").write_text(json.dumps(document, indent=2) + "\n")
    timeline(result.records, directory / "timeline.png", title=f"drill {result.drill.name}")
    (directory / "report.md").write_text(markdown(result, document, "timeline.png"))
    return document


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def markdown(result: Any, document: dict[str, Any], png: str) -> str:
    drill, out = result.drill, result.outcome
    m = out.metrics
    a = document["assertions"]
    lines = [
        f"# Drill `{drill.name}`: {'passed' if out.passed else 'FAILED'}", "",
        drill.description, "",
        f"Grace period (`--lost-after`) {drill.lost_after:g} s, agents report every "
        f"{drill.report_interval:g} s, site links through **{result.network}** "
        f"(`{'network namespaces + fault proxy' if result.network == 'netns' else 'loopback fault proxy'}`), "
        f"topic root `{result.topic_root}`. Times are seconds since the workloads first "
        "converged.", "",
        f"![timeline]({png})", "",
        "## Faults", "",
        "| t | fault | target | mechanism | detected after | served again after |",
        "|---:|---|---|---|---:|---:|",
    ]
    start = _converged(result.records)
    for f in out.faults:
        rec = "no slot went unserved" if not f.unserved else (
            "never" if f.recovery is None else _secs(f.recovery))
        lines.append(f"| {f.at - start:.2f} | {f.action} | {f.target} | {f.mechanism} | "
                     f"{_secs(f.detection)} | {rec} |")
    lines += ["", "## Assertions", "", "| assertion | bound | measured | |", "|---|---:|---:|---|"]
    failed = {v.assertion for v in out.violations}
    rows = [("maxDetection", a["max_detection_seconds"], m["max_detection_seconds"]),
            ("maxRecovery", a["max_recovery_seconds"], m["max_recovery_seconds"]),
            ("lostSlots", a["lost_slots"], len(m["lost_slots"])),
            ("duplicateLiveInstances", a["duplicate_live_instances"], m["duplicate_episodes"]),
            ("maxReschedules", a["max_reschedules"], m["reschedules"]),
            ("maxCommandLatency", a["max_command_latency_seconds"], m["command_latency_max"])]
    for name, bound, measured in rows:
        shown = "—" if measured is None else (f"{measured:.3f}" if isinstance(measured, float)
                                              else str(measured))
        verdict = "not checked" if bound is None else ("**violated**" if name in failed
                                                      else "held")
        lines.append(f"| {name} | {'—' if bound is None else bound} | {shown} | {verdict} |")
    if m.get("tolerated_overlaps"):
        lines += ["", f"{m['tolerated_overlaps']} overlap(s) of a superseded instance on a node "
                  f"trusted again, the longest {m['max_overlap_seconds']:.3f} s, within the "
                  f"drill's duplicateTolerance of {drill.assertions.duplicate_tolerance:g} s."]
    if out.violations:
        lines += ["", "## Violations", ""]
        for v in out.violations:
            at = "" if v.at is None else f" (t={v.at - start:.2f} s)"
            lines.append(f"- **{v.assertion}**{at}: {v.message}")
    lines += ["", "## Record", "",
              f"{len(result.records)} records in `{document['log']}` (JSON lines: commands, "
              "answers, instance reports, presence, the controller's node states and "
              "placements, faults). Machine-readable result: `result.json` "
              f"(`{SCHEMA}`).", ""]
    return "\n".join(lines)


def _converged(records: list[dict[str, Any]]) -> float:
    return next((float(r["t"]) for r in records
                 if r["kind"] == "drill" and r.get("phase") == "converged"), 0.0)


def timeline(records: list[dict[str, Any]], path: Path, *, title: str) -> None:
    """Node states per node, slot placements over time, faults marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    start = _converged(records)
    end = next((float(r["t"]) for r in records if r["kind"] == "drill"
                and r.get("phase") == "end"), float(records[-1]["t"]) if records else 1.0)
    nodes = sorted({str(r["node"]) for r in records if r["kind"] == "node"})
    intervals = live_intervals(records, end)
    live = counted(intervals, out_of_contact(records, end))
    slots = sorted({iv.slot for iv in intervals}, key=lambda s: (s.split("/")[0],
                                                                 int(s.split("/")[1])))
    palette = plt.get_cmap("tab10")
    colour = {n: palette(i % 10) for i, n in enumerate(nodes)}
    height = 1.6 + 0.32 * (len(nodes) + len(slots))
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(12, height),
                                      height_ratios=[max(len(nodes), 1), max(len(slots), 1)])
    for row, node in enumerate(nodes):
        changes = [(float(r["t"]) - start, str(r["state"])) for r in records
                   if r["kind"] == "node" and r["node"] == node]
        for (t, state), nxt in zip(changes, [*changes[1:], (end - start, "")], strict=True):
            top.barh(row, nxt[0] - t, left=t, color=STATE_COLOURS.get(state, "#9e9e9e"),
                     edgecolor="none", height=0.6)
    top.set_yticks(range(len(nodes)), nodes)
    top.invert_yaxis()
    top.set_title(f"{title}: node states (controller's view)", loc="left", fontsize=10)
    top.legend(handles=[Patch(color=c, label=s) for s, c in STATE_COLOURS.items()],
               loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    for row, slot in enumerate(slots):
        # Thin, faded, below: every live span as reported, out of contact or not.
        for iv in [i for i in intervals if i.slot == slot]:
            bottom.barh(row + 0.3, iv.end - iv.start, left=iv.start - start, height=0.22,
                        color=colour.get(iv.node, "#9e9e9e"), alpha=0.35, edgecolor="none")
        for iv in [i for i in live if i.slot == slot]:
            bottom.barh(row - 0.1, iv.end - iv.start, left=iv.start - start, height=0.5,
                        color=colour.get(iv.node, "#9e9e9e"), edgecolor="none")
            if iv.end - iv.start > 1.5:
                bottom.text(iv.start - start + 0.1, row - 0.1, f"g{iv.generation}",
                            va="center", fontsize=7, color="white")
    bottom.set_yticks(range(len(slots)), slots)
    bottom.invert_yaxis()
    bottom.set_title("slot placements: live instances by node, counted (thick) and as "
                     "reported, out of contact too (thin)", loc="left", fontsize=10)
    bottom.legend(handles=[Patch(color=colour[n], label=n) for n in nodes], loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), fontsize=8)
    for r in records:
        if r["kind"] != "fault":
            continue
        t = float(r["t"]) - start
        for ax in (top, bottom):
            ax.axvline(t, color="black", linestyle="--", linewidth=1)
        top.annotate(f"{r['action']} {r.get('target', '')}", (t, 0), xytext=(3, 4),
                     textcoords="offset points", fontsize=8, xycoords=("data", "axes fraction"),
                     annotation_clip=False,
                     bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.85})
    bottom.set_xlabel("seconds since the workloads converged")
    bottom.set_xlim(min(-1.0, -start), end - start + 0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
