"""The JobStore in SQL, for SQLite and PostgreSQL alike: one connection on one thread, group commit.

The event loop never touches the database: every call runs on a single worker thread. Writes that
arrive while a transaction is running are queued and committed together in the next one (each inside
its own savepoint, so one failing write does not undo the others): a burst of commands costs a few
fsyncs, not one per command. The SQL is the subset both engines speak; what differs (how a
transaction takes its locks, the schema's types, how the schema version is kept) is the
:class:`Dialect` of the subclass (:mod:`daemon.store.sqlite`, :mod:`daemon.store.postgres`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from daemon.contracts import ACTIVE, TERMINAL, JobStatus, Outgoing, ScheduleState, Trace
from daemon.store.records import (
    Change,
    JobQuery,
    JobRecord,
    OutboxRow,
    PendingWriteback,
    ReplicaRecord,
    ScheduleChange,
    ScheduleRecord,
    StoreCounts,
    WritebackRow,
)

# SQL here is built only from this module's own constants, never from input.
# ruff: noqa: S608

__all__ = ["SCHEMA_VERSION", "Conn", "Dialect", "SqlStore", "finish_migration"]

T = TypeVar("T")

#: A result row: by column name (``row["uid"]``) or by position (``row[0]``).
Row = Any


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Row: ...

    def fetchall(self) -> list[Row]: ...


class Conn(Protocol):
    """What the store's SQL runs on: ``sqlite3.Connection``, or the PostgreSQL adapter (``?`` marks)."""

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Any, /) -> Cursor: ...


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines, for the SQL the two share."""

    #: Opens a write transaction: SQLite takes its write lock at once (``BEGIN IMMEDIATE``).
    begin: str
    #: Appended to a read-to-change SELECT: PostgreSQL locks the rows (``FOR UPDATE``); SQLite's
    #: transaction holds the write lock already.
    for_update: str
    #: A column that orders write-backs in the order they were queued.
    queued_order: str
    #: Appended to the SELECT that picks outbox rows to claim: PostgreSQL's replicas each take rows
    #: the others have not locked (``FOR UPDATE SKIP LOCKED``); SQLite's write lock serialises them.
    skip_locked: str = ""
    #: Statements are pipelined (PostgreSQL): a batch is sent whole and its replies read at its end;
    #: when any write in it fails, the batch is undone and run again write by write.
    pipelined: bool = False


_COLUMNS = (
    "uid, status, runner_type, label, triggered_by, address, entity, token, handle, message, logs,"
    " percentage, started, ended, time_limit, created, schedule, writeback, rerun_of, traceparent,"
    " tracestate, owner, owner_host, lease_until"
)

_COLUMN_COUNT = len(_COLUMNS.split(","))

#: The schema this code writes, recorded in the store (its schema version). 1: the first
#: versioned schema (a store from before versions has 0 and is brought up to date the same way);
#: 2: ``jobs.rerun_of`` and the index ``job.list`` pages through; 3: the indexes retention prunes by;
#: 4: each job's trace context, and the AMQP headers of queued events; 5: the replicas table and the
#: store's identity (``meta.store_id``); 6: job ownership (``owner``, ``owner_host``, ``lease_until``);
#: 7: outbox claims (``claimed_by``, ``claimed_until``); 8: schedule fire claims (the same two
#: columns on ``schedules``); 9: a schedule's runs in ``schedule_runs``, apart from its row (a run
#: recorded no longer locks the row replicas claim and record fires on). Both engines share the numbers.
SCHEMA_VERSION = 9

#: Tables added after the first schema, in SQL both engines take as it is.
ADDED_TABLES = (
    "CREATE TABLE IF NOT EXISTS replicas (id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,"
    " version TEXT NOT NULL, started TEXT NOT NULL, last_seen TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS schedule_runs (uid TEXT PRIMARY KEY, runs TEXT NOT NULL)",
)


def finish_migration(conn: Conn) -> None:
    """What every migration ends with, whatever the engine: the tables added since, the indexes, and
    the store's identity (made once, when the store is made or first migrated to version 5)."""
    for table in ADDED_TABLES:
        conn.execute(table)
    for index in INDEXES:
        conn.execute(index)
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('store_id', ?) ON CONFLICT (key) DO NOTHING",
        (str(uuid.uuid4()),),
    )
    conn.execute(  # version 9 moved the runs out of ``schedules.runs`` (left in place, no longer read)
        "INSERT INTO schedule_runs (uid, runs) SELECT uid, runs FROM schedules WHERE runs <> '[]'"
        " ON CONFLICT (uid) DO NOTHING"
    )


#: The indexes every version's schema has (``IF NOT EXISTS``: made by a migration when missing).
INDEXES = (
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created DESC, uid DESC)",
    "CREATE INDEX IF NOT EXISTS jobs_ended ON jobs(ended) WHERE ended IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS idempotency_uid ON idempotency(uid)",
    "CREATE INDEX IF NOT EXISTS jobs_active ON jobs(status) WHERE status IN ({active})".format(
        active=", ".join(f"'{s.value}'" for s in sorted(ACTIVE))
    ),
)

#: Columns added after the first schema: a store made before them gets them when it is opened.
ADDED_COLUMNS = (
    ("jobs", "writeback", "TEXT"),
    ("jobs", "rerun_of", "TEXT"),
    ("jobs", "traceparent", "TEXT"),
    ("jobs", "tracestate", "TEXT"),
    ("outbox", "headers", "TEXT"),
    ("jobs", "owner", "TEXT"),
    ("jobs", "owner_host", "TEXT"),
    ("jobs", "lease_until", "TEXT"),
    ("outbox", "claimed_by", "TEXT"),
    ("outbox", "claimed_until", "TEXT"),
    ("schedules", "claimed_by", "TEXT"),
    ("schedules", "claimed_until", "TEXT"),
)

_ACTIVE = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE))
_TERMINAL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL))
_SCHEDULE_COLUMNS = (
    "uid, cron, time_zone, job, policy, created, label, start_date, end_date, state, next_fire, last_fire,"
    " runs, token"
)
#: What a schedule is read as: its row, and its runs from ``schedule_runs`` (a subquery, so that a
#: ``FOR UPDATE`` locks the schedule's row only).
_SCHEDULE_SELECT = _SCHEDULE_COLUMNS.replace(
    " runs,", " COALESCE((SELECT r.runs FROM schedule_runs r WHERE r.uid = schedules.uid), '[]') AS runs,"
)

#: A queued write: what it does, who waits for it, and what to call with its value once it is committed
#: (run by the flusher, so it happens even when the waiter has been cancelled meanwhile).
_Op = tuple[Callable[[Conn], Any], "asyncio.Future[Any]", Callable[[Any], None] | None]


@dataclass(frozen=True)
class _JobWrite(Generic[T]):
    """A write that touches one job's row only: the one it changes (``uid``), or a new one (None).

    A batch of them, pipelined, reads and locks the rows they change in one statement ahead of them
    (in uid order), instead of one round trip each.
    """

    run: Callable[[Conn], T]
    uid: str | None

    def __call__(self, conn: Conn) -> T:
        return self.run(conn)


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _ts_utc(value: datetime | None) -> str | None:
    """A time compared in SQL (a claim's due check): always UTC, so text order is time order."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def _headers(text: str | None) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in json.loads(text)) if text else ()


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _outbox_row(row: Row) -> OutboxRow:
    message = Outgoing(row["routing_key"], row["message_id"], bytes(row["body"]), _headers(row["headers"]))
    return OutboxRow(row["id"], message)


def _row_to_record(row: Row) -> JobRecord:
    return JobRecord(
        uid=row["uid"],
        status=JobStatus(row["status"]),
        runner_type=row["runner_type"],
        label=row["label"],
        triggered_by=row["triggered_by"],
        address=row["address"],
        entity=json.loads(row["entity"]),
        token=row["token"],
        handle=json.loads(row["handle"]) if row["handle"] is not None else None,
        message=row["message"],
        logs=json.loads(row["logs"]),
        percentage=row["percentage"],
        started=_dt(row["started"]),
        ended=_dt(row["ended"]),
        time_limit=row["time_limit"],
        created=_dt(row["created"]) or datetime.now(UTC),
        schedule=row["schedule"],
        writeback=row["writeback"],
        rerun_of=row["rerun_of"],
        trace=Trace(row["traceparent"], row["tracestate"]) if row["traceparent"] else None,
        owner=row["owner"],
        owner_host=row["owner_host"],
        lease_until=_dt(row["lease_until"]),
    )


def _row_to_schedule(row: Row) -> ScheduleRecord:
    return ScheduleRecord(
        uid=row["uid"],
        cron=row["cron"],
        time_zone=row["time_zone"],
        job=json.loads(row["job"]),
        policy=json.loads(row["policy"]),
        created=_dt(row["created"]) or datetime.now(UTC),
        label=row["label"],
        start_date=_dt(row["start_date"]),
        end_date=_dt(row["end_date"]),
        state=ScheduleState(row["state"]),
        next_fire=_dt(row["next_fire"]),
        last_fire=_dt(row["last_fire"]),
        runs=json.loads(row["runs"]),
        token=row["token"],
    )


def _schedule_values(s: ScheduleRecord) -> tuple[Any, ...]:
    return (
        s.uid,
        s.cron,
        s.time_zone,
        json.dumps(s.job, separators=(",", ":")),
        json.dumps(s.policy, separators=(",", ":")),
        _ts(s.created),
        s.label,
        _ts(s.start_date),
        _ts(s.end_date),
        s.state,
        _ts_utc(s.next_fire),
        _ts(s.last_fire),
        json.dumps(s.runs, separators=(",", ":")),
        s.token,
    )


def _record_values(r: JobRecord) -> tuple[Any, ...]:
    return (
        r.uid,
        r.status.value,
        r.runner_type,
        r.label,
        r.triggered_by,
        r.address,
        json.dumps(r.entity, separators=(",", ":")),
        r.token,
        json.dumps(r.handle, separators=(",", ":")) if r.handle is not None else None,
        r.message,
        json.dumps(r.logs, separators=(",", ":")),
        r.percentage,
        _ts(r.started),
        _ts(r.ended),
        r.time_limit,
        _ts(r.created),
        r.schedule,
        r.writeback,
        r.rerun_of,
        r.trace.traceparent if r.trace is not None else None,
        r.trace.tracestate if r.trace is not None else None,
        r.owner,
        r.owner_host,
        _ts(r.lease_until),
    )


def _claim_key(conn: Conn, key: str, uid: str, answer: bytes, *, optimistic: bool = False) -> bytes | None:
    """Record the idempotency key; the answer already recorded under it when it was taken.

    One statement when the key is new (the common case): the insert that finds it taken reads it.
    Two replicas taking one key at once: the second waits for the first's commit, then reads it.
    ``optimistic`` (a pipelined batch): the key is taken to be new, with no reply awaited; a key
    that was taken fails the batch, which then runs write by write, reading it as above.
    """
    if optimistic:
        conn.execute("INSERT INTO idempotency (key, uid, answer) VALUES (?, ?, ?)", (key, uid, answer))
        return None
    taken = conn.execute(
        "INSERT INTO idempotency (key, uid, answer) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO NOTHING RETURNING key",
        (key, uid, answer),
    ).fetchone()
    if taken is not None:
        return None
    return bytes(conn.execute("SELECT answer FROM idempotency WHERE key = ?", (key,)).fetchone()["answer"])


def _write_events(conn: Conn, events: Sequence[Outgoing]) -> None:
    if events:
        conn.executemany(
            "INSERT INTO outbox (routing_key, message_id, body, headers) VALUES (?, ?, ?, ?)",
            [
                (e.routing_key, e.message_id, e.body, json.dumps(e.headers) if e.headers else None)
                for e in events
            ],
        )


def _write_writebacks(conn: Conn, writebacks: Sequence[PendingWriteback]) -> None:
    """Queue DMSS write-backs; a newer one for the same job and kind replaces the queued one."""
    if writebacks:
        conn.executemany(
            "INSERT INTO writeback (uid, kind, address, body) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (uid, kind) DO UPDATE SET address = excluded.address, body = excluded.body,"
            " version = writeback.version + 1, attempts = 0, not_before = 0",
            [(w.uid, w.kind, w.address, json.dumps(w.body, separators=(",", ":"))) for w in writebacks],
        )


def _append_run(conn: Conn, record: JobRecord, scheduled_for: datetime | None, limit: int, lock: str) -> None:
    """Add a run to its schedule's history, in the history's own row (locked: replicas recording two
    runs of one schedule at once queue up), never the schedule's."""
    conn.execute(
        "INSERT INTO schedule_runs (uid, runs) VALUES (?, '[]') ON CONFLICT (uid) DO NOTHING",
        (record.schedule,),
    )
    row = conn.execute(f"SELECT runs FROM schedule_runs WHERE uid = ?{lock}", (record.schedule,)).fetchone()
    run = {"uid": record.uid, "scheduledFor": _ts(scheduled_for), "started": _ts(record.created)}
    runs = [*json.loads(row["runs"]), run][-limit:]
    conn.execute(
        "UPDATE schedule_runs SET runs = ? WHERE uid = ?",
        (json.dumps(runs, separators=(",", ":")), record.schedule),
    )


class SqlStore:
    """A :class:`~daemon.store.records.JobStore` on one database connection, used from one thread.

    A subclass names its :class:`Dialect` and opens (and migrates) the connection in :meth:`_connect`.
    """

    dialect: Dialect

    def __init__(self, *, describe: str) -> None:
        #: Which store this is, safe to log (no password): ``sqlite:<path>`` or a PostgreSQL URL.
        self.describe = describe
        #: Called after each commit: the outbox may hold new events (the relay's wake-up).
        self.on_commit: Callable[[], None] | None = None
        self.on_insert: Callable[[JobRecord, ScheduleRecord | None], None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._conn: Conn | None = None
        self._pending: list[_Op] = []
        #: The job rows a pipelined batch read and locked ahead, until a write uses (or may change) them.
        self._locked: dict[str, JobRecord] = {}
        #: In a pipelined batch: idempotency keys are taken to be new (see :func:`_claim_key`).
        self._optimistic = False
        self._flusher: asyncio.Task[None] | None = None

    # -- what a subclass provides (each runs on the store's thread) ------------------------------------

    def _connect(self) -> Conn:
        """Open the connection and bring the schema to :data:`SCHEMA_VERSION` (or refuse a newer one)."""
        raise NotImplementedError

    def _disconnect(self, conn: Conn) -> None:
        raise NotImplementedError

    def _schema_version(self, conn: Conn) -> int:
        raise NotImplementedError

    def _pipelined(self, conn: Conn) -> contextlib.AbstractContextManager[object]:
        """Where a batch runs: PostgreSQL sends its statements without waiting for each reply."""
        return contextlib.nullcontext()

    def _sync(self, conn: Conn) -> None:
        """Wait for the replies of what was sent (raising its error): the end of one write's work."""

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobd-store")
        try:
            self._conn = await self._call(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._executor is not None:
            conn, self._conn = self._conn, None
            if conn is not None:
                await self._call(functools.partial(self._disconnect, conn))
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- plumbing --------------------------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def _read(self, fn: Callable[[Conn], T]) -> T:
        return await self._call(lambda: fn(self._db))

    @property
    def _db(self) -> Conn:
        if self._conn is None:
            raise RuntimeError("the store is not open")
        return self._conn

    async def _write(self, fn: Callable[[Conn], T], *, committed: Callable[[T], None] | None = None) -> T:
        """Queue ``fn`` for the next group commit and wait until it is durable.

        ``fn`` may run more than once (its batch undone and run again): it acts on the database only,
        or idempotently.

        ``committed`` is called with ``fn``'s value right after the commit, whether or not the caller
        still waits: a caller cancelled mid-write cannot skip what must follow the write.
        """
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future, committed))
        if self._flusher is None or self._flusher.done():
            # In a context of its own: not the one of whichever command's write happened to start it
            # (its trace and log fields would otherwise follow every commit and what they launch).
            self._flusher = asyncio.create_task(self._flush(), context=contextvars.Context())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            fns = [fn for fn, _, _ in batch]
            try:
                outcomes = await self._call(functools.partial(self._run_batch, fns))
            except BaseException as exc:  # the commit itself failed: every write in it failed
                for _, future, _ in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, _, committed), (ok, value) in zip(batch, outcomes, strict=True):
                if ok and committed is not None:
                    try:
                        committed(value)
                    except Exception as exc:  # a follower's bug must not stop the group commit
                        asyncio.get_running_loop().call_exception_handler(
                            {"message": "a commit follower failed", "exception": exc}
                        )
            if self.on_commit is not None:
                self.on_commit()
            for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _run_batch(self, fns: list[Callable[[Conn], Any]]) -> list[tuple[bool, Any]]:
        conn = self._db
        with self._pipelined(conn):
            if len(fns) == 1:  # alone in its transaction: no savepoint
                return [self._run_alone(conn, fns[0])]
            if self.dialect.pipelined:
                with contextlib.suppress(Exception):  # some write failed: find out which, one at a time
                    return self._run_at_once(conn, fns)
            return self._run_one_by_one(conn, fns)

    def _run_at_once(self, conn: Conn, fns: list[Callable[[Conn], Any]]) -> list[tuple[bool, Any]]:
        """The whole batch in one transaction, its replies read only where a write reads a result and
        at the commit: a round trip per read, not per statement. Any failure undoes it all."""
        outcomes: list[tuple[bool, Any]] = []
        conn.execute(self.dialect.begin)
        try:
            self._lock_ahead(conn, fns)
            self._optimistic = True
            for fn in fns:
                if not isinstance(fn, _JobWrite):  # it may change what was read ahead
                    self._locked.clear()
                outcomes.append((True, fn(conn)))
            conn.execute("COMMIT")
            self._sync(conn)
        except BaseException:
            self._undo(conn, "ROLLBACK")
            raise
        finally:
            self._locked.clear()
            self._optimistic = False
        return outcomes

    def _claim(self, conn: Conn, key: str, uid: str, answer: bytes) -> bytes | None:
        return _claim_key(conn, key, uid, answer, optimistic=self._optimistic)

    def _lock_ahead(self, conn: Conn, fns: list[Callable[[Conn], Any]]) -> None:
        uids = sorted({fn.uid for fn in fns if isinstance(fn, _JobWrite) and fn.uid is not None})
        if len(uids) < 2:
            return
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE uid IN ({', '.join('?' * len(chunk))})"
                f" ORDER BY uid{self.dialect.for_update}",
                chunk,
            ).fetchall()
            self._locked.update((row["uid"], _row_to_record(row)) for row in rows)

    def _run_one_by_one(self, conn: Conn, fns: list[Callable[[Conn], Any]]) -> list[tuple[bool, Any]]:
        """Each write in a savepoint of one transaction, its replies read before the next starts (so
        an error is its own): one failing write does not undo the others."""
        outcomes: list[tuple[bool, Any]] = []
        conn.execute(self.dialect.begin)
        try:
            for fn in fns:
                conn.execute("SAVEPOINT op")
                try:
                    value = fn(conn)
                    self._sync(conn)
                    outcomes.append((True, value))
                except Exception as exc:
                    self._undo(conn, "ROLLBACK TO op")
                    outcomes.append((False, exc))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
            self._sync(conn)
        except BaseException:
            self._undo(conn, "ROLLBACK")
            raise
        return outcomes

    def _run_alone(self, conn: Conn, fn: Callable[[Conn], Any]) -> tuple[bool, Any]:
        conn.execute(self.dialect.begin)
        try:
            value = fn(conn)
            conn.execute("COMMIT")
            self._sync(conn)
        except Exception as exc:  # the write's own failure (or its commit's): undone, and reported
            self._undo(conn, "ROLLBACK")
            return False, exc
        except BaseException:
            with contextlib.suppress(Exception):
                self._undo(conn, "ROLLBACK")
            raise
        return True, value

    def _undo(self, conn: Conn, statement: str) -> None:
        """Roll back after a failure, once the replies still due (and the failure among them) are in:
        a pipelined server skips what follows an error until then."""
        with contextlib.suppress(Exception):
            self._sync(conn)
        conn.execute(statement)
        self._sync(conn)

    # -- the JobStore protocol -------------------------------------------------------------------

    async def insert(
        self,
        record: JobRecord,
        *,
        key: str | None,
        answer: bytes,
        events: Sequence[Outgoing],
        schedule: ScheduleRecord | None = None,
        scheduled_for: datetime | None = None,
        run_limit: int = 100,
        writebacks: Sequence[PendingWriteback] = (),
    ) -> bytes | None:
        def op(conn: Conn) -> bytes | None:
            if key is not None and (prior := self._claim(conn, key, record.uid, answer)) is not None:
                return prior
            conn.execute(
                f"INSERT INTO jobs ({_COLUMNS}) VALUES ({', '.join('?' * _COLUMN_COUNT)})",
                _record_values(record),
            )
            if schedule is not None:
                conn.execute(
                    f"INSERT INTO schedules ({_SCHEDULE_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                    _schedule_values(schedule),
                )
                if schedule.runs:
                    conn.execute(
                        "INSERT INTO schedule_runs (uid, runs) VALUES (?, ?)",
                        (schedule.uid, json.dumps(schedule.runs, separators=(",", ":"))),
                    )
            if record.schedule is not None:
                _append_run(conn, record, scheduled_for, run_limit, self.dialect.for_update)
            _write_events(conn, events)
            _write_writebacks(conn, writebacks)
            return None

        def committed(existing: bytes | None) -> None:
            if existing is None and self.on_insert is not None:
                self.on_insert(record, schedule)

        return await self._write(_JobWrite(op, None), committed=committed)

    async def remember(self, key: str, uid: str, answer: bytes, events: Sequence[Outgoing]) -> bytes | None:
        def op(conn: Conn) -> bytes | None:
            if (prior := self._claim(conn, key, uid, answer)) is not None:
                return prior
            _write_events(conn, events)
            return None

        return await self._write(op)

    async def answer_for(self, key: str) -> bytes | None:
        def op(conn: Conn) -> bytes | None:
            row = conn.execute("SELECT answer FROM idempotency WHERE key = ?", (key,)).fetchone()
            return bytes(row["answer"]) if row is not None else None

        return await self._read(op)

    async def get(self, uid: str) -> JobRecord | None:
        def op(conn: Conn) -> JobRecord | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE uid = ?", (uid,)).fetchone()
            return _row_to_record(row) if row is not None else None

        return await self._read(op)

    async def modify(self, uid: str, decide: Callable[[JobRecord], Change | None]) -> JobRecord | None:
        lock = self.dialect.for_update

        def op(conn: Conn) -> JobRecord | None:
            current = self._locked.pop(uid, None)  # read once: a second change in the batch reads anew
            if current is None:
                row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE uid = ?{lock}", (uid,)).fetchone()
                if row is None:
                    return None
                current = _row_to_record(row)
            change = decide(current)
            if change is None:
                return current
            new = change.record
            conn.execute(  # only what a change may touch: the entity and the token are written once
                "UPDATE jobs SET status=?, handle=?, message=?, logs=?, percentage=?, started=?, ended=?,"
                " writeback=? WHERE uid=?",
                (
                    new.status.value,
                    json.dumps(new.handle, separators=(",", ":")) if new.handle is not None else None,
                    new.message,
                    json.dumps(new.logs, separators=(",", ":")),
                    new.percentage,
                    _ts(new.started),
                    _ts(new.ended),
                    new.writeback,
                    uid,
                ),
            )
            _write_events(conn, change.events)
            _write_writebacks(conn, change.writebacks)
            return change.record

        return await self._write(_JobWrite(op, uid))

    async def active(self) -> list[JobRecord]:
        marks = ", ".join("?" * len(ACTIVE))

        def op(conn: Conn) -> list[JobRecord]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE status IN ({marks}) ORDER BY created",
                [s.value for s in sorted(ACTIVE)],
            ).fetchall()
            return [_row_to_record(row) for row in rows]

        return await self._read(op)

    async def list_jobs(self, query: JobQuery, limit: int) -> list[JobRecord]:
        where, params = _job_filter(query)
        sql = f"SELECT {_COLUMNS} FROM jobs{where} ORDER BY created DESC, uid DESC LIMIT ?"

        def op(conn: Conn) -> list[JobRecord]:
            return [_row_to_record(row) for row in conn.execute(sql, [*params, limit]).fetchall()]

        return await self._read(op)

    async def ended_before(self, cutoff: datetime, limit: int) -> list[JobRecord]:
        sql = (
            f"SELECT {_COLUMNS} FROM jobs WHERE ended IS NOT NULL AND ended < ? AND status IN ({_TERMINAL})"
            " ORDER BY ended LIMIT ?"
        )

        def op(conn: Conn) -> list[JobRecord]:
            return [_row_to_record(row) for row in conn.execute(sql, (_ts(cutoff), limit)).fetchall()]

        return await self._read(op)

    async def forget(self, uids: Sequence[str]) -> int:
        def op(conn: Conn) -> int:
            marks = ", ".join("?" * len(uids))
            conn.execute(f"DELETE FROM idempotency WHERE uid IN ({marks})", list(uids))
            conn.execute(f"DELETE FROM writeback WHERE uid IN ({marks})", list(uids))
            cursor = conn.execute(
                f"DELETE FROM jobs WHERE uid IN ({marks}) AND status IN ({_TERMINAL})", list(uids)
            )
            return int(cursor.rowcount)

        return await self._write(op) if uids else 0

    async def counts(self) -> StoreCounts:
        def op(conn: Conn) -> StoreCounts:
            jobs = conn.execute("SELECT runner_type, status, COUNT(*) FROM jobs GROUP BY runner_type, status")
            states = conn.execute("SELECT state, COUNT(*) FROM schedules GROUP BY state")
            return StoreCounts(
                jobs={(r[0], r[1]): r[2] for r in jobs.fetchall()},
                schedules={r[0]: r[1] for r in states.fetchall()},
                outbox=conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0],
                writeback=conn.execute("SELECT COUNT(*) FROM writeback").fetchone()[0],
            )

        return await self._read(op)

    async def adopt(
        self,
        owner: str,
        host: str,
        *,
        until: datetime,
        now: datetime,
        anywhere: Sequence[str],
        on_host: Sequence[str],
        mine: bool = False,
    ) -> list[JobRecord]:
        if not anywhere and not on_host:
            return []
        reach: list[str] = []
        params: list[Any] = [owner, host, _ts(until), _utc(now), owner if mine else None]
        if anywhere:
            reach.append(f"runner_type IN ({', '.join('?' * len(anywhere))})")
            params += list(anywhere)
        if on_host:
            marks = ", ".join("?" * len(on_host))
            reach.append(f"(runner_type IN ({marks}) AND (owner_host IS NULL OR owner_host = ?))")
            params += [*on_host, host]
        sql = (
            f"UPDATE jobs SET owner = ?, owner_host = ?, lease_until = ? WHERE status IN ({_ACTIVE})"
            " AND (owner IS NULL OR lease_until IS NULL OR lease_until < ? OR owner = ?)"
            f" AND ({' OR '.join(reach)})"
            f" RETURNING {_COLUMNS}"
        )

        def op(conn: Conn) -> list[JobRecord]:
            return [_row_to_record(row) for row in conn.execute(sql, params).fetchall()]

        return await self._write(op)

    async def renew(self, owner: str, until: datetime) -> int:
        def op(conn: Conn) -> int:
            sql = f"UPDATE jobs SET lease_until = ? WHERE owner = ? AND status IN ({_ACTIVE})"
            return int(conn.execute(sql, (_ts(until), owner)).rowcount)

        return await self._write(op)

    async def release(self, owner: str, now: datetime) -> int:
        def op(conn: Conn) -> int:
            sql = "UPDATE jobs SET owner = NULL, lease_until = ? WHERE owner = ?"
            return int(conn.execute(sql, (_utc(now), owner)).rowcount)

        return await self._write(op)

    async def stranded(self, before: datetime, *, flagged: str, limit: int) -> list[JobRecord]:
        sql = (
            f"SELECT {_COLUMNS} FROM jobs WHERE status IN ({_ACTIVE})"
            " AND (lease_until IS NULL OR lease_until < ?) AND (message IS NULL OR message NOT LIKE ?)"
            " ORDER BY created LIMIT ?"
        )

        def op(conn: Conn) -> list[JobRecord]:
            rows = conn.execute(sql, (_utc(before), flagged.replace("%", "") + "%", limit)).fetchall()
            return [_row_to_record(row) for row in rows]

        return await self._read(op)

    async def store_id(self) -> str:
        def op(conn: Conn) -> str:
            return str(conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0])

        return await self._read(op)

    async def heartbeat(self, replica: ReplicaRecord) -> None:
        def op(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO replicas (id, host, pid, version, started, last_seen) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen",
                (
                    replica.id,
                    replica.host,
                    replica.pid,
                    replica.version,
                    _ts(replica.started),
                    _ts(replica.last_seen),
                ),
            )

        await self._write(op)

    async def replicas(self) -> list[ReplicaRecord]:
        def op(conn: Conn) -> list[ReplicaRecord]:
            rows = conn.execute(
                "SELECT id, host, pid, version, started, last_seen FROM replicas ORDER BY started, id"
            ).fetchall()
            return [
                ReplicaRecord(
                    r["id"], r["host"], r["pid"], r["version"], _at(r["started"]), _at(r["last_seen"])
                )
                for r in rows
            ]

        return await self._read(op)

    async def leave(self, replica_id: str) -> None:
        def op(conn: Conn) -> None:
            conn.execute("DELETE FROM replicas WHERE id = ?", (replica_id,))

        await self._write(op)

    async def schema_version(self) -> int:
        return await self._read(self._schema_version)

    async def claim_outbox(
        self, owner: str, *, now: datetime, until: datetime, limit: int
    ) -> list[OutboxRow]:
        sql = (
            "UPDATE outbox SET claimed_by = ?, claimed_until = ? WHERE id IN (SELECT id FROM outbox"
            " WHERE claimed_until IS NULL OR claimed_until < ? OR claimed_by = ?"
            f" ORDER BY id LIMIT ?{self.dialect.skip_locked})"
            " RETURNING id, routing_key, message_id, body, headers"
        )

        def op(conn: Conn) -> list[OutboxRow]:
            rows = conn.execute(sql, (owner, _ts(until), _utc(now), owner, limit)).fetchall()
            return sorted(map(_outbox_row, rows), key=lambda row: row.id)  # RETURNING promises no order

        return await self._write(op)

    async def outbox(self, limit: int) -> list[OutboxRow]:
        def op(conn: Conn) -> list[OutboxRow]:
            rows = conn.execute(
                "SELECT id, routing_key, message_id, body, headers FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            return [_outbox_row(r) for r in rows]

        return await self._read(op)

    async def outbox_done(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        id_list = list(ids)

        def op(conn: Conn) -> None:
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in id_list])

        await self._write(op)

    async def writebacks(self, now: float, limit: int) -> list[WritebackRow]:
        def op(conn: Conn) -> list[WritebackRow]:
            rows = conn.execute(
                "SELECT w.uid, w.kind, w.address, w.body, w.version, w.attempts, j.token, j.traceparent,"
                " j.tracestate"
                " FROM writeback w LEFT JOIN jobs j ON j.uid = w.uid"
                f" WHERE w.not_before <= ? ORDER BY w.not_before, {self.dialect.queued_order} LIMIT ?",
                (now, limit),
            ).fetchall()
            return [
                WritebackRow(
                    r["uid"],
                    r["kind"],
                    r["address"],
                    json.loads(r["body"]),
                    r["version"],
                    r["attempts"],
                    r["token"],
                    Trace(r["traceparent"], r["tracestate"]) if r["traceparent"] else None,
                )
                for r in rows
            ]

        return await self._read(op)

    async def next_writeback(self) -> float | None:
        def op(conn: Conn) -> float | None:
            value = conn.execute("SELECT MIN(not_before) FROM writeback").fetchone()[0]
            return float(value) if value is not None else None

        return await self._read(op)

    async def writeback_done(self, row: WritebackRow) -> None:
        def op(conn: Conn) -> None:
            conn.execute(
                "DELETE FROM writeback WHERE uid = ? AND kind = ? AND version = ?",
                (row.uid, row.kind, row.version),
            )

        await self._write(op)

    async def writeback_retry(self, row: WritebackRow, not_before: float) -> None:
        def op(conn: Conn) -> None:
            conn.execute(
                "UPDATE writeback SET attempts = attempts + 1, not_before = ?"
                " WHERE uid = ? AND kind = ? AND version = ?",
                (not_before, row.uid, row.kind, row.version),
            )

        await self._write(op)

    async def schedules(self) -> list[tuple[str, str, datetime | None]]:
        def op(conn: Conn) -> list[tuple[str, str, datetime | None]]:
            rows = conn.execute("SELECT uid, state, next_fire FROM schedules").fetchall()
            return [(r["uid"], r["state"], _dt(r["next_fire"])) for r in rows]

        return await self._read(op)

    async def get_schedule(self, uid: str) -> ScheduleRecord | None:
        def op(conn: Conn) -> ScheduleRecord | None:
            row = conn.execute(f"SELECT {_SCHEDULE_SELECT} FROM schedules WHERE uid = ?", (uid,)).fetchone()
            return _row_to_schedule(row) if row is not None else None

        return await self._read(op)

    async def get_schedules(self, uids: Sequence[str]) -> dict[str, ScheduleRecord]:
        wanted = list(uids)

        def op(conn: Conn) -> dict[str, ScheduleRecord]:
            found: dict[str, ScheduleRecord] = {}
            for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                rows = conn.execute(
                    f"SELECT {_SCHEDULE_SELECT} FROM schedules WHERE uid IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                found.update((row["uid"], _row_to_schedule(row)) for row in rows)
            return found

        return await self._read(op)

    async def list_schedules(self) -> list[ScheduleRecord]:
        def op(conn: Conn) -> list[ScheduleRecord]:
            rows = conn.execute(f"SELECT {_SCHEDULE_SELECT} FROM schedules ORDER BY created").fetchall()
            return [_row_to_schedule(r) for r in rows]

        return await self._read(op)

    async def modify_schedule(
        self, uid: str, decide: Callable[[ScheduleRecord], ScheduleChange | None]
    ) -> ScheduleRecord | None:
        return (await self.modify_schedules({uid: decide})).get(uid)

    async def modify_schedules(
        self, decisions: Mapping[str, Callable[[ScheduleRecord], ScheduleChange | None]]
    ) -> dict[str, ScheduleRecord]:
        lock = self.dialect.for_update

        def op(conn: Conn) -> dict[str, ScheduleRecord]:
            out: dict[str, ScheduleRecord] = {}
            for uid, decide in decisions.items():
                row = conn.execute(
                    f"SELECT {_SCHEDULE_SELECT} FROM schedules WHERE uid = ?{lock}", (uid,)
                ).fetchone()
                if row is None:
                    continue
                current = _row_to_schedule(row)
                change = decide(current)
                if change is None:
                    out[uid] = current
                    continue
                new = change.record
                # A fire recorded (``last_fire`` moved) ends the claim that covered it: the next fire
                # is anyone's at once. Other changes (pause, trigger) leave a claim as it is.
                fired = new.last_fire != current.last_fire
                conn.execute(  # not its runs: those are recorded with each run, in their own row
                    "UPDATE schedules SET state=?, next_fire=?, last_fire=?"
                    + (", claimed_by=NULL, claimed_until=NULL" if fired else "")
                    + " WHERE uid=?",
                    (new.state, _ts_utc(new.next_fire), _ts(new.last_fire), uid),
                )
                _write_events(conn, change.events)
                out[uid] = new
            return out

        return await self._write(op)

    async def claim_schedules(
        self, owner: str, uids: Sequence[str], *, horizon: datetime, now: datetime, until: datetime
    ) -> dict[str, ScheduleRecord]:
        # SKIP LOCKED (PostgreSQL): a row another claimant holds is left to it rather than waited
        # for, so two replicas claiming one instant split it instead of queueing or deadlocking.
        sql = (
            "UPDATE schedules SET claimed_by = ?, claimed_until = ? WHERE uid IN (SELECT uid FROM schedules"
            " WHERE uid IN ({marks}) AND state = 'active' AND next_fire IS NOT NULL AND next_fire <= ?"
            " AND (claimed_until IS NULL OR claimed_until < ? OR claimed_by = ?)"
            f"{self.dialect.skip_locked}) RETURNING {_SCHEDULE_SELECT}"
        )
        fixed = (_utc(horizon), _utc(now), owner)

        def op(conn: Conn) -> dict[str, ScheduleRecord]:
            won: dict[str, ScheduleRecord] = {}
            for start in range(0, len(uids), 500):
                chunk = list(uids[start : start + 500])
                rows = conn.execute(
                    sql.format(marks=", ".join("?" * len(chunk))), (owner, _ts(until), *chunk, *fixed)
                ).fetchall()
                won.update((row["uid"], _row_to_schedule(row)) for row in rows)
            return won

        return await self._write(op)

    async def release_schedules(self, owner: str) -> int:
        def op(conn: Conn) -> int:
            sql = "UPDATE schedules SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = ?"
            return int(conn.execute(sql, (owner,)).rowcount)

        return await self._write(op)

    async def count(self, status: JobStatus | None = None) -> int:
        """How many jobs there are (in one status): for tests and the benchmark."""

        def op(conn: Conn) -> int:
            if status is None:
                return int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
            return int(
                conn.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status.value,)).fetchone()[0]
            )

        return await self._read(op)


def _utc(value: datetime) -> str:
    """The stored form of a time to compare with (every stored time is UTC ISO 8601)."""
    return value.astimezone(UTC).isoformat()


def _job_filter(query: JobQuery) -> tuple[str, list[Any]]:
    """The WHERE clause for a :class:`JobQuery`, and its parameters (only placeholders, no input)."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.statuses:
        clauses.append(f"status IN ({', '.join('?' * len(query.statuses))})")
        params += [s.value for s in query.statuses]
    for column, value in (
        ("runner_type", query.runner_type),
        ("label", query.label),
        ("triggered_by", query.triggered_by),
        ("schedule", query.schedule),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if query.created_since is not None:
        clauses.append("created >= ?")
        params.append(_utc(query.created_since))
    if query.created_until is not None:
        clauses.append("created < ?")
        params.append(_utc(query.created_until))
    if query.after is not None:
        created, uid = query.after
        clauses.append("(created < ? OR (created = ? AND uid < ?))")
        params += [_utc(created), _utc(created), uid]
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
