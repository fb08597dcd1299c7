"""dm-job's handler interface, rewritten so handler folders written for dm-job import it unchanged.

dm-job's ``Job`` is a pydantic model synced with DMSS and Redis; here it is the same model (names,
aliases, defaults, ``append_log``, ``set_job_status``), filled by the adapter from the daemon's job,
because the daemon (not the handler) owns storage and the sync with DMSS.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime, timezone
from enum import Enum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Job", "JobHandlerInterface", "JobStatus", "dmss_sync"]


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


class Job(BaseModel):
    """One run of a job, with dm-job's field names and aliases (``uid``, ``applicationInput``).

    ``Job(**entity)`` works as in dm-job: extra keys are ignored. ``entity`` (the whole job entity) and
    ``env`` (dm-job's environment for the job) are the adapter's additions, never dumped.
    """

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    type: str = ""
    dmss_id: str = ""
    job_uid: UUID = Field(alias="uid")
    name: str | None = None
    label: str | None = None
    triggeredBy: str | None = None
    status: JobStatus = JobStatus.NOT_STARTED
    application_input: Any = Field(default=None, alias="applicationInput")
    started: datetime | None = None
    stopped: datetime | None = None  # older dm-job versions had it
    ended: datetime | None = None
    outputTarget: str | None = None
    result: dict[str, Any] | None = None
    runner: dict[str, Any] | None = None
    referenceTarget: str | None = None
    schedule: dict[str, Any] | None = None
    log: list[Any] | None = Field(default_factory=list)
    percentage: float | None = None
    token: str | None = Field(default=None, repr=False)
    state: dict[str, Any] | None = None
    external_progress: bool = False
    exclude_keys: dict[str, bool] = Field(
        default_factory=lambda: dict.fromkeys(
            ("dmss_id", "log", "percentage", "token", "state", "external_progress", "exclude_keys"), True
        ),
        description="Fields that are not sent to DMSS",
    )
    entity: dict[str, Any] = Field(default_factory=dict, exclude=True, repr=False)
    env: dict[str, str] = Field(default_factory=dict, exclude=True, repr=False)

    @property
    def uid(self) -> UUID:
        """dm-job's alias for ``job_uid``."""
        return self.job_uid

    def append_log(self, log: list[Any] | str) -> None:
        """As dm-job: a string is split into lines (blank ones dropped), a list is added as it is."""
        lines = [line for line in log.split("\n") if line.strip()] if isinstance(log, str) else list(log)
        if self.log is None:
            self.log = []
        self.log.extend(lines)

    def set_job_status(self, status: JobStatus) -> None:
        """Set the status; a job that completed or failed gets its ``ended`` time (UTC), as in dm-job."""
        if status == self.status:
            return
        self.status = JobStatus(status)
        if self.status in (JobStatus.COMPLETED, JobStatus.FAILED):
            self.ended = datetime.now(timezone.utc).replace(microsecond=0)  # noqa: UP017 - dm-job's


def dmss_sync(job: Job) -> Job:
    """dm-job's re-read of the job entity from DMSS, keeping the job's status, start and address."""
    from services.dmss import get_document

    entity = get_document(job.dmss_id, 0, job.token)
    merged = {
        **entity,
        "status": job.status,
        "started": job.started,
        "dmss_id": job.dmss_id,
        "uid": job.job_uid,
    }
    synced = Job.model_validate(merged)
    synced.token, synced.entity, synced.env = job.token, job.entity, job.env
    return synced


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
