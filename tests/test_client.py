"""The Python client as a backend developer uses it: the README's script, handles, typed errors."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
from helpers import JOB, NOOP, reverse_job, shell_job
from mypy import api as mypy_api

from daemon.app import Daemon
from daemon.client import JobdClient, NoBroker, broker_url
from daemon.contracts import JobStatus, NotFinished, UnknownJob, UnknownRunner

ROOT = Path(__file__).resolve().parent.parent


def readme_script() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The Python client") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the README's client section has a script"
    return match.group(1)


async def test_the_readme_script_runs_as_written(jobd: Daemon, vhost_url: str, tmp_path: Path) -> None:
    script = tmp_path / "first.py"
    script.write_text(readme_script())
    runs = []
    for _ in range(5):  # no-op jobs end within a millisecond: the race the handle must not lose
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            env={**os.environ, "DM_JOBD_AMQP_URL": vhost_url, "PYTHONPATH": str(ROOT)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()
        runs.append(out.decode().split())
    assert all(words[1] == "completed" for words in runs), runs


def test_the_readme_script_is_clean_under_mypy_strict(tmp_path: Path) -> None:
    script = tmp_path / "first.py"
    script.write_text(readme_script())
    out, err, status = mypy_api.run(["--strict", "--no-error-summary", str(script)])
    assert status == 0, out + err


async def test_wait_returns_for_jobs_that_end_before_and_after_it_subscribes(client: JobdClient) -> None:
    fast = [
        await client.submit({"type": JOB, "label": f"fast {i}", "runner": {"type": NOOP}}) for i in range(15)
    ]
    # by now some have ended and some not: both must return
    finals = await asyncio.gather(*(job.wait(timeout=20) for job in fast))
    assert {f.status for f in finals} == {JobStatus.COMPLETED}
    slow = await client.submit(shell_job("sleep 0.5; echo done"))
    assert (await slow.wait(timeout=20)).status is JobStatus.COMPLETED
    assert (await slow.result()) == "done\n"  # the shell runner's result is the job's output


async def test_errors_are_raised_by_kind(client: JobdClient) -> None:
    with pytest.raises(UnknownRunner, match="no runner for type"):
        await client.submit({"type": JOB, "label": "x", "runner": {"type": "nope://Nothing"}})
    with pytest.raises(UnknownJob):
        await client.handle("no-such-job").status()
    job = await client.submit(shell_job("sleep 30"))
    with pytest.raises(NotFinished):
        await job.result()
    stopped = await job.stop()
    assert stopped.status is JobStatus.REMOVED


async def test_result_and_events_of_a_job(client: JobdClient) -> None:
    job = await client.submit(reverse_job("sdrawkcaBsIsihT"))
    seen = [event.data.status async for event in job.events()]
    assert not seen or seen[-1].is_terminal
    assert (await job.wait(timeout=20)).status is JobStatus.COMPLETED
    assert await job.result() == "ThisIsBackwards"
    assert [e async for e in job.events()] == [], "a finished job's events end at once"


def test_the_local_broker_is_found_from_any_folder_inside_the_checkout(tmp_path: Path) -> None:
    url_file = tmp_path / ".state" / "broker" / "url"
    url_file.parent.mkdir(parents=True)
    url_file.write_text("amqp://guest:guest@127.0.0.1:5999/\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert broker_url({}, deep) == "amqp://guest:guest@127.0.0.1:5999/"
    assert broker_url({"DM_JOBD_AMQP_URL": "amqp://elsewhere/"}, deep) == "amqp://elsewhere/"
    with pytest.raises(NoBroker, match="DM_JOBD_AMQP_URL"):
        broker_url({}, Path("/"))
