"""This replica's presence: a heartbeat in the store's replica table, and a health file for its host.

The heartbeat is what ``dm-jobd replicas`` lists (any replica answers from the shared store). The
health file (``<state folder>/health/<replica>.json``) is what ``dm-jobd health`` reads on the
replica's own host or container: this replica's broker connection, its store (the last heartbeat's
write succeeded) and its consumer, not "some daemon consumes the queue". With several replicas on
one state folder, ``health`` reports the one that beat last.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.clock import Clock
from daemon.contracts import Log
from daemon.store.records import JobStore, ReplicaRecord
from daemon.version import dm_jobd_version

__all__ = ["HEALTH_DIR", "Health", "Presence", "StoreMismatch", "read_health", "store_mismatch"]

HEALTH_DIR = "health"


@dataclass(frozen=True)
class Health:
    """What the health file says about one replica."""

    replica: str
    at: datetime
    every: float
    broker: bool
    store: bool
    consuming: bool
    store_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.broker and self.store and self.consuming

    def fresh(self, now: datetime) -> bool:
        """Written within three heartbeats: the replica's process is alive and beating."""
        return (now - self.at).total_seconds() <= 3 * self.every


def read_health(state_dir: Path) -> Health | None:
    """The health of the replica of ``state_dir`` that beat last, or None when there is none."""
    found = [h for path in (state_dir / HEALTH_DIR).glob("*.json") if (h := _read(path)) is not None]
    return max(found, key=lambda h: h.at) if found else None


def _read(path: Path) -> Health | None:
    try:
        data = json.loads(path.read_text())
        return Health(
            replica=str(data["replica"]),
            at=datetime.fromisoformat(data["at"]),
            every=float(data["every"]),
            broker=bool(data["broker"]),
            store=bool(data["store"]),
            consuming=bool(data["consuming"]),
            store_error=data.get("storeError"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


class StoreMismatch(Exception):
    """The daemons already consuming the command queue use another store: this one must not consume."""


def store_mismatch(mine: str, my_store_id: str, answers: list[bytes]) -> StoreMismatch | None:
    """The refusal, when a replica's ``identify`` answer names a store other than this daemon's."""
    for raw in answers:
        try:
            other = json.loads(raw)
            store_id, store = str(other["storeId"]), str(other["store"])
        except (ValueError, KeyError, TypeError):
            continue  # not an answer we understand: not evidence of anything
        if store_id != my_store_id:
            who = f"replica {other.get('replica')} on {other.get('host')}"
            return StoreMismatch(
                f"this daemon's store is {mine}, but the daemons already consuming the command queue use "
                f"{store} ({who}): each would answer from its own store, so status and results would "
                "depend on which one took the command. Point DM_JOBD_STORE at the shared store (a "
                "PostgreSQL database for replicas), or give this daemon a broker or virtual host of its own"
            )
    return None


class Presence:
    """Beats every ``every`` seconds until cancelled; :meth:`leave` takes the replica off the table."""

    def __init__(
        self,
        store: JobStore,
        clock: Clock,
        log: Log,
        *,
        state_dir: Path,
        every: float,
        broker_up: Callable[[], bool],
        consuming: Callable[[], bool],
        describe: str = "",
    ) -> None:
        self.store, self.clock, self.log = store, clock, log
        self._describe = describe
        self.every = every
        self._state_dir = state_dir
        self._broker_up = broker_up
        self._consuming = consuming
        now = clock.now()
        self._slot: int | None = None
        replica_id = self._claim_id(state_dir)
        self.record = ReplicaRecord(
            id=replica_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            version=dm_jobd_version(),
            started=now,
            last_seen=now,
        )

    @property
    def id(self) -> str:
        return self.record.id

    def _claim_id(self, state_dir: Path) -> str:
        """This replica's id: the same after a restart on the same state folder, so a daemon killed and
        started again takes its own jobs back at once instead of waiting for their leases to run out.

        Each id is held by a lock file while its daemon runs (released by the kernel when the process
        dies); a second daemon on the same folder takes the next free slot and id.
        """
        folder = state_dir / "replica"
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            for slot in range(64):
                fd = os.open(folder / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    os.close(fd)
                    continue
                self._slot = fd
                id_file = folder / f"{slot}.id"
                with contextlib.suppress(OSError, ValueError):
                    kept = id_file.read_text().strip()
                    if kept:
                        return kept
                made = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
                id_file.write_text(made + "\n")
                return made
        return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"  # no state folder to keep it in

    def release_id(self) -> None:
        """Let the id go (the daemon stopped): the next daemon on this folder takes it."""
        if self._slot is not None:
            os.close(self._slot)
            self._slot = None

    @property
    def _health_file(self) -> Path:
        return self._state_dir / HEALTH_DIR / f"{self.id}.json"

    async def beat(self) -> None:
        """One heartbeat: the store's row, then the health file (which says whether the row was written)."""
        now = self.clock.now()
        error: str | None = None
        try:
            await self.store.heartbeat(ReplicaRecord(**{**self.record.__dict__, "last_seen": now}))
        except Exception as exc:  # the store is away: this replica is not healthy, and says why
            error = str(exc) or type(exc).__name__
            self.log.warning("the heartbeat could not be written to the store", error=error)
        self._write_health(now, store_error=error)

    def _write_health(self, now: datetime, *, store_error: str | None) -> None:
        body: dict[str, Any] = {
            "replica": self.id,
            "at": now.isoformat(),
            "every": self.every,
            "broker": self._broker_up(),
            "store": store_error is None,
            "consuming": self._consuming(),
            "storeError": store_error,
        }
        path = self._health_file
        temporary = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):  # a read-only state folder costs the health file only
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(body))
            temporary.replace(path)

    async def run(self) -> None:
        """Beat every ``every`` seconds (the first beat is the caller's, before it says it is ready)."""
        while True:
            await self.clock.sleep(self.every)
            await self.beat()

    def identity(self, store_id: str) -> bytes:
        """What this replica answers to ``identify``: who it is and which store it uses."""
        body = {"replica": self.id, "host": self.record.host, "store": self._describe, "storeId": store_id}
        return json.dumps(body).encode()

    async def leave(self) -> None:
        with contextlib.suppress(Exception):
            await self.store.leave(self.id)
        with contextlib.suppress(OSError):
            self._health_file.unlink()
        # The id itself is let go last (release_id, the daemon's final step), after its job leases:
        # a daemon starting meanwhile on this folder must not take the id whose leases are being released.
