"""dm-job's ``utils.logging``: ``from utils.logging import logger`` writes to the daemon's log.

The adapter binds a sink (level number, message) around every handler call, so handler log lines land
in the daemon's structured log tagged with the handler and job, with secrets already removed there.
"""

from __future__ import annotations

import logging as _stdlib_logging
import traceback
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

__all__ = ["Logger", "logger"]

#: Receives (level number, message, traceback text or None).
Sink = Callable[[int, str, str | None], None]

_current: ContextVar[Sink | None] = ContextVar("dmjob_compat_log_sink", default=None)


def _fallback(level: int, message: str, exc_text: str | None) -> None:
    """Where lines go before any sink is installed: the standard library's logging."""
    suffix = f"\n{exc_text}" if exc_text else ""
    _stdlib_logging.getLogger("dmjob.handler").log(level, "%s%s", message, suffix)


#: Used outside any bound call (e.g. threads a handler starts itself): the last sink installed.
_default: list[Sink] = [_fallback]


def _use_sink(sink: Sink) -> Token[Sink | None]:
    """Bind ``sink`` for the current thread of execution; the adapter calls this around handler calls."""
    return _current.set(sink)


def _reset_sink(token: Token[Sink | None]) -> None:
    """Undo :func:`_use_sink`."""
    _current.reset(token)


def _set_default_sink(sink: Sink) -> None:
    """The sink used where no call is bound."""
    _default[0] = sink


class Logger:
    """The part of ``logging.Logger`` dm-job handlers call, writing to the bound sink."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.level = _stdlib_logging.NOTSET
        self.disabled = False

    def setLevel(self, level: int | str) -> None:  # dm-job handlers call the stdlib spelling
        """Handlers raise the level around noisy libraries, as they did with dm-job's logger."""
        if isinstance(level, str):
            resolved = _stdlib_logging.getLevelName(level.upper())
            level = resolved if isinstance(resolved, int) else _stdlib_logging.INFO
        self.level = level

    def getEffectiveLevel(self) -> int:
        return self.level

    def isEnabledFor(self, level: int) -> bool:
        return not self.disabled and level >= self.level

    def log(self, level: int, msg: object, *args: object, exc_info: Any = None, **_: Any) -> None:
        """Format like the standard library (``msg % args``) and hand the line to the sink."""
        if not self.isEnabledFor(level):
            return
        text = str(msg)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError):
                text = " ".join([text, *map(str, args)])
        exc_text = _format_exc_info(exc_info)
        sink = _current.get() or _default[0]
        sink(level, text, exc_text)

    def debug(self, msg: object, *args: object, **kw: Any) -> None:
        self.log(_stdlib_logging.DEBUG, msg, *args, **kw)

    def info(self, msg: object, *args: object, **kw: Any) -> None:
        self.log(_stdlib_logging.INFO, msg, *args, **kw)

    def warning(self, msg: object, *args: object, **kw: Any) -> None:
        self.log(_stdlib_logging.WARNING, msg, *args, **kw)

    warn = warning

    def error(self, msg: object, *args: object, **kw: Any) -> None:
        self.log(_stdlib_logging.ERROR, msg, *args, **kw)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        self.log(_stdlib_logging.ERROR, msg, *args, exc_info=exc_info, **kw)

    def critical(self, msg: object, *args: object, **kw: Any) -> None:
        self.log(_stdlib_logging.CRITICAL, msg, *args, **kw)

    fatal = critical


def _format_exc_info(exc_info: Any) -> str | None:
    if not exc_info:
        return None
    if isinstance(exc_info, BaseException):
        return "".join(traceback.format_exception(exc_info))
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[1] is not None:
        return "".join(traceback.format_exception(exc_info[1]))
    text = traceback.format_exc()
    return None if text.strip() == "NoneType: None" else text


#: dm-job named its logger "API".
logger = Logger("API")
