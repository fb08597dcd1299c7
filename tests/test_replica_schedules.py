"""Schedules across replicas: every replica schedules every schedule, one publishes each fire.

Three daemons on one PostgreSQL store and one broker; a spy queue on the command exchange sees every
``job.start`` that reaches it (published at the instant or released from a hold queue), so a fire
published by two replicas shows as two copies of one message id.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator

import aio_pika
import pytest
from helpers import poll_until
from pydantic import SecretStr
from test_schedules import at_least_runs, recurring

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings


@pytest.fixture
async def start_copies(vhost_url: str) -> AsyncIterator[Counter[str]]:
    """How many copies of each scheduled fire's ``job.start`` reached the command exchange."""
    seen: Counter[str] = Counter()
    connection = await aio_pika.connect(vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("dm-job.commands", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "job.start")

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        if str(message.message_id).startswith("schedule:"):
            seen[str(message.message_id)] += 1

    await queue.consume(on_message, no_ack=True)
    try:
        yield seen
    finally:
        await connection.close()


def replica(settings: Settings, postgres_url: str, name: str, **update: object) -> Settings:
    return settings.model_copy(
        update={"store": SecretStr(postgres_url), "state_dir": settings.state_dir.parent / name, **update}
    )


@pytest.mark.parametrize("burst", [False, True], ids=["at-the-instant", "held-in-the-broker"])
async def test_three_replicas_publish_each_fire_once(
    settings: Settings, vhost_url: str, postgres_url: str, start_copies: Counter[str], burst: bool
) -> None:
    held = {"schedule_burst": 3, "schedule_lead_seconds": 2.0} if burst else {"schedule_lead_seconds": 0.0}
    async with contextlib.AsyncExitStack() as stack:
        daemons = [
            await stack.enter_async_context(Daemon(replica(settings, postgres_url, n, **held), vhost_url))
            for n in ("a", "b", "c")
        ]
        client = await stack.enter_async_context(await JobdClient.connect(vhost_url))
        uids = [str((await client.start(recurring("* * * * * *", overlap="allow"))).uid) for _ in range(4)]

        async def all_schedule_them() -> bool | None:
            return True if all(d.scheduler.scheduled == len(uids) for d in daemons) else None

        await poll_until(all_schedule_them, what="every replica to schedule every schedule")
        runs = {uid: await at_least_runs(client, uid, 4) for uid in uids}
        for uid in uids:
            await client.stop(uid)
    for uid, its_runs in runs.items():
        fires = Counter(run.scheduled_for for run in its_runs)
        assert max(fires.values()) == 1, (uid, fires)
    assert len(start_copies) >= 4 * len(uids)
    twice = {message_id: n for message_id, n in start_copies.items() if n > 1}
    assert not twice, f"fires published more than once: {twice}"
