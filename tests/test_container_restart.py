"""Container jobs across daemon restarts: re-attach by label, settle by real exit code, clean up orphans."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Any

import aiodocker
import structlog
from dockerd import BUSYBOX
from helpers import ended, events_until, poll_until
from test_container import GATED, container_job, containers_of, open_gate, wait_running

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobSpec, JobStatus, RunnerContext
from plugins.container import JOB_LABEL, OWNER_LABEL, PLUGIN


async def exited(docker: aiodocker.Docker, uid: str) -> bool | None:
    found = await containers_of(docker, uid)
    return True if found and found[0]["State"] == "exited" else None


async def test_a_restarted_daemon_reattaches_and_settles_what_exited_meanwhile_by_exit_code(
    settings: Settings, vhost_url: str, docker_environ: dict[str, str], docker: aiodocker.Docker
) -> None:
    async with (
        Daemon(settings, vhost_url, environ=docker_environ),
        await JobdClient.connect(vhost_url) as client,
    ):
        async with client.events() as events:
            good = str((await client.start(container_job(GATED + "; echo fine"))).uid)
            bad = str((await client.start(container_job(GATED + "; echo broken; exit 3"))).uid)
            slow = str((await client.start(container_job(GATED + "; echo late"))).uid)
            await wait_running(events, {good, bad, slow})
    # the daemon is down; the containers are not
    for uid in (good, bad):
        await open_gate(docker, uid)
        await poll_until(functools.partial(exited, docker, uid), what="the container to exit")

    async with Daemon(settings, vhost_url, environ=docker_environ) as daemon:
        async with await JobdClient.connect(vhost_url) as client, client.events() as events:

            async def settled(uid: str) -> JobStatus | None:
                status = (await client.status(uid)).status
                return status if status is not None and status.is_terminal else None

            assert await poll_until(lambda: settled(good), what="the good job settled") is JobStatus.COMPLETED
            assert await poll_until(lambda: settled(bad), what="the bad job settled") is JobStatus.FAILED
            failed = await client.status(bad)
            assert failed.job is not None and "exit code 3" in (failed.job.message or "")
            assert failed.job.logs == ["broken"]
            assert (await client.result(good)).result == "fine\n"
            assert (await client.status(slow)).status is JobStatus.RUNNING, "re-attached, still running"
            assert daemon.supervisor.watching == 1
            await open_gate(docker, slow)
            await events_until(events, ended(slow))
            assert (await client.status(slow)).status is JobStatus.COMPLETED
            assert (await client.result(slow)).result == "late\n"
    for uid in (good, bad, slow):
        assert await containers_of(docker, uid) == []


async def test_cleanup_after_a_restart_removes_orphans_and_nothing_else(
    settings: Settings, vhost_url: str, docker_environ: dict[str, str], docker: aiodocker.Docker
) -> None:
    async with (
        Daemon(settings, vhost_url, environ=docker_environ),
        await JobdClient.connect(vhost_url) as client,
    ):
        async with client.events() as events:
            active = str((await client.start(container_job(GATED))).uid)
            await wait_running(events, {active})
    owner = (settings.state_dir / "runners" / "container" / "owner").read_text().strip()
    orphan, foreign = str(uuid.uuid4()), str(uuid.uuid4())

    async def create(uid: str, owner: str) -> None:
        config: dict[str, Any] = {
            "Image": BUSYBOX,
            "Cmd": ["sleep", "600"],
            "Labels": {OWNER_LABEL: owner, JOB_LABEL: uid},
        }
        await (await docker.containers.create(config)).start()

    await create(orphan, owner)  # ours, for a job the store never ran: an orphan
    await create(foreign, "someone-else")  # another daemon's: not ours to touch
    try:
        async with Daemon(settings, vhost_url, environ=docker_environ):
            await poll_until(lambda: _gone(docker, orphan), what="the orphan to be removed")
            assert [c["State"] for c in await containers_of(docker, active)] == ["running"]
            assert [c["State"] for c in await containers_of(docker, foreign)] == ["running"]
            await open_gate(docker, active)
    finally:
        for container in await containers_of(docker, foreign):
            await docker.containers.container(container["Id"]).delete(force=True)


async def _gone(docker: aiodocker.Docker, uid: str) -> bool | None:
    return True if not await containers_of(docker, uid) else None


async def test_a_repeated_start_finds_the_container_it_made_and_runs_nothing_twice(
    tmp_path: Path, docker_environ: dict[str, str], docker: aiodocker.Docker
) -> None:
    """The daemon may call start again for a job whose handle it never saw persisted (it crashed)."""
    runner = PLUGIN.create(RunnerContext(env=docker_environ, state_dir=tmp_path, log=structlog.get_logger()))
    job = JobSpec(uid=str(uuid.uuid4()), entity=container_job(GATED), env={"DM_JOB_UID": "x"})
    try:
        first = await runner.start(job)
        second = await runner.start(job)
        assert first.handle["container"] == second.handle["container"]
        assert second.status.status is JobStatus.RUNNING
        assert len(await containers_of(docker, job.uid)) == 1
    finally:
        await runner.stop(job, first.handle)
        await runner.close()
    assert await containers_of(docker, job.uid) == []
