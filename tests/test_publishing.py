"""Publishes go many to a socket write, with aiormq's own confirm books: on the real broker, every one
is confirmed and arrives whole (a body past the frame size included), and one the broker returns
(its hold queue gone) counts as not confirmed, so the scheduler publishes that fire directly."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest

from daemon.bus.amqp import PUBLISH_SLICE, CommandHold, ConfirmedPublisher, connect
from daemon.contracts import EVENTS_EXCHANGE, HOLD_PREFIX, Outgoing


@pytest.fixture
async def connection(vhost_url: str) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    conn = await connect(vhost_url, name="publishing test")
    yield conn
    await conn.close()


def _event(n: int, body: bytes | None = None) -> Outgoing:
    uid = str(uuid.uuid4())
    headers = (("traceparent", f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"),)
    return Outgoing(f"job.completed.{uid}", f"event-{n}", body or f'{{"n":{n}}}'.encode(), headers)


async def test_a_batch_longer_than_a_slice_is_confirmed_and_arrives_whole(
    connection: aio_pika.abc.AbstractRobustConnection,
) -> None:
    publisher = ConfirmedPublisher(connection)
    await publisher.start()
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(EVENTS_EXCHANGE, "job.#")
    big = b'{"logs":"' + b"x" * 400_000 + b'"}'  # past the 128 KiB frame: several body frames
    events = [_event(n) for n in range(PUBLISH_SLICE * 2 + 7)]
    events[PUBLISH_SLICE + 1] = _event(PUBLISH_SLICE + 1, big)

    assert await publisher.publish(events) == [True] * len(events)

    received: dict[str, aio_pika.abc.AbstractIncomingMessage] = {}
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            assert message.message_id is not None
            received[message.message_id] = message
            if len(received) == len(events):
                break
    for sent in events:
        got = received[sent.message_id]
        assert got.body == sent.body
        assert (got.type, got.routing_key) == (sent.routing_key, sent.routing_key)
        assert got.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert got.content_type == "application/cloudevents+json"
        assert dict(got.headers) == dict(sent.headers)
    await publisher.close()


async def test_a_held_command_whose_hold_queue_is_gone_is_not_confirmed(
    connection: aio_pika.abc.AbstractRobustConnection,
) -> None:
    hold = CommandHold(connection)
    await hold.start()
    due_ms = round(time.time() * 1000) + 60_000
    assert await hold.hold([_event(1)], due_ms) == [True]
    channel = await connection.channel()
    await channel.queue_delete(f"{HOLD_PREFIX}{due_ms}")  # gone under the holder, which declared it

    outcome = await hold.hold([_event(n) for n in range(2, 5)], due_ms)

    assert outcome == [False, False, False], "returned by the broker (mandatory): published directly instead"
    await asyncio.gather(hold.close(), channel.close())
