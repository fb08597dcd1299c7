"""``dm-jobd``: run the daemon, or talk to one (submit, status, jobs, logs, result, events, ...).

Every error is one line on standard error, never a traceback. Exit codes: 0 success; 1 an error
answer, or a job that did not complete (``submit --wait``, ``events --job``, ``logs --follow``);
2 bad usage, a bad setting, no broker, refused credentials, or no answer in time.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from daemon.cli.parser import parser
from daemon.config import BadSettings, Settings, load_settings

if TYPE_CHECKING:
    import argparse

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``run`` imports only what the daemon needs; the client commands import the client's part."""
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        from daemon.logs import configure

        configure(fmt=settings.log_format, level=settings.log_level if args.command == "run" else "warning")
        if args.command == "run":
            from daemon.cli.serve import run_daemon

            return run_daemon(settings)
        for name in ("aiormq", "aio_pika"):  # the AMQP library's own lines would repeat our one line
            logging.getLogger(name).setLevel(logging.CRITICAL)
        return _client(args, settings)
    except BadSettings as exc:  # a setting a person fixes: one line, exit code 2
        print(f"dm-jobd: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _client(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.cli.commands import UsageError, client_command, local_health, local_runners
    from daemon.client import BadBrokerUrl, BrokerRefused, BrokerUnreachable, NoBroker

    #: Failures a person fixes outside the CLI (the usage, the broker): one line each, exit code 2.
    setup_errors = (UsageError, BadBrokerUrl, NoBroker, BrokerRefused, BrokerUnreachable)
    try:
        if args.command == "runners" and args.local:
            return local_runners(settings, args.json)
        if args.command == "health" and (local := local_health(args.json)) is not None:
            return local
        return asyncio.run(client_command(args))
    except setup_errors as exc:
        print(f"dm-jobd: {exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print(f"dm-jobd: no answer within {args.timeout:g} s: is the daemon running?", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into `head`: the reader has what it wanted
        sys.stderr.close()
        return 0
