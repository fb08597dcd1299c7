"""What crosses the bus boundary, free of any AMQP library's types: a delivery, a verdict, the errors.

The dispatcher and the relays speak only these, so the real bus (:mod:`daemon.bus.amqp`) and the
in-memory one (:mod:`daemon.bus.memory`) are interchangeable under them.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from daemon.contracts import Trace

__all__ = ["Answerer", "BusUnavailable", "Delivery", "Handler", "Reply", "Verdict"]


class BusUnavailable(Exception):
    """The broker cannot take or confirm messages now (it is away, or a channel is being reopened)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One command as it arrived."""

    body: bytes
    kind: str | None
    routing_key: str | None
    message_id: str | None
    reply_to: str | None
    correlation_id: str | None
    user_id: str | None
    redelivered: bool
    delivery_count: int
    #: The W3C trace context its ``traceparent``/``tracestate`` headers carried (None: none, or invalid).
    trace: Trace | None = None


class Verdict(enum.Enum):
    """What the consumer does with a delivery once its handler returns."""

    #: Done: its effect is durable (or it was answered with an error that is nobody's fault).
    ACK = "ack"
    #: Refused input: rejected without requeue, so the broker dead-letters it.
    DEAD_LETTER = "dead-letter"
    #: A failure of ours: requeued, for another try up to the queue's delivery limit.
    RETRY = "retry"


class Reply(NamedTuple):
    """An answer: its JSON body, and the trace context to send along as headers."""

    body: bytes
    trace: Trace | None = None


#: Handles one delivery: the verdict and the answer to send to its ``reply_to`` (if any).
Handler = Callable[[Delivery], Awaitable[tuple[Verdict, Reply | None]]]

#: Where a consumer hands an answer: ``(reply_to, correlation_id, body, headers)``; never blocks or raises.
Answerer = Callable[[str, str | None, bytes, Mapping[str, str]], None]
