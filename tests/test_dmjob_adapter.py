"""The dm-job adapter runs handler folders written for dm-job unchanged (folders in tests/handlers/)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from helpers import RecordingLog

from daemon.contracts import (
    JobSpec,
    JobStatus,
    Runner,
    RunnerContext,
    RunnerError,
    RunnerStatus,
)
from plugins.dmjob import Discovered, ShimClash, discover

HANDLERS = Path(__file__).parent / "handlers"
WF = "dmss://WorkflowDS/Blueprints/"
TOKEN = "tok-3f9a7c1e5b2d4a6f8e0c"


@pytest.fixture
def handlers_dir(tmp_path: Path) -> Path:
    """A copy of tests/handlers (handlers write next to themselves), plus a folder that does not compile."""
    target = tmp_path / "handlers"
    shutil.copytree(HANDLERS, target, ignore=shutil.ignore_patterns("results", "__pycache__"))
    broken = target / "broken_syntax"
    broken.mkdir()
    (broken / "__init__.py").write_text(
        '_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/Broken"\n\nclass JobHandler(:\n    pass\n'
    )
    (target / "_private").mkdir()
    (target / "_private" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    return target


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def log() -> RecordingLog:
    return RecordingLog()


ENV = {
    "DMSS_URL": "http://dmss.test:5000",
    "SCHEDULER_ENVS_TO_EXPORT": "A_VAR, B_VAR",
    "SOME_OTHER_SETTING": "other-value",
    "AZURE_SP_SECRET": "sp-secret-value-123",
}


@pytest.fixture
def make_ctx(tmp_path: Path, log: RecordingLog) -> Callable[..., RunnerContext]:
    def make(env: Mapping[str, str] = ENV, state: str = "state") -> RunnerContext:
        return RunnerContext(env=dict(env), state_dir=tmp_path / state, log=log)

    return make


@pytest.fixture
async def found(
    handlers_dir: Path, make_ctx: Callable[..., RunnerContext]
) -> AsyncIterator[Callable[..., dict[str, Discovered]]]:
    """Runs discovery (as often as a test likes) and closes every runner it made afterwards."""
    made: list[Discovered] = []

    def run(ctx: RunnerContext | None = None) -> dict[str, Discovered]:
        result = discover([handlers_dir], ctx or make_ctx())
        made.extend(result)
        return {Path(d.origin.removeprefix("handler folder ")).name: d for d in result}

    yield run
    for d in made:
        await d.runner.close()


def spec(
    runner_type: str,
    application_input: Mapping[str, Any] | None = None,
    *,
    address: str | None = "dmss://MyDS/$job-1",
    token: str | None = TOKEN,
) -> JobSpec:
    entity = {
        "type": "dmss://WorkflowDS/Blueprints/Job",
        "label": "a test job",
        "status": "not started",
        "triggeredBy": "tester",
        "outputTarget": "dmss://MyDS/$456.result",
        "applicationInput": dict(application_input or {}),
        "runner": {"type": runner_type},
        "started": "Not started",
        "somethingUnknown": {"kept": True},
    }
    env = {"DMSS_TOKEN": token} if token else {}
    return JobSpec(uid=str(uuid.uuid4()), entity=entity, env=env, token=token, address=address)


async def poll_until(
    runner: Runner,
    job: JobSpec,
    handle: dict[str, Any],
    done: Callable[[RunnerStatus], bool],
    timeout: float = 15.0,
) -> RunnerStatus:
    """Poll with a deadline until ``done`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await runner.poll(job, handle)
        if done(status):
            return status
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting; last status {status}")
        await asyncio.sleep(0.01)


async def wait_for_file(path: Path, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not path.exists():
        if loop.time() > deadline:
            raise AssertionError(f"{path} never appeared")
        await asyncio.sleep(0.01)


def settled(status: RunnerStatus) -> bool:
    return status.status.is_terminal


def slow_input(work: Path, name: str = "slow") -> dict[str, str]:
    return {
        "callsFile": str(work / f"{name}.calls"),
        "beganFile": str(work / f"{name}.began"),
        "releaseFile": str(work / f"{name}.release"),
    }


@pytest.fixture
def release(work: Path) -> Iterator[None]:
    """Lets every slow_shell start() still waiting finish, whatever the test did."""
    yield
    for calls in work.glob("*.calls"):
        calls.with_suffix(".release").touch()


# -- discovery -------------------------------------------------------------------------------------------


def test_discovery_finds_types_and_skips_broken_folders(
    found: Callable[..., dict[str, Discovered]], handlers_dir: Path, log: RecordingLog
) -> None:
    by_folder = found()
    assert set(by_folder) == {
        "binary_types",
        "config_reader",
        "deploy_style",
        "key_error",
        "reverse_description",
        "slow_shell",
        "token_user",
    }
    assert by_folder["reverse_description"].types == (WF + "ReverseDescription",)
    assert by_folder["binary_types"].types == (WF + "BinaryA", WF + "BinaryB")
    for name, d in by_folder.items():
        assert d.origin == f"handler folder {(handlers_dir / name).resolve()}"
        assert isinstance(d.runner, Runner)

    errors = {Path(kw["folder"]).name: kw["error"] for event, kw in log.at("error")}
    assert set(errors) == {"broken_syntax", "no_handler", "needs_more_of_dm_job"}
    assert "syntax error" in errors["broken_syntax"] and "__init__.py, line 3" in errors["broken_syntax"]
    assert "_SUPPORTED_TYPE" in errors["no_handler"]
    assert "No module named 'features'" in errors["needs_more_of_dm_job"]
    assert "dm-job's 'features' is not provided" in errors["needs_more_of_dm_job"]


def test_a_directory_may_itself_be_a_handler_folder(
    handlers_dir: Path, make_ctx: Callable[..., RunnerContext], log: RecordingLog
) -> None:
    result = discover([handlers_dir / "deploy_style", handlers_dir / "missing"], make_ctx())
    assert [d.types for d in result] == [(WF + "TestDeployment",)]
    assert [kw["directory"] for _, kw in log.at("error")] == [str(handlers_dir / "missing")]


def test_a_module_already_named_like_dm_jobs_is_a_clear_error(
    handlers_dir: Path, make_ctx: Callable[..., RunnerContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "utils", ModuleType("utils"))
    with pytest.raises(ShimClash, match="'utils'"):
        discover([handlers_dir], make_ctx())


# -- running -------------------------------------------------------------------------------------------


async def test_reverse_description_runs_and_returns_text(
    found: Callable[..., dict[str, Discovered]], log: RecordingLog
) -> None:
    runner = found()["reverse_description"].runner
    job = spec(WF + "ReverseDescription", {"description": "hello world"})
    started = await runner.start(job)
    assert started.status.status is JobStatus.RUNNING
    json.dumps(started.handle)  # a handle is JSON

    status = await poll_until(runner, job, started.handle, settled)
    # Its progress() echoes self.job.status: that reads as completed once start() returned.
    assert status.status is JobStatus.COMPLETED
    assert status.message == "OK"
    assert status.logs == ("Progress tracking not implemented",)

    result = await runner.result(job, started.handle)
    assert (result.data, result.media_type) == ("dlrow olleh", "text/plain")
    # Handler logs go to the daemon's log, tagged with handler and job.
    assert ("Starting ReverseDescription job.", {"handler": "reverse_description", "uid": job.uid}) in log.at(
        "info"
    )


async def test_tuple_types_no_progress_and_binary_result(found: Callable[..., dict[str, Discovered]]) -> None:
    runner = found()["binary_types"].runner
    job = spec(WF + "BinaryB")
    started = await runner.start(job)
    status = await poll_until(runner, job, started.handle, settled)
    assert (status.status, status.message) == (JobStatus.COMPLETED, "ran a BinaryB job")
    result = await runner.result(job, started.handle)
    assert (result.data, result.media_type) == (b"\xff\x00\xfe\x01", "application/octet-stream")


async def test_deploy_style_job_is_settled_by_progress(
    found: Callable[..., dict[str, Discovered]], work: Path
) -> None:
    runner = found()["deploy_style"].runner
    done = work / "deploy.done"
    job = spec(WF + "TestDeployment", {"doneFile": str(done), "removedFile": str(work / "deploy.removed")})
    started = await runner.start(job)

    status = await poll_until(
        runner, job, started.handle, lambda s: s.status is not JobStatus.RUNNING or s.percentage == 50.0
    )
    assert (status.status, status.message, status.logs, status.percentage) == (
        JobStatus.RUNNING,
        "Deployment created",
        ("waiting for the deployment",),
        50.0,
    )

    done.touch()
    status = await poll_until(runner, job, started.handle, settled)
    assert (status.status, status.logs, status.percentage) == (
        JobStatus.COMPLETED,
        ("step 1 done", "step 2 done"),
        100.0,
    )
    with pytest.raises(RunnerError, match="does not implement result"):
        await runner.result(job, started.handle)


async def test_key_error_in_start_fails_with_the_missing_attribute(
    found: Callable[..., dict[str, Discovered]],
) -> None:
    runner = found()["key_error"].runner
    job = spec(WF + "NeedsAnAttribute")
    started = await runner.start(job)
    status = await poll_until(runner, job, started.handle, settled)
    assert status.status is JobStatus.FAILED
    assert status.message is not None
    assert "tried to access a missing attribute: 'image'" in status.message
    assert "key_error" in status.message


async def test_config_reads_the_daemon_environment(
    found: Callable[..., dict[str, Discovered]], make_ctx: Callable[..., RunnerContext]
) -> None:
    by_folder = found()
    runner = by_folder["config_reader"].runner
    job = spec(WF + "ReadsConfig")
    started = await runner.start(job)
    status = await poll_until(runner, job, started.handle, settled)
    assert status.message == (
        "dmss=http://dmss.test:5000 env=local ds=MyDS exported=A_VAR,B_VAR other=other-value"
    )

    # Another context (another daemon environment) in the same process sees its own values.
    other = found(make_ctx({"DMSS_API": "http://elsewhere:1", "ENVIRONMENT": "production"}, "state2"))
    runner = other["config_reader"].runner
    job = spec(WF + "ReadsConfig", address=None)
    started = await runner.start(job)
    status = await poll_until(runner, job, started.handle, settled)
    assert status.message == "dmss=http://elsewhere:1 env=production ds= exported= other=None"


async def test_token_reaches_the_handler_but_no_message_or_log(
    found: Callable[..., dict[str, Discovered]], handlers_dir: Path, log: RecordingLog, tmp_path: Path
) -> None:
    runner = found()["token_user"].runner
    ok = spec(WF + "UsesToken")
    bad = spec(WF + "UsesToken", {"fail": True})
    statuses = []
    for job in (ok, bad):
        started = await runner.start(job)
        statuses.append(started.status)
        statuses.append(await poll_until(runner, job, started.handle, settled))

    results = handlers_dir / "token_user" / "results"
    assert (results / ok.uid).read_text() == TOKEN  # the handler had it
    assert statuses[1].status is JobStatus.COMPLETED and statuses[1].message == "authenticated with ***"
    # dm-job appended start()'s answer to the job log; so does the adapter.
    assert statuses[1].logs == ("authenticated as ***", "authenticated with ***"), "dm-job 1.6.4+: no prefix"
    assert statuses[3].status is JobStatus.FAILED
    assert statuses[3].message is not None and "401 Unauthorized for token ***" in statuses[3].message

    assert ("calling DMSS with Access-Key ***", {"handler": "token_user", "uid": ok.uid}) in log.at("info")
    seen = [repr(s) for s in statuses] + [log.text()]
    seen += [p.read_text() for p in (tmp_path / "state").glob("*.json")]
    assert not [text for text in seen if TOKEN in text]
    assert "sp-secret-value-123" not in log.text()


async def test_start_is_idempotent_per_uid(
    found: Callable[..., dict[str, Discovered]], work: Path, release: None
) -> None:
    runner = found()["slow_shell"].runner
    job = spec(WF + "SlowShell", slow_input(work))
    first = await runner.start(job)
    await wait_for_file(work / "slow.began")
    status = await runner.poll(job, first.handle)
    assert (status.status, status.message, status.percentage) == (
        JobStatus.RUNNING,
        "JobHandler.start() is running",
        10.0,
    )

    again = await runner.start(job)
    assert again.handle == first.handle
    assert again.status.status is JobStatus.RUNNING
    with pytest.raises(Exception, match="still running"):
        await runner.result(job, first.handle)

    (work / "slow.release").touch()
    status = await poll_until(runner, job, first.handle, settled)
    assert (status.status, status.message) == (JobStatus.COMPLETED, "script finished")
    await runner.start(job)  # done, and forgotten in memory: the record on disk still says so
    assert (work / "slow.calls").read_text().splitlines() == [job.uid]


async def test_stop_calls_remove(found: Callable[..., dict[str, Discovered]], work: Path) -> None:
    runner = found()["deploy_style"].runner
    removed = work / "deploy.removed"
    job = spec(WF + "TestDeployment", {"doneFile": str(work / "deploy.done"), "removedFile": str(removed)})
    started = await runner.start(job)
    await poll_until(runner, job, started.handle, lambda s: s.percentage == 50.0)
    await runner.stop(job, started.handle)
    assert removed.read_text() == job.uid
    assert (await runner.poll(job, started.handle)).status is JobStatus.REMOVED


async def test_stop_without_remove_is_fine(
    found: Callable[..., dict[str, Discovered]], log: RecordingLog
) -> None:
    runner = found()["binary_types"].runner
    job = spec(WF + "BinaryA")
    started = await runner.start(job)
    await poll_until(runner, job, started.handle, settled)
    await runner.stop(job, started.handle)
    assert any("nothing to remove" in event for event, _ in log.at("info"))


async def test_stop_while_start_runs_says_the_thread_goes_on(
    found: Callable[..., dict[str, Discovered]], work: Path, log: RecordingLog, release: None
) -> None:
    runner = found()["slow_shell"].runner
    job = spec(WF + "SlowShell", slow_input(work))
    started = await runner.start(job)
    await wait_for_file(work / "slow.began")
    await runner.stop(job, started.handle)  # slow_shell has no remove(): nothing to remove
    status = await runner.poll(job, started.handle)
    assert status.status is JobStatus.REMOVED
    assert status.message is not None and "cannot be killed" in status.message
    assert any("cannot be killed" in event for event, _ in log.at("warning"))


# -- restart -------------------------------------------------------------------------------------------


async def test_a_new_adapter_reattaches_and_settles(
    found: Callable[..., dict[str, Discovered]], work: Path, release: None
) -> None:
    old = found()
    done = work / "deploy.done"
    deploy = spec(WF + "TestDeployment", {"doneFile": str(done), "removedFile": str(work / "x")})
    deploy_started = await old["deploy_style"].runner.start(deploy)
    await poll_until(
        old["deploy_style"].runner, deploy, deploy_started.handle, lambda s: s.percentage == 50.0
    )
    slow = spec(WF + "SlowShell", slow_input(work))
    slow_started = await old["slow_shell"].runner.start(slow)
    await wait_for_file(work / "slow.began")
    for d in old.values():
        await d.runner.close()

    new = found()  # a new daemon: same state_dir, nothing in memory
    runner = new["deploy_style"].runner
    status = await runner.poll(deploy, deploy_started.handle)
    assert (status.status, status.message, status.percentage) == (
        JobStatus.RUNNING,
        "Deployment created",
        50.0,
    )
    done.touch()
    status = await poll_until(runner, deploy, deploy_started.handle, settled)
    assert (status.status, status.percentage) == (JobStatus.COMPLETED, 100.0)

    runner = new["slow_shell"].runner
    status = await runner.poll(slow, slow_started.handle)
    assert status.status is JobStatus.FAILED
    assert status.message is not None and "still running when the previous daemon stopped" in status.message
    again = await runner.start(slow)  # must not run start() a second time
    assert again.status.status is JobStatus.FAILED
    assert (work / "slow.calls").read_text().splitlines() == [slow.uid]


async def test_a_job_whose_start_never_began_may_be_started_again(
    found: Callable[..., dict[str, Discovered]], tmp_path: Path
) -> None:
    """The daemon may repeat ``start`` after a crash; a record saying start() was only queued allows it."""
    runner = found()["reverse_description"].runner
    job = spec(WF + "ReverseDescription", {"description": "abc"})
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    (state / f"{job.uid}.json").write_text(json.dumps({"uid": job.uid, "handler": "x", "phase": "queued"}))
    started = await runner.start(job)
    status = await poll_until(runner, job, started.handle, settled)
    assert (status.status, status.message) == (JobStatus.COMPLETED, "OK")


async def test_poll_of_an_unknown_job_is_failed_not_started(
    found: Callable[..., dict[str, Discovered]],
) -> None:
    runner = found()["reverse_description"].runner
    job = spec(WF + "ReverseDescription")
    status = await runner.poll(job, {})
    assert status.status is JobStatus.FAILED
    assert status.message is not None and status.message.startswith("not started")
