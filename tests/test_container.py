"""The local container runner end to end: real broker, real daemon, real Docker engine (private dockerd).

Jobs run ``localhost/busybox:local``. A job that must stay running waits for a gate file inside its own
container, which the test creates through the engine's exec API when it wants the job to go on.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiodocker
import pytest
from helpers import JOB, ended, events_until

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import CloudEvent, JobStatus
from plugins.container import JOB_LABEL

LOCAL_CONTAINER = "dmss://WorkflowDS/Blueprints/LocalContainer"
IMAGE = {"registryName": "localhost", "imageName": "busybox", "version": "local"}
GATED = "while [ ! -e /tmp/gate ]; do sleep 0.05; done"
TOKEN = "tok-" + "9f8e7d6c5b4a"


def container_job(script: str, **runner: Any) -> dict[str, Any]:
    """A LocalContainer job running ``script`` with busybox sh."""
    return {
        "type": JOB,
        "label": "a container job",
        "runner": {"type": LOCAL_CONTAINER, "image": IMAGE, "customCommand": ["sh", "-c", script], **runner},
    }


async def containers_of(docker: aiodocker.Docker, uid: str) -> list[dict[str, Any]]:
    filters = json.dumps({"label": [f"{JOB_LABEL}={uid}"]})
    return [dict(c._container) for c in await docker.containers.list(all=True, filters=filters)]


async def open_gate(docker: aiodocker.Docker, uid: str) -> None:
    (container,) = await containers_of(docker, uid)
    execution = await docker.containers.container(container["Id"]).exec(["touch", "/tmp/gate"])
    async with execution.start(detach=False) as stream:
        while await stream.read_out() is not None:
            pass


async def wait_running(events: Any, uids: set[str]) -> None:
    waiting = set(uids)

    def all_running(event: CloudEvent) -> bool:
        if event.data.status is JobStatus.RUNNING:
            waiting.discard(event.subject)
        return not waiting

    await events_until(events, all_running)


async def gone(docker: aiodocker.Docker, uid: str) -> bool | None:
    return True if not await containers_of(docker, uid) else None


async def test_a_container_job_completes_with_its_output_as_result_and_is_removed(
    container_client: JobdClient, docker: aiodocker.Docker
) -> None:
    async with container_client.events() as events:
        uid = (await container_client.start(container_job('echo "hello from $DM_JOB_UID"; echo bye'))).uid
        assert uid
        seen = await events_until(events, ended(uid))
    statuses = [e.data.status for e in seen if not e.type.endswith(".progress")]
    assert statuses == [JobStatus.STARTING, JobStatus.RUNNING, JobStatus.COMPLETED]
    assert seen[-1].data.logs[-2:] == [f"hello from {uid}", "bye"]
    result = await container_client.result(uid)
    assert result.result == f"hello from {uid}\nbye\n" and result.media_type == "text/plain"
    assert await containers_of(docker, uid) == [], "removed once settled"


async def test_a_failing_container_fails_with_its_exit_code_and_last_lines(
    container_client: JobdClient,
) -> None:
    # standard error, both lines: the engine keeps order within a stream, not across the two
    async with container_client.events() as events:
        uid = (await container_client.start(container_job("echo one >&2; echo broken >&2; exit 3"))).uid
        assert uid
        await events_until(events, ended(uid))
    status = await container_client.status(uid)
    assert status.status is JobStatus.FAILED and status.job is not None
    assert "exit code 3" in (status.job.message or "")
    assert (status.job.message or "").endswith("one\nbroken")
    assert status.job.logs == ["one", "broken"]


async def test_stop_kills_and_removes_a_running_container(
    container_client: JobdClient, docker: aiodocker.Docker
) -> None:
    async with container_client.events() as events:
        uid = (await container_client.start(container_job("echo up; sleep 600"))).uid
        assert uid
        await wait_running(events, {uid})
        assert [c["State"] for c in await containers_of(docker, uid)] == ["running"]
        answer = await container_client.stop(uid)
        assert answer.ok and answer.status is JobStatus.REMOVED
    assert await containers_of(docker, uid) == []
    assert (await container_client.status(uid)).status is JobStatus.REMOVED


async def test_the_file_at_dm_job_result_is_the_result(container_client: JobdClient) -> None:
    script = 'echo noise; printf "the answer is 42" > "$DM_JOB_RESULT"'
    async with container_client.events() as events:
        uid = (await container_client.start(container_job(script))).uid
        assert uid
        await events_until(events, ended(uid))
    result = await container_client.result(uid)
    assert result.result == "the answer is 42" and result.media_type == "application/octet-stream"


async def test_binary_results_come_back_as_base64(container_client: JobdClient) -> None:
    async with container_client.events() as events:
        uid = (await container_client.start(container_job('printf "\\377\\000\\001" > "$DM_JOB_RESULT"'))).uid
        assert uid
        await events_until(events, ended(uid))
    result = await container_client.result(uid)
    assert result.result is not None and not isinstance(result.result, str)
    assert result.result.base64 == "/wAB"


async def test_environment_resources_and_network_reach_the_container_and_the_token_stays_inside(
    container_client: JobdClient, docker: aiodocker.Docker, capfd: pytest.CaptureFixture[str]
) -> None:
    check = '[ "$DMSS_TOKEN" = "tok-"9f8e7d6c5b4a ] && echo has-token; echo "$GREETING $DM_JOB_UID"; '
    job = container_job(
        check + GATED,
        environmentVariables=["GREETING=hello"],
        computeResource={"cpu": "0.5", "memory": "64Mi"},
        network="none",
    )
    async with container_client.events() as events:
        uid = (await container_client.start(job, token=TOKEN)).uid
        assert uid
        await wait_running(events, {uid})
        (listed,) = await containers_of(docker, uid)
        info = await docker.containers.container(listed["Id"]).show()
        assert f"DMSS_TOKEN={TOKEN}" in info["Config"]["Env"], "the token is in the container's environment"
        assert TOKEN not in json.dumps(info["Config"]["Labels"])
        assert info["HostConfig"]["NanoCpus"] == 500_000_000
        assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
        assert info["HostConfig"]["NetworkMode"] == "none"
        await open_gate(docker, uid)
        seen = await events_until(events, ended(uid))
    assert seen[-1].data.status is JobStatus.COMPLETED
    assert seen[-1].data.logs == ["has-token", f"hello {uid}"]
    for event in seen:
        assert TOKEN not in event.model_dump_json()
    status = await container_client.status(uid)
    assert TOKEN not in status.model_dump_json()
    out, err = capfd.readouterr()
    assert TOKEN not in out + err, "the daemon's log never holds the token"


async def test_exits_are_pushed_from_the_engine_events_not_polled(
    settings: Settings, vhost_url: str, docker_environ: dict[str, str]
) -> None:
    """With polling slowed to once a minute, only the engine's event stream can settle the job in time."""
    slow = settings.model_copy(update={"poll_min_seconds": 60.0, "poll_max_seconds": 60.0})
    async with Daemon(slow, vhost_url, environ=docker_environ), await JobdClient.connect(vhost_url) as client:
        async with client.events() as events:
            uid = (await client.start(container_job("echo pushed"))).uid
            assert uid
            seen = await events_until(events, ended(uid), timeout=20)
    assert seen[-1].data.status is JobStatus.COMPLETED and seen[-1].data.logs == ["pushed"]


@pytest.mark.parametrize(
    ("runner", "words"),
    [
        (
            {"image": {"registryName": "localhost", "imageName": "nope", "version": "1"}},
            "is not on the engine",
        ),
        ({"computeResource": {"memory": "lots"}}, "runner.computeResource.memory"),
        ({"computeResource": {"cpu": "-1"}}, "runner.computeResource.cpu"),
        ({"network": "no-such-network"}, "no-such-network"),
        ({"customCommand": ["/no/such/program"]}, "could not start"),
    ],
)
async def test_bad_jobs_fail_with_a_clear_message(
    container_client: JobdClient, runner: dict[str, Any], words: str
) -> None:
    job = container_job("true")
    job["runner"].update(runner)
    async with container_client.events() as events:
        uid = (await container_client.start(job)).uid
        assert uid
        seen = await events_until(events, ended(uid))
    assert seen[-1].data.status is JobStatus.FAILED
    status = await container_client.status(uid)
    assert status.job is not None and words in (status.job.message or ""), status


async def test_a_name_clash_fails_the_second_job_and_leaves_the_first_running(
    container_client: JobdClient, docker: aiodocker.Docker
) -> None:
    name = f"clash-{uuid.uuid4().hex[:8]}"
    async with container_client.events() as events:
        first = (await container_client.start(container_job(GATED, name=name))).uid
        assert first
        await wait_running(events, {first})
        second = (await container_client.start(container_job("true", name=name))).uid
        assert second
        await events_until(events, ended(second))
        status = await container_client.status(second)
        assert status.status is JobStatus.FAILED and status.job is not None
        assert f"a container named '{name}' already exists" in (status.job.message or "")
        await open_gate(docker, first)
        await events_until(events, ended(first))
    assert (await container_client.status(first)).status is JobStatus.COMPLETED


async def test_an_unreachable_engine_fails_the_job_saying_so(settings: Settings, vhost_url: str) -> None:
    environ = {"DM_JOBD_DOCKER_HOST": f"unix://{settings.state_dir}/no-docker.sock"}
    async with Daemon(settings, vhost_url, environ=environ), await JobdClient.connect(vhost_url) as client:
        async with client.events() as events:
            uid = (await client.start(container_job("true"))).uid
            assert uid
            await events_until(events, ended(uid))
        status = await client.status(uid)
    assert status.status is JobStatus.FAILED and status.job is not None
    assert "cannot reach the Docker engine at unix://" in (status.job.message or "")


async def test_twenty_concurrent_container_jobs_all_complete_with_their_own_results(
    container_client: JobdClient, docker: aiodocker.Docker
) -> None:
    async with container_client.events() as events:
        uids = [(await container_client.start(container_job('echo "$DM_JOB_UID"'))).uid for _ in range(20)]
        waiting = {str(uid) for uid in uids}

        def all_ended(event: CloudEvent) -> bool:
            if ended(event.subject)(event):
                waiting.discard(event.subject)
            return not waiting

        await events_until(events, all_ended, timeout=120)
    for uid in uids:
        assert uid
        assert (await container_client.status(uid)).status is JobStatus.COMPLETED
        assert (await container_client.result(uid)).result == f"{uid}\n"
        assert await containers_of(docker, uid) == []
