"""Everything that speaks AMQP, and the only module that imports aio-pika.

The daemon side declares the topology, consumes commands, publishes events with confirms and answers
on reply queues; the client side makes RPC calls over direct reply-to and subscribes to events. Both
sit on robust connections, which redeclare what they declared after the broker comes back.

A broker URL may name several brokers, comma-separated: the nodes of one cluster. Every connection
made here (the robust ones, the answers' own) tries them in turn, at connect and on every reconnect,
so a node that goes away sends its clients to the next one instead of keeping them waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from yarl import URL

from daemon.bus.acks import AckWindow
from daemon.bus.message import Answerer, BusUnavailable, Delivery, Handler, Verdict
from daemon.contracts import (
    CLOUDEVENTS_CONTENT_TYPE,
    COMMAND_BINDINGS,
    COMMAND_QUEUE,
    COMMANDS_EXCHANGE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DIRECT_REPLY_TO,
    EVENTS_EXCHANGE,
    HOLD_PREFIX,
    JSON_CONTENT_TYPE,
    REPLICAS_EXCHANGE,
    Outgoing,
    Trace,
)

__all__ = [
    "AmqpBus",
    "AmqpUnavailable",
    "AnsweringConsumer",
    "BrokerRefused",
    "BrokerUnreachable",
    "CommandConsumer",
    "CommandHold",
    "ConfirmedPublisher",
    "Connection",
    "DeadLetterLimits",
    "EventSubscription",
    "IdentityResponder",
    "Replier",
    "RpcClient",
    "broker_address",
    "broker_urls",
    "connect",
    "connect_once",
    "connect_when_up",
    "declare_topology",
]

#: A hold queue deletes itself this long after its last declaration: long past the instant it serves.
HOLD_EXPIRES_MS = 15 * 60 * 1000


class AmqpUnavailable(BusUnavailable):
    """The broker could not take a publish (outage, closed channel, negative confirm)."""


T = TypeVar("T")

#: Connection failures that no wait will cure: the broker answered, and said no.
_REFUSALS = (
    aiormq.exceptions.ProbableAuthenticationError,
    aiormq.exceptions.AuthenticationError,
    aiormq.exceptions.ConnectionNotAllowed,
)


def broker_urls(url: str | Sequence[str]) -> list[str]:
    """The brokers a URL setting names: one URL, or several separated by commas (one cluster's nodes).

    A comma inside a password is written ``%2C``, as any reserved character in a URL's user part.
    """
    parts = url.split(",") if isinstance(url, str) else list(url)
    urls = [part.strip() for part in parts if part.strip()]
    if not urls:
        raise ValueError("no broker URL")
    return urls


class FailoverConnection(aio_pika.RobustConnection):
    """A robust connection over the nodes of one cluster: after each lost connection or failed attempt,
    the next attempt goes to the next node, round the list.

    Why a subclass: aio-pika's robust connection reconnects to its one URL for ever, so a node that is
    gone for good would keep its clients from the nodes that still run. Each of its attempts, first
    or reconnect, connects to ``self.url``, and each loss or failed attempt passes through
    ``_on_connection_close`` before the next: moving ``url`` on there is the whole of failover, and the
    rest (restoring channels, declarations, consumers, the reconnect callbacks) stays aio-pika's.
    """

    def __init__(self, urls: Sequence[URL], first: int = 0, **kwargs: Any) -> None:
        self._urls = list(urls)
        self._at = first
        super().__init__(self._urls[first], **kwargs)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        await super()._on_connection_close(closing)
        if len(self._urls) > 1 and not self._close_called and not self.is_closed:
            self._at = (self._at + 1) % len(self._urls)
            self.url = self._urls[self._at]


async def _first_up(urls: Sequence[URL], first: int, attempt: Callable[[int], Awaitable[T]]) -> tuple[int, T]:
    """``attempt`` on each node in turn from ``first``: the first that connects, and its index.

    None connecting: a refusal if any node refused (the credentials are the cluster's, so waiting
    would not help), else the last node's failure.
    """
    refusal: BaseException | None = None
    failure: BaseException | None = None
    for step in range(len(urls)):
        at = (first + step) % len(urls)
        try:
            return at, await attempt(at)
        except _REFUSALS as exc:
            refusal = exc
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
            failure = exc
    raise (refusal or failure or ConnectionError("no broker URL"))


def _with_interval(url: str, reconnect_interval: float) -> URL:
    parsed = URL(url)
    if "reconnect_interval" not in parsed.query:
        parsed = parsed.update_query(reconnect_interval=str(reconnect_interval))
    return parsed


async def connect(
    url: str | Sequence[str],
    *,
    name: str = "dm-jobd",
    reconnect_interval: float = 0.5,
    timeout: float | None = None,
) -> AbstractRobustConnection:
    """Open a robust connection to the first node that answers; consumers and declarations come back
    by themselves after an outage, on whichever node answers then (:class:`FailoverConnection`)."""
    urls = [_with_interval(u, reconnect_interval) for u in broker_urls(url)]

    async def attempt(at: int) -> FailoverConnection:
        connection = FailoverConnection(urls, at, client_properties={"connection_name": name})
        try:
            await connection.connect(timeout=timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise
        return connection

    _, connection = await _first_up(urls, 0, attempt)
    return connection


#: The daemon's broker connection, as the rest of the daemon names its type.
Connection = AbstractRobustConnection


class BrokerRefused(Exception):
    """The broker refused the connection (credentials, virtual host): waiting would not help."""


class BrokerUnreachable(Exception):
    """No broker answered at the URL's address (not running, wrong host or port, a firewall)."""


def broker_address(url: str | Sequence[str]) -> str:
    """``host:port/vhost`` of a broker URL, or of each of several: what messages may show of them
    (never the credentials)."""
    return ", ".join(_address(u) for u in broker_urls(url))


def _address(url: str) -> str:
    parsed = URL(url)
    port = parsed.port or (5671 if parsed.scheme == "amqps" else 5672)
    vhost = parsed.path[1:] if parsed.path not in ("", "/") else ""
    return f"{parsed.host}:{port}" + (f" (virtual host {vhost!r})" if vhost else "")


def _scrubbed(exc: BaseException, url: str | Sequence[str]) -> str:
    """An error's text without any of the URLs' passwords, as written or percent-decoded."""
    text = str(exc) or type(exc).__name__
    for one in broker_urls(url):
        parsed = URL(one)  # yarl decodes some escapes (%2C) even in raw_password: the text as written too
        secrets = {parsed.password, parsed.raw_password, urlsplit(one).password}
        for secret in sorted((s for s in secrets if s), key=len, reverse=True):
            text = text.replace(secret, "***")
    return text


async def connect_once(
    url: str | Sequence[str], *, name: str, timeout: float = 10.0
) -> AbstractRobustConnection:
    """Connect, or fail at once with :class:`BrokerRefused` / :class:`BrokerUnreachable`.

    For clients and tools: a person at a prompt wants one clear line now, not a wait for a broker
    that may never come (the daemon waits instead, with :func:`connect_when_up`). With several URLs,
    each node is tried once, in order; the error names every address.
    """
    try:
        return await connect(url, name=name, timeout=timeout)
    except _REFUSALS as exc:
        raise BrokerRefused(
            f"the broker at {broker_address(url)} refused the connection: {_scrubbed(exc, url)}"
        ) from None
    except (aiormq.exceptions.AMQPError, ConnectionError, OSError, TimeoutError) as exc:
        raise BrokerUnreachable(
            f"no broker answers at {broker_address(url)}: {_scrubbed(exc, url)}"
        ) from None


async def connect_when_up(
    url: str | Sequence[str],
    *,
    log: Callable[..., Any],
    name: str = "dm-jobd",
    backoff: float = 0.2,
    backoff_max: float = 5.0,
) -> AbstractRobustConnection:
    """Connect, waiting for the broker with a growing back-off: one log line per failed attempt.

    A daemon started before its broker (a compose file, a restart of both) comes up when the broker
    does instead of exiting. Each attempt tries every node of several URLs once. A refusal (wrong
    password, no such virtual host) raises ``BrokerRefused``.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await connect(url, name=name)
        except _REFUSALS as exc:
            raise BrokerRefused(
                f"the broker at {broker_address(url)} refused the connection: {_scrubbed(exc, url)}"
            ) from None
        except (aiormq.exceptions.AMQPError, ConnectionError, OSError, TimeoutError) as exc:
            log(
                "the broker is not reachable; waiting",
                attempt=attempt,
                address=broker_address(url),
                error=_scrubbed(exc, url),
                retry_in=backoff,
            )
        await asyncio.sleep(backoff)  # a back-off between attempts, not a synchronisation
        backoff = min(backoff * 2, backoff_max)


async def _replace_channel(
    connection: AbstractRobustConnection, old: AbstractChannel | None, *, confirms: bool
) -> AbstractChannel:
    """A new channel in place of one that is closed while its connection is up again.

    Why: aio-pika's robust channels sometimes fail to come back after a broker restart (their close
    callback finds the connection closed and gives up), leaving a robust connection with a dead
    channel for ever. The old one is closed for good first, so it cannot come back beside the new one.
    """
    if connection.is_closed:
        raise AmqpUnavailable("the broker connection is down; waiting for it to come back")
    if old is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(old.close(), 5)
    try:
        return await connection.channel(publisher_confirms=confirms)
    except Exception as exc:
        raise AmqpUnavailable(f"cannot open a channel: {exc}") from exc


@dataclass(frozen=True)
class DeadLetterLimits:
    """How much the dead-letter queue keeps: the newest ``max_length`` messages, none older than the age.

    Queue arguments, so the broker enforces them. They are fixed when the queue is first declared: a
    queue made before (by an older dm-jobd) keeps what it has, and the daemon says how to add a policy.
    """

    max_length: int = 100_000
    max_age_seconds: float = 14 * 86400

    def arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-max-length": self.max_length,
            "x-overflow": "drop-head",
            "x-message-ttl": int(self.max_age_seconds * 1000),
        }

    def policy_hint(self) -> str:
        definition = f'{{"max-length":{self.max_length},"message-ttl":{int(self.max_age_seconds * 1000)}}}'
        pattern = f"^{DEAD_LETTER_QUEUE}$"
        return f"rabbitmqctl set_policy --apply-to queues dm-job-dead-letter '{pattern}' '{definition}'"


async def declare_dead_letter_queue(
    connection: AbstractRobustConnection, limits: DeadLetterLimits, log: Callable[..., Any]
) -> None:
    """Declare the dead-letter queue with its limits, on a channel of its own.

    A queue that exists with other arguments makes the broker close the declaring channel
    (PRECONDITION_FAILED): that costs only this throwaway channel, and the queue is kept as it is.
    """
    channel = await connection.channel()
    try:
        await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True, arguments=limits.arguments())
    except aiormq.exceptions.ChannelPreconditionFailed:
        log(
            "the dead-letter queue exists with other arguments, so its length and age limits are not "
            "applied; a broker policy applies them",
            queue=DEAD_LETTER_QUEUE,
            policy=limits.policy_hint(),
        )
    finally:
        if not channel.is_closed:
            await channel.close()


async def declare_topology(channel: AbstractChannel, *, delivery_limit: int) -> AbstractQueue:
    """Declare the exchanges and queues of the wire contract; returns the command queue.

    The dead-letter queue is declared beforehand (:func:`declare_dead_letter_queue`); here it is only
    looked up, whatever arguments it has.
    """
    commands = await channel.declare_exchange(COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    dead = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    dead_queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
    await dead_queue.bind(dead, "#")
    queue = await channel.declare_queue(
        COMMAND_QUEUE,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        },
    )
    for key in COMMAND_BINDINGS:
        await queue.bind(commands, key)
    return queue


def _delivery(message: AbstractIncomingMessage) -> Delivery:
    headers = message.headers or {}
    count = headers.get("x-delivery-count", 0)
    trace = Trace.parse(_text(headers.get("traceparent")), _text(headers.get("tracestate")))
    return Delivery(
        body=message.body,
        kind=message.type,
        routing_key=message.routing_key,
        message_id=message.message_id,
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
        user_id=message.user_id,
        redelivered=bool(message.redelivered),
        delivery_count=count if isinstance(count, int) else 0,
        trace=trace,
    )


def _text(value: object) -> object:
    """A header value as text: AMQP long strings may arrive as bytes."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class CommandConsumer:
    """Consumes the command queue, one task per delivery, bounded by the prefetch count.

    The handler returns a verdict and an optional answer. The answer is handed to ``answer`` (the
    :class:`Replier`, on a connection of its own) and the delivery is settled whatever becomes of the
    answer: a reply address that cannot take it is that command's problem alone.
    """

    def __init__(
        self,
        connection: AbstractRobustConnection,
        handler: Handler,
        *,
        answer: Answerer,
        prefetch: int,
        delivery_limit: int,
        dead_letters: DeadLetterLimits | None = None,
        on_error: Callable[[Exception], None] = lambda exc: None,
        log: Callable[..., Any] = lambda event, **kw: None,
    ) -> None:
        self._connection = connection
        self._dead_letters = dead_letters or DeadLetterLimits()
        self._on_error = on_error
        self._log = log
        self._answer = answer
        self._handler = handler
        self._prefetch = prefetch
        self._delivery_limit = delivery_limit
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._watchdog: asyncio.Task[None] | None = None
        #: Acks waiting for the end of this turn of the loop, per channel (tags are per channel).
        self._windows: dict[aiormq.abc.AbstractChannel, AckWindow] = {}
        self._acking: asyncio.Task[None] | None = None

    async def start(self, *, check_every: float = 2.0) -> None:
        await self._consume(await self._connection.channel())
        self._watchdog = asyncio.create_task(self._watch(check_every), name="command channel watchdog")

    async def _consume(self, channel: AbstractChannel) -> None:
        self._channel = channel
        await declare_dead_letter_queue(self._connection, self._dead_letters, self._log)
        await channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await declare_topology(channel, delivery_limit=self._delivery_limit)
        self._tag = await self._queue.consume(self._on_message)

    async def _watch(self, every: float) -> None:
        """Consume again on a fresh channel if the robust one stays closed while its connection is up.

        A channel closed twice in a row, ``every`` seconds apart, with the connection open, is one
        aio-pika did not restore after a broker restart: without this the daemon would consume nothing.
        """
        closed_before = False
        while True:
            await asyncio.sleep(every)  # a periodic check, not a synchronisation
            closed = self._channel is None or self._channel.is_closed
            if closed and closed_before and not self._connection.is_closed:
                try:
                    await self._consume(
                        await _replace_channel(self._connection, self._channel, confirms=False)
                    )
                except Exception as exc:
                    self._log("the command channel cannot be opened again yet", error=str(exc))
                else:
                    self._log("the command channel did not come back with the connection; consuming anew")
                closed = False
            closed_before = closed

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika already runs each delivery in a task of its own: process it right here.
        self._in_flight += 1
        self._idle.clear()
        try:
            await self._settle(message)
        except Exception as exc:  # the channel went away: the broker redelivers what was not settled
            self._on_error(exc)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _settle(self, message: AbstractIncomingMessage) -> None:
        verdict, answer = await self._handler(_delivery(message))
        if answer is not None and message.reply_to:
            headers = answer.trace.headers() if answer.trace is not None else {}
            self._answer(message.reply_to, message.correlation_id, answer.body, headers)
        channel, tag = message.channel, message.delivery_tag
        assert tag is not None  # consumed with acks: every delivery has a tag
        window = self._windows.get(channel)
        if window is None:
            window = self._windows[channel] = AckWindow()
        if verdict is Verdict.ACK:
            window.ack(tag)  # sent with the others settled in this turn of the loop
            if self._acking is None or self._acking.done():
                self._acking = asyncio.create_task(self._send_acks())
            return
        if verdict is Verdict.DEAD_LETTER:
            await message.reject(requeue=False)
        else:
            await message.nack(requeue=True)
        window.settled(tag)

    async def _send_acks(self) -> None:
        """Send the acks queued so far: a channel's settled prefix as one ``multiple`` ack.

        A channel that closed meanwhile takes its acks with it: the broker delivers those commands
        again, and their effects being stored, they are answered from the store.
        """
        while any(window.pending for window in self._windows.values()):  # more may come meanwhile
            for channel, window in list(self._windows.items()):
                try:
                    for tag, multiple in window.take():
                        await channel.basic_ack(tag, multiple=multiple, wait=False)
                except Exception as exc:
                    self._on_error(exc)
                if channel.is_closed:
                    del self._windows[channel]

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop consuming, then let the commands already taken finish and settle (within ``timeout``).

        Bounded, because with the broker gone nothing can be settled: what is unsettled is redelivered
        and, its effect being in the store, answered from there.
        """
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(BaseException):
                await self._watchdog
            self._watchdog = None
        if self._queue is not None and self._tag is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._queue.cancel(self._tag), timeout)
            self._tag = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        await self._send_acks()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._channel.close(), timeout)


@dataclass
class _Reply:
    reply_to: str
    correlation_id: str | None
    body: bytes
    #: Monotonic time after which nobody waits for it any more.
    deadline: float
    #: AMQP headers: the trace context of the answer.
    headers: dict[str, str] = field(default_factory=dict)
    #: In flight when the broker closed the connection for an internal error: it may be the cause.
    suspect: bool = False


class Replier:
    """Publishes RPC answers on a connection of its own, so that no answer can hurt other work.

    Why its own connection: RabbitMQ closes the whole *connection* (541, INTERNAL_ERROR) of a client
    that publishes to a forged direct reply-to address (``amq.rabbitmq.reply-to.`` and a token naming
    a node that is not there). On the consumer's connection that would cut every delivery in flight.
    Here it costs a reconnect of this connection alone. Answers are published with confirms; those in
    flight when the connection closed with 541 are suspects and are published again one at a time, so
    the one that closes it again is known: it is dropped and logged once, the others are delivered.
    Answers wait for the broker while it is away, each until its ``ttl`` is over. With several broker
    URLs it connects to the first node that answers, starting from the one after the node it lost.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        *,
        log: Callable[..., Any],
        ttl: float = 30.0,
        max_pending: int = 10_000,
        timeout: float = 5.0,
        name: str = "dm-jobd answers",
    ) -> None:
        self._url = url
        self._urls = [URL(u) for u in broker_urls(url)]
        self._at = 0
        self._log = log
        self._ttl = ttl
        self._max_pending = max_pending
        self._timeout = timeout
        self._name = name
        self._pending: list[_Reply] = []
        self._wake = asyncio.Event()
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="answers")

    def send(
        self, reply_to: str, correlation_id: str | None, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        """Queue an answer; never blocks and never raises (the consumer settles right after)."""
        if len(self._pending) >= self._max_pending:
            dropped = self._pending.pop(0)
            self._log(
                "answer dropped", reason="too many answers wait for the broker", reply_to=dropped.reply_to
            )
        loop = asyncio.get_running_loop()
        self._pending.append(
            _Reply(reply_to, correlation_id, body, loop.time() + self._ttl, dict(headers or {}))
        )
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.1
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            now = loop.time()
            if self._pending[0].deadline < now:  # the oldest first: late ones are at the front
                late = [r for r in self._pending if r.deadline < now]
                self._pending = [r for r in self._pending if r.deadline >= now]
                for reply in late:
                    self._log(
                        "answer dropped", reason="the broker took no answer in time", reply_to=reply.reply_to
                    )
                continue
            try:
                channel = await self._open()
            except Exception as exc:
                if self._closing:
                    return
                self._log("answers wait for the broker", error=_scrubbed(exc, self._url), retry_in=backoff)
                await asyncio.sleep(backoff)  # a back-off between attempts, not a synchronisation
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            suspect = next((r for r in self._pending if r.suspect), None)
            if suspect is not None:  # one at a time, so a second close names its cause
                self._pending.remove(suspect)
                batch = [suspect]
            else:
                batch, self._pending = self._pending, []
            outcomes = await self._publish(channel, batch)
            failed = [r for r, error in zip(batch, outcomes, strict=True) if error is not None]
            if not failed:
                continue
            await self._reset()
            internal = any(isinstance(e, aiormq.exceptions.ConnectionInternalError) for e in outcomes)
            if internal and len(batch) == 1 and batch[0].suspect:
                culprit = batch[0]
                self._log(
                    "answer dropped",
                    reason="its reply address made the broker close the connection",
                    reply_to=culprit.reply_to[:120],
                )
                continue
            for reply in failed:
                reply.suspect = reply.suspect or internal
            self._pending[:0] = failed

    async def _open(self) -> AbstractChannel:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        await self._reset()

        async def attempt(at: int) -> aio_pika.abc.AbstractConnection:
            return await aio_pika.connect(
                self._urls[at], client_properties={"connection_name": self._name}, timeout=self._timeout
            )

        self._at, connection = await _first_up(self._urls, self._at, attempt)
        self._connection = connection
        self._channel = await connection.channel(publisher_confirms=True)
        return self._channel

    async def _publish(self, channel: AbstractChannel, batch: Sequence[_Reply]) -> list[BaseException | None]:
        """The answers, many to a socket write; for each, why it failed (None: confirmed)."""
        messages = [
            (
                reply.reply_to,
                reply.body,
                spec.Basic.Properties(
                    content_type=JSON_CONTENT_TYPE,
                    correlation_id=reply.correlation_id,
                    headers=dict(reply.headers) or None,
                ),
            )
            for reply in batch
        ]
        # mandatory off: a direct reply-to answer bounces otherwise; a vanished queue just drops it
        try:
            return await asyncio.wait_for(_publish_outcomes(channel, "", messages), self._timeout)
        except TimeoutError as exc:
            return [exc] * len(batch)

    async def _reset(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            # The node it was on went away or closed it: the next connection tries the next node first.
            self._at = (self._at + 1) % len(self._urls)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), self._timeout)

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (within ``timeout``), then close."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        await self._reset()


def _properties(m: Outgoing, content_type: str, *, expiration_ms: int | None = None) -> spec.Basic.Properties:
    """A persistent message whose AMQP ``type`` mirrors its routing key (the command consumer reads it)."""
    return spec.Basic.Properties(
        content_type=content_type,
        message_id=m.message_id,
        delivery_mode=2,
        message_type=m.routing_key,
        expiration=str(expiration_ms) if expiration_ms is not None else None,
        headers=dict(m.headers) or None,
    )


#: Publishes sent in one socket write; a longer batch is split so no write holds the loop for long.
PUBLISH_SLICE = 256


async def _publish_all(
    channel: AbstractChannel,
    exchange: str,
    messages: Sequence[tuple[str, bytes, spec.Basic.Properties]],
    *,
    mandatory: bool = False,
) -> list[bool]:
    """Publish ``(routing key, body, properties)`` on a confirming channel and wait for every confirm;
    ``True`` where the broker confirmed, ``False`` for a nack, a return (mandatory) or a lost channel.

    Why not ``Exchange.publish``: one publish there is a lock, a drain and a socket write of its own,
    about 100 us of CPU; here a slice of publishes is one write, about 25 us each (scripts/bench).
    It keeps aiormq's own books (delivery tags, confirmations, message ids of returnable messages),
    so confirms, nacks and returns resolve as they do for ``basic_publish``.
    """
    return [
        error is None for error in await _publish_outcomes(channel, exchange, messages, mandatory=mandatory)
    ]


async def _publish_outcomes(
    channel: AbstractChannel,
    exchange: str,
    messages: Sequence[tuple[str, bytes, spec.Basic.Properties]],
    *,
    mandatory: bool = False,
) -> list[BaseException | None]:
    """:func:`_publish_all`, with why each one failed: None where the broker confirmed."""
    try:
        raw = cast(aiormq.Channel, await channel.get_underlay_channel())
    except Exception as exc:
        return [exc] * len(messages)
    confirmations: list[asyncio.Future[Any]] = []
    unwritten: BaseException | None = None
    for start in range(0, len(messages), PUBLISH_SLICE):
        try:
            part = messages[start : start + PUBLISH_SLICE]
            confirmations += await _write_slice(raw, exchange, part, mandatory)
        except Exception as exc:  # the channel closed: what was not written is not confirmed
            unwritten = exc
            break
    outcomes = await asyncio.gather(*confirmations, return_exceptions=True)
    errors: list[BaseException | None] = [
        None
        if isinstance(outcome, spec.Basic.Ack)
        else outcome
        if isinstance(outcome, BaseException)
        else aiormq.exceptions.DeliveryError(None, outcome)  # a nack, or a return (mandatory)
        for outcome in outcomes
    ]
    return errors + [unwritten] * (len(messages) - len(errors))


async def _write_slice(
    raw: aiormq.Channel,
    exchange: str,
    messages: Sequence[tuple[str, bytes, spec.Basic.Properties]],
    mandatory: bool,
) -> list[asyncio.Future[Any]]:
    frames: list[Any] = []
    confirmations: list[asyncio.Future[Any]] = []
    async with raw.lock:  # delivery tags are given in the order frames reach the socket
        first = raw.delivery_tag
        for routing_key, body, properties in messages:
            raw.delivery_tag += 1
            tag = raw.delivery_tag
            confirmation = raw.create_future()
            raw.confirmations[tag] = confirmation
            if mandatory and properties.message_id:  # a return names its message by id
                raw.message_id_delivery_tag[properties.message_id] = tag
                confirmation.add_done_callback(functools.partial(_forget_id, raw, properties.message_id, tag))
            confirmations.append(confirmation)
            frames.append(spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory))
            frames.append(ContentHeader(properties=properties, body_size=len(body)))
            step = raw.max_content_size
            frames.extend(ContentBody(body[at : at + step]) for at in range(0, len(body), step))
        try:
            await raw.write_queue.put(ChannelFrame.marshall(channel_number=raw.number, frames=frames))
        except BaseException:  # not written: the tags are free again, and nothing waits for them
            for tag in range(first + 1, raw.delivery_tag + 1):
                raw.confirmations.pop(tag, None)
            raw.delivery_tag = first
            for confirmation in confirmations:
                confirmation.cancel()
            raise
    return confirmations


def _forget_id(raw: aiormq.Channel, message_id: str, tag: int, _: object) -> None:
    if raw.message_id_delivery_tag.get(message_id) == tag:
        del raw.message_id_delivery_tag[message_id]


class ConfirmedPublisher:
    """Publishes to one exchange on a confirming channel: events to ``dm-job.events``, the scheduler's
    commands to ``dm-job.commands``; the AMQP ``type`` mirrors each message's routing key."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        *,
        exchange: str = EVENTS_EXCHANGE,
        content_type: str = CLOUDEVENTS_CONTENT_TYPE,
    ) -> None:
        self._connection = connection
        self._exchange_name = exchange
        self._content_type = content_type
        self._channel: AbstractChannel | None = None
        #: The exchange is declared on ``_channel`` (publishes name it; the object is not needed).
        self._declared = False

    async def start(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.declare_exchange(self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True)
        self._declared = True

    async def _heal(self) -> None:
        """Open a fresh channel when the robust one did not come back with its connection."""
        self._declared = False
        self._channel = await _replace_channel(self._connection, self._channel, confirms=True)
        try:
            await self._channel.declare_exchange(
                self._exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            self._declared = True
        except Exception as exc:
            raise AmqpUnavailable(f"cannot declare {self._exchange_name}: {exc}") from exc

    async def publish(self, messages: Sequence[Outgoing]) -> list[bool]:
        """Publish all, wait for every confirm; ``True`` where the broker confirmed."""
        if not self._declared or self._channel is None or self._channel.is_closed:
            await self._heal()  # AmqpUnavailable while the connection is down
        assert self._channel is not None
        content_type = self._content_type
        batch = [(m.routing_key, m.body, _properties(m, content_type)) for m in messages]
        return await _publish_all(self._channel, self._exchange_name, batch)

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()


class CommandHold:
    """Holds commands in the broker until an instant, then lets the broker route them to the command queue.

    Why: the broker moves 10,000 expired messages to the command queue in a fraction of a second,
    while publishing them one by one at that instant takes several seconds. Each instant gets its own
    durable queue (``dm-job.hold.<epoch ms>``), so every message in it expires at the same moment and
    none waits behind one that is due later; the queue deletes itself when it has long been unused.
    Messages expire into ``dm-job.commands`` under their own routing key (``job.start``).
    """

    def __init__(self, connection: AbstractRobustConnection, *, routing_key: str = "job.start") -> None:
        self._connection = connection
        self._routing_key = routing_key
        self._channel: AbstractChannel | None = None
        self._declared: dict[int, asyncio.Task[None]] = {}

    async def start(self) -> None:
        self._channel = await self._connection.channel(publisher_confirms=True)

    async def _declare(self, due_ms: int) -> None:
        assert self._channel is not None
        await self._channel.declare_queue(
            f"{HOLD_PREFIX}{due_ms}",
            durable=True,
            arguments={
                "x-queue-type": "classic",
                "x-dead-letter-exchange": COMMANDS_EXCHANGE,
                "x-dead-letter-routing-key": self._routing_key,
                "x-expires": HOLD_EXPIRES_MS,
            },
        )

    async def hold(self, messages: Sequence[Outgoing], due_ms: int) -> list[bool]:
        """Publish ``messages`` to be delivered at ``due_ms`` (epoch milliseconds); ``True`` where confirmed.

        A message whose hold queue vanished is returned by the broker (mandatory) and counts as not
        confirmed, so the caller publishes it directly instead of losing it.
        """
        if self._channel is None or self._channel.is_closed:
            self._channel = await _replace_channel(self._connection, self._channel, confirms=True)
            self._declared.clear()
        channel = self._channel
        declared = self._declared.get(due_ms)
        if declared is None:
            now_ms = time.time() * 1000
            for old in [k for k in self._declared if k < now_ms]:
                del self._declared[old]
            declared = self._declared[due_ms] = asyncio.ensure_future(self._declare(due_ms))
        try:
            await asyncio.shield(declared)
        except Exception as exc:
            self._declared.pop(due_ms, None)
            raise AmqpUnavailable(f"could not declare the hold queue: {exc}") from exc
        queue = f"{HOLD_PREFIX}{due_ms}"

        confirmed: list[bool] = []
        for start in range(0, len(messages), PUBLISH_SLICE):
            # The broker counts the time to live from when it takes the message: computed per slice,
            # at the last moment, so a burst written over a few hundred ms still expires at one instant.
            ttl = max(1, due_ms - round(time.time() * 1000))
            batch = [
                (queue, m.body, _properties(m, JSON_CONTENT_TYPE, expiration_ms=ttl))
                for m in messages[start : start + PUBLISH_SLICE]
            ]
            confirmed += await _publish_all(channel, "", batch, mandatory=True)
        return confirmed

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()


class IdentityResponder:
    """Answers ``identify`` on the replicas exchange with this replica's identity (its store).

    An exclusive queue of its own, so it goes with the connection: a replica that dies stops
    answering at once, and one that comes back after an outage answers again (robust channel).
    """

    def __init__(self, connection: AbstractRobustConnection, identity: bytes) -> None:
        self._connection = connection
        self._identity = identity
        self._channel: AbstractChannel | None = None

    async def start(self) -> None:
        self._channel = channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            REPLICAS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "identify")
        await queue.consume(self._on_identify, no_ack=True)

    async def _on_identify(self, message: AbstractIncomingMessage) -> None:
        if not message.reply_to or self._channel is None:
            return
        answer = aio_pika.Message(
            self._identity, content_type=JSON_CONTENT_TYPE, correlation_id=message.correlation_id
        )
        with contextlib.suppress(Exception):  # a vanished asker loses only its answer
            await self._channel.default_exchange.publish(answer, routing_key=message.reply_to)

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
            self._channel = None


async def identify(connection: AbstractRobustConnection, timeout: float) -> list[bytes]:
    """Ask the running replicas who they are: their answers, once every consumer of the command queue
    has answered or ``timeout`` seconds have passed (none consuming: no question asked)."""
    expected = await queue_consumers(connection, COMMAND_QUEUE) or 0
    if not expected:
        return []
    channel = await connection.channel()
    answers: list[bytes] = []
    enough = asyncio.Event()
    try:
        exchange = await channel.declare_exchange(
            REPLICAS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        replies = await channel.get_queue(DIRECT_REPLY_TO, ensure=False)

        async def on_reply(message: AbstractIncomingMessage) -> None:
            answers.append(message.body)
            if len(answers) >= expected:
                enough.set()

        await replies.consume(on_reply, no_ack=True)
        ask = aio_pika.Message(b"{}", content_type=JSON_CONTENT_TYPE, reply_to=DIRECT_REPLY_TO)
        await exchange.publish(ask, routing_key="identify", mandatory=False)
        with contextlib.suppress(TimeoutError):  # an older daemon does not answer: what came is all
            await asyncio.wait_for(enough.wait(), timeout)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return answers


class RpcClient:
    """Sends commands and awaits their answers over RabbitMQ's direct reply-to.

    A command sent while the connection is down (its node went away, another is being reached) waits
    for the connection to come back, within the command's timeout, instead of failing at once.
    """

    def __init__(self, connection: AbstractRobustConnection) -> None:
        self._connection = connection
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        #: Set while the reply channel is open on a live connection.
        self._ready = asyncio.Event()

    async def start(self) -> None:
        await self._open()
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        self._connection.close_callbacks.add(self._on_close)

    async def _open(self) -> None:
        # Direct reply-to is a pseudo-queue a robust channel cannot redeclare after a reconnect, so
        # this channel is opened afresh on every reconnect instead of being restored.
        self._channel = await self._connection.channel(publisher_confirms=False)
        self._exchange = await self._channel.declare_exchange(
            COMMANDS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        replies = await self._channel.get_queue(DIRECT_REPLY_TO, ensure=False)
        await replies.consume(self._on_reply, no_ack=True)
        self._ready.set()

    def _on_close(self, *_: Any) -> None:
        """Answers to requests sent before the outage are gone (direct reply-to keeps nothing): fail them
        now rather than at their timeout, and hold new requests until the reply channel is back."""
        self._ready.clear()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("the broker connection was lost before the answer came"))
        self._waiting.clear()

    async def _on_reconnect(self, *_: Any) -> None:
        self._on_close()
        old, self._channel = self._channel, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        await self._open()

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._waiting.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message.body)

    async def send(
        self,
        kind: str,
        body: bytes,
        *,
        message_id: str | None = None,
        expect_reply: bool = True,
        timeout: float = 30.0,
        headers: Mapping[str, str] | None = None,
    ) -> bytes | None:
        """Publish one command; with ``expect_reply`` wait for its answer (``TimeoutError`` past timeout).

        A request whose connection is lost before its answer comes raises ``ConnectionError``: sending
        it again is safe for a start (its ``message_id`` is its idempotency key) and for every query.
        """
        if self._exchange is None:
            raise RuntimeError("RpcClient.start() was not called")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self._ready.is_set():  # failing over to another node: wait for it, within the timeout
            await asyncio.wait_for(self._ready.wait(), timeout)
        exchange = self._exchange
        correlation_id = uuid.uuid4().hex
        message = aio_pika.Message(
            body,
            content_type=JSON_CONTENT_TYPE,
            message_id=message_id or uuid.uuid4().hex,
            type=kind,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=correlation_id if expect_reply else None,
            reply_to=DIRECT_REPLY_TO if expect_reply else None,
            headers=dict(headers) if headers else None,
        )
        future: asyncio.Future[bytes] | None = None
        if expect_reply:
            future = self._waiting[correlation_id] = loop.create_future()
        try:
            try:
                await exchange.publish(message, routing_key=kind, mandatory=False)
            except CONNECTION_EXCEPTIONS as exc:  # lost in the instant between ready and sent
                raise ConnectionError(
                    f"the broker connection was lost before the command was sent: {exc}"
                ) from None
            if future is None:
                return None
            return await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
        finally:
            self._waiting.pop(correlation_id, None)

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()


class EventSubscription:
    """A private queue bound to ``dm-job.events``; iterate it for the raw event bodies."""

    def __init__(self, connection: AbstractRobustConnection, keys: Sequence[str]) -> None:
        self._connection = connection
        self._keys = tuple(keys)
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def start(self) -> None:
        self._channel = await self._connection.channel()
        exchange = await self._channel.declare_exchange(
            EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self._keys:
            await self._queue.bind(exchange, key)
        await self._queue.consume(self._on_event, no_ack=True)

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait((message.routing_key or "", message.body))

    async def get(self, timeout: float | None = None) -> tuple[str, bytes]:
        """The next event's routing key and body."""
        return await asyncio.wait_for(self._inbox.get(), timeout)

    async def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        while True:
            yield await self._inbox.get()

    async def close(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()


class AnsweringConsumer:
    """The command consumer with the :class:`Replier` that sends its answers; stopped together."""

    def __init__(self, consumer: CommandConsumer, replier: Replier) -> None:
        self.commands = consumer
        self.replier = replier

    async def stop(self, timeout: float = 5.0) -> None:
        await self.commands.stop(timeout)
        await self.replier.close(timeout)


class AmqpBus:
    """The bus on RabbitMQ: one robust connection for the daemon's channels, one of its own for answers."""

    def __init__(
        self,
        url: str,
        *,
        log: Callable[..., Any] = lambda event, **kw: None,
        dead_letters: DeadLetterLimits | None = None,
    ) -> None:
        self._url = url
        self._log = log
        self._dead_letters = dead_letters or DeadLetterLimits()
        self._connection: AbstractRobustConnection | None = None

    @property
    def connection(self) -> AbstractRobustConnection:
        if self._connection is None:
            raise RuntimeError("AmqpBus.open() was not called")
        return self._connection

    @property
    def connected(self) -> bool:
        """Up now: a robust connection that is reconnecting has ``connected`` cleared until it is back."""
        return self._connection is not None and self._connection.connected.is_set()

    async def open(self) -> None:
        self._connection = await connect_when_up(self._url, log=self._log)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def event_publisher(self) -> ConfirmedPublisher:
        publisher = ConfirmedPublisher(self.connection)
        await publisher.start()
        return publisher

    async def command_publisher(self) -> ConfirmedPublisher:
        publisher = ConfirmedPublisher(
            self.connection, exchange=COMMANDS_EXCHANGE, content_type=JSON_CONTENT_TYPE
        )
        await publisher.start()
        return publisher

    async def holder(self) -> CommandHold:
        hold = CommandHold(self.connection)
        await hold.start()
        return hold

    async def identify(self, timeout: float) -> list[bytes]:
        return await identify(self.connection, timeout)

    async def answer_identify(self, identity: bytes) -> IdentityResponder:
        responder = IdentityResponder(self.connection, identity)
        await responder.start()
        return responder

    async def subscribe(self, keys: Sequence[str]) -> EventSubscription:
        subscription = EventSubscription(self.connection, keys)
        await subscription.start()
        return subscription

    async def consume(
        self,
        handler: Handler,
        *,
        prefetch: int,
        delivery_limit: int,
        on_error: Callable[[Exception], None],
    ) -> AnsweringConsumer:
        replier = Replier(self._url, log=self._log)
        replier.start()
        consumer = CommandConsumer(
            self.connection,
            handler,
            answer=replier.send,
            prefetch=prefetch,
            delivery_limit=delivery_limit,
            dead_letters=self._dead_letters,
            on_error=on_error,
            log=self._log,
        )
        try:
            await consumer.start()
        except BaseException:
            await replier.close()
            raise
        return AnsweringConsumer(consumer, replier)


async def queue_consumers(connection: AbstractRobustConnection, name: str) -> int | None:
    """Consumers on a queue, or None when it does not exist: the health check's signal."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelClosed:
        return None
    count = int(queue.declaration_result.consumer_count or 0)
    await channel.close()
    return count
