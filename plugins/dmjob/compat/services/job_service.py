"""dm-job's ``services.job_service``, as handlers call it: ``register_job`` and ``remove_job``.

Backed by the daemon's own start and stop (the runner contract's ``JobControl``): a job registered
here is a ``job.start`` by DMSS address, durable and evented like any other, and ``remove_job`` is a
``job.stop``. Handler code runs in a worker thread; each call waits for the daemon's answer.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from services.dmss import get_access_token
from services.job_handler_interface import JobStatus

__all__ = ["register_job", "remove_job"]

#: ``(operation, *arguments) -> result``, run on the daemon's event loop; bound per handler call.
Control = Callable[..., Any]
_control: ContextVar[Control | None] = ContextVar("dmjob_compat_control", default=None)
_default: list[Control | None] = [None]


def _use_control(control: Control | None) -> Token[Control | None]:
    return _control.set(control)


def _reset_control(token: Token[Control | None]) -> None:
    _control.reset(token)


def _set_default_control(control: Control | None) -> None:
    _default[0] = control


def _call(operation: str, *args: Any) -> Any:
    control = _control.get() or _default[0]
    if control is None:
        raise RuntimeError(f"{operation}: no daemon is running to start or stop jobs")
    return control(operation, *args)


def register_job(dmss_id: str, token: str | None = None) -> tuple[str, str, JobStatus]:
    """Start the job entity at ``dmss_id``; dm-job's ``(uid, message, status)``."""
    uid, message, status = _call("start", dmss_id, token or get_access_token() or None)
    return uid, message, JobStatus(status)


def remove_job(job_uid: str) -> tuple[JobStatus, str]:
    """Stop the job ``job_uid``; dm-job's ``(status, message)``."""
    status, message = _call("stop", str(job_uid))
    return JobStatus(status), message
