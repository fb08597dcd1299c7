"""The Radix runner against a fake Radix job scheduler (tests/fake_radix.py), end to end through the broker.

The daemon reaches the fake through ordinary configuration: ``DM_JOBD_RADIX_URL_TEMPLATE`` pointed at
loopback, with the job's ``schedulerPort`` being the fake's port.
"""

from __future__ import annotations

import io
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import structlog
from fake_radix import FakeRadixScheduler
from helpers import JOB, ended, events_until

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import CloudEvent, JobSpec, JobStatus, RunnerContext, RunnerUnavailable
from plugins.radix import PLUGIN, RadixError, RadixRunner

RADIX = "dmss://WorkflowDS/Blueprints/Radix"
TOKEN = "tok-radix-5e6f7a8b9c0d-secret"
DMSS_URL = "http://dmss.example:5000"
TEMPLATE = "http://127.0.0.1:{schedulerPort}"


def radix_job(port: int, *env: str, **runner: Any) -> dict[str, Any]:
    return {
        "type": JOB,
        "label": "a radix job",
        "runner": {
            "type": RADIX,
            "jobName": "compute",
            "schedulerPort": port,
            "environmentVariables": list(env),
            **runner,
        },
    }


def statuses(seen: list[CloudEvent]) -> list[JobStatus]:
    return [e.data.status for e in seen if not e.type.endswith(".progress")]


@pytest.fixture
async def fake() -> AsyncIterator[FakeRadixScheduler]:
    async with FakeRadixScheduler() as scheduler:
        yield scheduler


@pytest.fixture
def radix_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"dmss_url": DMSS_URL})


@pytest.fixture
def environ() -> dict[str, str]:
    return {"DM_JOBD_RADIX_URL_TEMPLATE": TEMPLATE, "FROM_DAEMON": "daemon-value"}


@pytest.fixture
async def radix(
    radix_settings: Settings, vhost_url: str, environ: dict[str, str], log_lines: io.StringIO
) -> AsyncIterator[JobdClient]:
    """A daemon whose Radix runner points at loopback, and a client for it."""
    async with Daemon(radix_settings, vhost_url, environ=environ):
        async with await JobdClient.connect(vhost_url, timeout=20) as client:
            yield client


async def run(client: JobdClient, job: dict[str, Any], **start: Any) -> tuple[str, list[CloudEvent]]:
    """Start a job and collect its events until it ends."""
    async with client.events() as events:
        answer = await client.start(job, **start)
        assert answer.ok and answer.uid, answer
        return answer.uid, await events_until(events, ended(answer.uid))


async def test_a_radix_job_goes_starting_running_completed(
    fake: FakeRadixScheduler, radix: JobdClient
) -> None:
    uid, seen = await run(radix, radix_job(fake.port))
    assert statuses(seen) == [JobStatus.STARTING, JobStatus.RUNNING, JobStatus.COMPLETED]
    radix_job_ = fake.job_for(uid)
    assert radix_job_ is not None and radix_job_.name.startswith("batch-compute-")
    assert seen[-1].data.message == "the Radix job succeeded"
    assert f"Radix job {radix_job_.name}: Succeeded" in seen[-1].data.logs
    assert fake.requests[:2] == ["GET /api/v1/jobs", "POST /api/v1/jobs"]
    assert set(fake.requests[2:]) == {f"GET /api/v1/jobs/{radix_job_.name}"}

    result = await radix.result(uid)
    assert result.ok and result.media_type == "application/json"
    assert isinstance(result.result, str)
    final = json.loads(result.result)
    assert final["name"] == radix_job_.name and final["jobId"] == uid and final["status"] == "Succeeded"
    assert final["podStatuses"][0]["exitCode"] == 0


async def test_the_payload_is_dm_jobs_environment_and_the_token_goes_nowhere_else(
    fake: FakeRadixScheduler, radix: JobdClient, log_lines: io.StringIO
) -> None:
    resources = {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    job = radix_job(
        fake.port,
        "GREETING=hello",
        "FROM_DAEMON",
        imageTagName="1.2.3",
        timeLimitSeconds=600,
        backoffLimit=2,
        resources=resources,
    )
    uid, seen = await run(radix, job, token=TOKEN)
    assert statuses(seen)[-1] is JobStatus.COMPLETED

    [posted] = fake.received
    assert set(posted) == {
        "payload",
        "jobId",
        "imageTagName",
        "timeLimitSeconds",
        "backoffLimit",
        "resources",
    }
    assert posted["jobId"] == uid and posted["imageTagName"] == "1.2.3"
    assert posted["timeLimitSeconds"] == 600 and posted["backoffLimit"] == 2
    assert posted["resources"] == resources
    payload = json.loads(posted["payload"])
    assert payload["DMSS_TOKEN"] == TOKEN, "the job itself gets the token"
    assert payload["DMSS_URL"] == DMSS_URL and payload["DM_JOB_UID"] == uid
    assert payload["GREETING"] == "hello" and payload["FROM_DAEMON"] == "daemon-value"

    answers = [await radix.status(uid), await radix.result(uid), await radix.stop(uid)]
    texts = [a.model_dump_json() for a in answers] + [e.model_dump_json() for e in seen]
    logs = log_lines.getvalue()
    assert "radix job scheduled" in logs, "the logs were captured"
    for text in [*texts, logs]:
        assert TOKEN not in text


async def test_a_failed_radix_job_fails_with_its_message_and_exit_code(
    fake: FakeRadixScheduler, radix: JobdClient
) -> None:
    uid, seen = await run(radix, radix_job(fake.port, "FAKE_EXIT_CODE=3", "FAKE_RUNNING_POLLS=2"))
    assert statuses(seen) == [JobStatus.STARTING, JobStatus.RUNNING, JobStatus.FAILED]
    failed = seen[-1].data
    assert failed.message == "the Radix job failed: Job has reached the specified backoff limit (exit code 3)"
    radix_job_ = fake.job_for(uid)
    assert radix_job_ is not None
    assert any(
        line.startswith(f"pod {radix_job_.name}-") and "Failed, exit code 3" in line for line in failed.logs
    ), failed.logs
    status = await radix.status(uid)
    assert (
        status.job is not None and "message: Job has reached the specified backoff limit" in status.job.logs
    )


async def test_stop_stops_then_deletes_the_radix_job(fake: FakeRadixScheduler, radix: JobdClient) -> None:
    async with radix.events() as events:
        answer = await radix.start(radix_job(fake.port, "FAKE_RUNNING_POLLS=forever"))
        uid = answer.uid
        assert uid
        await events_until(events, lambda e: e.subject == uid and e.data.status is JobStatus.RUNNING)
        radix_job_ = fake.job_for(uid)
        assert radix_job_ is not None
        stopped = await radix.stop(uid)
        assert stopped.ok and stopped.status is JobStatus.REMOVED, stopped
        seen = await events_until(events, ended(uid))
    assert seen[-1].type == "dm-job.job.removed"
    path = f"/api/v1/jobs/{radix_job_.name}"
    calls = [r for r in fake.requests if r in (f"POST {path}/stop", f"DELETE {path}")]
    assert calls == [f"POST {path}/stop", f"DELETE {path}"]
    assert fake.jobs == {}


@pytest.mark.parametrize(
    ("job_runner", "control", "message"),
    [
        pytest.param(
            {},
            ("POST", 500, "InternalError", "failed to create job: etcdserver: request timed out"),
            "refused to schedule the job: HTTP 500 InternalError: "
            "failed to create job: etcdserver: request timed out",
            id="internal-error",
        ),
        pytest.param(
            {"resources": {"requests": {"cpu": "lots"}}},
            None,
            "refused to schedule the job: HTTP 400 BadRequest: "
            "invalid requests quantity 'lots' for resource cpu",
            id="bad-request",
        ),
        pytest.param(
            {},
            ("GET", 500, "InternalError", "cannot list jobs"),
            "refused to list its jobs: HTTP 500 InternalError: cannot list jobs",
            id="list-refused",
        ),
    ],
)
async def test_radix_error_bodies_become_clear_job_errors(
    fake: FakeRadixScheduler,
    radix: JobdClient,
    job_runner: dict[str, Any],
    control: tuple[str, int, str, str] | None,
    message: str,
) -> None:
    if control is not None:
        fake.fail_next(*control)
    _, seen = await run(radix, radix_job(fake.port, **job_runner), token=TOKEN)
    assert statuses(seen)[-1] is JobStatus.FAILED
    assert seen[-1].data.message == f"the runner could not start the job: the Radix job scheduler {message}"
    assert fake.jobs == {}


async def test_a_job_deleted_in_radix_fails_clearly(fake: FakeRadixScheduler, radix: JobdClient) -> None:
    async with radix.events() as events:
        answer = await radix.start(radix_job(fake.port, "FAKE_RUNNING_POLLS=forever"))
        uid = answer.uid
        assert uid
        await events_until(events, lambda e: e.subject == uid and e.data.status is JobStatus.RUNNING)
        radix_job_ = fake.job_for(uid)
        assert radix_job_ is not None
        fake.forget(radix_job_.name)
        seen = await events_until(events, ended(uid))
    assert seen[-1].data.status is JobStatus.FAILED
    assert seen[-1].data.message == (
        f"the Radix job scheduler at http://127.0.0.1:{fake.port} no longer knows job {radix_job_.name} "
        "(deleted outside dm-jobd?)"
    )


async def test_an_unreachable_scheduler_fails_the_job_clearly(radix: JobdClient) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        _, seen = await run(radix, radix_job(port), token=TOKEN)
    assert statuses(seen)[-1] is JobStatus.FAILED
    message = seen[-1].data.message or ""
    where = f"http://127.0.0.1:{port}"
    assert message.startswith(
        f"the runner could not start the job: cannot reach the Radix job scheduler at {where} "
        "to list its jobs: "
    ), message
    assert TOKEN not in message


@pytest.mark.parametrize(
    ("runner", "message"),
    [
        (
            {"schedulerPort": "http"},
            "runner.schedulerPort must be a whole number from 1 to 65535, not 'http'",
        ),
        ({"schedulerPort": None}, "runner.schedulerPort must give the Radix job scheduler's port"),
        ({"jobName": "Compute_1"}, "runner.jobName must name the Radix job component"),
        ({"backoffLimit": -1}, "runner.backoffLimit must be a whole number from 0 to 2147483647, not -1"),
        ({"timeLimitSeconds": "soon"}, "runner.timeLimitSeconds must be a whole number"),
        ({"resources": "big"}, "runner.resources must look like"),
        ({"imageTagName": 7}, "runner.imageTagName must be an image tag, not 7"),
    ],
)
async def test_malformed_runner_fields_are_clear_job_errors(
    fake: FakeRadixScheduler, radix: JobdClient, runner: dict[str, Any], message: str
) -> None:
    _, seen = await run(radix, radix_job(fake.port, **runner))
    assert statuses(seen)[-1] is JobStatus.FAILED
    assert (seen[-1].data.message or "").startswith(f"the runner could not start the job: {message}")
    assert fake.received == []


async def test_malformed_environment_variables_are_refused(
    fake: FakeRadixScheduler, radix: JobdClient
) -> None:
    """The daemon refuses them at start; the runner checks again for jobs that reach it another way."""
    answer = await radix.start(radix_job(fake.port, "1BAD=x"))
    assert not answer.ok and answer.error is not None and answer.error.code == "invalid"
    assert "'1BAD' is not a valid variable name" in answer.error.message

    runner = RadixRunner(structlog.get_logger(), url_template=TEMPLATE)
    try:
        for bad, text in [
            (["A=1", 3], "must be a list of"),
            (["NOT-A-NAME=1"], "'NOT-A-NAME' is not a valid"),
        ]:
            job = JobSpec(uid=str(uuid.uuid4()), entity=radix_job(fake.port, *cast(list[str], bad)))
            with pytest.raises(RadixError, match=text):
                await runner.start(job)
    finally:
        await runner.close()
    assert fake.received == []


async def test_a_repeated_start_finds_the_job_it_posted(fake: FakeRadixScheduler) -> None:
    """After a crash between POST and the handle being stored, the daemon starts again: no second job."""
    runner = RadixRunner(structlog.get_logger(), url_template=TEMPLATE)
    job = JobSpec(uid=str(uuid.uuid4()), entity=radix_job(fake.port), env={"DMSS_TOKEN": TOKEN}, token=TOKEN)
    try:
        first = await runner.start(job)
        again = await runner.start(job)
    finally:
        await runner.close()
    assert first.handle == again.handle
    assert first.handle["name"] == next(iter(fake.jobs)) and first.handle["jobId"] == job.uid
    assert len(fake.received) == 1 and len(fake.jobs) == 1
    assert again.status.status is JobStatus.STARTING


async def test_a_restarted_daemon_settles_a_radix_job_that_ended_meanwhile(
    fake: FakeRadixScheduler, radix_settings: Settings, vhost_url: str, environ: dict[str, str]
) -> None:
    async with Daemon(radix_settings, vhost_url, environ=environ):
        async with await JobdClient.connect(vhost_url, timeout=20) as client, client.events() as events:
            answer = await client.start(radix_job(fake.port, "FAKE_RUNNING_POLLS=forever"))
            uid = answer.uid
            assert uid
            await events_until(events, lambda e: e.subject == uid and e.data.status is JobStatus.RUNNING)
    radix_job_ = fake.job_for(uid)
    assert radix_job_ is not None
    radix_job_.exit_code, radix_job_.running_polls = 4, 0  # its next GET finds it failed
    async with Daemon(radix_settings, vhost_url, environ=environ):
        async with await JobdClient.connect(vhost_url, timeout=20) as client, client.events() as events:
            status = await client.status(uid)
            if status.status is None or not status.status.is_terminal:
                await events_until(events, ended(uid))
            status = await client.status(uid)
    assert status.status is JobStatus.FAILED and status.job is not None
    assert "(exit code 4)" in (status.job.message or "")
    assert len(fake.received) == 1


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"DM_JOBD_RADIX_URL_TEMPLATE": "http://{component}:{schedulerPort}"}, "may use only"),
        ({"DM_JOBD_RADIX_URL_TEMPLATE": "ftp://{jobName}"}, "must give an http(s) URL"),
        ({"DM_JOBD_RADIX_TIMEOUT_SECONDS": "0"}, "must be a positive number"),
    ],
)
def test_bad_configuration_switches_the_runner_off_with_the_reason(
    env: dict[str, str], reason: str, tmp_path: Path
) -> None:
    ctx = RunnerContext(env=env, state_dir=tmp_path, log=structlog.get_logger())
    with pytest.raises(RunnerUnavailable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        PLUGIN.create(ctx)
