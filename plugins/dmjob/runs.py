"""What the adapter knows about one job: the dm-job ``Job`` its handler is given, its record, its thread."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from daemon.contracts import JobSpec, JobStatus

from .redact import Redactor
from .shim import LogSink, Shim
from .state import StartRecord

__all__ = ["Outcome", "Run", "data_source_of", "dmjob_job"]


def data_source_of(address: str | None) -> str:
    """``dmss://DS/$id`` (or dm-job's older ``DS/$id``) -> ``DS``; no address -> ``""``."""
    if not address:
        return ""
    rest = address.split("://", 1)[1] if "://" in address else address
    return rest.split("/", 1)[0]


def _plain(value: Any) -> Any:
    """Mappings and sequences as the plain dicts and lists dm-job handlers were given (a deep copy)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def dmjob_job(shim: Shim, spec: JobSpec, uid: UUID, status: JobStatus) -> Any:
    """The dm-job ``Job`` made from the daemon's job: the fields dm-job read from the job entity."""
    entity = _plain(spec.entity)
    entity = entity if isinstance(entity, dict) else {}

    def text(key: str) -> str | None:
        value = entity.get(key)
        return value if isinstance(value, str) else None

    def mapping(key: str) -> dict[str, Any] | None:
        value = entity.get(key)
        return value if isinstance(value, dict) else None

    return shim.job_class(
        type=str(entity.get("type", "")),
        dmss_id=spec.address or "",
        job_uid=uid,
        status=shim.status_enum(status.value),
        name=text("name"),
        label=text("label"),
        triggeredBy=text("triggeredBy"),
        application_input=entity.get("applicationInput"),
        started=datetime.now(UTC).replace(microsecond=0),
        outputTarget=text("outputTarget"),
        result=mapping("result"),
        runner=mapping("runner") or {},
        referenceTarget=text("referenceTarget"),
        schedule=mapping("schedule"),
        log=[],
        percentage=None,
        token=spec.token,
        state=None,
        entity=entity,
        env=dict(spec.env),
    )


@dataclass(frozen=True)
class Outcome:
    """How ``JobHandler.start()`` ended."""

    ok: bool
    message: str


@dataclass(eq=False)
class Run:
    """What this process knows about one job."""

    uid: str
    job: Any
    redact: Redactor
    sink: LogSink
    record: StartRecord
    handler: Any = None
    future: concurrent.futures.Future[Outcome] | None = None
    #: Known without a thread: start() ended in an earlier daemon (from the record).
    outcome: Outcome | None = None
    began: threading.Event = field(default_factory=threading.Event)
    #: The record is updated from the event loop and the start() thread.
    lock: threading.Lock = field(default_factory=threading.Lock)
    removed: bool = False
    progressed: bool = False
