"""Writing job state back to DMSS: what to write, and the relay that drains the durable queue.

As dm-job did, every change of a job started by address is written to its entity (``type``, ``uid``,
``status``, ``started``, ``ended``, ``triggeredBy``) as a partial update, without the daemon's own
fields; a completed job with an ``outputTarget`` has its result stored there. The writes are queued in
the store in the same transaction as the change (like events in the outbox), coalesced to the newest
per job, and drained here with per-row backoff: a DMSS outage delays them, never blocks or loses the
job's state or events. A write DMSS refuses for good (401, 404, validation), or fails with the same
500 up to a limit, is given up: logged once with DMSS's error and noted on the job (its ``writeback``
field in status answers and events), so an operator sees that DMSS is out of date.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import structlog

from daemon.contracts import DmssError, DmssUnavailable, JobResult, JobStatus, Log, current_trace
from daemon.dmss.client import DmssClient, data_source_of
from daemon.store.records import JobRecord, JobStore, PendingWriteback, WritebackRow

__all__ = ["ENTITY", "RESULT", "WritebackRelay", "entity_update", "result_document", "writebacks_for"]

ENTITY = "entity"
RESULT = "result"
BLOB = "dmss://system/SIMOS/Blob"
JOB = "dmss://WorkflowDS/Blueprints/Job"

#: How the relay gets a completed job's result (the runner's answer, as ``job.result`` gives it).
ResultOf = Callable[[str], Awaitable[JobResult]]
#: How the relay notes on a job that DMSS is out of date for it: ``(uid, why)``.
NoteOf = Callable[[str, str], Awaitable[object]]


def _stamp(value: datetime) -> str:
    return value.replace(microsecond=0).isoformat()


def entity_update(record: JobRecord) -> dict[str, Any]:
    """The attributes of the job entity the daemon owns, under dm-job's names; nothing internal.

    DMSS's update use case reads the ``type`` of every object it is sent (without it: a KeyError,
    answered 500), and stores only attributes of the entity's blueprint, so the body carries the
    entity's ``type`` and the Job blueprint's ``uid``, ``status``, ``started``, ``ended`` and
    ``triggeredBy``, as dm-job wrote them. Log lines are not in the blueprint: events carry them.
    """
    body: dict[str, Any] = {
        "type": record.entity.get("type") or JOB,
        "uid": record.uid,
        "status": record.status.value,
    }
    if record.triggered_by:
        body["triggeredBy"] = record.triggered_by
    if record.started is not None:
        body["started"] = _stamp(record.started)
    if record.ended is not None:
        body["ended"] = _stamp(record.ended)
    return body


def writebacks_for(
    new: JobRecord, previous: JobStatus | None, *, dmss_configured: bool
) -> list[PendingWriteback]:
    """What a change to ``new`` (from status ``previous``) must write to DMSS."""
    if not dmss_configured:
        return []
    out: list[PendingWriteback] = []
    if new.address:
        out.append(PendingWriteback(new.uid, ENTITY, new.address, entity_update(new)))
    target = new.entity.get("outputTarget")
    finished = new.status is JobStatus.COMPLETED and previous is not JobStatus.COMPLETED
    if finished and isinstance(target, str) and target:
        out.append(PendingWriteback(new.uid, RESULT, target, {}))
    return out


def result_document(result: JobResult) -> dict[str, Any] | None:
    """A result that is a JSON entity (an object with ``type``) is stored as it is; None otherwise
    (the bytes then go to a blob, described by a ``SIMOS/Blob`` entity: see :meth:`WritebackRelay`)."""
    data = result.data
    if result.media_type == "application/json" or (isinstance(data, str) and data.lstrip().startswith("{")):
        try:
            parsed = json.loads(data)
        except ValueError:
            return None
        if isinstance(parsed, dict) and isinstance(parsed.get("type"), str):
            return parsed
    return None


class WritebackRelay:
    """Drains the store's write-back queue to DMSS, newest state per job, with backoff per row."""

    def __init__(
        self,
        store: JobStore,
        dmss: DmssClient,
        result_of: ResultOf,
        *,
        log: Log,
        batch: int = 64,
        idle_poll: float = 5.0,
        retry_min: float = 0.2,
        retry_max: float = 60.0,
        retry_limit: int = 10,
        note: NoteOf | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.dmss = dmss
        self.result_of = result_of
        self.retry_limit = retry_limit
        self.note = note
        self.log = log
        self.batch = batch
        self.idle_poll = idle_poll
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """The store committed: there may be a new write-back to make now."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dmss write-back")

    async def close(self) -> None:
        """Stop; whatever is still queued stays in the store for the next start."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.drain_once()
                wait = self.idle_poll
                due = await self.store.next_writeback()
                if due is not None:
                    wait = max(0.0, min(wait, due - self.clock()))
            except Exception as exc:  # the store itself failed: try again a little later
                self.log.error("the DMSS write-back failed", error=repr(exc))
                wait = self.retry_max
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def drain_once(self) -> int:
        """Make every due write-back once (concurrently); returns how many went through."""
        rows = await self.store.writebacks(self.clock(), self.batch)
        outcomes = await asyncio.gather(*(self._one(row) for row in rows))
        return sum(outcomes)

    async def _one(self, row: WritebackRow) -> bool:
        current_trace.set(row.trace)  # each row runs in a task of its own (gather): no reset needed
        structlog.contextvars.bind_contextvars(uid=row.uid)
        try:
            if row.kind == RESULT:
                await self._store_result(row)
            else:
                await self.dmss.update(row.address, row.token, row.body, partial=True)
        except DmssUnavailable as exc:
            # An outage (no answer, 502/503/504, 429) is waited out; the same 500 again and again is
            # DMSS failing on this very write (a KeyError in its use case, say): given up at the limit.
            if exc.status == 500 and row.attempts + 1 >= self.retry_limit:
                await self._give_up(row, f"DMSS kept failing it ({row.attempts + 1} attempts): {exc.message}")
                return True
            delay = min(self.retry_min * 2**row.attempts, self.retry_max)
            self.log.warning(
                "DMSS write-back waits", uid=row.uid, kind=row.kind, error=exc.message, retry_in=delay
            )
            await self.store.writeback_retry(row, self.clock() + delay)
            return False
        except DmssError as exc:
            await self._give_up(row, f"DMSS refused it: {exc.message}")
            return True
        except Exception as exc:  # the runner could not give the result, or a bug: retrying will not help
            await self._give_up(row, f"it failed: {exc!r}")
            return True
        await self.store.writeback_done(row)
        return True

    async def _give_up(self, row: WritebackRow, why: str) -> None:
        """Drop the write, say so once in the log and on the job: DMSS is out of date for it."""
        what = "the job's result" if row.kind == RESULT else "the job's status"
        note = f"{what} was not written to {row.address}: {why}"
        self.log.error("DMSS write-back given up", uid=row.uid, kind=row.kind, error=why)
        await self.store.writeback_done(row)
        if self.note is not None:
            await self.note(row.uid, note)

    async def _store_result(self, row: WritebackRow) -> None:
        """Store the result at ``outputTarget``: an entity as it is, anything else as a blob plus a
        ``dmss://system/SIMOS/Blob`` entity naming it (blob id: the job uid, so a retry overwrites)."""
        result = await self.result_of(row.uid)
        document = result_document(result)
        if document is None:
            content = result.data.encode() if isinstance(result.data, str) else result.data
            await self.dmss.put_blob(
                data_source_of(row.address), row.uid, row.token, content, result.media_type
            )
            document = {
                "type": BLOB,
                "name": f"result-{row.uid}",
                "_blob_id": row.uid,
                "size": len(content),
            }
        stored = await self.dmss.add(row.address, row.token, document)
        self.log.info("job result stored in DMSS", uid=row.uid, target=row.address, stored=stored)
