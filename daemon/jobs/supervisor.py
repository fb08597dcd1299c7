"""Watching running jobs: start them through their runner, follow their status, enforce time limits.

One asyncio task per active job. It polls the runner with a backoff that resets whenever something
changes, and polls at once when a runner that can push reports a change. The tasks hold no broker
delivery and no lock: a job may run for days. After a restart, :meth:`Supervisor.resume` picks every
active job up again from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from daemon.clock import Clock, SystemClock
from daemon.contracts import (
    Handle,
    JobdError,
    JobSpec,
    JobStatus,
    Log,
    RunnerError,
    RunnerStatus,
    current_trace,
)
from daemon.jobs.boundary import GuardedRunner
from daemon.jobs.service import Jobs
from daemon.store.records import JobRecord, StoreUnavailable

__all__ = ["Supervisor"]

T = TypeVar("T")


class Supervisor:
    def __init__(
        self, jobs: Jobs, *, log: Log, poll_min: float, poll_max: float, clock: Clock | None = None
    ) -> None:
        self.jobs = jobs
        self.clock: Clock = clock or SystemClock()
        self.log = log
        self.poll_min = poll_min
        self.poll_max = poll_max
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Set once a job's runner.start() has returned (or failed): stop waits for it.
        self._launched: dict[str, asyncio.Event] = {}

    @property
    def watching(self) -> int:
        return len(self._tasks)

    def launch(self, record: JobRecord) -> None:
        """Start (if it has no handle yet) and watch one job."""
        if record.uid in self._tasks:
            return
        launched = self._launched.setdefault(record.uid, asyncio.Event())
        if record.handle is not None:
            launched.set()
        task = asyncio.create_task(self._run(record, launched), name=f"job {record.uid}")
        self._tasks[record.uid] = task
        task.add_done_callback(functools.partial(self._forget, record.uid))

    def _forget(self, uid: str, _task: object = None) -> None:
        self._tasks.pop(uid, None)
        self._launched.pop(uid, None)

    async def reconcile(self, runners: Sequence[GuardedRunner]) -> None:
        """Let runners that leave things behind clean up after jobs the store no longer runs."""

        async def is_active(uid: str) -> bool:
            record = await self.jobs.store.get(uid)
            return record is not None and not record.status.is_terminal

        for runner in runners:
            if runner.reconciles:
                try:
                    await runner.reconcile(is_active)
                except RunnerError as exc:  # cleanup is best effort; the daemon runs without it
                    name = type(runner.inner).__name__
                    self.log.warning("runner cleanup failed", runner=name, error=exc.message)

    async def _run(self, record: JobRecord, launched: asyncio.Event) -> None:
        current_trace.set(record.trace)  # this task's HTTP calls for the job carry the job's trace
        # Every log line in this task names the job, and nothing else: the task may have been created
        # in the context of whichever command's commit launched it.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(uid=record.uid)
        try:
            await self._start_and_watch(record, launched)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours must not take the daemon down; the job is flagged
            self.log.error("watching the job crashed", uid=record.uid, error=repr(exc))
            with contextlib.suppress(Exception):
                await self.jobs.change(
                    record.uid, status=JobStatus.UNKNOWN, message=f"watching failed: {exc}"
                )
        finally:
            launched.set()

    async def _start_and_watch(self, record: JobRecord, launched: asyncio.Event) -> None:
        try:
            runner = self.jobs.runner_for(record)
        except JobdError as exc:
            launched.set()
            await self._stored(
                functools.partial(self.jobs.change, record.uid, status=JobStatus.FAILED, message=exc.message)
            )
            return
        spec = self.jobs.spec(record)
        handle = record.handle
        if handle is None:
            try:
                started = await runner.start(spec)
            except JobdError as exc:  # the runner's failure, or a contract error it raised (DMSS refused)
                self.log.warning("runner could not start the job", uid=record.uid, error=exc.message)
                message = f"the runner could not start the job: {exc.message}"
                await self._stored(
                    functools.partial(self.jobs.change, record.uid, status=JobStatus.FAILED, message=message)
                )
                return
            finally:
                launched.set()
            handle = started.handle
            # The handle must be kept: a job whose handle is lost would be started again.
            updated = await self._stored(
                functools.partial(self.jobs.observe, record.uid, started.status, handle=handle)
            )
            if updated is None or updated.status.is_terminal:
                return
            record = updated
        await self._watch(runner, spec, handle, record)

    async def _watch(self, runner: GuardedRunner, spec: JobSpec, handle: Handle, record: JobRecord) -> None:
        kick = asyncio.Event()
        pusher: asyncio.Task[None] | None = None
        if runner.watches:
            pusher = asyncio.create_task(self._follow(runner, spec, handle, kick))
        delay = self.poll_min
        failures = 0
        try:
            while True:
                if record.time_limit is not None and self._over_limit(record):
                    await self._expire(runner, spec, handle, record)
                    return
                kick.clear()  # before the poll: a push that lands during it makes the next wait short
                try:
                    seen = await runner.poll(spec, handle)
                    failures = 0
                except JobdError as exc:
                    failures += 1
                    self.log.warning(
                        "polling the runner failed", uid=spec.uid, error=exc.message, failures=failures
                    )
                    seen = None
                    if failures == 5:
                        seen = RunnerStatus(
                            JobStatus.UNKNOWN, message=f"the runner cannot tell: {exc.message}"
                        )
                if seen is not None:
                    updated = await self._stored(functools.partial(self.jobs.observe, spec.uid, seen))
                    if updated is None or updated.status.is_terminal:
                        return
                    changed = updated is not record and (
                        updated.status,
                        updated.logs,
                        updated.percentage,
                    ) != (record.status, record.logs, record.percentage)
                    record = updated
                    delay = self.poll_min if changed else min(delay * 2, self.poll_max)
                else:
                    delay = min(delay * 2, self.poll_max)
                wait = delay
                if record.time_limit is not None:
                    wait = max(0.0, min(wait, self._remaining(record)))
                await self.clock.wait(kick, wait)
        finally:
            if pusher is not None:
                pusher.cancel()
                with contextlib.suppress(BaseException):
                    await pusher

    async def _follow(
        self, runner: GuardedRunner, spec: JobSpec, handle: Handle, kick: asyncio.Event
    ) -> None:
        """Turn a runner's pushed changes into immediate polls; polling goes on if the stream drops."""
        try:
            async for _ in runner.watch(spec, handle):
                kick.set()
        except RunnerError as exc:
            self.log.info("runner's push stream ended; polling", uid=spec.uid, error=exc.message)

    def _remaining(self, record: JobRecord) -> float:
        assert record.time_limit is not None
        since = (record.started or record.created).timestamp()
        return since + record.time_limit - self.clock.now().timestamp()

    def _over_limit(self, record: JobRecord) -> bool:
        return self._remaining(record) <= 0

    async def _expire(self, runner: GuardedRunner, spec: JobSpec, handle: Handle, record: JobRecord) -> None:
        try:
            await runner.stop(spec, handle)
        except RunnerError as exc:
            self.log.warning("stopping a job past its time limit failed", uid=spec.uid, error=exc.message)
        message = f"stopped: the job ran longer than its time limit of {record.time_limit:g} s"
        await self._stored(
            functools.partial(self.jobs.change, spec.uid, status=JobStatus.FAILED, message=message)
        )

    async def _stored(self, write: Callable[[], Awaitable[T]]) -> T:
        """``write`` once the store takes it: while the store is away, the watch waits and tries again
        (what a runner reported, above all a new job's handle, must not be dropped, nor the job's
        watch given up)."""
        pause = 0.05
        while True:
            try:
                return await write()
            except StoreUnavailable:
                await self.clock.sleep(pause)
                pause = min(pause * 2, self.poll_max)

    async def stop(self, uid: str) -> tuple[JobRecord, bool]:
        """Stop a job on request; returns its record and whether it was stopped (False: already over)."""
        record = await self.jobs.get(uid)
        if record.status.is_terminal:
            return record, False
        if current_trace.get() is None:
            current_trace.set(record.trace)
        launched = self._launched.get(uid)
        if launched is not None:
            await launched.wait()  # a start under way finishes first, so its handle is known
        task = self._tasks.get(uid)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        record = await self.jobs.get(uid)
        if record.status.is_terminal:
            return record, False
        if record.handle is not None:
            try:
                await self.jobs.runner_for(record).stop(self.jobs.spec(record), record.handle)
            except JobdError as exc:
                self.launch(record)  # still running as far as we know: keep watching it
                raise RunnerError(f"the runner could not stop job {uid}: {exc.message}") from exc
        updated = await self.jobs.change(uid, status=JobStatus.REMOVED, message="stopped on request")
        return (updated or record), True

    async def close(self) -> None:
        """Stop watching; the jobs themselves keep running and are re-attached on the next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
