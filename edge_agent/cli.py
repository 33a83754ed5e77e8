"""`edgefed-agent --config agent.yaml` and `edgefed agent --broker ... --site ... --node ...`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from edge_agent.config import ConfigError, add_arguments, from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edgefed agent",
        description="Run the edgefed agent on this node: report capacity over MQTT and run "
        "the instances the controller assigns, also while the controller is unreachable.",
        epilog="example: edgefed agent --broker mqtt://10.0.0.5:1883 --site factory-berlin "
        "--node pi-01 --labels tier=edge,region=eu",
    )
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = from_args(args)
    except ConfigError as exc:
        print(f"edgefed agent: {exc}", file=sys.stderr)
        return 2
    from edge_agent.agent import Agent, make_runtime

    async def run() -> int:
        agent = Agent(config, make_runtime(config))
        return await agent.run()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
