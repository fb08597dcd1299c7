"""The daemon on the PostgreSQL store (``DM_JOBD_STORE=postgresql://...``), on the real broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from helpers import JOB, NOOP, events_until, poll_until, shell_job
from pg import PrivatePostgres
from pydantic import SecretStr

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus
from daemon.presence import read_health
from daemon.store.postgres import PostgresStore


def on_postgres(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"store": SecretStr(url)})


def noop_job() -> dict[str, Any]:
    return {"type": JOB, "label": "nothing", "runner": {"type": NOOP}}


def test_the_store_setting_names_a_file_or_a_postgresql_database(tmp_path: Path) -> None:
    pg = Settings.model_validate({"store": "postgresql://jobd:pw@db/jobs"})
    assert pg.store_url == "postgresql://jobd:pw@db/jobs"
    assert "pw" not in repr(pg), "the password stays out of reprs and logs"
    local = Settings.model_validate({"store": "relative/jobd.sqlite3"})
    assert local.store_url is None and local.store_path == Path("relative/jobd.sqlite3").absolute()
    assert Settings(state_dir=tmp_path).store_path == tmp_path / "jobd.sqlite3"


async def test_jobs_run_end_to_end_on_postgresql(
    settings: Settings, vhost_url: str, postgres_url: str
) -> None:
    async with Daemon(on_postgres(settings, postgres_url), vhost_url) as daemon:
        assert isinstance(daemon.store, PostgresStore)
        async with await JobdClient.connect(vhost_url) as client:
            done = await client.submit(shell_job("echo out > $DM_JOB_RESULT"), message_id="once")
            again = await client.submit(shell_job("echo out > $DM_JOB_RESULT"), message_id="once")
            assert again.uid == done.uid, "idempotent on PostgreSQL too"
            assert (await done.wait(timeout=20)).status is JobStatus.COMPLETED
            assert await done.result() == "out\n"
            rerun = await client.rerun(done.uid)
            assert rerun.ok and rerun.uid is not None
            await client.handle(rerun.uid).wait(timeout=20)
            listed = await client.list_jobs(status=["completed"])
            assert {j.uid for j in listed.jobs or []} == {done.uid, rerun.uid}


async def test_a_restarted_daemon_reattaches_to_its_jobs_from_postgresql(
    settings: Settings, vhost_url: str, postgres_url: str, tmp_path: Path
) -> None:
    pg = on_postgres(settings, postgres_url)
    gate = tmp_path / "gate"
    async with Daemon(pg, vhost_url), await JobdClient.connect(vhost_url) as client:
        async with client.events() as events:
            job = await client.submit(shell_job(f"while [ ! -e {gate} ]; do sleep 0.02; done; echo done"))
            await events_until(events, lambda e: e.subject == job.uid and e.data.status is JobStatus.RUNNING)
    async with Daemon(pg, vhost_url) as daemon, await JobdClient.connect(vhost_url) as client:
        assert daemon.supervisor.watching == 1, "re-attached from the shared store"
        gate.touch()
        final = await client.handle(job.uid).wait(timeout=20)
        assert final.status is JobStatus.COMPLETED and final.logs == ["done"]


async def test_postgresql_going_away_mid_burst_loses_no_command_and_fails_no_job(
    settings: Settings, vhost_url: str, tmp_path: Path
) -> None:
    """The server stopped as a crash would (``pg_ctl -m immediate``) with jobs running and starts in
    flight, then started again: every start is answered and completes once, the running jobs too, and
    ``health`` said what was wrong meanwhile."""
    server = PrivatePostgres()
    await server.start()
    try:
        url = await server.new_database()
        gate, runs = tmp_path / "gate", tmp_path / "runs"
        pg = on_postgres(settings, url).model_copy(
            update={"lease_seconds": 1.5, "replica_heartbeat_seconds": 0.2}
        )
        async with Daemon(pg, vhost_url) as daemon, await JobdClient.connect(vhost_url, timeout=60) as client:
            script = f'while [ ! -e {gate} ]; do sleep 0.02; done; echo "$DM_JOB_UID" >> {runs}'
            running = [await client.submit(shell_job(script)) for _ in range(3)]

            async def all_running() -> bool | None:
                statuses = [(await client.status(job.uid)).status for job in running]
                return True if all(s is JobStatus.RUNNING for s in statuses) else None

            await poll_until(all_running, what="the jobs running")
            await server.halt()
            starts = [
                asyncio.create_task(client.start(noop_job(), message_id=f"outage-{n}")) for n in range(100)
            ]

            async def store_reported() -> str | None:
                health = read_health(pg.state_dir)
                return health.store_error if health is not None and not health.store else None

            detail = await poll_until(store_reported, what="health to report the store")
            print(f"health while PostgreSQL was away: {detail}")
            await asyncio.sleep(2 * pg.lease_seconds)  # the outage's length: it outlasts the leases
            await server.resume()
            answers = await asyncio.gather(*starts)
            assert all(a.ok for a in answers), [a for a in answers if not a.ok][:3]
            gate.touch()
            for answer in answers:
                assert (await client.handle(str(answer.uid)).wait(timeout=60)).status is JobStatus.COMPLETED
            for job in running:
                assert (await job.wait(timeout=60)).status is JobStatus.COMPLETED
            assert sorted(runs.read_text().split()) == sorted(j.uid for j in running), "each ran once"
            assert await daemon.store.count() == 103

            async def outbox_drained() -> bool | None:
                return True if (await daemon.store.counts()).outbox == 0 else None

            await poll_until(outbox_drained, what="every event published after the outage")
    finally:
        await server.stop()
