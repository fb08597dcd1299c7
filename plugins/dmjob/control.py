"""The way from a handler's thread to the daemon's start and stop (dm-job's ``register_job``/``remove_job``).

Handler code blocks in a worker thread; the daemon's :class:`JobControl` is async on the event loop.
Each call is handed to the loop and waited for, bounded, so a handler never hangs on a stopped daemon.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any

from daemon.contracts import JobControl

__all__ = ["thread_control"]

#: Longest wait of a handler's thread for the daemon to start or stop a job.
CALL_TIMEOUT = 60.0


def thread_control(jobs: JobControl, loop: asyncio.AbstractEventLoop) -> Callable[..., Any]:
    """A blocking ``(operation, *args)`` callable for ``services.job_service``, run on ``loop``."""

    async def start(address: str, token: str | None) -> tuple[str, str, str]:
        registered = await jobs.start(address, token)
        return registered.uid, registered.message, registered.status.value

    async def stop(uid: str) -> tuple[str, str]:
        status, message = await jobs.stop(uid)
        return status.value, message

    operations: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {"start": start, "stop": stop}

    def call(operation: str, *args: Any) -> Any:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:  # a handler call on the loop itself would wait for ever
            raise RuntimeError("services.job_service was called on the daemon's event loop")
        future: concurrent.futures.Future[Any] = asyncio.run_coroutine_threadsafe(
            operations[operation](*args), loop
        )
        return future.result(CALL_TIMEOUT)

    return call
