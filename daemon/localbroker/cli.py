"""A private RabbitMQ node for development and tests, run from Debian's ``rabbitmq-server`` package.

The command line for shell scripts, ``python -m daemon.localbroker start|stop|url --dir DIR``: a node
started here keeps running after the command returns. (The first line above is its ``--help`` text.)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .broker import LocalBroker
from .rabbitmq import LocalBrokerError
from .state import STATE_FILE, saved_name

__all__ = ["main"]


async def _cli(args: argparse.Namespace) -> int:
    # Scripts shouldn't have to repeat --name for stop/url: the folder knows its node.
    name = args.name or saved_name(Path(args.dir)) or "dmjobd"
    broker = LocalBroker(Path(args.dir), name=name, port=args.port, management=args.management)
    if args.command == "start":
        await broker.start(timeout=args.timeout)
        print(broker.url)
        if broker.management_url:
            print(f"management: {broker.management_url}", file=sys.stderr)
        return 0
    if args.command == "stop":
        await broker.stop()
        return 0
    if not await broker.is_running():
        print(f"no broker running from {args.dir}", file=sys.stderr)
        return 1
    print(broker.url)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for shell scripts: the node started here keeps running after the command returns."""
    parser = argparse.ArgumentParser(prog="python -m daemon.localbroker", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "url"])
    parser.add_argument("--dir", required=True, help="the broker's base folder")
    parser.add_argument("--name", default=None, help="node name (default: the saved one, else dmjobd)")
    parser.add_argument("--port", type=int, default=None, help="AMQP port (default: saved, or a free one)")
    parser.add_argument("--management", action="store_true", help="enable the management UI on loopback")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for start")
    args = parser.parse_args(argv)
    if args.command != "start" and not Path(args.dir, STATE_FILE).exists():
        # Nothing was ever started there: don't create a folder just to say so.
        if args.command == "url":
            print(f"no broker running from {args.dir}", file=sys.stderr)
            return 1
        return 0
    try:
        return asyncio.run(_cli(args))
    except (LocalBrokerError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
