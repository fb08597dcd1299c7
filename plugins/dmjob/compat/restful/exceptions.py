"""dm-job's ``restful.exceptions``: the exceptions handlers raise, with dm-job's statuses and defaults.

A handler raising one of these from ``start()`` fails its job with the exception's message, as dm-job's
API answered it; ``status``, ``type``, ``debug`` and ``data`` are kept for handlers that read them.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApplicationException",
    "BadRequestException",
    "ErrorResponse",
    "MissingPrivilegeException",
    "NotFoundException",
    "NotImplementedException",
    "ValidationException",
]

_MESSAGE = "The requested operation failed"
_DEBUG = "An unknown and unhandled exception occurred in the API"


class ErrorResponse:
    """The body dm-job answered an error with."""

    def __init__(
        self,
        status: int = 500,
        type: str = "ApplicationException",
        message: str = _MESSAGE,
        debug: str = _DEBUG,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.status, self.type, self.message, self.debug, self.data = status, type, message, debug, data

    def dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "type": self.type,
            "message": self.message,
            "debug": self.debug,
            "data": self.data,
        }

    model_dump = dict


class ApplicationException(Exception):
    status = 500
    default_message = _MESSAGE

    def __init__(
        self,
        message: str | None = None,
        debug: str = _DEBUG,
        data: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        self.message = self.default_message if message is None else message
        super().__init__(self.message)
        self.debug = debug
        self.data = data
        self.type = type(self).__name__
        if status is not None:
            self.status = status

    def dict(self) -> dict[str, Any]:
        return ErrorResponse(self.status, self.type, self.message, self.debug, self.data).dict()


class MissingPrivilegeException(ApplicationException):
    status = 403
    default_message = "You do not have the required permissions"


class NotFoundException(ApplicationException):
    status = 404
    default_message = "The requested resource could not be found"


class BadRequestException(ApplicationException):
    status = 400
    default_message = "Invalid data for the operation"


class ValidationException(ApplicationException):
    status = 422
    default_message = "The received data is invalid"


class NotImplementedException(ApplicationException):
    status = 501
    default_message = "The job handler does not implement that method"
