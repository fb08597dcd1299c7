"""The durable state of jobs and schedules: the store protocol (:mod:`.records`) and its engines."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daemon.config import Settings
    from daemon.store.sql import SqlStore

__all__ = ["is_postgres_url", "store_for"]


def is_postgres_url(value: str) -> bool:
    """Whether ``DM_JOBD_STORE`` names a PostgreSQL database (else it is a SQLite file)."""
    return value.startswith(("postgresql://", "postgres://"))


def store_for(settings: Settings) -> SqlStore:
    """The store the settings name: PostgreSQL for a ``postgresql://`` URL, else the SQLite file.

    The PostgreSQL engine is imported only when configured: an embedded set-up never loads it.
    """
    url = settings.store_url
    if url is not None:
        from daemon.store.postgres import PostgresStore

        return PostgresStore(url)
    from daemon.store.sqlite import SqliteStore

    return SqliteStore(settings.store_path)
