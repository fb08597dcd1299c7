"""The error boundary around every runner: whatever a plugin raises comes out as ``RunnerError``.

Plugins raise what their libraries raise (``ValueError``, ``OSError``, ``EngineError``, ``AzureError``,
``httpx`` errors). Translated once, here, the supervisor and the dispatcher deal with one type: a
``job.result`` whose runner fails is answered ``runner_error`` at its first delivery instead of being
retried as a crash of ours. The contract's own errors (``JobdError``) and cancellation pass unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar, cast

from daemon.contracts import (
    REACH_HOST,
    DescribedRunner,
    ForgettingRunner,
    Handle,
    JobdError,
    JobResult,
    JobSpec,
    ReachingRunner,
    ReconcilingRunner,
    Runner,
    RunnerError,
    RunnerStatus,
    Started,
    WatchingRunner,
)

__all__ = ["GuardedRunner"]

T = TypeVar("T")


def _translate(exc: Exception) -> RunnerError:
    """The plugin's own words, or its exception's name when it has none; callers say what failed."""
    return RunnerError(str(exc) or type(exc).__name__)


async def _guard(call: Awaitable[T]) -> T:
    try:
        return await call
    except JobdError:
        raise
    except Exception as exc:
        raise _translate(exc) from exc


class GuardedRunner:
    """A :class:`Runner` behind the boundary; ``watches``/``reconciles`` tell its optional abilities."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        # Asked once: a runtime protocol check inspects the class, and a runner's abilities never change.
        self.watches = isinstance(inner, WatchingRunner)
        self.reconciles = isinstance(inner, ReconcilingRunner)
        self._described = isinstance(inner, DescribedRunner)  # asked per start: checked once

    async def start(self, job: JobSpec) -> Started:
        return await _guard(self.inner.start(job))

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        return await _guard(self.inner.poll(job, handle))

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        return await _guard(self.inner.result(job, handle))

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        await _guard(self.inner.stop(job, handle))

    async def close(self) -> None:
        await _guard(self.inner.close())

    async def watch(self, job: JobSpec, handle: Handle) -> AsyncIterator[RunnerStatus]:
        """The inner runner's pushed changes (nothing when it cannot push)."""
        if not isinstance(self.inner, WatchingRunner):
            return
        stream = self.inner.watch(job, handle)
        while True:
            try:
                seen = await anext(stream)
            except StopAsyncIteration:
                return
            except JobdError:
                raise
            except Exception as exc:
                raise _translate(exc) from exc
            yield seen

    async def reconcile(self, is_active: Callable[[str], Awaitable[bool]]) -> None:
        if isinstance(self.inner, ReconcilingRunner):
            await _guard(self.inner.reconcile(is_active))

    def reach(self, runner_type: str) -> str:
        """Where a replica must be to adopt this runner's jobs (a runner that does not say: its host)."""
        if isinstance(self.inner, ReachingRunner):
            return self.inner.reach(runner_type)
        return REACH_HOST

    def runner_fields(self, runner_type: str) -> frozenset[str] | None:
        """The ``runner`` fields the inner runner reads, when it says (None: it does not)."""
        if self._described:
            return cast(DescribedRunner, self.inner).runner_fields(runner_type)
        return None

    async def forget(self, uid: str) -> None:
        if isinstance(self.inner, ForgettingRunner):
            await _guard(self.inner.forget(uid))
