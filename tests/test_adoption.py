"""Ownership across replicas on one PostgreSQL store: a replica SIGKILLed with running jobs has them
adopted by the one left, which re-attaches through their handles and sees each complete once; a job
that no replica left can reach says so, until a replica that can reach it starts."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from helpers import poll_until, shell_job
from pydantic import SecretStr

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus
from daemon.jobs.leases import STRANDED


def replica_env(vhost_url: str, postgres_url: str, state: Path, lease: float) -> dict[str, str]:
    """The environment of a replica run as its own process (so that it can be SIGKILLed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DM_JOBD_")}
    env.update(
        {
            "DM_JOBD_AMQP_URL": vhost_url,
            "DM_JOBD_STORE": postgres_url,
            "DM_JOBD_STATE_DIR": str(state),
            "DM_JOBD_LEASE_SECONDS": str(lease),
            "DM_JOBD_ENABLE_SHELL": "1",
            "DM_JOBD_LOG_FORMAT": "json",
            "DM_JOBD_POLL_MAX_SECONDS": "0.5",
        }
    )
    return env


async def start_replica(env: dict[str, str]) -> asyncio.subprocess.Process:
    """A ``dm-jobd run`` process, returned once it logged that it is ready.

    Its log goes to a file beside its state folder, not a pipe: a pipe nobody reads fills up and
    stops the replica at its next log line.
    """
    state = Path(env["DM_JOBD_STATE_DIR"])
    state.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=state.parent, prefix="replica-", suffix=".log", delete=False) as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.cli", "run", env=env, stderr=log
        )
    path = Path(log.name)

    async def ready() -> bool | None:
        assert process.returncode is None, f"the replica exited: {path.read_text()[-2000:]}"
        return True if b'"dm-jobd ready"' in path.read_bytes() else None

    await poll_until(ready, timeout=60, what=f"the replica to be ready (log {path})")
    return process


async def test_a_sigkilled_replicas_jobs_are_adopted_and_complete_once(
    settings: Settings, vhost_url: str, postgres_url: str, tmp_path: Path
) -> None:
    lease = 1.5
    state = tmp_path / "shared-state"  # shell jobs are reachable from the same host and state folder
    mine = settings.model_copy(
        update={"store": SecretStr(postgres_url), "state_dir": state, "lease_seconds": lease}
    )
    env = replica_env(vhost_url, postgres_url, state, lease)
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    async with Daemon(mine, vhost_url) as a, await JobdClient.connect(vhost_url) as client:
        other = await start_replica(env)
        try:
            script = f'while [ ! -e {gate} ]; do sleep 0.02; done; echo "$DM_JOB_UID" >> {runs}'
            jobs = [await client.submit(shell_job(script)) for _ in range(8)]

            async def owners() -> dict[str, str] | None:
                records = [await a.store.get(job.uid) for job in jobs]
                running = all(r is not None and r.status is JobStatus.RUNNING for r in records)
                return {r.uid: str(r.owner) for r in records if r is not None} if running else None

            owned = await poll_until(owners, what="every job running")
            theirs = {uid for uid, owner in owned.items() if owner != a.presence.id}
            assert theirs, f"the commands went to both replicas: {owned}"
        finally:
            other.send_signal(signal.SIGKILL)
            await other.wait()
        killed = time.monotonic()

        async def all_mine() -> bool | None:
            records = [await a.store.get(uid) for uid in theirs]
            return True if all(r is not None and r.owner == a.presence.id for r in records) else None

        await poll_until(all_mine, timeout=30, what="the dead replica's jobs adopted")
        adopted_after = time.monotonic() - killed
        print(f"adopted {len(theirs)} job(s) {adopted_after:.2f} s after the SIGKILL (lease {lease} s)")
        assert adopted_after < 10, f"adopted after {adopted_after:.1f} s"
        assert a.supervisor.watching == len(jobs)
        gate.touch()
        for job in jobs:
            assert (await job.wait(timeout=30)).status is JobStatus.COMPLETED
    ran = runs.read_text().split()
    assert sorted(ran) == sorted(job.uid for job in jobs), "each job ran exactly once"


async def test_a_job_no_replica_can_reach_says_so_until_one_that_can_takes_it_back(
    settings: Settings, vhost_url: str, postgres_url: str, tmp_path: Path
) -> None:
    lease = 1.0
    theirs_state = tmp_path / "their-state"  # its shell jobs are followed from this folder only
    mine = settings.model_copy(
        update={"store": SecretStr(postgres_url), "state_dir": tmp_path / "my-state", "lease_seconds": lease}
    )
    env = replica_env(vhost_url, postgres_url, theirs_state, lease)
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    async with await JobdClient.connect(vhost_url) as client:
        other = await start_replica(env)
        try:
            script = f'while [ ! -e {gate} ]; do sleep 0.02; done; echo "$DM_JOB_UID" >> {runs}'
            job = await client.submit(shell_job(script))  # the only consumer: it is theirs

            async def running() -> bool | None:
                return True if (await client.status(job.uid)).status is JobStatus.RUNNING else None

            await poll_until(running, what="the job running")
        finally:
            other.send_signal(signal.SIGKILL)
            await other.wait()
        async with Daemon(mine, vhost_url) as a:

            async def reported() -> str | None:
                view = (await client.status(job.uid)).job
                message = view.message if view is not None else ""
                return message if message and message.startswith(STRANDED) else None

            message = await poll_until(reported, timeout=30, what="the stranded job reported")
            assert str(theirs_state) in message, message
            record = await a.store.get(job.uid)
            assert record is not None and record.status is JobStatus.RUNNING, "kept active, not given up"
            assert a.supervisor.watching == 0, "not adopted by a replica that cannot reach it"
            again = await start_replica(env)  # a replica on its host and state folder again
            try:

                async def taken_back() -> str | None:
                    view = (await client.status(job.uid)).job
                    message = view.message if view is not None else ""
                    return message if message and message.startswith("adopted by replica") else None

                await poll_until(taken_back, timeout=30, what="the job taken back")
                gate.touch()
                assert (await job.wait(timeout=30)).status is JobStatus.COMPLETED
            finally:
                again.send_signal(signal.SIGTERM)
                await again.wait()
    assert runs.read_text().split() == [job.uid], "it ran once"
