"""What dm-job handler answers and adapter records mean in the daemon's terms.

``progress()`` tuples, ``start()``/``remove()`` answers and ``result()`` data become RunnerStatus, text and
JobResult; a run of this process, or an earlier daemon's record, implies a status of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.contracts import JobResult, JobStatus, Log, RunnerError, RunnerStatus

from .redact import Redactor
from .runs import Run
from .state import Phase, StartRecord

__all__ = [
    "log_lines",
    "percentage_of",
    "read_progress",
    "record_status",
    "removed_status",
    "repeat_status",
    "result_of",
    "status_of",
    "text_of",
]


def status_of(value: Any) -> JobStatus | None:
    """A handler's status (dm-job's enum, its value, or its name in any case) as the daemon's status."""
    raw = getattr(value, "value", value)
    if not isinstance(raw, str):
        return None
    try:
        return JobStatus(raw.strip().lower().replace("_", " "))
    except ValueError:
        return None


def log_lines(value: Any, redact: Redactor) -> tuple[str, ...]:
    """Handler logs (a string, a list of strings, or None) as log lines."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(redact(line) for item in items for line in str(item).splitlines())


def percentage_of(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def text_of(value: Any) -> str:
    """What ``start()``/``remove()`` returned, as text (dm-job allowed a list of lines too)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    return str(value)


def read_progress(
    value: Any, started: str, redact: Redactor, log: Log, handler: str, uid: str
) -> RunnerStatus:
    """``(status, logs)`` or ``(status, logs, percentage)`` -> a RunnerStatus."""
    if isinstance(value, tuple | list) and len(value) in (2, 3):
        raw_status, raw_logs = value[0], value[1]
        raw_percentage = value[2] if len(value) == 3 else None
    elif isinstance(value, tuple | list) and len(value) == 1:
        raw_status, raw_logs, raw_percentage = value[0], None, None
    else:
        raw_status, raw_logs, raw_percentage = value, None, None
    status = status_of(raw_status)
    if status is None:
        log.warning(
            "dm-job handler progress() returned an unknown status; read as unknown",
            handler=handler,
            uid=uid,
            status=redact(repr(raw_status)[:200]),
        )
        status = JobStatus.UNKNOWN
    logs = log_lines(raw_logs, redact)
    percentage = percentage_of(raw_percentage)
    if status is JobStatus.NOT_STARTED:
        # start() returned but the deployed work has not begun: still on its way.
        status = JobStatus.STARTING
    if status is JobStatus.FAILED:
        message = "the job handler reports failed" + (f": {logs[-1]}" if logs else "")
    elif status is JobStatus.REMOVED:
        message = "the job handler reports the job removed"
    else:
        message = started or "JobHandler.start() returned"
    return RunnerStatus(status, message, logs, percentage)


def result_of(value: Any, handler: str) -> JobResult:
    """What ``result()`` returned (``(message, bytes)``): text when its bytes are UTF-8, else bytes."""
    data = value[1] if isinstance(value, tuple | list) and len(value) == 2 else value
    if data is None:
        data = b""
    if isinstance(data, str):
        return JobResult(data=data, media_type="text/plain")
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        try:
            return JobResult(data=raw.decode("utf-8"), media_type="text/plain")
        except UnicodeDecodeError:
            return JobResult(data=raw, media_type="application/octet-stream")
    raise RunnerError(
        f"the dm-job handler {handler!r} returned {type(data).__name__} from result(); "
        "expected (message, bytes)"
    )


def removed_status(run: Run) -> RunnerStatus:
    if run.future is not None and not run.future.done():
        return RunnerStatus(
            JobStatus.REMOVED,
            "removed; JobHandler.start() is still running in its thread and cannot be killed",
        )
    return RunnerStatus(JobStatus.REMOVED, "removed")


def repeat_status(run: Run, failure: Callable[[str, BaseException, Run], str]) -> RunnerStatus:
    """What a second ``start`` for a uid this process started answers (without calling start()).

    ``failure(method, exc, run)`` turns an exception that escaped the start() thread into a message.
    """
    if run.removed:
        return removed_status(run)
    outcome = run.outcome
    future = run.future
    if outcome is None and future is not None and future.done():
        if future.cancelled():
            return RunnerStatus(JobStatus.FAILED, "JobHandler.start() was cancelled before it ran")
        error = future.exception()
        if error is not None:
            return RunnerStatus(JobStatus.FAILED, failure("start", error, run))
        outcome = future.result()
    if outcome is None:
        return RunnerStatus(JobStatus.RUNNING, "already started: JobHandler.start() is running")
    if not outcome.ok:
        return RunnerStatus(JobStatus.FAILED, outcome.message)
    return RunnerStatus(
        JobStatus.RUNNING, f"already started: JobHandler.start() returned {outcome.message!r}"
    )


def record_status(record: StartRecord, *, repeat: bool) -> RunnerStatus:
    """The status an earlier daemon's record implies, when this process has no thread for the job."""
    if record.removed:
        return RunnerStatus(JobStatus.REMOVED, "removed")
    match record.phase:
        case Phase.RETURNED:
            return RunnerStatus(
                JobStatus.RUNNING,
                f"already started: JobHandler.start() returned {record.message or ''!r}",
            )
        case Phase.FAILED:
            return RunnerStatus(JobStatus.FAILED, record.message or "JobHandler.start() failed")
        case Phase.RUNNING:
            return RunnerStatus(
                JobStatus.FAILED,
                "JobHandler.start() was still running when the previous daemon stopped; its thread died "
                "with that daemon, so the job's outcome is unknown",
            )
        case _:
            return RunnerStatus(
                JobStatus.FAILED,
                "the previous daemon stopped before JobHandler.start() began"
                + ("" if repeat else "; start the job again"),
            )
