"""The job state machine: recording what runners and jobs report, and reading jobs and results.

Every change goes through :meth:`Jobs.change`, which reads, decides and writes inside one store
transaction together with the event it causes (and, for a job in DMSS, the write-back of its entity).
A terminal status is final: later reports about a job that has completed, failed or been removed
change nothing. New jobs come in through :mod:`daemon.jobs.intake`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from daemon.clock import Clock, SystemClock
from daemon.config import Settings
from daemon.contracts import (
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    NoResult,
    NotFinished,
    Outgoing,
    ProgressCommand,
    ResultAnswer,
    RunnerError,
    RunnerStatus,
    UnknownJob,
)
from daemon.dmss.client import DmssClient
from daemon.dmss.writeback import writebacks_for
from daemon.jobs.boundary import GuardedRunner
from daemon.jobs.environment import job_spec
from daemon.jobs.events import EventFactory
from daemon.jobs.registry import Registry
from daemon.jobs.views import result_answer
from daemon.store.records import Change, JobRecord, JobStore

__all__ = ["Jobs"]


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
        #: Called with the record and its previous status after each committed status change (metrics).
        self.on_status: Callable[[JobRecord, JobStatus], None] | None = None

    # -- helpers the supervisor uses -------------------------------------------------------------

    def runner_for(self, record: JobRecord) -> GuardedRunner:
        return self.registry.get(record.runner_type)

    def spec(self, record: JobRecord) -> JobSpec:
        return job_spec(record, self.settings, self.environ)

    async def get(self, uid: str) -> JobRecord:
        record = await self.store.get(uid)
        if record is None:
            raise UnknownJob(f"no job with uid {uid!r}")
        return record

    # -- reports and results -------------------------------------------------------------------

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
        if record.status.is_terminal and record.status is not JobStatus.COMPLETED:
            why = f": {record.message}" if record.message else ""
            raise NoResult(f"job {uid} {record.status.value} and has no result{why}")
        if record.status is not JobStatus.COMPLETED:
            raise NotFinished(f"job {uid} is {record.status.value}; a result exists once it has completed")
        try:
            return await self.runner_for(record).result(self.spec(record), record.handle or {})
        except RunnerError as exc:
            raise RunnerError(f"the runner could not fetch the result of job {uid}: {exc.message}") from exc

    async def result(self, uid: str) -> ResultAnswer:
        outcome = await self.result_data(uid)
        return result_answer(await self.get(uid), outcome)

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

        changed: list[JobStatus] = []  # the previous status, when decide() changes it

        def deciding(current: JobRecord) -> Change | None:
            changed.clear()  # the store may decide again (its batch retried): the last decision counts
            change = decide(current)
            if change is not None and change.record.status is not current.status:
                changed.append(current.status)
            return change

        updated = await self.store.modify(uid, deciding)
        if changed and updated is not None and self.on_status is not None:
            self.on_status(updated, changed[-1])
        return updated
