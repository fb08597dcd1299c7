"""Retention against the real parts: ended jobs, their runners' files and their idempotency keys go
after the configured age; active ones stay. The dead-letter queue is bounded by the broker itself."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import aio_pika
import httpx
import pytest
from helpers import SHELL, RecordingLog, poll_until, shell_job

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.clock import ManualClock
from daemon.config import Settings
from daemon.contracts import COMMAND_QUEUE, DEAD_LETTER_QUEUE, UnknownJob
from daemon.jobs.retention import Retention
from daemon.localbroker import LocalBroker

KEEP = timedelta(days=30)


def retention(daemon: Daemon, after: timedelta) -> Retention:
    """The daemon's own store and runners, seen from a clock ``after`` from now."""
    clock = ManualClock(daemon.clock.now() + after)
    return Retention(daemon.store, daemon.registry, clock, RecordingLog(), keep=KEEP)


async def test_ended_jobs_their_files_and_keys_go_after_the_age_and_active_ones_stay(
    jobd: Daemon, client: JobdClient, settings: Settings
) -> None:
    shell_files = settings.state_dir / "runners" / "shell"
    done = await client.submit(shell_job("echo out > $DM_JOB_RESULT"), message_id="key-done")
    failed = await client.submit(shell_job("exit 2"))
    running = await client.submit(shell_job("sleep 300"))
    await done.wait(timeout=20)
    await failed.wait(timeout=20)
    assert (shell_files / done.uid).is_dir() and (shell_files / running.uid).is_dir()

    assert await retention(jobd, after=timedelta(days=29)).sweep() == 0, "not old enough yet"
    assert (await done.status()).status.value == "completed"

    # a daemon killed after the runner forgot the files and before the store deleted the rows: the
    # next sweep forgets again (nothing there now) and deletes the rows
    await jobd.registry.get(SHELL).forget(done.uid)
    assert not (shell_files / done.uid).exists()
    assert await retention(jobd, after=timedelta(days=31)).sweep() == 2

    for gone in (done, failed):
        with pytest.raises(UnknownJob):
            await gone.status()
        assert not (shell_files / gone.uid).exists()
    assert (await running.status()).status.value == "running", "an active job is never pruned"
    assert (shell_files / running.uid).is_dir()
    again = await client.submit(shell_job("true"), message_id="key-done")
    assert again.uid != done.uid, "the idempotency key went with its job"
    await running.stop()


async def test_retention_zero_keeps_everything(jobd: Daemon, client: JobdClient) -> None:
    job = await client.submit(shell_job("true"))
    await job.wait(timeout=20)
    never = Retention(
        jobd.store,
        jobd.registry,
        ManualClock(jobd.clock.now() + timedelta(days=3650)),
        RecordingLog(),
        keep=None,
    )
    assert await never.sweep() == 0
    assert (await job.status()).status.value == "completed"


async def dead_letter_queue(broker: LocalBroker, vhost_url: str) -> dict[str, object]:
    vhost = vhost_url.rsplit("/", 1)[1]
    assert broker.management_url is not None
    async with httpx.AsyncClient(base_url=broker.management_url, auth=("guest", "guest")) as http:
        response = await http.get(f"api/queues/{vhost}/{DEAD_LETTER_QUEUE}")
        response.raise_for_status()
        arguments: dict[str, object] = response.json()["arguments"]
        return arguments


async def test_the_dead_letter_queue_keeps_only_its_limit(
    broker: LocalBroker, vhost_url: str, settings: Settings
) -> None:
    bounded = settings.model_copy(update={"dead_letter_max_length": 3, "dead_letter_max_age_days": 2.0})
    async with Daemon(bounded, vhost_url), await aio_pika.connect(vhost_url) as connection:
        arguments = await dead_letter_queue(broker, vhost_url)
        assert arguments["x-max-length"] == 3 and arguments["x-overflow"] == "drop-head"
        assert arguments["x-message-ttl"] == 2 * 86400 * 1000
        channel = await connection.channel()
        exchange = await channel.get_exchange("dm-job.commands")
        sent = [str(uuid.uuid4()) for _ in range(5)]
        for message_id in sent:
            message = aio_pika.Message(b"{not json", type="job.status", message_id=message_id)
            await exchange.publish(message, routing_key="job.status")

        async def settled() -> int | None:
            """The dead-letter count once every command is settled (ready + unacked, by the broker's tool)."""
            vhost = vhost_url.rsplit("/", 1)[1]
            listing = await broker.ctl(
                "list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "messages"
            )
            counts = {
                name: int(n) for name, n in (line.split() for line in listing.splitlines() if line.strip())
            }
            done = counts.get(COMMAND_QUEUE) == 0 and counts.get(DEAD_LETTER_QUEUE, 0) >= 3
            return counts[DEAD_LETTER_QUEUE] if done else None

        assert await poll_until(settled, what="five refusals dead-lettered") == 3, "no more than the limit"
        queue = await channel.declare_queue(DEAD_LETTER_QUEUE, passive=True)
        assert queue.declaration_result.message_count == 3


async def test_a_dead_letter_queue_made_before_the_limits_is_kept_and_the_daemon_serves(
    broker: LocalBroker, vhost_url: str, settings: Settings, tmp_path: Path
) -> None:
    async with await aio_pika.connect(vhost_url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
    log = RecordingLog()
    async with Daemon(settings, vhost_url, log=log), await JobdClient.connect(vhost_url) as client:
        job = await client.submit(shell_job("true"))
        assert (await job.wait(timeout=20)).status.value == "completed"
    warned = [kw for level, event, kw in log.calls if "dead-letter queue exists" in event]
    assert warned and "rabbitmqctl set_policy" in str(warned[0]["policy"])
    assert "x-max-length" not in await dead_letter_queue(broker, vhost_url)
    json.dumps(warned[0])  # a log line's fields are JSON
