"""The SQLite store, the embedded default: one file in WAL mode, its schema version in ``user_version``.

Two daemons opening one file migrate it one at a time: the migration runs under SQLite's write lock.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from daemon.store.records import StoreTooNew
from daemon.store.sql import ADDED_COLUMNS, SCHEMA_VERSION, Conn, Dialect, SqlStore, finish_migration

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

#: The tables, as the first versioned schema made them plus every column added since.
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
    percentage REAL,
    started TEXT,
    ended TEXT,
    time_limit REAL,
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
    answer BLOB NOT NULL
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    routing_key TEXT NOT NULL,
    message_id TEXT NOT NULL,
    body BLOB NOT NULL,
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
    not_before REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (uid, kind)
);
"""


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to :data:`SCHEMA_VERSION`, under the write lock; refuse a newer one."""
    conn.execute("BEGIN IMMEDIATE")  # two daemons opening one file: one migrates, the other waits
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreTooNew(
                f"{path} has schema version {version}, written by a newer dm-jobd; this one knows up to "
                f"{SCHEMA_VERSION}: run the newer version, or restore a backup made before the upgrade"
            )
        if version < SCHEMA_VERSION:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            for table, name, kind in ADDED_COLUMNS:
                columns = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
                if name not in columns:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            finish_migration(conn)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _wal(conn: sqlite3.Connection, patience: float = 10.0) -> None:
    """Switch the file to WAL mode (once per file; it stays so), waiting out another opener's lock.

    SQLite's busy handler does not cover this switch: two daemons opening a new file together would
    otherwise fail with "database is locked". Past ``patience`` seconds, the error is raised.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)  # the other opener holds the lock for milliseconds (its store thread, not the loop)


class SqliteStore(SqlStore):
    """A :class:`~daemon.store.records.JobStore` in one SQLite file."""

    dialect = Dialect(begin="BEGIN IMMEDIATE", for_update="", queued_order="w.rowid")

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        super().__init__(describe=f"sqlite:{path}")
        self.path = path
        self._synchronous = synchronous

    def _connect(self) -> Conn:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=10000")
        _wal(conn)
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        try:
            _migrate(conn, self.path)
        except BaseException:
            conn.close()
            raise
        return conn

    def _disconnect(self, conn: Conn) -> None:
        if isinstance(conn, sqlite3.Connection):
            conn.close()

    def _schema_version(self, conn: Conn) -> int:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
