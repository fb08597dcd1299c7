"""The ``dm-jobd`` command line, run as a user would, against a daemon on the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

from helpers import cli, reverse_job, shell_job

from daemon.app import Daemon
from daemon.config import Settings


async def test_submit_wait_shows_each_status_and_result_prints_the_output(
    jobd: Daemon, vhost_url: str, tmp_path: Path
) -> None:
    job = tmp_path / "job.json"
    job.write_text(json.dumps(shell_job("echo working; echo 'the result' > $DM_JOB_RESULT")))
    code, out, err = await cli("submit", str(job), "--wait", url=vhost_url, cwd=tmp_path)
    assert code == 0, err
    uid = out.split()[0]
    assert "starting" in out and "completed" in out
    assert out.index("starting") < out.index("completed")
    code, out, err = await cli("result", uid, url=vhost_url, cwd=tmp_path)
    assert (code, out) == (0, "the result\n"), err
    code, _, err = await cli("result", uid, "-o", str(tmp_path / "out.bin"), url=vhost_url, cwd=tmp_path)
    assert code == 0 and (tmp_path / "out.bin").read_text() == "the result\n"
    code, out, _ = await cli("status", uid, url=vhost_url, cwd=tmp_path)
    assert code == 0 and f"{uid}  completed" in out
    code, out, _ = await cli("--json", "status", uid, url=vhost_url, cwd=tmp_path)
    assert json.loads(out)["job"]["logs"] == ["working"]


async def test_submit_wait_of_a_reverse_description_job(jobd: Daemon, vhost_url: str, tmp_path: Path) -> None:
    body = json.dumps({"job": reverse_job("sdrawkcaBsIsihT")}).encode()
    code, out, err = await cli("submit", "-", "--wait", url=vhost_url, cwd=tmp_path, stdin=body)
    assert code == 0, err
    lines = out.splitlines()
    statuses = [w for line in lines[1:] for w in ("starting", "running", "completed") if f"  {w} " in line]
    assert statuses == ["starting", "running", "completed"], out + err
    code, out, _ = await cli("result", lines[0].split()[0], url=vhost_url, cwd=tmp_path)
    assert out == "ThisIsBackwards\n", "text ends in a newline on the terminal"


async def test_stop_and_a_failing_job(jobd: Daemon, vhost_url: str, tmp_path: Path) -> None:
    (tmp_path / "long.json").write_text(json.dumps(shell_job("sleep 300")))
    code, out, _ = await cli("submit", str(tmp_path / "long.json"), url=vhost_url, cwd=tmp_path)
    uid = out.split()[0]
    code, out, _ = await cli("stop", uid, url=vhost_url, cwd=tmp_path)
    assert code == 0 and "removed" in out
    (tmp_path / "bad.json").write_text(json.dumps(shell_job("echo oops; exit 4")))
    code, out, _ = await cli("submit", str(tmp_path / "bad.json"), "--wait", url=vhost_url, cwd=tmp_path)
    assert code == 1 and "failed" in out and "exit code 4" in out


async def test_events_follow_one_job(jobd: Daemon, vhost_url: str, tmp_path: Path) -> None:
    from daemon.client import JobdClient

    async with await JobdClient.connect(vhost_url) as client:
        gate = tmp_path / "gate"
        answer = await client.start(shell_job(f"while [ ! -e {gate} ]; do sleep 0.05; done"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DM_JOBD_")}
        env["DM_JOBD_AMQP_URL"] = vhost_url
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "daemon.cli",
            "events",
            "--job",
            str(answer.uid),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            stdout = proc.stdout

            # the subscription exists once the process answers a progress report with its event
            async def line_with(word: str) -> str:
                while True:
                    line: str = (await asyncio.wait_for(stdout.readline(), 30)).decode()
                    assert line, "the events command ended early"
                    if word in line:
                        return line

            for _ in range(100):
                await client.progress(str(answer.uid), percentage=10)
                try:
                    await asyncio.wait_for(line_with("progress 10%"), 0.3)
                    break
                except TimeoutError:
                    continue
            gate.touch()
            line = await line_with("completed")
            assert str(answer.uid) in line and "(was running)" in line
        finally:
            proc.terminate()
            await proc.wait()


async def test_runners_lists_types_and_origins(tmp_path: Path) -> None:
    handlers = tmp_path / "handlers"
    shutil.copytree(Path(__file__).parent / "handlers" / "deploy_style", handlers / "deploy_style")
    needs = handlers / "needs_a_package"
    needs.mkdir()
    (needs / "__init__.py").write_text(
        "import a_package_nobody_has\n_SUPPORTED_TYPE = 'x'\nclass JobHandler:\n    def start(self): ...\n"
    )
    code, out, err = await cli(
        "runners", "--local", url=None, cwd=tmp_path, extra_env={"DM_JOBD_PLUGIN_DIRS": str(handlers)}
    )
    assert code == 0, err
    assert "dmss://WorkflowDS/Blueprints/Shell\n  from plugin shell" in out
    assert "off: the shell runner is off" in out
    assert "dmss://WorkflowDS/Blueprints/TestDeployment\n  from handler folder" in out
    assert f"(not loaded) handler folder {needs}: " in out, "every folder found is reported"
    assert "No module named 'a_package_nobody_has'" in out, "and why not"


async def test_client_commands_without_a_broker_say_how_to_get_one(tmp_path: Path) -> None:
    code, _, err = await cli("status", "x", url=None, cwd=tmp_path)
    assert code == 2 and "DM_JOBD_AMQP_URL" in err


async def test_dm_job_handler_folder_runs_through_the_daemon(
    settings: Settings, vhost_url: str, tmp_path: Path
) -> None:
    from helpers import ended, events_until

    from daemon.client import JobdClient

    handlers = tmp_path / "handlers"
    shutil.copytree(
        Path(__file__).parent / "handlers" / "reverse_description", handlers / "reverse_description"
    )
    with_handlers = settings.model_copy(update={"plugin_dirs": [handlers]})
    async with Daemon(with_handlers, vhost_url) as daemon, await JobdClient.connect(vhost_url) as client:
        assert daemon.registry is not None
        origins = {e.type: e.origin for e in daemon.registry.entries()}
        assert origins["dmss://WorkflowDS/Blueprints/ReverseDescription"].startswith("handler folder")
        async with client.events() as events:
            answer = await client.start(reverse_job("raksO gitS"))
            seen = await events_until(events, ended(str(answer.uid)))
        assert seen[-1].data.status.value == "completed"
        assert (await client.result(str(answer.uid))).result == "Stig Oskar"


async def test_run_without_a_broker_url_starts_a_local_broker_and_stops_it(tmp_path: Path) -> None:
    """The README's run command: no DM_JOBD_AMQP_URL, so the daemon brings its own broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DM_JOBD_")}
    env.update({"DM_JOBD_STATE_DIR": str(tmp_path / ".state"), "DM_JOBD_LOG_FORMAT": "json"})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon.cli",
        "run",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        lines: list[str] = []

        async def ready() -> None:
            while not any("dm-jobd ready" in line for line in lines):
                line = (await proc.stderr.readline()).decode()  # type: ignore[union-attr]
                assert line, f"the daemon exited: {lines}"
                lines.append(line)

        await asyncio.wait_for(ready(), 90)
        url_file = tmp_path / ".state" / "broker" / "url"
        assert url_file.exists()
        code, out, err = await cli("health", url=None, cwd=tmp_path)
        assert code == 0 and out.startswith("replica ") and ": ok: broker connected" in out, err
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    assert not url_file.exists(), "the local broker is stopped with the daemon"
