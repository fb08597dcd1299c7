"""The daemon's JSON logs as an operator's log pipeline reads them: one JSON object per line, and every
line about a job carries the job's uid as a field (so a search by uid finds the whole story); at
debug level, the per-job lines included, and still no token."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from helpers import shell_job

from daemon.client import JobdClient

#: The jobs' DMSS token: in the command bodies, which the AMQP library's debug lines would print.
TOKEN = "tok-debug-5e4d3c2b1a"


async def test_every_line_is_one_object_and_every_line_about_a_job_names_it(
    vhost_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DM_JOBD_")}
    env.update(
        {
            "DM_JOBD_AMQP_URL": vhost_url,
            "DM_JOBD_STATE_DIR": str(tmp_path / "state"),
            "DM_JOBD_LOG_FORMAT": "json",
            "DM_JOBD_LOG_LEVEL": "debug",  # every line, the per-job ones ("job accepted") included
            "DM_JOBD_ENABLE_SHELL": "1",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon.cli", "run", env=env, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    lines: list[str] = []
    while not any('"dm-jobd ready"' in line for line in lines):
        line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
        assert line, f"the daemon exited: {lines}"
        lines.append(line)
    uids: set[str] = set()
    try:
        async with await JobdClient.connect(vhost_url) as client:
            jobs = [
                await client.submit(shell_job(s), token=TOKEN)
                for s in ("echo fine", "echo oops; exit 3", "sleep 300")
            ]
            uids.update(job.uid for job in jobs)
            await jobs[-1].stop()
            for job in jobs:
                await job.wait(timeout=20)
            rerun = await client.rerun(jobs[0].uid)
            uids.add(str(rerun.uid))
            await client.handle(str(rerun.uid)).wait(timeout=20)
            assert not (await client.status("no-such-job")).ok
    finally:
        proc.terminate()
        _, rest = await asyncio.wait_for(proc.communicate(), 60)
    lines += rest.decode().splitlines(keepends=True)
    assert proc.returncode == 0
    parsed: list[dict[str, Any]] = []
    for line in lines:
        record = json.loads(line)
        assert isinstance(record, dict) and "event" in record and "timestamp" in record, line
        parsed.append(record)
    about_jobs = [r for r in parsed if any(uid in json.dumps(r) for uid in uids)]
    assert len(about_jobs) >= len(uids), "the jobs were logged"
    unnamed = [r for r in about_jobs if r.get("uid") not in uids]
    assert unnamed == [], "a line about a job without its uid as a field"
    assert not [line for line in lines if TOKEN in line], "at debug too, no line holds a token"
