"""The bus in memory: the daemon's whole command and event flow without a broker, for fast tests.

Dramatiq's ``StubBroker`` in spirit. Exchanges route by topic as RabbitMQ's do; the command queue
hands a requeued command back with its delivery count raised and dead-letters it past the delivery
limit; held commands are released at their instant by the injected :class:`~daemon.clock.Clock`;
answers reach :meth:`MemoryBus.request`; every published message is kept for assertions. What only a
real broker can show (reconnects, confirms lost in an outage, a forged ``reply_to``) stays with the
tests against RabbitMQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from daemon.bus.message import BusUnavailable, Delivery, Handler, Verdict
from daemon.clock import Clock, SystemClock
from daemon.contracts import COMMAND_BINDINGS, COMMANDS_EXCHANGE, EVENTS_EXCHANGE, Outgoing, Trace

__all__ = ["MemoryBus", "topic_matches"]

#: The ``reply_to`` of :meth:`MemoryBus.request`; answers to any other address are kept, not routed.
REPLY_TO = "memory.reply-to"


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split on ``.``; ``*`` is exactly one word, ``#`` zero or more."""
    words, keys = pattern.split("."), key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(words):
            return j == len(keys)
        if words[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(keys) + 1))
        return j < len(keys) and words[i] in ("*", keys[j]) and match(i + 1, j + 1)

    return match(0, 0)


@dataclass(frozen=True, slots=True)
class _Command:
    message: Outgoing
    reply_to: str | None = None
    correlation_id: str | None = None
    user_id: str | None = None
    delivery_count: int = 0

    def delivery(self) -> Delivery:
        return Delivery(
            body=self.message.body,
            kind=self.message.routing_key,
            routing_key=self.message.routing_key,
            message_id=self.message.message_id,
            reply_to=self.reply_to,
            correlation_id=self.correlation_id,
            user_id=self.user_id,
            redelivered=self.delivery_count > 0,
            delivery_count=self.delivery_count,
            trace=Trace.parse(*(dict(self.message.headers).get(h) for h in ("traceparent", "tracestate"))),
        )


@dataclass
class _Identity:
    bus: MemoryBus
    identity: bytes

    async def close(self) -> None:
        if self in self.bus._identities:
            self.bus._identities.remove(self)


class MemoryBus:
    """One in-memory broker; it outlives the daemons that use it, as a broker outlives its clients.

    ``available = False`` makes the daemon's publishes and holds fail with :class:`BusUnavailable`
    (an outage, as the relays and the scheduler see it); the test's own commands still go through.
    ``published`` holds every message by exchange, ``dead_letters`` the refused commands, ``answers``
    every answer sent, ``held`` every held command with its instant.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.available = True
        self.published: dict[str, list[Outgoing]] = defaultdict(list)
        self.dead_letters: list[Delivery] = []
        self.answers: list[tuple[str, str | None, bytes]] = []
        #: The AMQP headers each answer in ``answers`` was sent with (its trace context).
        self.answer_headers: list[dict[str, str]] = []
        self._identities: list[_Identity] = []
        self.held: list[tuple[int, Outgoing]] = []
        self._queue: asyncio.Queue[_Command] = asyncio.Queue()
        self._unsettled = 0
        self._settled = asyncio.Event()
        self._routed = asyncio.Event()
        self._subscriptions: list[_Subscription] = []
        self._waiting: dict[str, asyncio.Future[bytes]] = {}
        self._timers: set[asyncio.Task[None]] = set()

    # -- the daemon's side (the Bus protocol) --------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.available

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        """A client's connection closing: the broker and what it holds stay (see :meth:`shutdown`)."""

    async def event_publisher(self) -> _Publisher:
        return _Publisher(self, EVENTS_EXCHANGE)

    async def command_publisher(self) -> _Publisher:
        return _Publisher(self, COMMANDS_EXCHANGE)

    async def holder(self) -> _Holder:
        return _Holder(self)

    async def identify(self, timeout: float) -> list[bytes]:
        return [responder.identity for responder in self._identities]

    async def answer_identify(self, identity: bytes) -> _Identity:
        responder = _Identity(self, identity)
        self._identities.append(responder)
        return responder

    async def subscribe(self, keys: Sequence[str]) -> _Subscription:
        subscription = _Subscription(self, tuple(keys))
        self._subscriptions.append(subscription)
        return subscription

    async def consume(
        self,
        handler: Handler,
        *,
        prefetch: int,
        delivery_limit: int,
        on_error: Callable[[Exception], None],
    ) -> _Consumer:
        return _Consumer(self, handler, prefetch=prefetch, delivery_limit=delivery_limit, on_error=on_error)

    # -- routing -------------------------------------------------------------------------------------

    def route(self, exchange: str, message: Outgoing, **properties: Any) -> None:
        """Publish one message to an exchange, as a confirmed publish would."""
        self.published[exchange].append(message)
        if exchange == COMMANDS_EXCHANGE:
            if any(topic_matches(b, message.routing_key) for b in COMMAND_BINDINGS):
                self._enqueue(_Command(message, **properties))
        elif exchange == EVENTS_EXCHANGE:
            for subscription in self._subscriptions:
                subscription.offer(message)
        self._routed.set()

    def _enqueue(self, command: _Command) -> None:
        self._unsettled += 1
        self._settled.clear()
        self._queue.put_nowait(command)

    def _done(self) -> None:
        self._unsettled -= 1
        if not self._unsettled:
            self._settled.set()

    def _answer(
        self, reply_to: str, correlation_id: str | None, body: bytes, headers: Mapping[str, str]
    ) -> None:
        self.answers.append((reply_to, correlation_id, body))
        self.answer_headers.append(dict(headers))
        waiting = self._waiting.pop(correlation_id or "", None) if reply_to == REPLY_TO else None
        if waiting is not None and not waiting.done():
            waiting.set_result(body)

    def _release_at(self, due_ms: int, messages: Sequence[Outgoing]) -> None:
        async def release() -> None:
            await self.clock.sleep(due_ms / 1000 - self.clock.now().timestamp())
            for message in messages:
                self.published[COMMANDS_EXCHANGE].append(message)
                self._enqueue(_Command(message))

        task = asyncio.create_task(release(), name=f"hold {due_ms}")
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    # -- a client's side -----------------------------------------------------------------------------

    def send(
        self,
        kind: str,
        payload: Mapping[str, Any] | bytes,
        *,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        **properties: Any,
    ) -> str:
        """Publish a command without waiting for an answer; returns its message id."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        message_id = message_id or uuid.uuid4().hex
        message = Outgoing(kind, message_id, body, tuple((headers or {}).items()))
        self.route(COMMANDS_EXCHANGE, message, **properties)
        return message_id

    async def request(
        self,
        kind: str,
        payload: Mapping[str, Any] | bytes,
        *,
        message_id: str | None = None,
        user_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Send a command and wait (in real time, bounded) for its answer, decoded."""
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = future
        try:
            self.send(
                kind,
                payload,
                message_id=message_id,
                reply_to=REPLY_TO,
                correlation_id=correlation_id,
                user_id=user_id,
                headers=headers,
            )
            answer: dict[str, Any] = json.loads(await asyncio.wait_for(future, timeout))
            return answer
        finally:
            self._waiting.pop(correlation_id, None)

    async def join(self, timeout: float = 5.0) -> None:
        """Wait until every command routed so far is settled (StubBroker's ``join``)."""
        async with asyncio.timeout(timeout):
            while self._unsettled:
                await self._settled.wait()

    def events(self, prefix: str = "") -> list[dict[str, Any]]:
        """The events published so far whose routing key starts with ``prefix``, decoded."""
        return [
            json.loads(m.body) for m in self.published[EVENTS_EXCHANGE] if m.routing_key.startswith(prefix)
        ]

    async def wait_for_event(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first published event (earlier or later) that satisfies ``predicate``."""
        seen = 0
        async with asyncio.timeout(timeout):
            while True:
                messages = self.published[EVENTS_EXCHANGE]
                for message in messages[seen:]:
                    event: dict[str, Any] = json.loads(message.body)
                    if predicate(event):
                        return event
                seen = len(messages)
                self._routed.clear()
                await self._routed.wait()

    async def shutdown(self) -> None:
        """The broker itself going away: pending holds are dropped."""
        for task in list(self._timers):
            task.cancel()
        await asyncio.gather(*self._timers, return_exceptions=True)


class _Publisher:
    def __init__(self, bus: MemoryBus, exchange: str) -> None:
        self._bus = bus
        self._exchange = exchange

    async def publish(self, messages: Sequence[Outgoing]) -> list[bool]:
        if not self._bus.available:
            raise BusUnavailable("the in-memory broker is unavailable")
        for message in messages:
            self._bus.route(self._exchange, message)
        return [True] * len(messages)

    async def close(self) -> None:
        pass


class _Holder:
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus

    async def hold(self, messages: Sequence[Outgoing], due_ms: int) -> list[bool]:
        if not self._bus.available:
            raise BusUnavailable("the in-memory broker is unavailable")
        self._bus.held.extend((due_ms, m) for m in messages)
        self._bus._release_at(due_ms, list(messages))
        return [True] * len(messages)

    async def close(self) -> None:
        pass


class _Subscription:
    def __init__(self, bus: MemoryBus, keys: tuple[str, ...]) -> None:
        self._bus = bus
        self._keys = keys
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    def offer(self, message: Outgoing) -> None:
        if any(topic_matches(key, message.routing_key) for key in self._keys):
            self._inbox.put_nowait((message.routing_key, message.body))

    async def __aiter__(self) -> AsyncIterator[tuple[str, bytes]]:
        while True:
            yield await self._inbox.get()

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self._bus._subscriptions.remove(self)


class _Consumer:
    """Takes commands up to ``prefetch`` at a time; settles each by its handler's verdict."""

    def __init__(
        self,
        bus: MemoryBus,
        handler: Handler,
        *,
        prefetch: int,
        delivery_limit: int,
        on_error: Callable[[Exception], None],
    ) -> None:
        self._bus = bus
        self._handler = handler
        self._delivery_limit = delivery_limit
        self._on_error = on_error
        self._slots = asyncio.Semaphore(prefetch)
        self._in_hand: set[asyncio.Task[None]] = set()
        self._task = asyncio.create_task(self._run(), name="memory consumer")

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                command = await self._bus._queue.get()
            except asyncio.CancelledError:
                self._slots.release()
                raise
            task = asyncio.create_task(self._settle(command), name="memory delivery")
            self._in_hand.add(task)
            task.add_done_callback(self._in_hand.discard)

    async def _settle(self, command: _Command) -> None:
        bus = self._bus
        try:
            try:
                verdict, answer = await self._handler(command.delivery())
            except Exception as exc:  # as on a real channel: unsettled, so delivered again
                self._on_error(exc)
                verdict, answer = Verdict.RETRY, None
            if answer is not None and command.reply_to:
                headers = answer.trace.headers() if answer.trace is not None else {}
                bus._answer(command.reply_to, command.correlation_id, answer.body, headers)
            if verdict is Verdict.DEAD_LETTER:
                bus.dead_letters.append(command.delivery())
            elif verdict is Verdict.RETRY:
                again = replace(command, delivery_count=command.delivery_count + 1)
                if again.delivery_count > self._delivery_limit:
                    bus.dead_letters.append(again.delivery())
                else:
                    bus._enqueue(again)
        finally:
            self._slots.release()
            bus._done()

    async def stop(self, timeout: float = 5.0) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        if self._in_hand:
            await asyncio.wait(set(self._in_hand), timeout=timeout)
