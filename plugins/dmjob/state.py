"""The adapter's per-job record, ``<state_dir>/<uid>.json``: how far ``JobHandler.start()`` got.

``start()`` runs in a thread of the daemon process, so it dies with the daemon. The record is what a
new daemon reads to tell "start() returned, ask progress()" from "start() was cut off".
"""

from __future__ import annotations

import json
import os
import re
import threading
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = ["Phase", "StartRecord", "StateFiles", "StateUnreadable"]


class Phase(StrEnum):
    #: Submitted to the worker pool; start() has not been called yet.
    QUEUED = "queued"
    #: start() was called and had not returned when this was written.
    RUNNING = "running"
    #: start() returned; ``message`` is what it returned.
    RETURNED = "returned"
    #: start() (or creating the JobHandler) raised; ``message`` says what.
    FAILED = "failed"


@dataclass(frozen=True)
class StartRecord:
    uid: str
    handler: str
    phase: Phase
    message: str | None = None
    removed: bool = False
    updated: str = ""
    #: The handler's ``job.status`` and ``job.state``, which dm-job kept with the job (Redis) and
    #: handlers read back (the Radix handler's job name): a restarted daemon gives them back.
    status: str | None = None
    state: dict[str, Any] | None = None

    def but(
        self,
        *,
        phase: Phase | None = None,
        message: str | None = None,
        removed: bool | None = None,
        status: str | None = None,
        state: dict[str, Any] | None = None,
    ) -> StartRecord:
        """A copy with the given fields changed and a fresh timestamp."""
        return replace(
            self,
            phase=self.phase if phase is None else phase,
            message=self.message if message is None else message,
            removed=self.removed if removed is None else removed,
            status=self.status if status is None else status,
            state=self.state if state is None else state,
            updated=datetime.now(UTC).isoformat(),
        )


class StateUnreadable(Exception):
    """The record exists but cannot be read; the message says which file."""


_UID = re.compile(r"^[0-9A-Za-z._-]{1,128}$")


class StateFiles:
    """Reads and atomically replaces the records in one folder (written from worker threads too)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()

    def path(self, uid: str) -> Path:
        if not _UID.match(uid) or uid.startswith("."):
            raise ValueError(f"job uid {uid!r} cannot name a state file")
        return self.directory / f"{uid}.json"

    def read(self, uid: str) -> StartRecord | None:
        path = self.path(uid)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateUnreadable(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            data = json.loads(raw)
            return StartRecord(
                uid=str(data["uid"]),
                handler=str(data.get("handler", "")),
                phase=Phase(data["phase"]),
                message=None if data.get("message") is None else str(data["message"]),
                removed=bool(data.get("removed", False)),
                updated=str(data.get("updated", "")),
                status=None if data.get("status") is None else str(data["status"]),
                state=data["state"] if isinstance(data.get("state"), dict) else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StateUnreadable(f"{path} is not a dm-job adapter record: {exc}") from exc

    def write(self, record: StartRecord) -> None:
        """Replace the record atomically, so a crash leaves the old or the new one, never half of one."""
        path = self.path(record.uid)
        data = asdict(record)
        data["phase"] = record.phase.value
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
            with tmp.open("w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
