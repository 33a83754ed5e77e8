"""``edgefed controller``: its command line, and the process that runs the
controller (:mod:`federation.controller`) with its REST API until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from federation import wire
from federation.api import serve_api
from federation.bus import BadBrokerURL, parse_brokers
from federation.controller import Controller
from federation.failover import Throttle
from federation.inventory import Liveness
from federation.planning import OPTIMAL_PASS_SECONDS
from federation.store import EVENTS_KEPT

log = logging.getLogger("edgefed.controller")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edgefed controller",
        description="Run the federation controller: inventory over MQTT, desired state in "
        "SQLite, placement and failover, REST API under /api/v1.",
        epilog="example: edgefed controller --broker mqtt://127.0.0.1:1883 "
        "--db /var/lib/edgefed/controller.db --listen 0.0.0.0:7070",
    )
    parser.add_argument("--broker", required=True, action="append", metavar="URL",
                        help="mqtt://HOST:PORT; repeat it (or comma-separate) to give brokers "
                        "to fail over to, tried in order")
    parser.add_argument("--db", required=True, type=Path, help="SQLite file for desired state")
    parser.add_argument("--listen", default="127.0.0.1:7070", help="HOST:PORT of the REST API")
    parser.add_argument("--topic-root", default=os.environ.get("EDGEFED_TOPIC_ROOT",
                                                               wire.DEFAULT_ROOT),
                        help="MQTT topic root (default edgefed; env EDGEFED_TOPIC_ROOT)")
    parser.add_argument("--lost-after", type=float, default=10.0,
                        help="seconds out of contact before a node is Lost and its work moves, "
                        "unless a deployment sets failover.grace (default 10)")
    parser.add_argument("--ready-after-reports", type=int, default=2,
                        help="timely reports (at least half an interval apart) a node back "
                        "from Lost sends before it is Ready (default 2)")
    parser.add_argument("--flap-limit", type=int, default=3,
                        help="disconnects within --flap-window that make a node flapping, held "
                        "Suspect (no new work) until --hold-down after its last; 0 turns flap "
                        "damping off (default 3)")
    parser.add_argument("--flap-window", type=float, default=60.0,
                        help="seconds over which disconnects are counted (default 60)")
    parser.add_argument("--hold-down", type=float, default=30.0,
                        help="seconds a flapping node must stay connected before it is Ready "
                        "(default 30)")
    parser.add_argument("--no-cut-off-pause", dest="cut_off_pause", action="store_false",
                        help="keep counting node silence while the controller itself is cut "
                        "off from the broker (by default liveness pauses then); only to show "
                        "in a drill what the pause prevents")
    parser.add_argument("--max-replacements-per-second", type=float, default=20.0,
                        help="failover replacements started per second across the federation, "
                        "the rest wait for a later pass; 0: no limit (default 20)")
    parser.add_argument("--replacement-burst", type=float, default=40.0,
                        help="failover replacements that may start at once (default 40)")
    parser.add_argument("--events-kept", type=int, default=EVENTS_KEPT, metavar="N",
                        help="events kept in the database, the newest; older ones are deleted "
                        f"as new ones come (default {EVENTS_KEPT:,})")
    parser.add_argument("--solver-seconds", type=float, default=OPTIMAL_PASS_SECONDS,
                        metavar="S",
                        help="seconds of exact solving (strategy: optimal) a reconcile pass may "
                        "spend; a deployment's batch starts only if it can finish within them, "
                        "except a pass's first, and the rest wait for the next pass "
                        f"(default {OPTIMAL_PASS_SECONDS:g})")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.solver_seconds < 0:
        parser.error("--solver-seconds must not be negative")
    if args.events_kept < 1:
        parser.error("--events-kept must be at least 1")
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        print(f"edgefed controller: --listen {args.listen!r} must be HOST:PORT", file=sys.stderr)
        return 2
    try:  # a bad URL is refused here, before anything starts
        parse_brokers(",".join(args.broker))
    except BadBrokerURL as exc:
        print(f"edgefed controller: {exc}", file=sys.stderr)
        return 2

    async def run() -> None:
        controller = Controller(broker=",".join(args.broker), db=args.db, topic_root=args.topic_root,
                                liveness=Liveness(lost_after=args.lost_after,
                                                  ready_after_reports=args.ready_after_reports,
                                                  flap_limit=args.flap_limit,
                                                  flap_window=args.flap_window,
                                                  hold_down=args.hold_down,
                                                  pause_when_cut_off=args.cut_off_pause),
                                throttle=Throttle(rate=args.max_replacements_per_second,
                                                  burst=args.replacement_burst,
                                                  tokens=args.replacement_burst)
                                if args.max_replacements_per_second > 0 else None,
                                events_kept=args.events_kept,
                                solver_seconds=args.solver_seconds)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        runner = await serve_api(controller, host, int(port))
        log.info("controller listening on http://%s:%s/api/v1, broker %s, db %s", host, port,
                 ",".join(args.broker), args.db)
        try:
            await controller.run(stop)
        finally:
            await runner.cleanup()

    asyncio.run(run())
    return 0



if __name__ == "__main__":
    sys.exit(main())
