"""Errors that cross the daemon's boundary, each with a stable machine-readable code.

Every answer's ``error.code`` is one of :class:`ErrorCode`; callers branch on the code and show the
message. Messages never carry a token or other secret.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BadCommand",
    "BadJson",
    "BodyTooLarge",
    "DmssError",
    "DmssNotConfigured",
    "DmssNotFound",
    "DmssUnauthorized",
    "DmssUnavailable",
    "ErrorCode",
    "InternalError",
    "JobdError",
    "NoResult",
    "NotFinished",
    "RunnerDisabled",
    "RunnerError",
    "UnknownCommand",
    "UnknownJob",
    "UnknownRunner",
    "error_for",
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
    NO_RESULT = "no_result"
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


class NoResult(JobdError):
    """The job ended without completing (failed, removed): it has no result. The answer carries its view."""

    code = ErrorCode.NO_RESULT
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


# -- one class per code, so a client can raise what an answer says and a caller catch it by kind --------


class BadJson(BadCommand):
    code = ErrorCode.BAD_JSON


class UnknownCommand(BadCommand):
    code = ErrorCode.UNKNOWN_COMMAND


class BodyTooLarge(BadCommand):
    code = ErrorCode.TOO_LARGE


class DmssNotConfigured(BadCommand):
    code = ErrorCode.DMSS_NOT_CONFIGURED


class DmssUnauthorized(DmssError):
    code = ErrorCode.DMSS_UNAUTHORIZED


class DmssNotFound(DmssError):
    code = ErrorCode.DMSS_NOT_FOUND


class InternalError(JobdError):
    """A failure of the daemon's own, answered after the command's last delivery."""

    code = ErrorCode.INTERNAL
    bad_input = False


_BY_CODE: dict[ErrorCode, type[JobdError]] = {
    ErrorCode.BAD_JSON: BadJson,
    ErrorCode.INVALID: BadCommand,
    ErrorCode.UNKNOWN_COMMAND: UnknownCommand,
    ErrorCode.TOO_LARGE: BodyTooLarge,
    ErrorCode.UNKNOWN_RUNNER: UnknownRunner,
    ErrorCode.RUNNER_DISABLED: RunnerDisabled,
    ErrorCode.UNKNOWN_JOB: UnknownJob,
    ErrorCode.NOT_FINISHED: NotFinished,
    ErrorCode.NO_RESULT: NoResult,
    ErrorCode.DMSS_NOT_CONFIGURED: DmssNotConfigured,
    ErrorCode.DMSS_UNAUTHORIZED: DmssUnauthorized,
    ErrorCode.DMSS_NOT_FOUND: DmssNotFound,
    ErrorCode.DMSS_INVALID: DmssError,
    ErrorCode.DMSS_UNAVAILABLE: DmssUnavailable,
    ErrorCode.RUNNER_ERROR: RunnerError,
    ErrorCode.INTERNAL: InternalError,
}


def error_for(code: ErrorCode, message: str) -> JobdError:
    """The exception an error answer stands for: ``except UnknownJob`` catches ``unknown_job``."""
    return _BY_CODE[code](message)
