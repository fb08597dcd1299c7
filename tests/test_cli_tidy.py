"""The CLI as an operator meets it: one clear line per error with its exit code, JSON that parses
wherever ``--json`` is put, listing, logs, reruns, and follow views that show every log line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from helpers import cli, shell_job

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.contracts import JobStatus
from daemon.localbroker import LocalBroker

LINES = [f"line {i}" for i in range(1, 31)]
ECHO_LINES = "for i in $(seq 1 30); do echo line $i; done"


def one_clear_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dm-jobd: "), err
    assert "Traceback" not in err
    return lines[0]


async def test_no_broker_and_refused_credentials_are_one_line_and_exit_2(
    vhost_url: str, tmp_path: Path
) -> None:
    code, _, err = await cli("status", "x", url="amqp://guest:guest@127.0.0.1:1/", cwd=tmp_path)
    assert code == 2 and "no broker answers at 127.0.0.1:1" in one_clear_line(err)
    wrong = vhost_url.replace("guest:guest@", "guest:s3cret-pw@")
    code, _, err = await cli("status", "x", url=wrong, cwd=tmp_path)
    assert code == 2 and "refused the connection" in one_clear_line(err)
    assert "s3cret-pw" not in err, "a password never reaches the terminal"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"DM_JOBD_AMQP_URL": "not-a-url"}, "DM_JOBD_AMQP_URL: not a broker URL"),
        ({"DM_JOBD_AMQP_URL": "http://host/"}, "scheme must be amqp or amqps"),
        ({"DM_JOBD_AMQP_URL": "amqp://jobd:s3cret-pw"}, "its host or port cannot be read"),
        ({"DM_JOBD_PREFETCH": "many"}, "DM_JOBD_PREFETCH: "),
        ({"DMSS_URL": "x", "DM_JOBD_LOG_FORMAT": "xml"}, "DM_JOBD_LOG_FORMAT: "),
    ],
)
async def test_a_bad_setting_is_refused_at_once_naming_its_variable(
    env: dict[str, str], names: str, tmp_path: Path
) -> None:
    for command in (("status", "x"), ("run",)):
        code, _, err = await cli(*command, url=None, cwd=tmp_path, extra_env=env)
        assert code == 2 and names in one_clear_line(err), (command, err)
        assert "s3cret-pw" not in err, "a password never reaches the terminal, even in a bad URL"


async def test_run_with_refused_credentials_exits_2(vhost_url: str, tmp_path: Path) -> None:
    code, _, err = await cli(
        "run",
        url=vhost_url.replace("guest:guest@", "guest:nope@"),
        cwd=tmp_path,
        extra_env={"DM_JOBD_LOG_FORMAT": "json"},
    )
    assert code == 2 and "refused the connection" in err
    assert all(json.loads(line) for line in err.splitlines()), "every log line is one JSON object"


async def test_a_missing_or_unreadable_file_is_one_line(vhost_url: str, tmp_path: Path) -> None:
    code, _, err = await cli("submit", str(tmp_path / "nope.json"), url=vhost_url, cwd=tmp_path)
    assert code == 2 and "cannot read" in one_clear_line(err) and "No such file" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = await cli("submit", str(tmp_path / "bad.json"), url=vhost_url, cwd=tmp_path)
    assert code == 2 and "is not JSON" in one_clear_line(err)


async def test_json_before_or_after_the_subcommand_and_version(
    jobd: Daemon, client: JobdClient, vhost_url: str, tmp_path: Path
) -> None:
    job = await client.submit(shell_job("echo hi"))
    await job.wait(timeout=20)
    for args in (("--json", "status", job.uid), ("status", job.uid, "--json")):
        code, out, err = await cli(*args, url=vhost_url, cwd=tmp_path)
        assert code == 0 and json.loads(out)["job"]["status"] == "completed", err
    for more in (("health", "--json"), ("runners", "--json"), ("runners", "--local", "--json")):
        code, out, err = await cli(*more, url=vhost_url, cwd=tmp_path)
        assert code == 0, err
        json.loads(out)
    code, out, _ = await cli("--version", url=None, cwd=tmp_path)
    assert code == 0 and out.startswith("dm-jobd 0.")


async def test_runners_shows_what_the_running_daemon_loaded(
    jobd: Daemon, vhost_url: str, tmp_path: Path
) -> None:
    """The daemon runs with the shell runner on; the CLI's own environment has it off."""
    code, out, err = await cli("--json", "runners", url=vhost_url, cwd=tmp_path)
    assert code == 0, err
    shell = {r["type"]: r for r in json.loads(out)["runners"]}["dmss://WorkflowDS/Blueprints/Shell"]
    assert shell["ready"] is True
    code, out, _ = await cli("runners", "--local", url=vhost_url, cwd=tmp_path)
    assert "off: the shell runner is off" in out


async def test_jobs_logs_and_rerun(jobd: Daemon, client: JobdClient, vhost_url: str, tmp_path: Path) -> None:
    job = await client.submit(shell_job(f"{ECHO_LINES}; exit 3"))
    assert (await job.wait(timeout=20)).status is JobStatus.FAILED
    code, out, err = await cli("logs", job.uid, url=vhost_url, cwd=tmp_path)
    assert (code, out.splitlines()) == (0, LINES), err
    code, out, _ = await cli("jobs", "--status", "failed", url=vhost_url, cwd=tmp_path)
    assert code == 0 and out.startswith(f"{job.uid}  failed")
    code, out, _ = await cli("jobs", "--status", "completed", "--json", url=vhost_url, cwd=tmp_path)
    assert json.loads(out)["jobs"] == []
    code, out, err = await cli("rerun", job.uid, url=vhost_url, cwd=tmp_path)
    assert code == 0, err
    again = out.split()[0]
    assert again != job.uid
    code, out, _ = await cli("status", again, "--json", url=vhost_url, cwd=tmp_path)
    assert json.loads(out)["job"]["rerunOf"] == job.uid
    code, out, _ = await cli("jobs", "--all", "--limit", "1", "--json", url=vhost_url, cwd=tmp_path)
    assert {j["uid"] for j in json.loads(out)["jobs"]} == {job.uid, again}, "--all follows the cursor"


async def test_result_of_a_failed_job_shows_its_error_and_logs(
    jobd: Daemon, client: JobdClient, vhost_url: str, tmp_path: Path
) -> None:
    job = await client.submit(shell_job("echo the reason; exit 4"))
    await job.wait(timeout=20)
    code, out, err = await cli("result", job.uid, url=vhost_url, cwd=tmp_path)
    assert code == 1 and out == ""
    assert "error (no_result)" in err and "exit code 4" in err and "| the reason" in err


async def test_submit_wait_shows_every_log_line(jobd: Daemon, vhost_url: str, tmp_path: Path) -> None:
    """Thirty lines at once: far more than an event carries, each shown once and in order."""
    (tmp_path / "job.json").write_text(json.dumps(shell_job(ECHO_LINES)))
    code, out, err = await cli("submit", str(tmp_path / "job.json"), "--wait", url=vhost_url, cwd=tmp_path)
    assert code == 0, err
    shown = [line.removeprefix("  | ") for line in out.splitlines() if line.startswith("  | ")]
    assert shown == LINES, out


async def follow(args: list[str], url: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DM_JOBD_")}
    env["DM_JOBD_AMQP_URL"] = url
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon.cli", *args, env=env, stdout=asyncio.subprocess.PIPE
    )


async def test_logs_follow_prints_every_line_until_the_job_ends(
    jobd: Daemon, client: JobdClient, vhost_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    first = "for i in $(seq 1 15); do echo line $i; done"
    then = "for i in $(seq 16 30); do echo line $i; done"
    job = await client.submit(shell_job(f"{first}; while [ ! -e {gate} ]; do sleep 0.02; done; {then}"))
    proc = await follow(["logs", job.uid, "--follow"], vhost_url)
    assert proc.stdout is not None
    for expected in LINES[:15]:  # the lines so far come first; then the job is let go
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().rstrip("\n") == expected
    gate.touch()
    rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert rest.decode().splitlines() == LINES[15:]
    assert proc.returncode == 0, "the job completed"


async def test_events_of_an_ended_job_print_its_history_and_end(
    jobd: Daemon, client: JobdClient, vhost_url: str, tmp_path: Path
) -> None:
    done = await client.submit(shell_job("echo fine"))
    failed = await client.submit(shell_job("exit 1"))
    await done.wait(timeout=20)
    await failed.wait(timeout=20)
    code, out, err = await cli("events", "--job", done.uid, url=vhost_url, cwd=tmp_path)
    assert code == 0, err
    assert "created" in out and out.index("started") < out.index("completed") and "| fine" in out
    code, out, _ = await cli("events", "--job", failed.uid, "--json", url=vhost_url, cwd=tmp_path)
    assert code == 1 and json.loads(out.splitlines()[0])["job"]["status"] == "failed"


async def test_a_second_run_reuses_the_local_broker_and_never_stops_it(tmp_path: Path) -> None:
    """Two ``dm-jobd run`` in one checkout: the first started the broker; leaving, it keeps it for the
    second, which did not start it and so leaves it running too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DM_JOBD_")}
    env.update({"DM_JOBD_STATE_DIR": str(tmp_path / ".state"), "DM_JOBD_LOG_FORMAT": "json"})
    broker = LocalBroker(tmp_path / ".state" / "broker")

    async def start() -> tuple[asyncio.subprocess.Process, list[dict[str, object]]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.cli", "run", cwd=tmp_path, env=env, stderr=asyncio.subprocess.PIPE
        )
        assert proc.stderr is not None
        seen: list[dict[str, object]] = []
        while not seen or seen[-1]["event"] != "dm-jobd ready":
            line = await asyncio.wait_for(proc.stderr.readline(), 90)
            assert line, f"the daemon exited: {seen}"
            seen.append(json.loads(line))
        return proc, seen

    try:
        first, _ = await start()
        second, seen = await start()
        assert any(
            e["event"] == "reusing the local broker already running from this state folder" for e in seen
        )
        first.terminate()
        assert await asyncio.wait_for(first.communicate(), 60) and first.returncode == 0
        assert await broker.is_running(), "the first left the broker to the second, which still uses it"
        code, out, err = await cli("health", url=None, cwd=tmp_path)
        assert code == 0 and ": ok: broker connected, store written, consuming" in out, err
        second.terminate()
        await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 0
        assert await broker.is_running(), "the second did not start it, so it does not stop it"
    finally:
        await broker.stop()
