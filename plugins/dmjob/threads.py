"""The adapter's worker threads: blocking handler calls run here, bound to the daemon's environment and log.

Python cannot kill a thread: a call that hangs keeps its worker busy until it returns. A call to
progress()/result()/remove() that takes too long is reported as failed and left running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Mapping
from typing import TypeVar

from daemon.contracts import RunnerError

from .shim import Control, LogSink, Shim

__all__ = ["HandlerThreads"]

T = TypeVar("T")


class HandlerThreads:
    """The worker threads of one handler folder's runner."""

    def __init__(
        self,
        name: str,
        shim: Shim,
        env: Mapping[str, str],
        *,
        start_workers: int,
        call_workers: int,
        call_timeout: float,
    ) -> None:
        self._name = name
        self._shim = shim
        self._env = env
        #: ``services.job_service``'s way to the daemon, once the adapter knows its event loop.
        self.control: Control | None = None
        self._call_timeout = call_timeout
        # Two pools: a long start() must never hold up progress()/result()/remove() of other jobs.
        self._start_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=start_workers, thread_name_prefix=f"dmjob-start-{name}"
        )
        self._call_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=call_workers, thread_name_prefix=f"dmjob-call-{name}"
        )

    def start(
        self, sink: LogSink, fn: Callable[[], T], *, token: str | None = None
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn`` (the work around ``JobHandler.start()``); it may wait for a free worker."""
        return self._start_pool.submit(self._bound, sink, fn, token)

    async def call(self, sink: LogSink, fn: Callable[[], T], what: str, *, token: str | None = None) -> T:
        """Run a blocking handler call in the call pool; give up waiting after the call timeout."""
        future = self._call_pool.submit(self._bound, sink, fn, token)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self._call_timeout)
        except TimeoutError:
            raise RunnerError(
                f"{what} of the dm-job handler {self._name!r} did not return within {self._call_timeout:g} s "
                "(it keeps running in its thread)"
            ) from None

    def shutdown(self) -> None:
        """Drop queued work; does not wait for running calls (they cannot be interrupted)."""
        self._start_pool.shutdown(wait=False, cancel_futures=True)
        self._call_pool.shutdown(wait=False, cancel_futures=True)

    def _bound(self, sink: LogSink, fn: Callable[[], T], token: str | None) -> T:
        with self._shim.bound(self._env, sink, token=token, control=self.control):
            return fn()
