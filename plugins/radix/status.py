"""Radix's JobStatus as the daemon's status: the mapping, the failed pod's exit code, the log lines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from daemon.contracts import JobStatus, RunnerStatus

from .errors import scrub

__all__ = ["runner_status"]

#: Radix job status -> job status. "Waiting" (and no status yet) is dm-job's "starting".
_STATUSES = {
    "": JobStatus.STARTING,
    "Waiting": JobStatus.STARTING,
    "Running": JobStatus.RUNNING,
    "Active": JobStatus.RUNNING,
    "Stopping": JobStatus.RUNNING,
    "Succeeded": JobStatus.COMPLETED,
    "Completed": JobStatus.COMPLETED,
    "Failed": JobStatus.FAILED,
    "Stopped": JobStatus.REMOVED,
}


def _exit_code(body: Mapping[str, Any]) -> int | None:
    """The failed pod's exit code: the last pod that exited non-zero, else the last one that exited."""
    codes = [p.get("exitCode") for p in body.get("podStatuses") or [] if isinstance(p, Mapping)]
    codes = [c for c in codes if isinstance(c, int) and not isinstance(c, bool)]
    failed = [c for c in codes if c != 0]
    return (failed or codes or [None])[-1]


def _log_lines(body: Mapping[str, Any], secrets: Iterable[str]) -> tuple[str, ...]:
    """What the scheduler says about the job and each of its pods, one line each."""
    status = body.get("status") or "no status yet"
    lines = [f"Radix job {body.get('name')}: {status}"]
    if body.get("message"):
        lines.append(f"message: {body['message']}")
    for pod in body.get("podStatuses") or []:
        if not isinstance(pod, Mapping):
            continue
        replica = pod.get("replicaStatus")
        phase = replica.get("status") if isinstance(replica, Mapping) else None
        parts = [f"pod {pod.get('name')}: {phase or 'unknown'}"]
        if isinstance(pod.get("exitCode"), int) and (phase in ("Succeeded", "Failed") or pod["exitCode"]):
            parts.append(f"exit code {pod['exitCode']}")
        if pod.get("reason"):
            parts.append(f"reason {pod['reason']}")
        if pod.get("restartCount"):
            parts.append(f"{pod['restartCount']} restarts")
        if pod.get("statusMessage"):
            parts.append(str(pod["statusMessage"]))
        lines.append(", ".join(parts))
    return tuple(scrub(line, secrets) for line in lines)


def runner_status(body: Mapping[str, Any], secrets: Iterable[str]) -> RunnerStatus:
    """A Radix JobStatus as the daemon's status, with the message and the exit code of a failure."""
    radix = body.get("status") or ""
    logs = _log_lines(body, secrets)
    message = scrub(str(body.get("message") or ""), secrets)
    status = _STATUSES.get(radix, JobStatus.UNKNOWN)
    if status is JobStatus.FAILED:
        code = _exit_code(body)
        text = "the Radix job failed" + (f": {message}" if message else "")
        text += f" (exit code {code})" if code is not None else ""
        return RunnerStatus(status, message=text, logs=logs)
    texts = {
        JobStatus.STARTING: f"waiting in the Radix job scheduler as {body.get('name')}",
        JobStatus.RUNNING: f"{radix.lower()} in Radix as {body.get('name')}",
        JobStatus.COMPLETED: "the Radix job succeeded" + (f": {message}" if message else ""),
        JobStatus.REMOVED: "the Radix job was stopped" + (f": {message}" if message else ""),
        JobStatus.UNKNOWN: f"the Radix job scheduler reports an unknown status {radix!r}",
    }
    return RunnerStatus(status, message=texts[status], logs=logs)
