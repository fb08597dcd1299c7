"""Nothing is lost or done twice across restarts of the daemon or the broker."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
import pytest
from helpers import ended, events_until, poll_until, shell_job

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import CloudEvent, JobStatus
from daemon.localbroker import LocalBroker


async def test_the_same_start_message_twice_starts_one_job(client: JobdClient, jobd: Daemon) -> None:
    body = {"job": shell_job("echo once")}
    first = await client.call("job.start", body, message_id="start-once")
    second = await client.call("job.start", body, message_id="start-once")
    assert first == second, "the repeat gets the first answer"
    assert await jobd.store.count() == 1
    other = await client.call("job.start", body, message_id="start-twice")
    assert other["uid"] != first["uid"]


async def test_jobs_that_ended_while_the_daemon_was_down_are_settled_by_their_exit_code(
    settings: Settings, vhost_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done; "
    async with Daemon(settings, vhost_url), await JobdClient.connect(vhost_url) as client:
        async with client.events() as events:
            good = (await client.start(shell_job(wait + "echo fine"))).uid
            bad = (await client.start(shell_job(wait + "echo broken; exit 3"))).uid
            slow = (await client.start(shell_job(f"while [ ! -e {gate}2 ]; do sleep 0.05; done"))).uid
            waiting = {good, bad, slow}

            def all_running(event: CloudEvent) -> bool:
                if event.data.status is JobStatus.RUNNING:
                    waiting.discard(event.subject)
                return not waiting

            await events_until(events, all_running)
    # the daemon is down; the jobs are not
    gate.touch()
    for uid in (good, bad):
        exit_file = settings.state_dir / "runners" / "shell" / str(uid) / "exit_code"
        await poll_until(functools.partial(_exists, exit_file), what="the script to finish")

    async with Daemon(settings, vhost_url) as daemon, await JobdClient.connect(vhost_url) as client:
        async with client.events() as events:
            for uid in (good, bad):

                async def settled(uid: str | None = uid) -> JobStatus | None:
                    status = (await client.status(str(uid))).status
                    return status if status is not None and status.is_terminal else None

                await poll_until(settled, what="the job to be settled")
            assert (await client.status(str(good))).status is JobStatus.COMPLETED
            failed = await client.status(str(bad))
            assert failed.status is JobStatus.FAILED and failed.job is not None
            assert "exit code 3" in (failed.job.message or "") and failed.job.logs == ["broken"]
            assert (await client.status(str(slow))).status is JobStatus.RUNNING, "re-attached, still running"
            assert daemon.supervisor.watching == 1
            (tmp_path / "gate2").touch()
            await events_until(events, ended(str(slow)))
        assert (await client.status(str(slow))).status is JobStatus.COMPLETED


async def _exists(path: Path) -> bool | None:
    return True if path.exists() else None


async def test_sigkill_mid_burst_loses_no_job_and_starts_none_twice(vhost_url: str, tmp_path: Path) -> None:
    total = 200
    ran = tmp_path / "ran.txt"
    state = tmp_path / "state"
    env = {
        **os.environ,
        "DM_JOBD_AMQP_URL": vhost_url,
        "DM_JOBD_STATE_DIR": str(state),
        "DM_JOBD_ENABLE_SHELL": "1",
        "DM_JOBD_LOG_FORMAT": "json",
    }

    async def spawn() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.cli",
            "run",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=open(tmp_path / "daemon.log", "ab"),
        )

    daemon = await spawn()
    connection = await aio_pika.connect(vhost_url)
    async with connection:
        await poll_until(_consuming(connection), what="the daemon to consume commands")
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("dm-job.commands")
        for i in range(total):
            body = json.dumps({"job": shell_job(f'echo "$DM_JOB_UID" >> {ran}', label=str(i))}).encode()
            await exchange.publish(
                aio_pika.Message(
                    body,
                    type="job.start",
                    message_id=f"burst-{i}",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="job.start",
            )
        await poll_until(lambda: _lines_at_least(ran, 20), what="the burst to be under way")
        daemon.send_signal(signal.SIGKILL)
        await daemon.wait()
        daemon = await spawn()
        try:
            db = state / "jobd.sqlite3"
            try:
                await poll_until(lambda: _all_settled(db, total), timeout=60, what="every job to end")
            except AssertionError:
                with sqlite3.connect(db) as conn:
                    stuck = conn.execute(
                        "SELECT uid, status, message, handle FROM jobs WHERE status NOT IN "
                        "('completed', 'failed', 'removed')"
                    ).fetchall()
                    count = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
                raise AssertionError(f"{count} jobs; not settled: {stuck[:5]} ({len(stuck)})") from None
        finally:
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(daemon.wait(), 30) == 0, "SIGTERM is a clean exit"
    lines = ran.read_text().split()
    assert len(lines) == len(set(lines)), "no job ran twice"
    with sqlite3.connect(state / "jobd.sqlite3") as conn:
        rows = conn.execute("SELECT uid, status, message FROM jobs").fetchall()
        keys = conn.execute("SELECT COUNT(*) FROM idempotency").fetchone()[0]
    assert len(rows) == total and keys == total, "every command became exactly one job"
    completed = {uid for uid, status, _ in rows if status == "completed"}
    assert completed == set(lines)
    unfinished = [(uid, status, message) for uid, status, message in rows if status != "completed"]
    # a kill at any point of a start leaves a job the next daemon starts or re-attaches: none falsely failed
    assert unfinished == []


def _consuming(connection: aio_pika.abc.AbstractConnection) -> Callable[[], Awaitable[bool | None]]:
    """A check for the daemon consuming its command queue (a missing queue closes the channel)."""

    async def check() -> bool | None:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue("dm-job.commands", passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return None
        await channel.close()
        return True if queue.declaration_result.consumer_count else None

    return check


async def _lines_at_least(path: Path, n: int) -> bool | None:
    return True if path.exists() and len(path.read_text().split()) >= n else None


async def _all_settled(db: Path, total: int) -> bool | None:
    if not db.exists():
        return None
    with sqlite3.connect(db) as conn:
        done = conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('completed', 'failed', 'removed')"
        ).fetchone()[0]
    return True if done >= total else None


async def test_events_wait_out_a_broker_outage(tmp_path: Path, settings: Settings) -> None:
    """A job that ends while the broker is down has its event published once the broker is back."""
    broker = LocalBroker(tmp_path / "broker", name="outage")
    try:
        await broker.start()
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no second broker: {exc}")
    gate = tmp_path / "gate"
    try:
        connection = await aio_pika.connect_robust(broker.url + "?reconnect_interval=0.5")
        channel = await connection.channel()
        exchange = await channel.declare_exchange("dm-job.events", aio_pika.ExchangeType.TOPIC, durable=True)
        kept = await channel.declare_queue("kept-events", durable=True)
        await kept.bind(exchange, "job.#")
        async with Daemon(settings, broker.url) as daemon, await JobdClient.connect(broker.url) as client:
            answer = await client.start(shell_job(f"while [ ! -e {gate} ]; do sleep 0.05; done"))
            uid = str(answer.uid)

            async def running() -> bool | None:
                return True if (await client.status(uid)).status is JobStatus.RUNNING else None

            await poll_until(running, what="the job to run")
            await broker.stop()
            gate.touch()

            async def pending() -> bool | None:
                rows = await daemon.store.outbox(100)
                return True if any(r.message.routing_key == f"job.completed.{uid}" for r in rows) else None

            await poll_until(pending, what="the completed event to wait in the outbox")
            await broker.restart()

            async def delivered() -> bool | None:
                nonlocal channel, kept
                try:
                    if channel.is_closed and not connection.is_closed:  # aio-pika did not restore it
                        channel = await connection.channel()
                        kept = await channel.declare_queue("kept-events", durable=True)
                    while (message := await kept.get(no_ack=True, fail=False)) is not None:
                        if message.routing_key == f"job.completed.{uid}":
                            return True
                except (aio_pika.exceptions.AMQPError, RuntimeError):
                    return None  # the connection is still coming back ("was not opened" yet)
                return None

            await poll_until(delivered, timeout=60, what="the event after the broker came back")
            assert (await client.status(uid)).status is JobStatus.COMPLETED
        await connection.close()
    finally:
        await broker.stop()
