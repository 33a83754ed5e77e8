"""``edgefed drill run FILE|NAME`` and ``edgefed drill list``.

Exit codes: 0 every assertion held, 1 an assertion failed, 2 the drill file or
the options are wrong, 3 the drill could not be run (setup failed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

PASSED, FAILED, USAGE, BROKEN = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgefed drill",
                                description="Run failover drills against a local federation "
                                "or, with --attach, under a drill topic root on an existing "
                                "broker.")
    def usage(_args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return USAGE

    p.set_defaults(run=usage)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    run = actions.add_parser("run", help="run a drill file or a built-in drill",
                             description="Run a drill: start the federation, inject the "
                             "faults, check the assertions from the log.")
    run.add_argument("drill", metavar="FILE|NAME", help="a drill file or a built-in name")
    run.add_argument("--attach", metavar="mqtt://HOST:PORT",
                     help="use this broker (an existing federation's) instead of starting one")
    run.add_argument("--topic-root", help="the drill's topic root (must be drill-<id>); "
                     "default drill-<name>-<random>")
    run.add_argument("-o", "--output", choices=("text", "json"), default="text")
    run.add_argument("--report", type=Path, metavar="DIR",
                     help="write result.json, drill.jsonl, report.md and timeline.png here")
    run.add_argument("--network", choices=("auto", "netns", "proxy"), default="auto",
                     help="site links: network namespaces (root) or loopback proxies")
    run.add_argument("--lost-after", type=float, metavar="SECONDS",
                     help="override the drill's grace period (rehearse a shorter or longer one)")
    run.set_defaults(run=_run)
    ls = actions.add_parser("list", help="list the built-in drills")
    ls.add_argument("-o", "--output", choices=("text", "json"), default="text")
    ls.set_defaults(run=_list)
    return p


def _list(args: argparse.Namespace) -> int:
    from federation.drill.spec import builtin_names, load_drill

    drills = [load_drill(name) for name in builtin_names()]
    if args.output == "json":
        print(json.dumps([{"name": d.name, "description": d.description,
                           "duration_seconds": d.duration,
                           "faults": [f.action for f in d.faults]} for d in drills], indent=2))
        return PASSED
    width = max(len(d.name) for d in drills)
    for d in drills:
        print(f"{d.name:<{width}}  {d.duration:>4g}s  {', '.join(f.action for f in d.faults)}")
        print(f"{'':<{width}}  {d.description}")
    return PASSED


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from federation.drill.report import write_report
    from federation.drill.runner import DrillRunError, RunOptions, run_drill
    from federation.drill.spec import DrillError, load_drill

    # The recorder's MQTT session reconnects through broker faults on purpose.
    logging.getLogger("edgefed.bus").setLevel(logging.ERROR)
    try:
        drill = load_drill(args.drill)
    except DrillError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return USAGE
    if args.lost_after is not None:
        drill = replace(drill, lost_after=args.lost_after)
    # Process logs, databases and broker files stay out of the report directory.
    workdir = Path(tempfile.mkdtemp(prefix=f"edgefed-drill-{drill.name}-"))
    view = LiveView(enabled=sys.stderr.isatty() and args.output == "text")
    opts = RunOptions(workdir=workdir, attach=args.attach, topic_root=args.topic_root,
                      network=args.network, progress=view.update)
    try:
        with view:
            result = asyncio.run(run_drill(drill, opts))
    except DrillRunError as exc:
        print(f"edgefed drill: {exc}", file=sys.stderr)
        return BROKEN
    document = write_report(result, args.report) if args.report else None
    if args.output == "json":
        from federation.drill.report import result_document

        print(json.dumps(document or result_document(result), indent=2))
    else:
        print(summary(result))
        if args.report:
            print(f"report: {args.report / 'report.md'}")
    return PASSED if result.outcome.passed else FAILED


def summary(result: Any) -> str:
    out = result.outcome
    lines = [f"drill {result.drill.name}: {'PASSED' if out.passed else 'FAILED'} "
             f"(log {result.log_path})"]
    start = next((float(r["t"]) for r in result.records
                  if r["kind"] == "drill" and r.get("phase") == "converged"), 0.0)
    for f in out.faults:
        det = "-" if f.detection is None else f"{f.detection:.2f}s"
        rec = "-" if not f.unserved else ("never" if f.recovery is None else f"{f.recovery:.2f}s")
        lines.append(f"  t={f.at - start:6.2f}s {f.action:<18} {f.target:<12} detect {det:>6} "
                     f"recover {rec:>6}  [{f.mechanism}]")
    m = out.metrics
    lines.append(f"  slots {m['slots']}, reschedules {m['reschedules']}, duplicate episodes "
                 f"{m['duplicate_episodes']}, lost {len(m['lost_slots'])}, command latency max "
                 f"{_s(m['command_latency_max'])}")
    for v in out.violations:
        lines.append(f"  VIOLATION {v.assertion}: {v.message}")
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


class LiveView:
    """The terminal's live progress: node states, replicas, faults so far (rich)."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._live: Any = None

    def __enter__(self) -> LiveView:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(stderr=True), refresh_per_second=4,
                              transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def update(self, progress: Any) -> None:
        if self._live is None:
            return
        from rich.table import Table

        table = Table(title=f"drill {progress.drill.name}: {progress.phase}, "
                      f"t={progress.elapsed:5.1f}s / {progress.drill.duration:g}s",
                      show_header=True, expand=False)
        table.add_column("node")
        table.add_column("state")
        table.add_column("replicas")
        per_node: dict[str, list[str]] = {}
        for p in progress.pods:
            per_node.setdefault(str(p.get("node")), []).append(
                f"{p['deployment']}/{p['slot']}:{p['generation']} {p['state']}")
        for node, state in sorted(progress.nodes.items()):
            style = {"Ready": "green", "Suspect": "yellow", "Lost": "red"}.get(state, "")
            table.add_row(node, f"[{style}]{state}[/]" if style else state,
                          ", ".join(per_node.get(node, [])))
        for line in progress.done[-6:]:
            table.add_row("", "[bold]fault[/]", line)
        self._live.update(table)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv if argv is not None else sys.argv[1:])
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
