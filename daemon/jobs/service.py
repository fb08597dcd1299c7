"""The job state machine: accepting starts, recording what runners and jobs report, answering queries.

Every change goes through :meth:`Jobs.change`, which reads, decides and writes inside one store
transaction together with the event it causes (and, for a job in DMSS, the write-back of its entity).
A terminal status is final: later reports about a job that has completed, failed or been removed
change nothing.
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from daemon.clock import Clock, SystemClock
from daemon.config import Settings
from daemon.contracts import (
    Answer,
    BadCommand,
    Base64Result,
    ErrorCode,
    Handle,
    JobEntity,
    JobResult,
    JobSpec,
    JobStatus,
    JobView,
    NotFinished,
    Outgoing,
    ProgressCommand,
    ResultAnswer,
    RunnerError,
    RunnerStatus,
    StartCommand,
    UnknownJob,
    describe_validation_error,
)
from daemon.dmss.client import DmssClient
from daemon.dmss.writeback import writebacks_for
from daemon.jobs.boundary import GuardedRunner
from daemon.jobs.events import EventFactory
from daemon.jobs.registry import Registry
from daemon.scheduling.recurring import (
    RECURRING_HANDLER,
    RECURRING_JOB,
    is_recurring,
    new_schedule,
    schedule_view,
)
from daemon.store.records import Change, JobRecord, JobStore, ScheduleRecord

__all__ = ["JOB_TYPES", "Jobs", "job_env"]

#: The blueprints a document started by address must have (dm-job's Job and RecurringJob).
JOB_TYPES = ("dmss://WorkflowDS/Blueprints/Job", RECURRING_JOB)


def job_env(record: JobRecord, settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """dm-job's environment for a job: exported daemon variables, DMSS access, the runner's own."""
    env = {name: environ[name] for name in settings.envs_to_export if name in environ}
    if settings.dmss_url:
        env["DMSS_URL"] = settings.dmss_url
    if record.token:
        env["DMSS_TOKEN"] = record.token
    if record.address:
        env["JOB_DMSS_ID"] = record.address
    env["DM_JOB_UID"] = record.uid
    runner = record.entity.get("runner") or {}
    for item in runner.get("environmentVariables") or []:
        name, sep, value = str(item).partition("=")
        if sep:
            env[name] = value
        elif name in environ:
            env[name] = environ[name]
    return env


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


class Jobs:
    def __init__(
        self,
        store: JobStore,
        registry: Registry,
        events: EventFactory,
        settings: Settings,
        environ: Mapping[str, str],
        dmss: DmssClient | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self.registry = registry
        self.events = events
        self.settings = settings
        self.environ = environ
        #: Set when a DMSS URL is configured: starts by address, write-backs and results use it.
        self.dmss = dmss

    # -- helpers the supervisor uses -------------------------------------------------------------

    def runner_for(self, record: JobRecord) -> GuardedRunner:
        return self.registry.get(record.runner_type)

    def spec(self, record: JobRecord) -> JobSpec:
        return JobSpec(
            uid=record.uid,
            entity=record.entity,
            env=job_env(record, self.settings, self.environ),
            token=record.token,
            address=record.address,
        )

    async def get(self, uid: str) -> JobRecord:
        record = await self.store.get(uid)
        if record is None:
            raise UnknownJob(f"no job with uid {uid!r}")
        return record

    # -- commands --------------------------------------------------------------------------------

    async def accept(
        self, cmd: StartCommand, *, key: str | None, user_id: str | None
    ) -> tuple[bytes, JobRecord | None, ScheduleRecord | None]:
        """Record a new job in ``starting`` (a recurring job: ``registered``, with its schedule).

        Returns the answer, and the record and schedule unless the command was a duplicate.
        """
        token = cmd.token.get_secret_value() if cmd.token is not None else None
        if key is not None and self.dmss is not None and (cmd.address or cmd.schedule):
            prior = await self.store.answer_for(key)  # a duplicate must not read or add to DMSS again
            if prior is not None:
                return prior, None, None
        job, address = await self._source(cmd, token)
        entity = job.model_dump(by_alias=True, exclude_unset=True)
        now = self.clock.now()
        uid = str(uuid.uuid4())
        schedule: ScheduleRecord | None = None
        if is_recurring(entity):
            schedule, repeated = new_schedule(uid, entity, now=now, token=token)
            self.registry.get(repeated.runner.type)  # the job to repeat must be runnable
            _check_env_list(schedule.job)
            status, runner_type = JobStatus.REGISTERED, RECURRING_HANDLER
            note = f"schedule registered; next fire at {schedule.next_fire:%Y-%m-%d %H:%M:%S %Z}"
        else:
            self.registry.get(job.runner.type)  # unknown or disabled runner types are refused here
            _check_env_list(entity)
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
        )
        answer_model = self.answer(record, note)
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
            return existing, None, None
        return answer, record, schedule

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

    async def progress(self, cmd: ProgressCommand) -> JobRecord:
        """A job's own report: status, percentage, log lines (appended)."""
        record = await self.change(
            cmd.uid, status=cmd.status, percentage=cmd.percentage, append_logs=cmd.logs or ()
        )
        if record is None:
            raise UnknownJob(f"no job with uid {cmd.uid!r}")
        return record

    async def result_data(self, uid: str) -> JobResult:
        """A completed job's result, from its runner."""
        record = await self.get(uid)
        if record.status is not JobStatus.COMPLETED:
            raise NotFinished(f"job {uid} is {record.status.value}; a result exists once it has completed")
        try:
            return await self.runner_for(record).result(self.spec(record), record.handle or {})
        except RunnerError as exc:
            raise RunnerError(f"the runner could not fetch the result of job {uid}: {exc.message}") from exc

    async def result(self, uid: str) -> ResultAnswer:
        outcome = await self.result_data(uid)
        record = await self.get(uid)
        data: str | Base64Result
        if isinstance(outcome.data, str):
            data = outcome.data
        else:
            try:
                data = outcome.data.decode("utf-8")
            except UnicodeDecodeError:
                data = Base64Result(base64=base64.b64encode(outcome.data).decode("ascii"))
        base = self.answer(record, "result")
        return ResultAnswer(**base.model_dump(), result=data, media_type=outcome.media_type)

    # -- changes ---------------------------------------------------------------------------------

    async def observe(
        self, uid: str, seen: RunnerStatus, *, handle: Handle | None = None
    ) -> JobRecord | None:
        """Record what a runner reports; its log lines are the current tail and replace the old."""
        return await self.change(
            uid,
            status=seen.status,
            message=seen.message,
            logs=list(seen.logs) if seen.logs else None,
            percentage=seen.percentage,
            handle=handle,
        )

    async def change(
        self,
        uid: str,
        *,
        status: JobStatus | None = None,
        message: str | None = None,
        logs: list[str] | None = None,
        append_logs: Sequence[str] = (),
        percentage: float | None = None,
        handle: Handle | None = None,
        writeback: str | None = None,
    ) -> JobRecord | None:
        """Record a change; a terminal job takes only a ``writeback`` note (DMSS fell behind it)."""
        keep = self.settings.log_lines
        dmss_configured = self.dmss is not None

        def decide(current: JobRecord) -> Change | None:
            if current.status.is_terminal:
                if writeback is None or writeback == current.writeback:
                    return None
                noted = dataclasses.replace(current, writeback=writeback)
                return Change(noted, [self.events.progressed(noted)])
            new = dataclasses.replace(current)
            if writeback is not None:
                new.writeback = writeback
            if handle is not None:
                new.handle = handle
            if message is not None:
                new.message = message
            if logs is not None:
                new.logs = logs[-keep:]
            if append_logs:
                new.logs = [*current.logs, *append_logs][-keep:]
            if percentage is not None:
                new.percentage = percentage
            events: list[Outgoing] = []
            if status is not None and status is not current.status:
                new.status = status
                now = self.clock.now()
                if status is JobStatus.RUNNING and new.started is None:
                    new.started = now
                if status.is_terminal:
                    new.started = new.started or now
                    new.ended = now
                events.append(self.events.status_changed(new, current.status))
            elif (new.logs, new.percentage, new.message, new.writeback) != (
                current.logs,
                current.percentage,
                current.message,
                current.writeback,
            ):
                events.append(self.events.progressed(new))
            elif new.handle == current.handle:
                return None
            return Change(new, events, writebacks_for(new, current.status, dmss_configured=dmss_configured))

        return await self.store.modify(uid, decide)

    # -- answers ---------------------------------------------------------------------------------

    def view(self, record: JobRecord) -> JobView:
        return JobView(
            uid=record.uid,
            status=record.status,
            label=record.label,
            runner_type=record.runner_type,
            triggered_by=record.triggered_by,
            started=record.started,
            ended=record.ended,
            percentage=record.percentage,
            message=record.message,
            logs=record.logs,
            schedule=record.schedule,
            writeback=record.writeback,
        )

    def answer(self, record: JobRecord, message: str) -> Answer:
        return Answer(ok=True, uid=record.uid, status=record.status, message=message, job=self.view(record))
