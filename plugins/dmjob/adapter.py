"""Runs one dm-job handler folder unchanged, behind the daemon's async runner contract.

dm-job handlers are blocking: ``start()`` may do the whole job (shell style) or only deploy it (container
style), and ``progress()``/``result()``/``remove()`` talk to whatever runs it. Every call runs in a thread
owned by this runner. ``start`` returns at once; the thread running ``JobHandler.start()`` records in
``<state_dir>/<uid>.json`` how far it got, because that thread dies with the daemon and a new daemon must
tell "start() returned: ask progress()" from "start() was cut off".

Python cannot kill a thread: a ``start()`` that hangs keeps its worker busy until it returns, ``stop``
only asks the handler's ``remove()`` to clean up, and ``close`` does not wait for it.

This module is the runner itself. Its parts: :mod:`.calls` (the JobHandler side, run in threads),
:mod:`.threads` (the worker pools), :mod:`.runs` (one job's state and its dm-job ``Job``), :mod:`.statuses`
(what handler answers and records mean) and :mod:`.redact` (secrets out of messages and logs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar
from uuid import UUID

from daemon.contracts import (
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    NotFinished,
    RunnerContext,
    RunnerError,
    RunnerStatus,
    Started,
)

from .calls import HandlerCalls
from .control import thread_control
from .loader import HandlerFolder
from .redact import Redactor, log_sink
from .runs import Outcome, Run, data_source_of, dmjob_job
from .shim import LogSink, Shim
from .state import Phase, StartRecord, StateFiles, StateUnreadable
from .statuses import (
    log_lines,
    percentage_of,
    read_progress,
    record_status,
    removed_status,
    repeat_status,
    result_of,
    text_of,
)
from .threads import HandlerThreads

__all__ = ["DmJobAdapter", "Redactor", "data_source_of", "log_sink"]

T = TypeVar("T")


class DmJobAdapter:
    """The runner for one handler folder; the daemon keeps one per folder ``discover`` found."""

    def __init__(
        self,
        handler: HandlerFolder,
        ctx: RunnerContext,
        shim: Shim,
        *,
        start_workers: int = 32,
        call_workers: int = 8,
        call_timeout: float = 300.0,
    ) -> None:
        self._folder = handler
        self._ctx = ctx
        self._shim = shim
        self._name = handler.folder.name
        self._state = StateFiles(ctx.state_dir)
        self._redact = Redactor.for_env(ctx.env)
        self._runs: dict[str, Run] = {}
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._calls = HandlerCalls(handler, shim, self._state, ctx.log)
        self._threads = HandlerThreads(
            self._name,
            shim,
            ctx.env,
            start_workers=start_workers,
            call_workers=call_workers,
            call_timeout=call_timeout,
        )

    @property
    def types(self) -> tuple[str, ...]:
        return self._folder.types

    @property
    def origin(self) -> str:
        return self._folder.origin

    def __repr__(self) -> str:
        return f"<DmJobAdapter {self._folder.folder}>"

    # -- the runner contract -------------------------------------------------------------------------

    async def start(self, job: JobSpec) -> Started:
        """Hand ``JobHandler.start()`` to a worker thread and return at once; never start a uid twice."""
        self._check_open()
        handle = self._handle(job)
        async with self._start_lock:
            run = self._runs.get(job.uid)
            if run is not None:
                return Started(handle, repeat_status(run, self._calls.failure))
            record = await self._read_record(job)
            if record is not None and not (record.phase is Phase.QUEUED and not record.removed):
                # start() was called by an earlier daemon (a queued one never was: that may start now).
                return Started(handle, record_status(record, repeat=True))
            run = self._new_run(job, JobStatus.STARTING, Phase.QUEUED)
            self._runs[job.uid] = run
            try:
                await asyncio.to_thread(self._calls.update_record, run, strict=True)
                self._bind_loop()
                run.future = self._threads.start(
                    run.sink, lambda: self._calls.run_start(run), token=job.token
                )
            except BaseException:
                del self._runs[job.uid]
                raise
        self._ctx.log.info("dm-job handler start() submitted", handler=self._name, uid=job.uid)
        return Started(handle, RunnerStatus(JobStatus.RUNNING, "JobHandler.start() submitted"))

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        """RUNNING while ``start()`` runs; then the handler's ``progress()``, or COMPLETED without one."""
        self._check_open()
        run = self._runs.get(job.uid)
        if run is None:
            record = await self._read_record(job)
            if record is None:
                return RunnerStatus(JobStatus.FAILED, f"not started: {self._no_record(job)}")
            if record.removed or record.phase is not Phase.RETURNED:
                return record_status(record, repeat=False)
            run = self._restored_run(job, record)
            self._runs.setdefault(job.uid, run)
            run = self._runs[job.uid]
        status = await self._poll_run(run)
        if status.status.is_terminal and (run.future is None or run.future.done()):
            # Settled: forget the handler object; result()/stop() rebuild it from the record if asked.
            self._runs.pop(job.uid, None)
        return status

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        """The handler's ``result()``: text when its bytes are UTF-8, else bytes."""
        self._check_open()
        run = await self._settled_run(job, "result")
        try:
            value = await self._call(run, lambda: self._calls.handler_of(run).result(), "JobHandler.result()")
        except NotImplementedError:
            raise RunnerError(
                f"the dm-job handler {self._name!r} has no result: its JobHandler does not implement result()"
            ) from None
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError(self._calls.failure("result", exc, run)) from None
        return result_of(value, self._name)

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        """Ask the handler's ``remove()`` to clean up (none is fine: nothing to remove).

        A ``start()`` still running in its thread cannot be killed: it finishes on its own, and the job
        stays removed whatever it returns.
        """
        self._check_open()
        run = self._runs.get(job.uid)
        if run is None:
            record = await self._read_record(job)
            if record is None:
                self._ctx.log.info(
                    "dm-job job to stop was never started here", handler=self._name, uid=job.uid
                )
                return
            run = self._restored_run(job, record)
        if run.future is not None and run.future.cancel():
            # Still queued: start() was never called, so there is nothing to remove.
            await self._mark_removed(run)
            self._ctx.log.info("dm-job job removed before start() ran", handler=self._name, uid=job.uid)
            return
        try:
            answer = await self._call(
                run, lambda: self._calls.handler_of(run).remove(), "JobHandler.remove()"
            )
        except NotImplementedError:
            self._ctx.log.info(
                "dm-job handler has no remove(): nothing to remove", handler=self._name, uid=job.uid
            )
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError(self._calls.failure("remove", exc, run)) from None
        else:
            message = answer[-1] if isinstance(answer, tuple | list) and answer else answer
            self._ctx.log.info(
                "dm-job handler remove() returned",
                handler=self._name,
                uid=job.uid,
                message=run.redact(text_of(message)),
            )
        await self._mark_removed(run)
        if run.future is not None and not run.future.done():
            self._ctx.log.warning(
                "JobHandler.start() is still running in its thread and cannot be killed; it will end on its "
                "own and the job stays removed",
                handler=self._name,
                uid=job.uid,
            )

    async def forget(self, uid: str) -> None:
        """The job's record of how far its start got (its handler's own files are the handler's)."""
        await asyncio.to_thread(self._state.path(uid).unlink, missing_ok=True)

    async def close(self) -> None:
        """Stop taking work. Does not wait for running ``start()`` threads: they cannot be interrupted."""
        if self._closed:
            return
        self._closed = True
        still = [uid for uid, run in self._runs.items() if run.future is not None and not run.future.done()]
        if still:
            self._ctx.log.warning(
                "closing while JobHandler.start() still runs; after a restart these jobs read as failed",
                handler=self._name,
                uids=still,
            )
        self._threads.shutdown()

    # -- polling ---------------------------------------------------------------------------------------

    async def _poll_run(self, run: Run) -> RunnerStatus:
        if run.removed:
            return removed_status(run)
        outcome = run.outcome
        if outcome is None:
            if run.future is None or not run.future.done():
                message = (
                    "JobHandler.start() is running"
                    if run.began.is_set()
                    else "JobHandler.start() is waiting for a free worker thread"
                )
                return RunnerStatus(
                    JobStatus.RUNNING,
                    message,
                    log_lines(run.job.log, run.redact),
                    percentage_of(run.job.percentage),
                )
            if run.future.cancelled():
                return RunnerStatus(JobStatus.FAILED, "JobHandler.start() was cancelled before it ran")
            try:
                outcome = run.future.result()
            except BaseException as exc:  # the worker catches Exception; anything else ends up here
                outcome = Outcome(False, self._calls.failure("start", exc, run))
        if not outcome.ok:
            return RunnerStatus(JobStatus.FAILED, outcome.message, log_lines(run.job.log, run.redact))
        return await self._progress(run, outcome.message)

    async def _progress(self, run: Run, started: str) -> RunnerStatus:
        """After start() returned: ask progress() if the handler has one (dm-job's status endpoint did)."""
        own = getattr(self._folder.handler_class, "progress", None)
        if own is not None and own is not getattr(self._shim.interface_class, "progress", None):
            before = (run.job.status, run.job.state)
            try:
                value = await self._call(
                    run, lambda: self._calls.handler_of(run).progress(), "JobHandler.progress()"
                )
            except NotImplementedError:
                value = None
            except RunnerError:
                raise
            except Exception as exc:
                raise RunnerError(self._calls.failure("progress", exc, run)) from None
            if value is not None:
                status = read_progress(value, started, run.redact, self._ctx.log, self._name, run.uid)
                run.progressed = True
                run.job.status = self._shim.status_enum(status.status.value)
                run.job.log = list(status.logs) if status.logs else run.job.log
                if status.percentage is not None:
                    run.job.percentage = status.percentage
                if (run.job.status, run.job.state) != before:  # kept for the next daemon, as dm-job did
                    await asyncio.to_thread(self._calls.update_record, run)
                return status
        return RunnerStatus(
            JobStatus.COMPLETED,
            started or "JobHandler.start() returned",
            log_lines(run.job.log, run.redact),
            percentage_of(run.job.percentage),
        )

    # -- runs and records ------------------------------------------------------------------------------

    def _handle(self, job: JobSpec) -> Handle:
        return {
            "adapter": "dmjob",
            "handler": str(self._folder.folder),
            "uid": job.uid,
            "state_file": f"{job.uid}.json",
        }

    def _new_run(self, spec: JobSpec, status: JobStatus, phase: Phase) -> Run:
        try:
            uid = UUID(spec.uid)
        except ValueError:
            raise RunnerError(f"job uid {spec.uid!r} is not a UUID; dm-job handlers need one") from None
        try:
            self._state.path(spec.uid)
        except ValueError as exc:
            raise RunnerError(str(exc)) from None
        job = dmjob_job(self._shim, spec, uid, status)
        redact = self._redact.joined(Redactor.for_env(spec.env, spec.token))
        record = StartRecord(uid=spec.uid, handler=str(self._folder.folder), phase=phase).but()
        return Run(uid=spec.uid, job=job, redact=redact, sink=self._sink(spec.uid, redact), record=record)

    def _restored_run(self, spec: JobSpec, record: StartRecord) -> Run:
        """A run from an earlier daemon's record; its handler is created again when first needed."""
        run = self._new_run(spec, JobStatus(record.status or JobStatus.STARTING.value), record.phase)
        run.record = record
        run.job.state = record.state
        run.removed = record.removed
        if record.phase is Phase.RETURNED:
            run.outcome = Outcome(True, record.message or "")
        elif record.phase is Phase.FAILED:
            run.outcome = Outcome(False, record.message or "JobHandler.start() failed")
        return run

    async def _settled_run(self, job: JobSpec, method: str) -> Run:
        run = self._runs.get(job.uid)
        if run is not None:
            if run.future is not None and not run.future.done():
                raise NotFinished(f"JobHandler.start() is still running; {method}() has to wait for it")
            return run
        record = await self._read_record(job)
        if record is None:
            raise RunnerError(f"not started: {self._no_record(job)}")
        if record.phase in (Phase.QUEUED, Phase.RUNNING):
            raise RunnerError(
                "JobHandler.start() never finished (the daemon stopped while it ran), "
                f"so there is no {method}()"
            )
        return self._restored_run(job, record)

    async def _read_record(self, job: JobSpec) -> StartRecord | None:
        try:
            return await asyncio.to_thread(self._state.read, job.uid)
        except (ValueError, StateUnreadable) as exc:
            raise RunnerError(str(exc)) from None

    async def _mark_removed(self, run: Run) -> None:
        run.removed = True
        await asyncio.to_thread(self._calls.update_record, run, removed=True)

    # -- calls, logs and errors ------------------------------------------------------------------------

    async def _call(self, run: Run, fn: Callable[[], T], what: str) -> T:
        """Run a blocking handler call in a worker thread, bound to the daemon's environment and log."""
        self._check_open()
        self._bind_loop()
        return await self._threads.call(run.sink, fn, what, token=run.job.token)

    def _bind_loop(self) -> None:
        """Give handler threads the daemon's job control on this event loop (dm-job's job_service)."""
        if self._threads.control is None and self._ctx.jobs is not None:
            self._threads.control = thread_control(self._ctx.jobs, asyncio.get_running_loop())

    def _sink(self, uid: str, redact: Redactor) -> LogSink:
        return log_sink(self._ctx.log, self._name, redact, uid)

    def _no_record(self, job: JobSpec) -> str:
        return f"the dm-job adapter for {self._name!r} has no record of job {job.uid}"

    def _check_open(self) -> None:
        if self._closed:
            raise RunnerError(f"the dm-job adapter for {self._name!r} is closed")
