"""Reading ARM's answers: a container group's state as a job status, ARM errors, and the result convention.

ACI reports two things: the group's ``provisioningState`` (is it deployed?) and the container's
``instanceView.currentState`` (Waiting, Running, Terminated with an exit code). A job is the container:
Waiting -> starting, Running -> running, Terminated 0 -> completed, any other exit code -> failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from azure.core.exceptions import HttpResponseError
from azure.mgmt.containerinstance.models import ContainerGroup

from daemon.contracts import JobResult, JobStatus

__all__ = [
    "RESULT_MARKER",
    "GroupState",
    "describe_error",
    "group_state",
    "is_retryable",
    "read_result",
    "retry_after",
]

#: A log line starting with this carries the job's result (the last such line wins).
RESULT_MARKER = "dm-job-result:"
#: Throttling, and ARM's transient failures (a create with a derived name is safe to repeat).
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_THROTTLE_CODES = frozenset(
    {"TooManyRequests", "SubscriptionRequestsThrottled", "ResourceRequestsThrottled", "ServerBusy"}
)


@dataclass(frozen=True)
class GroupState:
    status: JobStatus
    message: str
    #: The container's own state word (Waiting, Running, Terminated), when ACI reports one.
    container_state: str | None = None


def group_state(group: ContainerGroup, provision_error: str | None = None) -> GroupState:
    """What a GET of the group (with its instance view) says about the job."""
    name = group.name or "the container group"
    provisioning = group.provisioning_state or "Pending"
    container = group.containers[0] if group.containers else None
    view = container.instance_view if container is not None else None
    current = view.current_state if view is not None else None
    last_event = view.events[-1].message if view is not None and view.events else None
    if provisioning == "Failed" and (current is None or current.state != "Terminated"):
        detail = provision_error or last_event or "no detail given"
        return GroupState(JobStatus.FAILED, f"container group {name} failed to deploy: {detail}")
    if current is None or current.state is None:
        return GroupState(JobStatus.STARTING, f"container group {name} is being provisioned ({provisioning})")
    state = current.state
    detail = current.detail_status or ""
    if state == "Running":
        return GroupState(JobStatus.RUNNING, f"container running in {name}", state)
    if state == "Terminated":
        code = current.exit_code
        if code == 0:
            return GroupState(JobStatus.COMPLETED, "the container exited with code 0", state)
        why = f" ({detail})" if detail else ""
        return GroupState(JobStatus.FAILED, f"the container failed with exit code {code}{why}", state)
    why = detail or last_event or state
    return GroupState(JobStatus.STARTING, f"container waiting in {name}: {why}", state)


def arm_code(exc: HttpResponseError) -> str | None:
    error = exc.error
    return error.code if error is not None and error.code else None


def describe_error(exc: HttpResponseError) -> str:
    """ARM's error, as ``status code: message``: never the request (it may carry secrets)."""
    code = arm_code(exc) or ""
    message = exc.error.message if exc.error is not None and exc.error.message else exc.reason or ""
    status = f"HTTP {exc.status_code} " if exc.status_code else ""
    return f"{status}{code}: {message}".strip(": ")[:500]


def is_retryable(exc: HttpResponseError) -> bool:
    """Throttling, quota and transient errors: wait and try again instead of failing the job."""
    code = arm_code(exc) or ""
    return (
        exc.status_code in _TRANSIENT_STATUS
        or code in _THROTTLE_CODES
        or code.endswith(("QuotaReached", "QuotaExceeded"))
    )


def retry_after(exc: HttpResponseError) -> float | None:
    """The ``Retry-After`` seconds ARM asked for, if any."""
    headers = getattr(exc.response, "headers", None) or {}
    raw = headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


def read_result(log: str) -> JobResult:
    """The job's result: the text after the last ``dm-job-result:`` line, else the whole log.

    A marked result that parses as JSON is served as ``application/json``.
    """
    marked = [line for line in log.splitlines() if line.startswith(RESULT_MARKER)]
    if not marked:
        return JobResult(log, media_type="text/plain")
    text = marked[-1][len(RESULT_MARKER) :].strip()
    try:
        json.loads(text)
    except ValueError:
        return JobResult(text, media_type="text/plain")
    return JobResult(text, media_type="application/json")
