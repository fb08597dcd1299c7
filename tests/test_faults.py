"""Regression tests for the faults and hostile input that once broke the daemon's promises.

Each reproduces one finding with the real broker and its own tools: connections cut through the
management API, a forged direct reply-to address, hostile JSON, a runner that fails underneath.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from helpers import JOB, NOOP, ended, events_until, poll_until, shell_job

from daemon.app import Daemon
from daemon.bus.amqp import AmqpBus, AnsweringConsumer, CommandConsumer, ConfirmedPublisher
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus
from daemon.localbroker import LocalBroker
from daemon.store.records import JobRecord, ScheduleRecord
from daemon.store.sqlite import SqliteStore

FORGED = "amq.rabbitmq.reply-to.g2dkABFyYWJiaXRAbm93aGVyZQAAAAAAAAAAAA==.x"


def _noop(label: str) -> bytes:
    return json.dumps({"job": {"type": JOB, "label": label, "runner": {"type": NOOP}}}).encode()


async def _publish(channel: aio_pika.abc.AbstractChannel, kind: str, body: bytes, **props: Any) -> None:
    exchange = await channel.get_exchange("dm-job.commands")
    message = aio_pika.Message(body, type=kind, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **props)
    await exchange.publish(message, routing_key=kind)


@pytest.fixture
async def management(broker: LocalBroker) -> AsyncIterator[httpx.AsyncClient]:
    assert broker.management_url is not None
    async with httpx.AsyncClient(base_url=broker.management_url, auth=("guest", "guest")) as http:
        yield http


async def _connections(http: httpx.AsyncClient, vhost: str, name: str) -> list[str]:
    """The broker's names of the connections to ``vhost`` that the client called ``name``."""
    listed = (await http.get("api/connections")).json()
    return [
        c["name"]
        for c in listed
        if c.get("vhost") == vhost and (c.get("client_properties") or {}).get("connection_name") == name
    ]


# -- 1. accepted, then launched from the commit, whatever happens to the delivery -------------------


async def test_a_write_cancelled_after_its_commit_still_launches_the_job(tmp_path: Path) -> None:
    """The launch hangs on the commit, not on the handler: cancel the caller mid-write, it still happens."""
    store = SqliteStore(tmp_path / "jobd.sqlite3")
    await store.open()
    launched: list[str] = []

    def inserted(record: JobRecord, schedule: ScheduleRecord | None) -> None:
        launched.append(record.uid)

    store.on_insert = inserted
    try:
        record = JobRecord(
            uid=str(uuid.uuid4()),
            status=JobStatus.STARTING,
            runner_type=NOOP,
            entity={},
            created=datetime.now(UTC),
        )
        writing = asyncio.create_task(store.insert(record, key="start:k", answer=b"{}", events=()))
        await asyncio.sleep(0)  # the write is queued; the commit runs on the store's thread
        writing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writing
        await poll_until(lambda: _true(record.uid in launched), what="the launch after the commit")
        assert await store.get(record.uid) is not None
        duplicate = JobRecord(**{**record.__dict__, "uid": str(uuid.uuid4())})
        assert await store.insert(duplicate, key="start:k", answer=b"{}", events=()) == b"{}"
        assert launched == [record.uid], "a duplicate is never launched"
    finally:
        await store.close()


async def test_cutting_the_daemons_connection_mid_backlog_leaves_no_job_in_starting(
    settings: Settings, vhost_url: str, broker: LocalBroker
) -> None:
    """The targeted run of the finding: a backlog drains while the broker closes the daemon's connection.

    Every cut cancels the deliveries in flight (up to the prefetch count), some of them after their
    job's commit: each such job must still be launched, exactly once.
    """
    total = 5000
    vhost = vhost_url.rsplit("/", 1)[1]
    async with Daemon(settings, vhost_url):
        pass  # declares the topology; the backlog then waits for the next daemon
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("dm-job.commands")
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(_noop(str(i)), type="job.start", message_id=f"cut-{i}"),
                    routing_key="job.start",
                )
                for i in range(total)
            )
        )
    async with Daemon(settings, vhost_url) as jobd:
        for threshold in (total // 10, total // 2):
            await poll_until(_at_least(jobd, threshold), timeout=60, what="the drain")
            await broker.ctl("close_all_connections", "-p", vhost, "a drill")  # the broker's own tool
        assert await jobd.store.count() < total, "the cuts landed while the backlog drained"

        async def all_completed() -> bool | None:
            return True if await jobd.store.count(JobStatus.COMPLETED) == total else None

        try:
            await poll_until(all_completed, timeout=120, what="every job to complete")
        except AssertionError:
            stuck = await jobd.store.active()
            raise AssertionError(
                f"{len(stuck)} jobs never completed: {[r.status for r in stuck[:5]]}"
            ) from None
        assert await jobd.store.count() == total, "every start became exactly one job"


# -- 3. a forged reply_to cannot hurt other work ------------------------------------------------------


async def test_a_forged_direct_reply_to_hurts_no_other_answer(
    log_lines: Any, jobd: Daemon, vhost_url: str, management: httpx.AsyncClient
) -> None:
    vhost = vhost_url.rsplit("/", 1)[1]
    # the management API lists a connection only after its next statistics round: wait for it
    consumer_connections = await poll_until(
        lambda: _some(_connections(management, vhost, "dm-jobd")), what="the daemon's connection listed"
    )
    daemon_connection = _amqp(jobd).connection
    assert daemon_connection.transport is not None
    consumer_transport = daemon_connection.transport.connection  # a reconnect would make a new one
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        status = json.dumps({"uid": str(uuid.uuid4())}).encode()
        sent: list[str] = []
        for i in range(60):  # legitimate questions around the forged one, all in flight together
            correlation = f"q-{i}"
            sent.append(correlation)
            await _publish(channel, "job.status", status, reply_to=replies.name, correlation_id=correlation)
            if i == 30:
                await _publish(channel, "job.status", status, reply_to=FORGED, correlation_id="forged")
        answered: set[str] = set()

        async def all_answered() -> bool | None:
            while (message := await replies.get(no_ack=True, fail=False)) is not None:
                answered.add(message.correlation_id or "")
                assert json.loads(message.body)["error"]["code"] == "unknown_job"
            return True if answered >= set(sent) else None

        await poll_until(all_answered, timeout=30, what="every legitimate answer")
    async with await JobdClient.connect(vhost_url, timeout=20) as client:
        answer = await client.start({"type": JOB, "label": "after", "runner": {"type": NOOP}})
        assert answer.ok
    assert daemon_connection.transport is not None
    assert daemon_connection.transport.connection is consumer_transport, "consumer connection untouched"
    assert await _connections(management, vhost, "dm-jobd") == consumer_connections

    def dropped() -> bool | None:
        lines = [json.loads(line) for line in log_lines.getvalue().splitlines() if line.strip()]
        return True if any(line["event"] == "answer dropped" for line in lines) else None

    await poll_until(lambda: _true(bool(dropped())), what="the forged answer to be logged as dropped")


# -- 4. content that once crashed the parser is refused at its first delivery -------------------------


HOSTILE = [
    (b"[" * 1000 + b"]" * 1000, "invalid"),
    (b'{"uid": ' + b"1" * 5000 + b"}", "bad_json"),
    (b'{"uid": "\\ud800"}', "bad_json"),
    (b'{"job": {"type": "x", "runner": {"type": "y", "deep": ' + b"[" * 200 + b"]" * 200 + b"}}}", "invalid"),
]


async def test_hostile_content_is_refused_at_its_first_delivery(
    log_lines: Any, jobd: Daemon, vhost_url: str
) -> None:
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        dead = await channel.get_queue("dm-job.dead-letter")
        for i, (body, _code) in enumerate(HOSTILE):
            await _publish(channel, "job.status", body, reply_to=replies.name, correlation_id=str(i))
        never = {
            "job": {
                "type": "dmss://WorkflowDS/Blueprints/RecurringJob",
                "label": "never",
                "schedule": {"type": "dmss://WorkflowDS/Blueprints/CronJob", "cron": "0 0 30 2 *"},
                "applicationInput": {"type": JOB, "label": "x", "runner": {"type": NOOP}},
            }
        }
        await _publish(
            channel, "job.start", json.dumps(never).encode(), reply_to=replies.name, correlation_id="c"
        )
        codes: dict[str, str] = {}

        async def answered() -> bool | None:
            while (message := await replies.get(no_ack=True, fail=False)) is not None:
                codes[message.correlation_id or ""] = json.loads(message.body)["error"]["code"]
            return True if len(codes) == len(HOSTILE) + 1 else None

        await poll_until(answered, what="an answer to each")
        assert codes == {**{str(i): code for i, (_, code) in enumerate(HOSTILE)}, "c": "invalid"}
        dead_letters: list[str] = []

        async def dead_lettered() -> bool | None:
            while (message := await dead.get(no_ack=True, fail=False)) is not None:
                dead_letters.append(message.correlation_id or "")
            return True if len(dead_letters) == len(HOSTILE) + 1 else None

        await poll_until(dead_lettered, what="each to be dead-lettered")
        events = [json.loads(line)["event"] for line in log_lines.getvalue().splitlines() if line.strip()]
        assert "command crashed" not in events, "refused at the first delivery, never retried as a crash"


# -- 5. a runner's failure is a runner_error at the first delivery ------------------------------------


async def test_a_result_the_runner_cannot_read_is_a_runner_error(client: JobdClient) -> None:
    answer = await client.start(shell_job('mkdir "$DM_JOB_RESULT"'))
    uid = str(answer.uid)

    async def completed() -> bool | None:
        return True if (await client.status(uid)).status is JobStatus.COMPLETED else None

    await poll_until(completed, what="the job to complete")
    result = await client.result(uid)
    assert not result.ok and result.error is not None
    assert result.error.code.value == "runner_error"
    assert "directory" in result.error.message


# -- 7. every line about a command carries its job's uid -----------------------------------------------


async def test_refused_and_failed_command_lines_carry_the_uid(log_lines: Any, client: JobdClient) -> None:
    unknown = str(uuid.uuid4())
    assert not (await client.status(unknown)).ok  # refused: no such job
    running = str((await client.start(shell_job("sleep 30"))).uid)
    assert not (await client.result(running)).ok  # failed: not finished
    await client.stop(running)
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines() if line.strip()]
    refused = [line for line in lines if line["event"] == "command refused"]
    failed = [line for line in lines if line["event"] == "command failed"]
    assert [line.get("uid") for line in refused] == [unknown], refused
    assert [line.get("uid") for line in failed] == [running], failed


async def _true(value: bool) -> bool | None:
    return True if value else None


async def _some(names: Any) -> list[str] | None:
    found: list[str] = await names
    return found or None


def _at_least(jobd: Daemon, n: int) -> Callable[[], Awaitable[bool | None]]:
    async def check() -> bool | None:
        return True if await jobd.store.count() >= n else None

    return check


# -- a channel aio-pika does not restore after a broker restart ---------------------------------------


async def test_channels_that_stay_closed_under_an_open_connection_are_replaced(
    jobd: Daemon, client: JobdClient
) -> None:
    """aio-pika's robust channels sometimes stay closed after a broker restart while their connection
    is back. Closed for good here (as such a channel is), the daemon opens new ones: its events flow
    and its commands are consumed again."""
    publisher, consumer = _event_publisher(jobd), _command_consumer(jobd)
    assert publisher._channel is not None and consumer._channel is not None
    await publisher._channel.close()  # the event channel, as one that did not come back
    async with client.events() as events:
        started = await client.start({"type": JOB, "label": "after", "runner": {"type": NOOP}})
        await events_until(events, ended(str(started.uid)))  # published on a fresh channel
    await consumer._channel.close()  # the command channel too: the watchdog consumes anew
    answer = await client.status(str(started.uid))  # the client waits (its timeout is 20 s)
    assert answer.ok and answer.status is JobStatus.COMPLETED


def _amqp(daemon: Daemon) -> AmqpBus:
    assert isinstance(daemon.bus, AmqpBus)
    return daemon.bus


def _event_publisher(daemon: Daemon) -> ConfirmedPublisher:
    assert daemon.relay is not None and isinstance(daemon.relay.publisher, ConfirmedPublisher)
    return daemon.relay.publisher


def _command_consumer(daemon: Daemon) -> CommandConsumer:
    assert isinstance(daemon.consumer, AnsweringConsumer)
    return daemon.consumer.commands
