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
    model_validator,
)
from pydantic.alias_generators import to_camel

from .errors import ErrorCode
from .status import JobStatus

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
    "ProgressCommand",
    "ResultAnswer",
    "RunnerSpec",
    "StartCommand",
    "UidCommand",
]

CommandName = Literal["job.start", "job.stop", "job.status", "job.result", "job.progress"]


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


COMMAND_MODELS: dict[str, type[Command]] = {
    "job.start": StartCommand,
    "job.stop": UidCommand,
    "job.status": UidCommand,
    "job.result": UidCommand,
    "job.progress": ProgressCommand,
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
    started: datetime | None = None
    ended: datetime | None = None
    percentage: float | None = None
    message: str | None = None
    logs: list[str] = Field(default_factory=list)


class Answer(_Wire):
    """Every RPC answer. ``error`` is set exactly when ``ok`` is false."""

    ok: bool
    uid: str | None = None
    status: JobStatus | None = None
    message: str = ""
    error: ErrorInfo | None = None
    job: JobView | None = None


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
    data: EventData
