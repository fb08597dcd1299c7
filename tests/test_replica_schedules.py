"""Schedules across replicas: every replica schedules every schedule, one publishes each fire.

Three daemons on one PostgreSQL store and one broker; a spy queue on the command exchange sees every
``job.start`` that reaches it (published at the instant or released from a hold queue), so a fire
published by two replicas shows as two copies of one message id.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import psycopg
import pytest
from helpers import JOB, NOOP, poll_until
from pydantic import SecretStr
from test_adoption import replica_env, start_replica
from test_schedules import HANDLER, RECURRING, at_least_runs, recurring

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


# -- a thousand schedules every two seconds for a minute, one replica SIGKILLed half way ------------------

THOUSAND = 1000
EVERY = timedelta(seconds=2)


def runs_by_fire(postgres_url: str) -> tuple[dict[str, Counter[datetime]], list[str]]:
    """Each schedule's runs in the shared store, counted by the fire they were started for, and the
    runs started for no fire (none expected: this test triggers nothing).

    Read from the jobs and their idempotency keys (``start:schedule:<uid>:<fire>``) in one statement,
    not from the schedule's own list of recent runs, which keeps only the last few.
    """
    runs: dict[str, Counter[datetime]] = defaultdict(Counter)
    unfired: list[str] = []
    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute(
            "SELECT j.uid, j.schedule, k.key FROM jobs j LEFT JOIN idempotency k ON k.uid = j.uid"
            " WHERE j.schedule IS NOT NULL"
        ).fetchall()
    for uid, schedule, key in rows:
        prefix = f"start:schedule:{schedule}:"
        if key is None or not key.startswith(prefix):
            unfired.append(f"{uid} ({key})")
        else:
            runs[schedule][datetime.fromisoformat(key.removeprefix(prefix))] += 1
    return runs, unfired


def every_two_seconds() -> dict[str, Any]:
    """A RecurringJob of a no-op job on every even second, every fire run (none skipped as overlapping,
    none dropped as late)."""
    return {
        "type": RECURRING,
        "label": "a no-op, every two seconds",
        "applicationInput": {"type": JOB, "label": "nothing", "runner": {"type": NOOP}},
        "runner": {"type": HANDLER},
        "schedule": {
            "type": "dmss://WorkflowDS/Blueprints/CronJob",
            "cron": "*/2 * * * * *",
            "overlap": "allow",
            "catchUp": "all",
            "runs": [],
        },
    }


@pytest.mark.timeout(600)
async def test_a_thousand_schedules_run_once_per_fire_while_a_replica_is_killed(
    vhost_url: str, postgres_url: str, tmp_path: Path
) -> None:
    """Three replicas (processes), 1,000 schedules firing every two seconds (500 fires a second, more
    than this 2-core machine's three replicas run: the command queue holds a backlog), one replica
    SIGKILLed 30 s in; every fire of the minute runs, none twice."""
    env = replica_env(vhost_url, postgres_url, tmp_path / "state", lease=3.0)
    replicas: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(3):
            replicas.append(await start_replica(env))
        async with await JobdClient.connect(vhost_url, timeout=120) as client:
            began = time.monotonic()
            first: dict[str, datetime] = {}
            for _ in range(THOUSAND // 50):
                answers = await asyncio.gather(*(client.start(every_two_seconds()) for _ in range(50)))
                for answer in answers:
                    assert answer.ok and answer.schedule is not None and answer.schedule.next_fire, answer
                    first[str(answer.uid)] = answer.schedule.next_fire
        print(f"{THOUSAND} schedules registered in {time.monotonic() - began:.1f} s")
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - began)))  # the drill's timeline
        replicas[0].send_signal(signal.SIGKILL)
        await replicas[0].wait()
        await asyncio.sleep(30)
        end = datetime.now(UTC) - EVERY  # every fire up to here must run (later ones may be queued)

        def expected(uid: str) -> set[datetime]:
            fires, fire = set(), first[uid]
            while fire <= end:
                fires.add(fire)
                fire += EVERY
            return fires

        want = {uid: expected(uid) for uid in first}
        total = sum(len(fires) for fires in want.values())

        def missing() -> dict[str, set[datetime]]:
            runs, _ = runs_by_fire(postgres_url)
            gaps = {uid: want[uid] - set(runs.get(uid, ())) for uid in first}
            return {uid: gap for uid, gap in gaps.items() if gap}

        async def all_run() -> bool | None:
            return True if not missing() else None

        ended = time.monotonic()
        try:
            await poll_until(all_run, timeout=240, every=1.0, what=f"{total} fires all run")
        except AssertionError:
            gaps = missing()
            raise AssertionError(
                f"{sum(map(len, gaps.values()))} fires of {len(gaps)} schedules never ran, e.g. "
                f"{sorted(next(iter(gaps.values())))[:5]}"
            ) from None
        print(f"{total} fires up to {end:%H:%M:%S}; the backlog ran {time.monotonic() - ended:.1f} s longer")
        assert total >= 25_000
        runs, unfired = runs_by_fire(postgres_url)
        assert not unfired, f"runs started for no fire: {unfired[:5]}"
        twice = {uid: [f for f, n in fires.items() if n > 1] for uid, fires in runs.items()}
        assert not any(twice.values()), f"fires run more than once: {[t for t in twice.items() if t[1]][:5]}"
        stray = {
            uid: [f for f in fires if f < first[uid] or f.microsecond or f.second % 2]
            for uid, fires in runs.items()
        }
        assert not any(stray.values()), f"runs for instants that are no fire: {stray}"
    finally:
        for process in replicas:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in replicas:
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                process.kill()
                await process.wait()
