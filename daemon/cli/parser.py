"""The ``dm-jobd`` command line's grammar: subcommands, their arguments, and the shared flags.

``--json`` and ``--timeout`` are accepted before or after the subcommand (``dm-jobd status UID --json``):
each subparser repeats them with a suppressed default, so a flag given in either place wins.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from daemon.contracts import JobStatus
from daemon.version import dm_jobd_version

__all__ = ["parser"]

_EPILOG = """exit codes: 0 success; 1 an error answer, or a job that did not complete (submit --wait,
events --job, logs --follow); 2 bad usage, a bad setting, no broker, refused credentials, or no answer
in time"""


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r} (e.g. 2026-12-01T08:00Z)") from None
    return moment if moment.tzinfo is not None else moment.astimezone()


def _shared(suppress: bool) -> argparse.ArgumentParser:
    shared = argparse.ArgumentParser(add_help=False)
    default_json: object = argparse.SUPPRESS if suppress else False
    default_timeout: object = argparse.SUPPRESS if suppress else 30.0
    shared.add_argument("--json", action="store_true", default=default_json, help="print JSON")
    shared.add_argument(
        "--timeout", type=float, default=default_timeout, help="seconds to wait for each answer (30)"
    )
    return shared


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="dm-jobd",
        description="Run the dm-jobd daemon, or talk to a running one over the broker.",
        epilog=_EPILOG,
        parents=[_shared(suppress=False)],
    )
    top.add_argument("--version", action="version", version=f"dm-jobd {dm_jobd_version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_shared(suppress=True)]

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=common)

    command("run", "run the daemon in the foreground")
    p = command("submit", "start a job from a JSON file (a job entity or a job.start body)")
    p.add_argument("file", help="path, or - for standard input")
    p.add_argument("--wait", action="store_true", help="show status, progress and log lines until it ends")
    p.add_argument("--message-id", help="idempotency key (default: a new one)")
    command("status", "show a job").add_argument("uid")
    command("stop", "stop a job (a recurring job: its schedule too)").add_argument("uid")
    p = command("result", "print a completed job's result")
    p.add_argument("uid")
    p.add_argument("-o", "--output", help="write the result's exact bytes to this file")
    p = command("jobs", "list jobs, newest first")
    p.add_argument(
        "--status", action="append", type=JobStatus, metavar="STATUS", help="only these (repeatable)"
    )
    p.add_argument("--runner", dest="runner_type", metavar="TYPE", help="only this runner type")
    p.add_argument("--label", help="only jobs with this label")
    p.add_argument("--triggered-by", help="only jobs started by this user")
    p.add_argument("--schedule", metavar="UID", help="only the runs of this recurring job")
    p.add_argument("--since", type=_moment, metavar="TIME", help="created at or after (ISO 8601)")
    p.add_argument("--until", type=_moment, metavar="TIME", help="created before (ISO 8601)")
    p.add_argument("--limit", type=int, default=50, help="jobs per page (50)")
    p.add_argument("--cursor", help="the page after this one (a nextCursor)")
    p.add_argument("--all", action="store_true", help="every page, not only the first")
    p = command("logs", "print a job's kept log lines")
    p.add_argument("uid")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until the job ends")
    p = command("rerun", "start a new job from an ended job's entity")
    p.add_argument("uid")
    p.add_argument("--message-id", help="idempotency key (default: a new one)")
    p = command("events", "print events as they happen")
    p.add_argument("--job", metavar="UID", help="only this job's: its history first, ending when it ends")
    p = command("runners", "list the runner types the running daemon has loaded")
    p.add_argument("--local", action="store_true", help="list what this machine's settings would load")
    command("health", "exit 0 when this host's replica is healthy (broker, store, consumer)")
    command("replicas", "list the daemons using the store, from their heartbeats")
    p = command("schedules", "list, show, pause, resume or trigger recurring jobs' schedules")
    p.add_argument("action", choices=["list", "show", "pause", "resume", "trigger"])
    p.add_argument("uid", nargs="?", help="the recurring job's uid (all but list)")
    return top
