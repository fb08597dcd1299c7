"""dm-job's handler interface, rewritten so handler folders written for dm-job import it unchanged.

dm-job's ``Job`` was a pydantic model synced with DMSS and Redis; here it is a plain data holder that the
adapter fills from the daemon's job spec, because the daemon (not the handler) owns storage and sync.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any
from uuid import UUID

__all__ = ["Job", "JobHandlerInterface", "JobStatus"]


class JobStatus(str, Enum):  # noqa: UP042 - dm-job's (str, Enum): str() and f-strings behave as there
    """dm-job's status words; a ``str`` subclass, so handlers may compare with plain strings."""

    REGISTERED = "registered"
    NOT_STARTED = "not started"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"
    COMPLETED = "completed"
    REMOVED = "removed"
    UNKNOWN = "unknown"


@dataclass(eq=False)
class Job:
    """One run of a job, with the attribute names dm-job handlers read (``job.entity`` is the entity)."""

    type: str
    dmss_id: str
    job_uid: UUID
    status: JobStatus
    name: str | None = None
    label: str | None = None
    triggeredBy: str | None = None  # dm-job's spelling
    application_input: Any = None
    started: datetime | None = None
    stopped: datetime | None = None
    ended: datetime | None = None
    outputTarget: str | None = None  # dm-job's spelling
    result: dict[str, Any] | None = None
    runner: dict[str, Any] | None = None
    referenceTarget: str | None = None  # dm-job's spelling
    schedule: dict[str, Any] | None = None
    log: list[str] | None = field(default_factory=list)
    percentage: float | None = None
    token: str | None = field(default=None, repr=False)
    state: dict[str, Any] | None = None
    #: The whole job entity as plain dicts and lists (newer dm-job versions).
    entity: dict[str, Any] = field(default_factory=dict)
    #: dm-job's environment for this job (DMSS_TOKEN, DMSS_URL, JOB_DMSS_ID, exported variables).
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    #: dm-job set this when a job pushed its own progress; kept so handlers reading it still work.
    external_progress: bool = False

    @property
    def uid(self) -> UUID:
        """dm-job's alias for ``job_uid``."""
        return self.job_uid

    def append_log(self, log: list[str] | str) -> None:
        """Add log lines the way dm-job did: a single message gets dm-job's ``JOBAPI:`` prefix."""
        lines = list(log) if isinstance(log, list) else [f"JOBAPI: {log}"]
        if self.log:
            self.log.extend(lines)
        else:
            self.log = lines


class JobHandlerInterface(ABC):
    """What a handler folder's ``JobHandler`` extends; only ``start`` is required, as in dm-job."""

    def __init__(self, job: Job, data_source: str) -> None:
        self.job = job
        self.data_source = data_source

    @abstractmethod
    def start(self) -> str:
        """Run or deploy a job or job service."""

    def remove(self) -> str | tuple[str, str]:
        """Terminate and clean up all job related resources."""
        raise NotImplementedError

    def progress(self) -> tuple[JobStatus, list[str] | str | None, float | None] | tuple[JobStatus, Any]:
        """Poll progress from the job instance."""
        raise NotImplementedError

    def result(self) -> tuple[str, bytes]:
        """A free-text message and the job's result as bytes."""
        raise NotImplementedError

    def setup_service(self, service_id: str) -> str:
        """Start a persistent service."""
        raise NotImplementedError

    def teardown_service(self, service_id: str) -> str:
        """Tear down and clean up a persistent service."""
        raise NotImplementedError
