"""The client subcommands: each a thin layer over :class:`daemon.client.JobdClient`."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from daemon.cli.show import (
    describe_event,
    describe_schedule,
    emit_json,
    history,
    job_row,
    new_lines,
    print_answer,
    runner_lines,
)
from daemon.client import EventStream, JobdClient
from daemon.config import Settings
from daemon.contracts import COMMAND_QUEUE, Answer, JobStatus, JobView

__all__ = ["UsageError", "client_command", "local_health", "local_runners"]


class UsageError(Exception):
    """Bad usage: printed as one line, exit code 2."""


def _load_start_body(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not text: a job file is JSON") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{path} must hold a JSON object: a job entity, or a job.start body")
    return body if ("job" in body or "address" in body) else {"job": body}


class _Tail:
    """A job's log lines as last seen, so each fetch prints only the new ones."""

    def __init__(self, client: JobdClient, uid: str, as_json: bool, prefix: str) -> None:
        self._client, self._uid, self._json, self._prefix = client, uid, as_json, prefix
        self._seen: list[str] = []

    async def show_new(self) -> None:
        answer = await self._client.logs(self._uid)
        lines = answer.logs or []
        for line in new_lines(self._seen, lines):
            if self._json:
                emit_json({"uid": self._uid, "log": line}, stream=True)
            else:
                print(f"{self._prefix}{line}", flush=True)
        self._seen = lines


async def _watch(
    client: JobdClient,
    events: EventStream,
    uid: str,
    *,
    as_json: bool,
    show_events: bool,
    show_history: bool,
    from_start: bool = False,
) -> int:
    """Follow one job until it ends, printing its changes and every new log line; 0 if it completed.

    ``events`` was subscribed before this reads the status, so a change cannot fall between the two.
    With ``from_start`` it was subscribed before the job was started: every change of the job is in
    it, so each is shown, however quickly the job ended.
    """
    status = JobStatus.NOT_STARTED
    if not from_start:
        answer = await client.status(uid)
        if not answer.ok or answer.job is None:
            return print_answer(answer, as_json)
        status = answer.job.status
        if show_history:
            if as_json:
                print_answer(answer, True, stream=True)
            else:
                for line in history(answer.job):
                    print(line, flush=True)
    tail = _Tail(client, uid, as_json, "  | " if show_events or show_history else "")
    if not from_start:
        await tail.show_new()
    while not status.is_terminal:
        event = await events.next()
        if event.data.uid != uid:
            continue
        if show_events:
            print(event.model_dump_json(by_alias=True) if as_json else describe_event(event), flush=True)
        await tail.show_new()
        if not event.type.endswith(".progress"):
            status = event.data.status
    return 0 if status is JobStatus.COMPLETED else 1


async def _submit(client: JobdClient, args: argparse.Namespace) -> int:
    body = _load_start_body(args.file)
    if not args.wait:
        return print_answer(
            Answer.model_validate(await client.call("job.start", body, message_id=args.message_id)), args.json
        )
    async with client.events() as events:  # before the start: not even the first change is missed
        answer = Answer.model_validate(await client.call("job.start", body, message_id=args.message_id))
        code = print_answer(answer, args.json, stream=True)
        if not answer.ok or answer.uid is None:
            return code
        return await _watch(
            client,
            events,
            answer.uid,
            as_json=args.json,
            show_events=True,
            show_history=False,
            from_start=True,
        )


async def _result(client: JobdClient, args: argparse.Namespace) -> int:
    result = await client.result(args.uid)
    if not result.ok or args.json:
        return print_answer(result, args.json)
    data: Any = result.result
    text = isinstance(data, str) or data is None
    payload = (data or "").encode() if text else base64.b64decode(data.base64)
    if args.output:
        Path(args.output).write_bytes(payload)
        return 0
    if text and not payload.endswith(b"\n"):
        payload += b"\n"  # a prompt after text belongs on its own line; -o keeps the exact bytes
    sys.stdout.buffer.write(payload)
    sys.stdout.flush()
    return 0


async def _jobs(client: JobdClient, args: argparse.Namespace) -> int:
    filters: dict[str, Any] = {
        "status": args.status,
        "runner_type": args.runner_type,
        "label": args.label,
        "triggered_by": args.triggered_by,
        "schedule": args.schedule,
        "created_since": args.since,
        "created_until": args.until,
    }
    cursor: str | None = args.cursor
    collected: list[JobView] = []
    while True:
        answer = await client.list_jobs(limit=args.limit, cursor=cursor, **filters)
        if not answer.ok:
            return print_answer(answer, args.json)
        if args.json and not args.all:
            return print_answer(answer, True)
        for job in answer.jobs or []:
            if args.json:
                collected.append(job)
            else:
                print(job_row(job))
        cursor = answer.next_cursor
        if cursor is None or not args.all:
            break
    if args.json:
        emit_json(
            {"jobs": [job.model_dump(mode="json", by_alias=True, exclude_none=True) for job in collected]}
        )
    elif cursor is not None:
        print(f"(more: dm-jobd jobs --cursor {cursor}, or --all)", file=sys.stderr)
    return 0


async def _logs(client: JobdClient, args: argparse.Namespace) -> int:
    if not args.follow:
        answer = await client.logs(args.uid)
        if not answer.ok or args.json:
            return print_answer(answer, args.json)
        for line in answer.logs or []:
            print(line)
        return 0
    async with client.events(job=args.uid) as events:
        return await _watch(
            client, events, args.uid, as_json=args.json, show_events=False, show_history=False
        )


async def _schedules(client: JobdClient, args: argparse.Namespace) -> int:
    if args.action == "list":
        answer = await client.schedules()
    elif args.uid is None:
        raise UsageError(f"schedules {args.action} needs the recurring job's uid")
    else:
        answer = await client.schedule(args.action, args.uid)
    if args.json or not answer.ok:
        return print_answer(answer, args.json)
    for view in answer.schedules if answer.schedules is not None else [answer.schedule]:
        if view is not None:
            print(describe_schedule(view))
    if answer.schedule is not None:
        print(f"  {answer.message}")
    return 0


def _print_runners(answer: Answer, as_json: bool) -> int:
    if as_json or not answer.ok:
        return print_answer(answer, as_json)
    for line in runner_lines(answer.runners or [], answer.skipped or []):
        print(line)
    return 0


async def _events(client: JobdClient, args: argparse.Namespace) -> int:
    async with client.events(job=args.job) as events:
        if args.job is not None:
            return await _watch(
                client, events, args.job, as_json=args.json, show_events=True, show_history=True
            )
        async for event in events:
            print(event.model_dump_json(by_alias=True) if args.json else describe_event(event), flush=True)
    return 0


def local_health(as_json: bool) -> int | None:
    """``health`` of the replica whose state folder is here (its health file); None when there is none."""
    from datetime import UTC, datetime

    from daemon.client.url import state_dirs
    from daemon.presence import read_health

    for folder in state_dirs(os.environ, Path.cwd()):
        health = read_health(folder)
        if health is None:
            continue
        now = datetime.now(UTC)
        fresh = health.fresh(now)
        ok = fresh and health.ok
        if as_json:
            body = {"ok": ok, "replica": health.replica, "fresh": fresh, "broker": health.broker}
            emit_json({**body, "store": health.store, "consuming": health.consuming, "at": health.at})
        else:
            age = (now - health.at).total_seconds()
            parts = [
                f"broker {'connected' if health.broker else 'NOT connected'}",
                "store written" if health.store else f"store FAILING ({health.store_error})",
                "consuming" if health.consuming else "NOT consuming",
                f"last heartbeat {age:.0f} s ago" + ("" if fresh else " (STALE: the daemon is not running)"),
            ]
            print(f"replica {health.replica}: {'ok' if ok else 'NOT ok'}: {', '.join(parts)}")
        return 0 if ok else 1
    return None


async def _health(client: JobdClient, args: argparse.Namespace) -> int:
    """No replica on this host: whether any daemon consumes the command queue."""
    consumers = await client.consumers()
    if args.json:
        emit_json({"ok": consumers > 0, "consumers": consumers, "queue": COMMAND_QUEUE})
    else:
        print(f"no replica on this host; {consumers} daemon(s) consuming {COMMAND_QUEUE}")
    return 0 if consumers else 1


async def _replicas(client: JobdClient, args: argparse.Namespace) -> int:
    answer = await client.replicas()
    if args.json or not answer.ok:
        return print_answer(answer, args.json)
    for view in answer.replicas or []:
        state = "alive" if view.alive else "NOT SEEN LATELY"
        mark = "  (answered)" if view.answering else ""
        print(
            f"{view.id}  {state}  {view.host} pid {view.pid}  dm-jobd {view.version}  "
            f"since {view.started:%Y-%m-%d %H:%M:%S}  last seen {view.last_seen:%H:%M:%S}{mark}"
        )
    return 0


async def client_command(args: argparse.Namespace) -> int:
    """Connect (``DM_JOBD_AMQP_URL``, else the local broker), run one subcommand, disconnect."""
    async with await JobdClient.connect(timeout=args.timeout) as client:
        command = args.command
        if command == "submit":
            return await _submit(client, args)
        if command == "status":
            return print_answer(await client.status(args.uid), args.json)
        if command == "stop":
            return print_answer(await client.stop(args.uid), args.json)
        if command == "result":
            return await _result(client, args)
        if command == "jobs":
            return await _jobs(client, args)
        if command == "logs":
            return await _logs(client, args)
        if command == "rerun":
            return print_answer(await client.rerun(args.uid, message_id=args.message_id), args.json)
        if command == "runners":
            return _print_runners(await client.runners(), args.json)
        if command == "schedules":
            return await _schedules(client, args)
        if command == "health":
            return await _health(client, args)
        if command == "replicas":
            return await _replicas(client, args)
        if command == "events":
            return await _events(client, args)
    raise UsageError(f"unknown command {command!r}")


def local_runners(settings: Settings, as_json: bool) -> int:
    """``runners --local``: what this machine's settings would load, without asking a daemon."""
    import structlog

    from daemon.app import runner_environ
    from daemon.jobs.queries import runner_list
    from daemon.jobs.registry import Registry

    registry = Registry.load(
        state_dir=settings.state_dir,
        environ=runner_environ(settings, os.environ),
        log=structlog.get_logger("dm-jobd"),
        plugin_dirs=settings.plugin_dirs,
        settings=settings.for_runners(),
    )
    try:
        return _print_runners(runner_list(registry), as_json)
    finally:
        asyncio.run(registry.close())
