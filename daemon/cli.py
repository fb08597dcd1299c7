"""``dm-jobd``: run the daemon, or talk to one (submit, status, stop, result, events, runners).

Every client command is a thin layer over :class:`daemon.client.JobdClient`. Exit codes: 0 success,
1 an error answer (or a job that did not complete, for ``submit --wait``), 2 bad usage or no broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from daemon.client import EventStream
from daemon.config import Settings
from daemon.contracts import COMMAND_QUEUE, Answer, CloudEvent, JobStatus, ScheduleView

__all__ = ["main"]


class UsageError(Exception):
    pass


def _broker_url(settings: Settings) -> str:
    """The configured broker, else the local one ``dm-jobd run`` started (found from any folder below)."""
    from daemon.client import NoBroker, broker_url

    if settings.amqp_url is not None:
        return settings.amqp_url.get_secret_value()
    try:
        return broker_url()
    except NoBroker as exc:
        raise UsageError(str(exc)) from None


def _print_answer(answer: Answer, as_json: bool) -> int:
    if as_json:
        print(answer.model_dump_json(by_alias=True, indent=2))
    elif answer.ok:
        job = answer.job
        print(f"{answer.uid}  {answer.status.value if answer.status else '-'}  {answer.message}")
        if job is not None and job.percentage is not None:
            print(f"  progress: {job.percentage:g}%")
        if job is not None and job.message and job.message != answer.message:
            print(f"  {job.message}")
        for line in job.logs[-10:] if job is not None else []:
            print(f"  | {line}")
    else:
        assert answer.error is not None
        print(f"error ({answer.error.code.value}): {answer.error.message}", file=sys.stderr)
    return 0 if answer.ok else 1


def _describe(event: CloudEvent) -> str:
    data = event.data
    if event.type.endswith(".progress"):
        pct = f" {data.percentage:g}%" if data.percentage is not None else ""
        last = f"  | {data.logs[-1]}" if data.logs else ""
        return f"{event.time:%H:%M:%S}  {data.uid}  progress{pct}{last}"
    was = f" (was {data.previous_status.value})" if data.previous_status else ""
    note = f"  {data.message}" if data.message else ""
    return f"{event.time:%H:%M:%S}  {data.uid}  {data.status.value}{was}{note}"


def _describe_schedule(view: ScheduleView) -> str:
    nxt = f"next {view.next_fire:%Y-%m-%d %H:%M:%S %Z}" if view.next_fire else "no next fire"
    label = f"  {view.label}" if view.label else ""
    runs = f", {len(view.runs)} run(s), last {view.runs[-1].uid}" if view.runs else ""
    return f"{view.uid}  {view.state}  '{view.cron}' ({view.time_zone})  {nxt}{runs}{label}"


def _load_start_body(path: str) -> dict[str, Any]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{path} must hold a JSON object: a job entity, or a job.start body")
    return body if ("job" in body or "address" in body) else {"job": body}


def _run_daemon(settings: Settings) -> int:
    """Run the daemon, with a private local broker around it when no broker URL is configured.

    The broker is started and stopped on plain asyncio loops of their own: its launcher waits on
    child processes, which hangs under uvloop, while the daemon itself runs on uvloop when installed.
    """
    import structlog

    from daemon.app import Daemon
    from daemon.bus.amqp import BrokerRefused
    from daemon.localbroker import LocalBroker, ensure_installed

    log = structlog.get_logger("dm-jobd")
    broker_dir: Path | None = None
    if settings.amqp_url is not None:
        url = settings.amqp_url.get_secret_value()
    else:
        ensure_installed()
        broker_dir = settings.state_dir / "broker"
        log.info("no DM_JOBD_AMQP_URL; starting a local RabbitMQ", folder=str(broker_dir))
        broker = LocalBroker(broker_dir)
        asyncio.run(broker.start())
        url = broker.url
        log.info("local broker started", url=url)
    if settings.enable_shell:
        log.warning("the shell runner is ON: jobs may run any script as this user")

    async def serve() -> int:
        await Daemon(settings, url).run()
        return 0

    try:
        return _event_loop_runner()(serve())
    except BrokerRefused as exc:
        log.error("cannot run", reason=str(exc))
        return 2
    except Exception:  # one JSON line with the traceback as a field, never a bare traceback
        log.exception("the daemon failed")
        return 1
    finally:
        if broker_dir is not None:
            asyncio.run(LocalBroker(broker_dir).stop())


async def _client_command(args: argparse.Namespace, settings: Settings) -> int:
    from daemon.client import JobdClient

    client = await JobdClient.connect(_broker_url(settings), timeout=args.timeout)
    async with client:
        if args.command == "submit":
            body = _load_start_body(args.file)
            if not args.wait:
                raw = await client.call("job.start", body, message_id=args.message_id)
                return _print_answer(Answer.model_validate(raw), args.json)
            # subscribe before starting, so not even the first change is missed; filter by uid after
            async with client.events() as events:
                raw = await client.call("job.start", body, message_id=args.message_id)
                answer = Answer.model_validate(raw)
                code = _print_answer(answer, args.json)
                if not answer.ok or answer.uid is None:
                    return code
                return await _follow(events, answer.uid, args.json)
        if args.command == "status":
            return _print_answer(await client.status(args.uid), args.json)
        if args.command == "stop":
            return _print_answer(await client.stop(args.uid), args.json)
        if args.command == "result":
            result = await client.result(args.uid)
            if not result.ok or args.json:
                return _print_answer(result, args.json)
            data: Any = result.result
            payload = data.encode() if isinstance(data, str) else __import__("base64").b64decode(data.base64)
            if args.output:
                Path(args.output).write_bytes(payload)
            else:
                sys.stdout.buffer.write(payload)
                sys.stdout.flush()
            return 0
        if args.command == "schedules":
            if args.action == "list":
                answer = await client.schedules()
            elif args.uid is None:
                raise UsageError(f"schedules {args.action} needs the recurring job's uid")
            else:
                answer = await client.schedule(args.action, args.uid)
            if args.json or not answer.ok:
                return _print_answer(answer, args.json)
            for view in answer.schedules if answer.schedules is not None else [answer.schedule]:
                if view is not None:
                    print(_describe_schedule(view))
            if answer.schedule is not None:
                print(f"  {answer.message}")
            return 0
        if args.command == "health":
            consumers = await client.consumers()
            print(f"{consumers} daemon(s) consuming {COMMAND_QUEUE}")
            return 0 if consumers else 1
        if args.command == "events":
            async with client.events(job=args.job) as events:
                async for event in events:
                    print(event.model_dump_json(by_alias=True) if args.json else _describe(event), flush=True)
    return 0


async def _follow(events: EventStream, uid: str, as_json: bool) -> int:
    """Show one job's changes until it ends; 0 when it completed."""
    async for event in events:
        if event.subject != uid:
            continue
        print(event.model_dump_json(by_alias=True) if as_json else _describe(event), flush=True)
        if event.data.status.is_terminal and not event.type.endswith(".progress"):
            return 0 if event.data.status is JobStatus.COMPLETED else 1
    return 1


def _runners(settings: Settings) -> int:
    import structlog

    from daemon.app import runner_environ
    from daemon.jobs.registry import Registry

    registry = Registry.load(
        state_dir=settings.state_dir,
        environ=runner_environ(settings, os.environ),
        log=structlog.get_logger("dm-jobd"),
        plugin_dirs=settings.plugin_dirs,
        settings=settings.for_runners(),
    )
    for entry in registry.entries():
        state = "ready" if entry.runner is not None else f"off: {entry.disabled}"
        print(f"{entry.type}\n  from {entry.origin}\n  {state}")
    for folder, reason in registry.skipped:
        print(f"(not loaded) handler folder {folder}\n  {reason}")
    asyncio.run(registry.close())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dm-jobd", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print answers and events as JSON")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an answer")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon in the foreground")
    p = sub.add_parser("submit", help="start a job from a JSON file (a job entity or a job.start body)")
    p.add_argument("file", help="path, or - for standard input")
    p.add_argument("--wait", action="store_true", help="show status and progress until the job ends")
    p.add_argument("--message-id", help="idempotency key (default: a new one)")
    for name, text in (("status", "show a job"), ("stop", "stop a job")):
        sub.add_parser(name, help=text).add_argument("uid")
    p = sub.add_parser("result", help="print a completed job's result")
    p.add_argument("uid")
    p.add_argument("-o", "--output", help="write the result to this file")
    p = sub.add_parser("events", help="print events as they happen")
    p.add_argument("--job", help="only this job's")
    sub.add_parser("runners", help="list the runner types loaded and where each came from")
    sub.add_parser("health", help="exit 0 when a daemon consumes the command queue")
    p = sub.add_parser("schedules", help="list, show, pause, resume or trigger recurring jobs' schedules")
    p.add_argument("action", choices=["list", "show", "pause", "resume", "trigger"])
    p.add_argument("uid", nargs="?", help="the recurring job's uid (all but list)")
    return parser


def _event_loop_runner() -> Callable[[Coroutine[Any, Any, int]], int]:
    """uvloop when installed: the daemon spends most of its time in the event loop and socket writes."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    from daemon.logs import configure

    configure(fmt=settings.log_format, level=settings.log_level if args.command == "run" else "warning")
    try:
        if args.command == "run":
            return _run_daemon(settings)
        if args.command == "runners":
            return _runners(settings)
        return asyncio.run(_client_command(args, settings))
    except UsageError as exc:
        print(f"dm-jobd: {exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print("dm-jobd: no answer in time: is the daemon running?", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into `head`: the reader has what it wanted
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
