"""The PostgreSQL store: the same SQL and the same guarantees as SQLite's, for replicas sharing one store.

psycopg 3 on the store's own thread, like SQLite: a command's effect, its idempotency key, its events
and write-backs commit in one transaction, and the group commit batches concurrent writes (pipelined:
a round trip per batch and per read in it, not per statement). Reads run beside it, on a pool of
connections (psycopg_pool). Rows a
change reads are locked (``SELECT ... FOR UPDATE``) so two replicas changing one job queue up instead
of losing an update. The schema version is kept in ``dm_jobd_schema``; a migration runs under an
advisory lock, so replicas starting together migrate once. A dropped connection fails the work in
flight (commands are redelivered) and is opened again for the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import ConnectionPool

from daemon.store.records import StoreTooNew, StoreUnavailable
from daemon.store.sql import ADDED_COLUMNS, SCHEMA_VERSION, Conn, Cursor, Dialect, SqlStore, finish_migration

# SQL here is built only from this module's own constants, never from input.

__all__ = ["PostgresStore", "safe_url"]

T = TypeVar("T")

#: The tables as SQLite's, in PostgreSQL's types: times stay ISO 8601 text (UTC), as in SQLite, so
#: both engines compare and page them the same way.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    uid TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    runner_type TEXT NOT NULL,
    label TEXT,
    triggered_by TEXT,
    address TEXT,
    entity TEXT NOT NULL,
    token TEXT,
    handle TEXT,
    message TEXT,
    logs TEXT NOT NULL DEFAULT '[]',
    percentage DOUBLE PRECISION,
    started TEXT,
    ended TEXT,
    time_limit DOUBLE PRECISION,
    created TEXT NOT NULL,
    schedule TEXT,
    writeback TEXT,
    rerun_of TEXT,
    traceparent TEXT,
    tracestate TEXT,
    owner TEXT,
    owner_host TEXT,
    lease_until TEXT
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    uid TEXT NOT NULL,
    answer BYTEA NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    uid TEXT PRIMARY KEY,
    cron TEXT NOT NULL,
    time_zone TEXT NOT NULL,
    job TEXT NOT NULL,
    policy TEXT NOT NULL,
    created TEXT NOT NULL,
    label TEXT,
    start_date TEXT,
    end_date TEXT,
    state TEXT NOT NULL,
    next_fire TEXT,
    last_fire TEXT,
    runs TEXT NOT NULL DEFAULT '[]',
    token TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    routing_key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BYTEA NOT NULL,
    headers TEXT,
    claimed_by TEXT,
    claimed_until TEXT
);
CREATE TABLE IF NOT EXISTS writeback (
    uid TEXT NOT NULL,
    kind TEXT NOT NULL,
    address TEXT NOT NULL,
    body TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    seq BIGSERIAL,
    PRIMARY KEY (uid, kind)
)
"""

#: How long a read waits for a pooled connection before the store counts as unreachable.
_READ_WAIT_SECONDS = 10.0

#: SQLSTATEs of a server that is away: connection exceptions (class 08) and a server shutting down,
#: crashed or starting (57P01-57P03). An error without one is the client's: no connection at all.
_AWAY = ("08", "57P01", "57P02", "57P03")


def _away(exc: psycopg.OperationalError) -> bool:
    state = exc.sqlstate
    return state is None or state.startswith(_AWAY)


#: Any constant: the key of the advisory lock migrations take (``dm-jobd`` in ASCII).
_MIGRATION_LOCK = 0x646D2D6A6F6264


def safe_url(url: str) -> str:
    """The URL without its password: what logs and messages may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """The store's ``?`` marks as psycopg's ``%s`` (and a literal ``%`` kept literal)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Row:
    """A result row by column name or by position, as ``sqlite3.Row`` is."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._index[key]]


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: _Row(values, index)


def _execute(conn: psycopg.Connection[Any], sql: str, parameters: Any) -> psycopg.Cursor[Any]:
    return conn.execute(_placeholders(sql), parameters)


def _executemany(conn: psycopg.Connection[Any], sql: str, parameters: Any) -> psycopg.Cursor[Any]:
    cursor = conn.cursor()
    cursor.executemany(_placeholders(sql), parameters)
    return cursor


class _Statements:
    """A pooled connection speaking the store's SQL (``?`` marks), for reads."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        return _execute(self._conn, sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Cursor:
        return _executemany(self._conn, sql, parameters)


class _PipelinedCursor:
    """A cursor of a pipelined statement: its row count is known once its reply is in."""

    __slots__ = ("_cursor", "_pipeline")

    def __init__(self, cursor: psycopg.Cursor[Any], pipeline: psycopg.Pipeline) -> None:
        self._cursor = cursor
        self._pipeline = pipeline

    @property
    def rowcount(self) -> int:
        if self._cursor.rowcount < 0:
            self._pipeline.sync()
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


class _Connection:
    """psycopg's connection speaking the store's SQL (``?`` marks, rows by name or position).

    Opened again, lazily, after PostgreSQL dropped it: the batch that saw it drop has failed, the
    next begins on a new connection. In :meth:`pipelined`, statements go out without waiting for
    their replies, which come in at :meth:`sync` or when a result is read: a write costs a round trip
    or two to the server, not one per statement.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn = self._open()
        self._pipeline: psycopg.Pipeline | None = None

    def _open(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, autocommit=True, row_factory=_row_factory)

    def _live(self) -> psycopg.Connection[Any]:
        if self._conn.closed or self._conn.broken:
            self._conn = self._open()
        return self._conn

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[None]:
        with self._live().pipeline() as pipeline:
            self._pipeline = pipeline
            try:
                yield
            finally:
                self._pipeline = None

    def sync(self) -> None:
        if self._pipeline is not None:
            self._pipeline.sync()

    def _current(self) -> psycopg.Connection[Any]:
        """The connection a pipeline is on (never swapped mid-pipeline), else a live one."""
        return self._conn if self._pipeline is not None else self._live()

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        cursor = _execute(self._current(), sql, parameters)
        return cursor if self._pipeline is None else _PipelinedCursor(cursor, self._pipeline)

    def executemany(self, sql: str, parameters: Any, /) -> Cursor:
        cursor = _executemany(self._current(), sql, parameters)
        return cursor if self._pipeline is None else _PipelinedCursor(cursor, self._pipeline)

    def close(self) -> None:
        self._conn.close()


class PostgresStore(SqlStore):
    """A :class:`~daemon.store.records.JobStore` in a PostgreSQL database that replicas share."""

    dialect = Dialect(
        begin="BEGIN",
        for_update=" FOR UPDATE",
        queued_order="w.seq",
        skip_locked=" FOR UPDATE SKIP LOCKED",
        pipelined=True,
    )

    def __init__(self, url: str, *, readers: int = 4) -> None:
        super().__init__(describe=safe_url(url))
        self._url = url
        self._readers = readers
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._read_executor: ThreadPoolExecutor | None = None

    # Reads do not queue behind the group commit: they run on a pool of connections of their own,
    # each on a thread of its own (a status query answered while a batch of writes is in flight).
    # A write is awaited until committed, so a read that follows it sees it.

    async def open(self) -> None:
        await super().open()
        executor = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="jobd-store-read")
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._url,
            min_size=1,
            max_size=self._readers,
            open=False,
            kwargs={"autocommit": True, "row_factory": _row_factory},
            name="dm-jobd reads",
            timeout=_READ_WAIT_SECONDS,
        )
        try:
            await asyncio.get_running_loop().run_in_executor(
                executor, functools.partial(pool.open, wait=True, timeout=30)
            )
        except BaseException:
            executor.shutdown(wait=False)
            await super().close()
            raise
        self._pool, self._read_executor = pool, executor

    async def close(self) -> None:
        pool, executor = self._pool, self._read_executor
        self._pool = self._read_executor = None
        if pool is not None and executor is not None:
            await asyncio.get_running_loop().run_in_executor(executor, pool.close)
        if executor is not None:
            executor.shutdown(wait=True)
        await super().close()

    async def _read(self, fn: Callable[[Conn], T]) -> T:
        if self._pool is None or self._read_executor is None:
            return await super()._read(fn)
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._read_executor, functools.partial(self._read_pooled, self._pool, fn)
            )
        except psycopg.OperationalError as exc:
            if _away(exc):
                raise self._unavailable(exc) from exc
            raise

    def _run_batch(self, fns: list[Callable[[Conn], Any]]) -> list[tuple[bool, Any]]:
        try:
            return super()._run_batch(fns)
        except psycopg.OperationalError as exc:
            if _away(exc):
                raise self._unavailable(exc) from exc
            raise

    def _unavailable(self, exc: psycopg.OperationalError) -> StoreUnavailable:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreUnavailable(f"{self.describe} cannot be reached: {reason}")

    @staticmethod
    def _read_pooled(pool: ConnectionPool[psycopg.Connection[Any]], fn: Callable[[Conn], T]) -> T:
        """``fn`` on a pooled connection; again on another when PostgreSQL dropped that one (a read is
        harmless to repeat; the pool does not hand a dropped one out again, and after a restart of the
        server every one it holds may have been dropped)."""
        attempts = pool.max_size + 1
        for attempt in range(1, attempts + 1):
            with pool.connection() as conn:
                try:
                    return fn(_Statements(conn))
                except psycopg.OperationalError:
                    if attempt == attempts or not conn.broken:
                        raise
        raise AssertionError("unreachable")

    def _connect(self) -> Conn:
        conn = _Connection(self._url)
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: _Connection) -> None:
        """Bring the database to :data:`SCHEMA_VERSION` under an advisory lock; refuse a newer one."""
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS dm_jobd_schema (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM dm_jobd_schema").fetchone()
            version = int(row[0]) if row[0] is not None else 0
            if version > SCHEMA_VERSION:
                raise StoreTooNew(
                    f"{self.describe} has schema version {version}, written by a newer dm-jobd; this one "
                    f"knows up to {SCHEMA_VERSION}: run the newer version, or restore a backup made before "
                    "the upgrade"
                )
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                for table, name, kind in ADDED_COLUMNS:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {kind}")
                finish_migration(conn)
                conn.execute("DELETE FROM dm_jobd_schema")
                conn.execute("INSERT INTO dm_jobd_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _pipelined(self, conn: Conn) -> contextlib.AbstractContextManager[object]:
        return conn.pipelined() if isinstance(conn, _Connection) else contextlib.nullcontext()

    def _sync(self, conn: Conn) -> None:
        if isinstance(conn, _Connection):
            conn.sync()

    def _disconnect(self, conn: Conn) -> None:
        if isinstance(conn, _Connection):
            conn.close()

    def _schema_version(self, conn: Conn) -> int:
        return int(conn.execute("SELECT MAX(version) FROM dm_jobd_schema").fetchone()[0])
