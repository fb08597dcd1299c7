"""The wire contract: every command, answer and event body as a pydantic model.

``schemas/`` is generated from these models (``scripts/gen-schemas``); a test fails when they drift.
Commands refuse unknown fields so that a typo surfaces as a clear error instead of being ignored.
Job entities keep unknown fields: they belong to DMSS blueprints the daemon does not own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .errors import ErrorCode
from .status import JobStatus, ScheduleState

__all__ = [
    "COMMAND_MODELS",
    "Answer",
    "Base64Result",
    "CloudEvent",
    "Command",
    "CommandName",
    "ErrorInfo",
    "EventData",
    "JobEntity",
    "JobView",
    "ListCommand",
    "LogsCommand",
    "ProgressCommand",
    "ReplicaListCommand",
    "ReplicaView",
    "ResultAnswer",
    "RunnerListCommand",
    "RunnerSpec",
    "RunnerView",
    "ScheduleCloudEvent",
    "ScheduleEventData",
    "ScheduleListCommand",
    "ScheduleRun",
    "ScheduleView",
    "StartCommand",
    "UidCommand",
    "describe_validation_error",
]

CommandName = Literal[
    "job.start",
    "job.stop",
    "job.status",
    "job.result",
    "job.progress",
    "job.list",
    "job.logs",
    "job.rerun",
    "schedule.list",
    "schedule.show",
    "schedule.pause",
    "schedule.resume",
    "schedule.trigger",
    "runner.list",
    "replica.list",
]


class _Wire(BaseModel):
    """camelCase on the wire (as DM entities are), snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class RunnerSpec(BaseModel):
    """The entity's ``runner``: its ``type`` picks the runner plugin; the rest is the plugin's."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1, description="Runner blueprint, e.g. dmss://WorkflowDS/Blueprints/Shell")


class JobEntity(BaseModel):
    """A ``dmss://WorkflowDS/Blueprints/Job`` (or ``RecurringJob``) document; unknown fields are kept."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=1)
    label: str | None = None
    status: str | None = None
    triggered_by: str | None = Field(default=None, alias="triggeredBy")
    output_target: str | None = Field(default=None, alias="outputTarget")
    application_input: Any = Field(default=None, alias="applicationInput")
    runner: RunnerSpec
    started: str | None = None
    ended: str | None = None
    result: Any = None
    reference_target: str | None = Field(default=None, alias="referenceTarget")


class Command(_Wire):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class StartCommand(Command):
    """``job.start``: the job entity inline, or the DMSS address of a stored one plus a token."""

    job: JobEntity | None = None
    address: str | None = Field(default=None, pattern=r"^dmss://", description="DMSS address of the entity")
    token: SecretStr | None = Field(default=None, description="The caller's DMSS access token")
    time_limit_seconds: float | None = Field(
        default=None, gt=0, description="Stop the job and mark it failed when it runs longer than this"
    )
    schedule: str | None = Field(
        default=None, description="Set by the scheduler: the uid of the recurring job this run belongs to"
    )
    scheduled_for: datetime | None = Field(default=None, description="Set by the scheduler: the fire time")

    @model_validator(mode="after")
    def _one_source(self) -> StartCommand:
        if (self.job is None) == (self.address is None):
            raise ValueError("give exactly one of 'job' (the entity inline) or 'address' (a DMSS address)")
        return self


class UidCommand(Command):
    """``job.stop``, ``job.status`` and ``job.result``."""

    uid: str = Field(min_length=1, description="The job uid that job.start answered")


class ProgressCommand(Command):
    """``job.progress``: a running job reports how it is doing."""

    uid: str = Field(min_length=1)
    status: JobStatus | None = None
    percentage: float | None = Field(default=None, ge=0, le=100)
    logs: list[str] | None = None


class ScheduleListCommand(Command):
    """``schedule.list``: every schedule (no body fields)."""


class ListCommand(Command):
    """``job.list``: jobs, newest first, filtered; a page at a time (``cursor`` from the last answer)."""

    status: list[JobStatus] | None = Field(default=None, description="Any of these statuses")
    runner_type: str | None = None
    label: str | None = None
    triggered_by: str | None = None
    schedule: str | None = Field(default=None, description="Runs of this recurring job")
    created_since: datetime | None = None
    created_until: datetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, description="nextCursor of the previous page")


class LogsCommand(Command):
    """``job.logs``: a job's kept log lines from ``offset`` on (the last DM_JOBD_LOG_LINES are kept)."""

    uid: str = Field(min_length=1)
    offset: int = Field(default=0, ge=0)


class RunnerListCommand(Command):
    """``runner.list``: the runner types this daemon loaded, and why any is off (no body fields)."""


class ReplicaListCommand(Command):
    """``replica.list``: the daemons using the store, from their heartbeats (no body fields)."""


COMMAND_MODELS: dict[str, type[Command]] = {
    "job.start": StartCommand,
    "job.stop": UidCommand,
    "job.status": UidCommand,
    "job.result": UidCommand,
    "job.progress": ProgressCommand,
    "job.list": ListCommand,
    "job.logs": LogsCommand,
    "job.rerun": UidCommand,
    "schedule.list": ScheduleListCommand,
    "schedule.show": UidCommand,
    "schedule.pause": UidCommand,
    "schedule.resume": UidCommand,
    "schedule.trigger": UidCommand,
    "runner.list": RunnerListCommand,
    "replica.list": ReplicaListCommand,
}


class ErrorInfo(_Wire):
    code: ErrorCode
    message: str


class JobView(_Wire):
    """What a status answer tells about one job."""

    uid: str
    status: JobStatus
    label: str | None = None
    runner_type: str
    triggered_by: str | None = None
    created: datetime | None = None
    started: datetime | None = None
    ended: datetime | None = None
    percentage: float | None = None
    message: str | None = None
    logs: list[str] = Field(default_factory=list)
    schedule: str | None = Field(default=None, description="The recurring job's uid, for a scheduled run")
    writeback: str | None = Field(
        default=None,
        description="Why DMSS is out of date for this job: the last write-back DMSS refused, or gave up on",
    )
    rerun_of: str | None = Field(default=None, description="The job this one reruns (job.rerun)")
    traceparent: str | None = Field(default=None, description="The job's W3C trace context")


class RunnerView(_Wire):
    """One runner type a daemon knows: where it came from, and why it is off when it is."""

    type: str
    origin: str
    ready: bool
    reason: str | None = None


class ReplicaView(_Wire):
    """One daemon using the store, as its heartbeats tell."""

    id: str
    host: str
    pid: int
    version: str
    started: datetime
    last_seen: datetime
    alive: bool = Field(description="Seen within three heartbeats")
    answering: bool = Field(default=False, description="The replica that answered this replica.list")


class ScheduleRun(_Wire):
    """One run of a schedule, as kept in its bounded history."""

    uid: str
    scheduled_for: datetime | None = None
    started: datetime


class ScheduleView(_Wire):
    """What a schedule answer tells about one recurring job's schedule."""

    uid: str
    label: str | None = None
    cron: str
    time_zone: str
    state: ScheduleState
    next_fire: datetime | None = None
    last_fire: datetime | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    overlap: str
    catch_up: str
    catch_up_window_seconds: float
    jitter_seconds: float
    runs: list[ScheduleRun] = Field(default_factory=list)


class Answer(_Wire):
    """Every RPC answer. ``error`` is set exactly when ``ok`` is false."""

    ok: bool
    uid: str | None = None
    status: JobStatus | None = None
    message: str = ""
    error: ErrorInfo | None = None
    job: JobView | None = None
    schedule: ScheduleView | None = None
    schedules: list[ScheduleView] | None = None
    jobs: list[JobView] | None = Field(default=None, description="job.list: this page")
    next_cursor: str | None = Field(default=None, description="job.list: the next page's cursor")
    logs: list[str] | None = Field(default=None, description="job.logs: the lines from the offset on")
    next_offset: int | None = Field(default=None, description="job.logs: the offset to ask from next")
    runners: list[RunnerView] | None = Field(default=None, description="runner.list")
    skipped: list[str] | None = Field(default=None, description="runner.list: handler folders not loaded")
    replicas: list[ReplicaView] | None = Field(default=None, description="replica.list")
    warnings: list[str] | None = Field(
        default=None,
        description="job.start: what looks wrong but was accepted (a field one edit away from a known one)",
    )


class Base64Result(BaseModel):
    base64: str


class ResultAnswer(Answer):
    """A ``job.result`` answer: text inline, bytes that are not UTF-8 as ``{"base64": ...}``."""

    result: str | Base64Result | None = None
    media_type: str | None = None


class EventData(_Wire):
    """What an event says; never a token or secret."""

    uid: str
    status: JobStatus
    previous_status: JobStatus | None = None
    runner_type: str
    label: str | None = None
    percentage: float | None = None
    message: str | None = None
    logs: list[str] = Field(default_factory=list, description="The last few log lines")
    triggered_by: str | None = None
    schedule: str | None = Field(default=None, description="The recurring job's uid, for a scheduled run")
    writeback: str | None = Field(
        default=None,
        description="Why DMSS is out of date for this job: the last write-back DMSS refused, or gave up on",
    )


class ScheduleEventData(_Wire):
    """What a schedule event says: ``registered``, ``fired``, ``skipped``, ``missed``, ``paused``,
    ``resumed``, ``retired`` or ``removed``."""

    uid: str
    event: str
    label: str | None = None
    scheduled_for: datetime | None = None
    run: str | None = Field(default=None, description="The job uid a fire started, when known")
    missed: int | None = None
    next_fire: datetime | None = None
    message: str | None = None


class ScheduleCloudEvent(BaseModel):
    """A schedule event in the same CloudEvents envelope as job events, routed ``schedule.<event>.<uid>``."""

    model_config = ConfigDict(populate_by_name=True)

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str = Field(description="dm-job.schedule.<event>")
    subject: str = Field(description="The recurring job's uid")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    data: ScheduleEventData


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope in structured JSON mode (``application/cloudevents+json``)."""

    model_config = ConfigDict(populate_by_name=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="Unique per event; consumers deduplicate on it")
    source: str
    type: str = Field(description="dm-job.job.<status>, or dm-job.job.progress")
    subject: str = Field(description="The job uid")
    time: datetime
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: str | None = Field(
        default=None, description="CloudEvents distributed-tracing extension: the job's W3C trace context"
    )
    tracestate: str | None = Field(default=None, description="Distributed-tracing extension: vendor state")
    data: EventData


def describe_validation_error(exc: ValidationError) -> str:
    """Where and what, never the offending value (it could be a token)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
