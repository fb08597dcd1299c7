"""Ownership across replicas on one PostgreSQL store: a replica SIGKILLed with running jobs has them
adopted by the one left, which re-attaches through their handles and sees each complete once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from helpers import poll_until, shell_job
from pydantic import SecretStr

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus


async def test_a_sigkilled_replicas_jobs_are_adopted_and_complete_once(
    settings: Settings, vhost_url: str, postgres_url: str, tmp_path: Path
) -> None:
    lease = 1.5
    state = tmp_path / "shared-state"  # shell jobs are reachable from the same host and state folder
    mine = settings.model_copy(
        update={"store": SecretStr(postgres_url), "state_dir": state, "lease_seconds": lease}
    )
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
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    async with Daemon(mine, vhost_url) as a, await JobdClient.connect(vhost_url) as client:
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.cli", "run", env=env, stderr=asyncio.subprocess.PIPE
        )
        assert other.stderr is not None
        while b'"dm-jobd ready"' not in (line := await asyncio.wait_for(other.stderr.readline(), 60)):
            assert line, "the second replica exited"
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
