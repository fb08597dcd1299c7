"""Bursts of fires held in the broker ahead of their instant, and the ``replace`` overlap policy.

A burst (``schedule_burst`` fires or more due at one instant) is published up to
``schedule_lead_seconds`` early into a hold queue that releases it at the instant. These tests use a
burst of two or three so that a handful of schedules exercise the path the benchmark measures.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from helpers import JOB, poll_until
from test_schedules import at_least_runs, recurring, runs_of

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus, Outgoing


def bursty(settings: Settings, *, burst: int, lead: float) -> Settings:
    return settings.model_copy(update={"schedule_burst": burst, "schedule_lead_seconds": lead})


@pytest.fixture
async def held_copies(vhost_url: str) -> AsyncIterator[list[tuple[str, str]]]:
    """(message id, hold queue) of every ``job.start`` that reached the command exchange from a hold queue."""
    seen: list[tuple[str, str]] = []
    connection = await aio_pika.connect(vhost_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("dm-job.commands", aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "job.start")

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        deaths = (message.headers or {}).get("x-death") or []
        assert isinstance(deaths, list)
        for death in deaths:
            assert isinstance(death, dict)
            seen.append((str(message.message_id), str(death.get("queue"))))

    await queue.consume(on_message, no_ack=True)
    try:
        yield seen
    finally:
        await connection.close()


async def test_a_burst_is_held_in_the_broker_and_each_fire_starts_one_run(
    settings: Settings, vhost_url: str, held_copies: list[tuple[str, str]]
) -> None:
    async with (
        Daemon(bursty(settings, burst=3, lead=3.0), vhost_url),
        await JobdClient.connect(vhost_url) as client,
    ):
        uids = [str((await client.start(recurring("* * * * * *"))).uid) for _ in range(3)]
        runs = {uid: await at_least_runs(client, uid, 3) for uid in uids}

        async def held_ones() -> list[tuple[str, str]] | None:
            return list(held_copies) if len(held_copies) >= 3 else None

        held = await poll_until(held_ones, what="fires released from a hold queue")
        for uid in uids:
            await client.stop(uid)
    assert all(queue.startswith("dm-job.hold.") for _, queue in held), held
    assert {message_id.split(":")[1] for message_id, _ in held} <= set(uids)
    for uid, its_runs in runs.items():
        fires = Counter(run.scheduled_for for run in its_runs)
        assert max(fires.values()) == 1, (uid, fires)


async def test_a_held_fire_of_a_schedule_paused_since_is_skipped_when_it_arrives(
    settings: Settings, vhost_url: str
) -> None:
    async with (
        Daemon(bursty(settings, burst=2, lead=4.0), vhost_url),
        await JobdClient.connect(vhost_url) as client,
        client.events(keys=["schedule.#"]) as events,
    ):
        paused_uid, other_uid = [str((await client.start(recurring("*/5 * * * * *"))).uid) for _ in range(2)]
        while True:  # a fire held at least a second ahead of its instant, so the pause lands before it
            key, body = await events.raw(timeout=20)
            data = json.loads(body)["data"]
            if key == f"schedule.fired.{paused_uid}":
                instant = datetime.fromisoformat(data["scheduledFor"])
                if (instant - datetime.now(UTC)).total_seconds() >= 1.0:
                    break
        paused = await client.schedule("pause", paused_uid)
        assert paused.schedule is not None and paused.schedule.state == "paused"
        while True:
            key, body = await events.raw(timeout=20)
            data = json.loads(body)["data"]
            if key == f"schedule.skipped.{paused_uid}":
                break
        assert datetime.fromisoformat(data["scheduledFor"]) == instant
        assert "paused" in data["message"]
        other_runs = await poll_until(
            lambda: _runs_at(client, other_uid, instant), what="the other schedule's run at the instant"
        )
        assert len(other_runs) == 1
        assert all(run.scheduled_for != instant for run in await runs_of(client, paused_uid))
        await client.stop(paused_uid)
        await client.stop(other_uid)


async def _runs_at(client: JobdClient, uid: str, instant: datetime) -> list[Any] | None:
    found = [run for run in await runs_of(client, uid) if run.scheduled_for == instant]
    return found or None


async def test_a_held_fire_that_never_arrives_is_published_again(settings: Settings, vhost_url: str) -> None:
    """The broker loses held messages only if it crashes as it releases them; the audit covers that."""
    dropped: list[str] = []

    async def lose(commands: Sequence[Outgoing], due: datetime) -> list[bool]:
        dropped.extend(c.message_id for c in commands)
        return [True] * len(commands)  # "confirmed", then lost

    async with (
        Daemon(bursty(settings, burst=2, lead=2.0), vhost_url) as jobd,
        await JobdClient.connect(vhost_url) as client,
    ):
        assert jobd.scheduler.held is not None
        jobd.scheduler.held.hold = lose
        jobd.scheduler.held.audit_after = 0.2
        uids = [str((await client.start(recurring("* * * * * *"))).uid) for _ in range(2)]
        runs = {uid: await at_least_runs(client, uid, 2) for uid in uids}
        for uid in uids:
            await client.stop(uid)
    assert dropped, "fires went through the hold"
    started = {
        f"schedule:{uid}:{run.scheduled_for.astimezone(UTC).isoformat()}" for uid in uids for run in runs[uid]
    }
    assert started & set(dropped), "a lost held fire was started after all"
    for its_runs in runs.values():
        assert max(Counter(run.scheduled_for for run in its_runs).values()) == 1


async def test_replace_stops_the_active_run_and_starts_the_new_one(client: JobdClient, tmp_path: Any) -> None:
    entity = recurring("0 0 1 1 *", overlap="replace")
    entity["applicationInput"] = {
        "type": JOB,
        "runner": {"type": "dmss://WorkflowDS/Blueprints/Shell", "script": "sleep 60"},
    }
    uid = str((await client.start(entity)).uid)
    assert (await client.schedule("trigger", uid)).message == "fired now"
    (first,) = await at_least_runs(client, uid, 1)

    async def status_is(run_uid: str, status: JobStatus) -> bool | None:
        return True if (await client.status(run_uid)).status is status else None

    await poll_until(lambda: status_is(first.uid, JobStatus.RUNNING), what="the first run to be running")
    assert (await client.schedule("trigger", uid)).message == "fired now"
    first_again, second = await at_least_runs(client, uid, 2)
    assert first_again.uid == first.uid
    await poll_until(lambda: status_is(first.uid, JobStatus.REMOVED), what="the first run to be stopped")
    await poll_until(lambda: status_is(second.uid, JobStatus.RUNNING), what="the second run to be running")
    await client.stop(second.uid)
    await client.stop(uid)
