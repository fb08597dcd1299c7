"""Admitting a ``job.start``: where the entity comes from, which runner takes it, the new record.

The entity is inline or read from DMSS; a recurring job becomes a schedule. The record, its first
event, the command's idempotency key and answer, and any DMSS write-back are one insert: the launch
follows from that commit (the store's ``on_insert``), never from this code.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from daemon.clock import Clock, SystemClock
from daemon.config import Settings
from daemon.contracts import (
    BadCommand,
    ErrorCode,
    JobEntity,
    JobStatus,
    NotFinished,
    StartCommand,
    Trace,
    UnknownJob,
    describe_validation_error,
    field_warnings,
)
from daemon.dmss.client import DmssClient
from daemon.dmss.writeback import writebacks_for
from daemon.jobs.events import EventFactory
from daemon.jobs.registry import Registry
from daemon.jobs.views import job_answer
from daemon.scheduling.recurring import (
    RECURRING_HANDLER,
    RECURRING_JOB,
    is_recurring,
    new_schedule,
    schedule_view,
)
from daemon.store.records import JobRecord, JobStore, ScheduleRecord

__all__ = ["JOB_TYPES", "Accepted", "Intake"]

#: The blueprints a document started by address must have (dm-job's Job and RecurringJob).
JOB_TYPES = ("dmss://WorkflowDS/Blueprints/Job", RECURRING_JOB)


def _check_env_list(entity: Mapping[str, Any]) -> None:
    variables = (entity.get("runner") or {}).get("environmentVariables")
    if variables is None:
        return
    if not isinstance(variables, list) or not all(isinstance(v, str) and v.strip() for v in variables):
        raise BadCommand("runner.environmentVariables must be a list of 'NAME=value' or 'NAME' strings")
    for item in variables:
        name = item.partition("=")[0]
        if not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise BadCommand(f"runner.environmentVariables: {name!r} is not a valid variable name")


def _as_job(document: Any, address: str) -> JobEntity:
    """The document DMSS answered, checked to be a Job or RecurringJob with a runner."""
    if not isinstance(document, dict):
        raise BadCommand(f"the document at {address} is not a job entity (not an object)")
    if document.get("type") not in JOB_TYPES:
        kinds = " or ".join(JOB_TYPES)
        raise BadCommand(f"the document at {address} is a {document.get('type')!r}, not a {kinds}")
    try:
        return JobEntity.model_validate(document)
    except ValidationError as exc:
        raise BadCommand(f"the job entity at {address}: {describe_validation_error(exc)}") from None


@dataclass(frozen=True)
class Accepted:
    """What a start came to: its answer, and what it created (nothing, for a duplicate of an earlier one).

    Nothing here needs acting on: the launch, or the schedule's first fire, follows from the commit.
    """

    answer: bytes
    #: The new job (a recurring job's registration record, for a schedule); None for a duplicate.
    record: JobRecord | None = None
    schedule: ScheduleRecord | None = None


class Intake:
    def __init__(
        self,
        store: JobStore,
        registry: Registry,
        events: EventFactory,
        settings: Settings,
        dmss: DmssClient | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.events = events
        self.settings = settings
        #: Set when a DMSS URL is configured: starts by address and runs of DMSS schedules use it.
        self.dmss = dmss
        self.clock: Clock = clock or SystemClock()
        #: Leases a job to this replica as it is inserted (:meth:`daemon.jobs.leases.Leases.stamp`).
        self.lease: Callable[[JobRecord], None] | None = None

    async def rerun(
        self, uid: str, *, key: str | None, user_id: str | None, trace: Trace | None = None
    ) -> Accepted:
        """A new job from an ended job's entity (by its DMSS address, when it was started by one)."""
        record = await self.store.get(uid)
        if record is None:
            raise UnknownJob(f"no job with uid {uid!r}")
        if record.runner_type == RECURRING_HANDLER:
            raise BadCommand(f"{uid} is a recurring job: fire it now with schedule.trigger")
        if not record.status.is_terminal:
            raise NotFinished(f"job {uid} is {record.status.value}; only a job that has ended is rerun")
        source: dict[str, Any] = (
            {"address": record.address, "token": record.token} if record.address else {"job": record.entity}
        )
        if record.time_limit is not None:
            source["timeLimitSeconds"] = record.time_limit
        command = StartCommand.model_validate(source)
        return await self.accept(command, key=key, user_id=user_id, rerun_of=uid, trace=trace)

    async def accept(
        self,
        cmd: StartCommand,
        *,
        key: str | None,
        user_id: str | None,
        rerun_of: str | None = None,
        trace: Trace | None = None,
    ) -> Accepted:
        """Record a new job in ``starting`` (a recurring job: ``registered``, with its schedule).

        Returns the answer, and the record and schedule unless the command was a duplicate.
        """
        token = cmd.token.get_secret_value() if cmd.token is not None else None
        if key is not None and self.dmss is not None and (cmd.address or cmd.schedule):
            prior = await self.store.answer_for(key)  # a duplicate must not read or add to DMSS again
            if prior is not None:
                return Accepted(prior)
        job, address = await self._source(cmd, token)
        entity = job.model_dump(by_alias=True, exclude_unset=True)
        now = self.clock.now()
        uid = str(uuid.uuid4())
        schedule: ScheduleRecord | None = None
        if is_recurring(entity):
            schedule, repeated = new_schedule(uid, entity, now=now, token=token)
            repeated_runner = self.registry.get(repeated.runner.type)  # the job to repeat must be runnable
            warnings = field_warnings(entity, None) + field_warnings(
                schedule.job,
                repeated_runner.runner_fields(repeated.runner.type),
                where="job.applicationInput",
            )
            _check_env_list(schedule.job)
            status, runner_type = JobStatus.REGISTERED, RECURRING_HANDLER
            note = f"schedule registered; next fire at {schedule.next_fire:%Y-%m-%d %H:%M:%S %Z}"
        else:
            runner = self.registry.get(job.runner.type)  # unknown or disabled runner types are refused here
            _check_env_list(entity)
            warnings = field_warnings(entity, runner.runner_fields(job.runner.type))
            status, runner_type, note = (
                JobStatus.STARTING,
                job.runner.type,
                "job accepted; it is starting",
            )
        triggered_by = job.triggered_by or user_id
        if cmd.schedule is not None:
            triggered_by = f"Schedule ({cmd.schedule})"  # as dm-job wrote it
        record = JobRecord(
            uid=uid,
            status=status,
            runner_type=runner_type,
            entity=entity,
            created=now,
            label=job.label,
            triggered_by=triggered_by,
            address=address,
            token=token,
            time_limit=cmd.time_limit_seconds or self.settings.default_time_limit_seconds,
            message="accepted",
            schedule=cmd.schedule,
            rerun_of=rerun_of,
            trace=trace or Trace.new(),
        )
        if self.lease is not None and schedule is None:
            self.lease(record)  # watched by this replica from the commit on
        answer_model = job_answer(record, note)
        answer_model.warnings = warnings or None
        if schedule is not None:
            answer_model.schedule = schedule_view(schedule)
        answer = answer_model.model_dump_json(by_alias=True).encode()
        events = [self.events.status_changed(record, JobStatus.NOT_STARTED)]
        if schedule is not None:
            events.append(self.events.schedule(schedule, "registered"))
        existing = await self.store.insert(
            record,
            key=key,
            answer=answer,
            events=events,
            schedule=schedule,
            scheduled_for=cmd.scheduled_for,
            writebacks=writebacks_for(record, None, dmss_configured=self.dmss is not None),
        )
        if existing is not None:
            return Accepted(existing)
        return Accepted(answer, record, schedule)

    async def _source(self, cmd: StartCommand, token: str | None) -> tuple[JobEntity, str | None]:
        """The job entity to start and its DMSS address (None for an inline job).

        By address: read from DMSS (depth 1), as dm-job did. A run of a recurring job that lives in
        DMSS is first appended to ``<its address>.schedule.runs``, and that new address is the run's.
        """
        if cmd.address is not None:
            if self.dmss is None:
                raise BadCommand(
                    "DMSS is not configured: start the job with the entity inline ('job')",
                    code=ErrorCode.DMSS_NOT_CONFIGURED,
                )
            document = await self.dmss.get(cmd.address, token, depth=1)
            return _as_job(document, cmd.address), cmd.address
        assert cmd.job is not None
        if cmd.schedule is not None and self.dmss is not None:
            parent = await self.store.get(cmd.schedule)
            if parent is not None and parent.address:
                run = cmd.job.model_dump(by_alias=True, exclude_unset=True)
                return cmd.job, await self.dmss.add(f"{parent.address}.schedule.runs", token, run)
        return cmd.job, None
