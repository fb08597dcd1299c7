"""Secrets (the job token, secret-named variables) cut out of text meant for messages and logs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from daemon.contracts import Log

from .shim import LogSink

__all__ = ["Redactor", "log_sink"]

#: Environment names whose values are secrets, and are cut out of every message and log line.
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CONNECTION_STRING", "API_KEY")
#: Shorter values are not treated as secrets (they would mangle ordinary text); the job token always is.
_MIN_SECRET_LENGTH = 6


class Redactor:
    """Replaces secrets (the job token, secret-named variables) in text meant for messages and logs."""

    def __init__(self, secrets: Sequence[str]) -> None:
        # Longest first, so a secret containing another is cut out whole.
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    @classmethod
    def for_env(cls, env: Mapping[str, str], *extra: str | None) -> Redactor:
        found = [
            value
            for name, value in env.items()
            if len(value) >= _MIN_SECRET_LENGTH and any(word in name.upper() for word in _SECRET_WORDS)
        ]
        return cls([*found, *(e for e in extra if e)])

    def joined(self, other: Redactor) -> Redactor:
        return Redactor([*self._secrets, *other._secrets])

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def log_sink(log: Log, handler: str, redact: Redactor, uid: str | None = None) -> LogSink:
    """Where the compat ``logger`` of handler code writes: the daemon's log, tagged, secrets removed."""

    def sink(level: int, message: str, exc_text: str | None) -> None:
        method = (
            log.debug
            if level < logging.INFO
            else log.info
            if level < logging.WARNING
            else log.warning
            if level < logging.ERROR
            else log.error
        )
        fields: dict[str, Any] = {"handler": handler}
        if uid is not None:
            fields["uid"] = uid
        if exc_text:
            fields["exception"] = redact(exc_text)
        method(redact(message), **fields)

    return sink
