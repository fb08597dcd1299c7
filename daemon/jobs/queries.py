"""The read-only queries: ``job.list`` (filters, paging by cursor), ``job.logs`` and ``runner.list``.

Answered from the store and the registry alone; nothing here writes. A cursor is opaque to callers:
the ``(created, uid)`` of the last job of a page, so pages stay stable while new jobs arrive.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from daemon.contracts import (
    Answer,
    BadCommand,
    ListCommand,
    LogsCommand,
    ReplicaView,
    RunnerView,
    UnknownJob,
)
from daemon.jobs.registry import Registry
from daemon.jobs.views import job_view
from daemon.store.records import JobQuery, JobRecord, JobStore

__all__ = ["job_logs", "list_jobs", "replica_list", "runner_list"]


def _cursor(record: JobRecord) -> str:
    raw = json.dumps([record.created.isoformat(), record.uid]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, str]:
    try:
        created, uid = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(created), str(uid)
    except (binascii.Error, ValueError, TypeError):
        raise BadCommand("job.list: cursor is not one a job.list answer gave (nextCursor)") from None


async def list_jobs(store: JobStore, command: ListCommand) -> Answer:
    query = JobQuery(
        statuses=tuple(command.status or ()),
        runner_type=command.runner_type,
        label=command.label,
        triggered_by=command.triggered_by,
        schedule=command.schedule,
        created_since=command.created_since,
        created_until=command.created_until,
        after=_after(command.cursor) if command.cursor else None,
    )
    records = await store.list_jobs(query, command.limit + 1)  # one more: is there a next page?
    page = records[: command.limit]
    more = len(records) > command.limit
    return Answer(
        ok=True,
        message=f"{len(page)} job(s)" + (", more on the next page" if more else ""),
        jobs=[job_view(r) for r in page],
        next_cursor=_cursor(page[-1]) if more else None,
    )


async def job_logs(store: JobStore, command: LogsCommand) -> Answer:
    record = await store.get(command.uid)
    if record is None:
        raise UnknownJob(f"no job with uid {command.uid!r}")
    lines = record.logs[command.offset :]
    return Answer(
        ok=True,
        uid=record.uid,
        status=record.status,
        message=f"{len(lines)} line(s) from {command.offset}",
        logs=lines,
        next_offset=len(record.logs),
    )


async def replica_list(store: JobStore, *, now: datetime, every: float, me: str | None) -> Answer:
    """The replicas using the store; ``alive`` when seen within three heartbeats of ``now``."""
    views = [
        ReplicaView(
            id=r.id,
            host=r.host,
            pid=r.pid,
            version=r.version,
            started=r.started,
            last_seen=r.last_seen,
            alive=(now - r.last_seen).total_seconds() <= 3 * every,
            answering=r.id == me,
        )
        for r in await store.replicas()
    ]
    alive = sum(v.alive for v in views)
    return Answer(
        ok=True, message=f"{alive} replica(s) alive, {len(views) - alive} not seen lately", replicas=views
    )


def runner_list(registry: Registry) -> Answer:
    views = [
        RunnerView(type=e.type, origin=e.origin, ready=e.runner is not None, reason=e.disabled)
        for e in registry.entries()
    ]
    skipped = [f"{folder}: {reason}" for folder, reason in registry.skipped]
    ready = sum(v.ready for v in views)
    return Answer(
        ok=True, message=f"{ready} of {len(views)} runner type(s) ready", runners=views, skipped=skipped
    )
