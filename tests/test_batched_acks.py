"""Acks go in batches (one ``multiple`` ack for a settled prefix), yet a command still being handled is
never acked with the others: on the real broker, counted by ``rabbitmqctl``, and redelivered after its
connection is cut."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aio_pika
import pytest
from helpers import poll_until

from daemon.bus.amqp import CommandConsumer, connect
from daemon.bus.message import Delivery, Reply, Verdict
from daemon.contracts import COMMAND_QUEUE, COMMANDS_EXCHANGE
from daemon.localbroker import LocalBroker

FAST = 40


class Handler:
    """Holds the command called ``slow`` until released; settles every other at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.handled: list[str] = []

    async def __call__(self, delivery: Delivery) -> tuple[Verdict, Reply | None]:
        name = delivery.body.decode()
        if name == "slow":
            self.slow_started.set()
            await self.release.wait()
        self.handled.append(name)
        return (Verdict.DEAD_LETTER if name.startswith("bad") else Verdict.ACK), None


@pytest.fixture
async def connection(vhost_url: str) -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    conn = await connect(vhost_url, name="acks test")
    yield conn
    await conn.close()


async def _consumer(conn: aio_pika.abc.AbstractRobustConnection, handler: Handler) -> CommandConsumer:
    consumer = CommandConsumer(conn, handler, answer=lambda *a: None, prefetch=100, delivery_limit=5)
    await consumer.start()
    return consumer


async def _publish(conn: aio_pika.abc.AbstractRobustConnection, names: list[str]) -> None:
    channel = await conn.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(COMMANDS_EXCHANGE)
    for name in names:
        await exchange.publish(aio_pika.Message(name.encode(), type="job.status"), routing_key="job.status")
    await channel.close()


async def _counts(broker: LocalBroker, vhost_url: str) -> tuple[int, int]:
    """(ready, unacknowledged) of the command queue, as the broker counts them now."""
    vhost = urlsplit(vhost_url).path.lstrip("/")
    out = await broker.ctl(
        "list_queues",
        "-p",
        vhost,
        "-q",
        "--no-table-headers",
        "name",
        "messages_ready",
        "messages_unacknowledged",
    )
    for line in out.splitlines():
        name, ready, unacked = line.split()
        if name == COMMAND_QUEUE:
            return int(ready), int(unacked)
    raise AssertionError(f"no {COMMAND_QUEUE} in {out!r}")


async def _settled_to(broker: LocalBroker, vhost_url: str, counts: tuple[int, int]) -> bool | None:
    return True if await _counts(broker, vhost_url) == counts else None


async def _handled(handler: Handler, count: int) -> bool | None:
    return True if len(handler.handled) >= count else None


async def test_a_command_still_handled_is_not_acked_with_those_after_it(
    broker: LocalBroker, vhost_url: str, connection: aio_pika.abc.AbstractRobustConnection
) -> None:
    handler = Handler()
    consumer = await _consumer(connection, handler)
    await _publish(connection, ["slow", *(f"fast{i}" for i in range(FAST)), "bad"])
    await poll_until(lambda: _handled(handler, FAST + 1), what="the fast commands and the bad one")
    await poll_until(lambda: _settled_to(broker, vhost_url, (0, 1)), what="all settled but the slow one")
    assert handler.slow_started.is_set() and "slow" not in handler.handled

    # The connection cut (as a SIGKILL would leave it): the slow command comes back, and it alone.
    await consumer.stop(timeout=0.1)  # its handler still waits: nothing settles it
    await connection.close()
    again = Handler()
    again.release.set()
    async with await connect(vhost_url, name="acks test, again") as second:
        await _consumer(second, again)
        await poll_until(lambda: _handled(again, 1), what="the redelivery")
        await poll_until(lambda: _settled_to(broker, vhost_url, (0, 0)), what="the redelivery settled")
    assert again.handled == ["slow"], "only the command that was never settled came back"


async def test_commands_settled_together_leave_nothing_unacked(
    broker: LocalBroker, vhost_url: str, connection: aio_pika.abc.AbstractRobustConnection
) -> None:
    handler = Handler()
    handler.release.set()
    consumer = await _consumer(connection, handler)
    await _publish(connection, [f"fast{i}" for i in range(FAST)])
    await poll_until(lambda: _settled_to(broker, vhost_url, (0, 0)), what="every command acked")
    assert len(handler.handled) == FAST
    await consumer.stop()
