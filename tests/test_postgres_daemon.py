"""The daemon on the PostgreSQL store (``DM_JOBD_STORE=postgresql://...``), on the real broker."""

from __future__ import annotations

from pathlib import Path

from helpers import events_until, shell_job
from pydantic import SecretStr

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus
from daemon.store.postgres import PostgresStore


def on_postgres(settings: Settings, url: str) -> Settings:
    return settings.model_copy(update={"store": SecretStr(url)})


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
