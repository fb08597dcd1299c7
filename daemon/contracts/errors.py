"""Errors that cross the daemon's boundary, each with a stable machine-readable code.

Every answer's ``error.code`` is one of :class:`ErrorCode`; callers branch on the code and show the
message. Messages never carry a token or other secret.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BadCommand",
    "DmssError",
    "DmssUnavailable",
    "ErrorCode",
    "JobdError",
    "NotFinished",
    "RunnerDisabled",
    "RunnerError",
    "UnknownJob",
    "UnknownRunner",
]


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    INVALID = "invalid"
    UNKNOWN_COMMAND = "unknown_command"
    TOO_LARGE = "too_large"
    UNKNOWN_RUNNER = "unknown_runner"
    RUNNER_DISABLED = "runner_disabled"
    UNKNOWN_JOB = "unknown_job"
    NOT_FINISHED = "not_finished"
    DMSS_NOT_CONFIGURED = "dmss_not_configured"
    DMSS_UNAUTHORIZED = "dmss_unauthorized"
    DMSS_NOT_FOUND = "dmss_not_found"
    DMSS_INVALID = "dmss_invalid"
    DMSS_UNAVAILABLE = "dmss_unavailable"
    RUNNER_ERROR = "runner_error"
    INTERNAL = "internal"


class JobdError(Exception):
    """Base of every error the daemon answers with; ``bad_input`` ones are also dead-lettered."""

    code: ErrorCode = ErrorCode.INTERNAL
    #: Refused input: the command is dead-lettered after the answer, never retried.
    bad_input: bool = True

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class BadCommand(JobdError):
    code = ErrorCode.INVALID


class UnknownRunner(JobdError):
    code = ErrorCode.UNKNOWN_RUNNER


class RunnerDisabled(JobdError):
    code = ErrorCode.RUNNER_DISABLED


class UnknownJob(JobdError):
    code = ErrorCode.UNKNOWN_JOB


class NotFinished(JobdError):
    code = ErrorCode.NOT_FINISHED
    bad_input = False


class RunnerError(JobdError):
    """A runner could not do what was asked (engine unreachable, process gone...)."""

    code = ErrorCode.RUNNER_ERROR
    bad_input = False


class DmssError(JobdError):
    """DMSS refused a request for a reason a retry will not fix (401/403, 404, 400/422).

    ``status`` is the HTTP status DMSS answered; the message says what was asked and DMSS's reason.
    """

    code = ErrorCode.DMSS_INVALID

    def __init__(self, message: str, *, code: ErrorCode | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class DmssUnavailable(JobdError):
    """DMSS could not be reached or answered 5xx/429: worth retrying later, never the caller's fault.

    ``status`` is the HTTP status DMSS answered (None when it could not be reached at all).
    """

    code = ErrorCode.DMSS_UNAVAILABLE
    bad_input = False

    def __init__(self, message: str, *, code: ErrorCode | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status
