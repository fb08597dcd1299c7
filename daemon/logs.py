"""structlog set-up: JSON lines for machines, readable lines on a terminal, secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure", "redact"]

_SECRET_KEY = re.compile(r"token|secret|password|passwd|credential|authorization|access.?key", re.I)
_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+@")
#: Libraries whose debug lines hold raw AMQP frames, which no redaction can read into.
_FRAME_DUMPERS = ("aiormq", "aio_pika")


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Last line of defence: values under secret-looking keys and passwords in URLs never reach a log."""
    for key, value in list(event.items()):
        if _SECRET_KEY.search(key) and value is not None:
            event[key] = "***"
        elif isinstance(value, str) and "@" in value:
            event[key] = _URL_PASSWORD.sub(r"\1***@", value)
    return event


def configure(*, fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog and the standard library's logging process-wide: called once by the CLI.

    The libraries beneath (aiormq, aio-pika, asyncio, httpx, warnings) log through the standard
    library; their records go through the same processors and renderer, so in JSON mode every line
    the daemon writes is one JSON object, a traceback included (as its ``exception`` field).
    """
    as_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    exceptions: Any = structlog.processors.format_exc_info if as_json else structlog.dev.set_exc_info
    numeric = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, redact, exceptions, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact,
                exceptions,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in _FRAME_DUMPERS:  # at debug they print whole frames: command bodies, tokens and all
        logging.getLogger(name).setLevel(max(numeric, logging.INFO))
    logging.captureWarnings(True)
