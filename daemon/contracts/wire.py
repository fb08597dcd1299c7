"""The names on the wire: exchanges, queues, bindings, content types, and one message to publish.

Defined once here, so the bus, the schema generator, the CLI and the scripts cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "CLOUDEVENTS_CONTENT_TYPE",
    "COMMANDS_EXCHANGE",
    "COMMAND_BINDINGS",
    "COMMAND_QUEUE",
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "DIRECT_REPLY_TO",
    "EVENTS_EXCHANGE",
    "HOLD_PREFIX",
    "JSON_CONTENT_TYPE",
    "REPLICAS_EXCHANGE",
    "Outgoing",
    "broker_url_problem",
]

#: Topic exchange the commands are published to; the routing key names the command (``job.start``).
COMMANDS_EXCHANGE = "dm-job.commands"
#: The quorum queue every daemon consumes commands from.
COMMAND_QUEUE = "dm-job.commands"
#: The command queue's bindings on :data:`COMMANDS_EXCHANGE`.
COMMAND_BINDINGS = ("job.*", "schedule.*", "runner.*", "replica.*")
#: Where refused and exhausted commands go (a topic exchange), and the quorum queue that keeps them.
DEAD_LETTER_EXCHANGE = "dm-job.dead-letter"
DEAD_LETTER_QUEUE = "dm-job.dead-letter"
#: Topic exchange of the CloudEvents, routed ``job.<status>.<uid>`` and ``schedule.<event>.<uid>``.
EVENTS_EXCHANGE = "dm-job.events"
#: Topic exchange the replicas answer ``identify`` on (which store they use), apart from the command
#: queue so a backlog of commands never delays the answer.
REPLICAS_EXCHANGE = "dm-job.replicas"
#: Prefix of the per-instant queues that hold a burst of scheduled starts until it is due.
HOLD_PREFIX = "dm-job.hold."
#: RabbitMQ's direct reply-to pseudo-queue, the clients' default ``reply_to``.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
JSON_CONTENT_TYPE = "application/json"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to publish: an event from the outbox, or a command from the scheduler.

    The one type from the store to the bus: events are written to the outbox as these, read back as
    these, and published as these; the bus adds the AMQP properties (``type`` mirrors the routing key).
    """

    routing_key: str
    message_id: str
    body: bytes
    #: AMQP headers to publish with it: the job's trace context (``traceparent``, ``tracestate``).
    headers: tuple[tuple[str, str], ...] = ()


def broker_url_problem(url: str) -> str | None:
    """What is wrong with a broker URL, or None: refused at once, never retried for ever.

    The message never repeats the URL, which may hold a password.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        # Not the parser's words: for ``amqp://user:secret`` they quote the password as the "port".
        return "not a broker URL (its host or port cannot be read); expected amqp://user:password@host:5672/vhost"
    if parts.scheme not in ("amqp", "amqps"):
        shown = f"{parts.scheme!r}" if parts.scheme else "none"
        return f"not a broker URL: the scheme must be amqp or amqps (got {shown}); expected amqp://user:password@host:5672/vhost"
    if not parts.hostname:
        return "not a broker URL: it names no host; expected amqp://user:password@host:5672/vhost"
    if port == 0:
        return "not a broker URL: port 0"
    return None
