"""Azure jobs end to end: the real broker, the daemon, the real Azure SDK, the fake ARM and identity."""

from __future__ import annotations

import json
from typing import Any

from fake_arm import FakeAzure, Fault, Program, fixtures
from helpers import JOB, ended, events_until, poll_until, reverse_job

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import CloudEvent, JobStatus
from plugins.azure import AZURE_TYPE

CLASSIC = "dmss://DMT-Internal/DMT/AzureContainerInstanceJobClassic"
IMAGE = {"registryName": "example.azurecr.io", "imageName": "tool", "version": "2"}
IMAGE_REF = "example.azurecr.io/tool:2"
SUBNET = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/net/providers/"
    "Microsoft.Network/virtualNetworks/vnet/subnets/aci"
)
TOKEN = "job-token-s3cr3t"
fake_azure = fixtures.fake_azure


def azure_job(runner_type: str = AZURE_TYPE, **runner: Any) -> dict[str, Any]:
    return {"type": JOB, "label": "an Azure job", "runner": {"type": runner_type, "image": IMAGE, **runner}}


def statuses(events: list[CloudEvent]) -> list[JobStatus]:
    return [e.data.status for e in events if not e.type.endswith(".progress")]


def running(uid: str) -> Any:
    return lambda e: e.subject == uid and e.data.status is JobStatus.RUNNING


async def test_an_azure_container_job_starts_runs_and_completes(
    settings: Settings, vhost_url: str, fake_azure: FakeAzure
) -> None:
    fake_azure.arm.images[IMAGE_REF] = Program(logs="hello\ndm-job-result: all done\n")
    async with (
        Daemon(settings, vhost_url, environ=fake_azure.env()),
        await JobdClient.connect(vhost_url, timeout=20) as client,
        client.events() as events,
    ):
        answer = await client.start(azure_job(), token=TOKEN)
        assert answer.ok and answer.uid
        seen = await events_until(events, ended(answer.uid))
        result = await client.result(answer.uid)
    assert statuses(seen) == [JobStatus.STARTING, JobStatus.RUNNING, JobStatus.COMPLETED]
    assert seen[-1].data.logs[-2:] == ["hello", "dm-job-result: all done"]
    assert result.ok and result.result == "all done"
    [put] = fake_azure.arm.received("PUT")
    assert put.path.endswith(f"/containerGroups/dm-job-{answer.uid}")
    variables = {
        e["name"]: e for e in put.body["properties"]["containers"][0]["properties"]["environmentVariables"]
    }
    assert variables["DMSS_TOKEN"] == {"name": "DMSS_TOKEN", "secureValue": TOKEN}
    assert variables["DM_JOB_UID"] == {"name": "DM_JOB_UID", "value": answer.uid}
    assert put.body["properties"]["restartPolicy"] == "Never"
    assert all(TOKEN not in json.dumps(e.model_dump(mode="json")) for e in seen), "no token in events"


async def test_an_omnia_classic_job_fails_with_the_exit_code(
    settings: Settings, vhost_url: str, fake_azure: FakeAzure
) -> None:
    fake_azure.arm.images[IMAGE_REF] = Program(exit_code=2, logs="no input\n")
    env = fake_azure.env(
        DM_JOBD_AZURE_SUBNET_ID=SUBNET,
        DM_JOBD_AZURE_LOG_ANALYTICS_WORKSPACE_ID="6f1a8d3c-0d5e-4c1b-9a57-3f2e1d0c9b8a",
        DM_JOBD_AZURE_LOG_ANALYTICS_WORKSPACE_KEY="workspace-key",
    )
    async with (
        Daemon(settings, vhost_url, environ=env),
        await JobdClient.connect(vhost_url, timeout=20) as client,
        client.events() as events,
    ):
        answer = await client.start(
            azure_job(CLASSIC, image=IMAGE_REF, command=["/app/start.sh"]), token=TOKEN
        )
        assert answer.uid
        seen = await events_until(events, ended(answer.uid))
        status = await client.status(answer.uid)
    assert statuses(seen) == [JobStatus.STARTING, JobStatus.RUNNING, JobStatus.FAILED]
    assert status.job is not None and "exit code 2" in (status.job.message or "")
    assert status.job.logs == ["no input"]
    props = fake_azure.arm.received("PUT")[0].body["properties"]
    assert props["subnetIds"] == [{"id": SUBNET}]
    assert props["diagnostics"]["logAnalytics"] == {
        "workspaceId": "6f1a8d3c-0d5e-4c1b-9a57-3f2e1d0c9b8a",
        "workspaceKey": "workspace-key",
        "logType": "ContainerInstanceLogs",
    }


async def test_stop_deletes_the_container_group(
    settings: Settings, vhost_url: str, fake_azure: FakeAzure
) -> None:
    fake_azure.arm.images[IMAGE_REF] = Program(hold=True)
    async with (
        Daemon(settings, vhost_url, environ=fake_azure.env()),
        await JobdClient.connect(vhost_url, timeout=20) as client,
        client.events() as events,
    ):
        answer = await client.start(azure_job(), token=TOKEN)
        assert answer.uid
        await events_until(events, running(answer.uid))
        stopped = await client.stop(answer.uid)
        assert stopped.ok and stopped.status is JobStatus.REMOVED
    assert fake_azure.arm.groups == {}
    [delete] = fake_azure.arm.received("DELETE")
    assert delete.path.endswith(f"/containerGroups/dm-job-{answer.uid}")


async def test_throttling_and_quota_delay_the_job_instead_of_failing_it(
    settings: Settings, vhost_url: str, fake_azure: FakeAzure
) -> None:
    fake_azure.arm.inject(Fault("PUT", 429, "TooManyRequests", "Too many requests.", retry_after="1"))
    fake_azure.arm.inject(Fault("PUT", 409, "ContainerGroupQuotaReached", "Container group quota reached."))
    async with (
        Daemon(settings, vhost_url, environ=fake_azure.env()),
        await JobdClient.connect(vhost_url, timeout=20) as client,
        client.events() as events,
    ):
        answer = await client.start(azure_job(), token=TOKEN)
        assert answer.uid
        uid = answer.uid

        async def deferred() -> str | None:
            job = (await client.status(uid)).job
            return job.message if job is not None and "throttling" in (job.message or "") else None

        message = await poll_until(deferred, what="the job to say it waits for throttling")
        assert "retry 1 of 20" in message
        seen = await events_until(events, ended(uid))
    assert statuses(seen) == [JobStatus.STARTING, JobStatus.RUNNING, JobStatus.COMPLETED]
    assert len(fake_azure.arm.received("PUT")) == 3 and fake_azure.arm.creations == 1


async def test_a_restarted_daemon_reattaches_to_its_group(
    settings: Settings, vhost_url: str, fake_azure: FakeAzure
) -> None:
    fake_azure.arm.images[IMAGE_REF] = Program(hold=True, logs="long job\n")
    async with (
        Daemon(settings, vhost_url, environ=fake_azure.env()),
        await JobdClient.connect(vhost_url, timeout=20) as client,
        client.events() as events,
    ):
        answer = await client.start(azure_job(), token=TOKEN)
        assert answer.uid
        uid = answer.uid
        await events_until(events, running(uid))
    fake_azure.arm.finish(f"dm-job-{uid}", 0)  # it ended while the daemon was down
    async with (
        Daemon(settings, vhost_url, environ=fake_azure.env()) as daemon,
        await JobdClient.connect(vhost_url, timeout=20) as client,
    ):

        async def settled() -> JobStatus | None:
            status = (await client.status(uid)).status
            return status if status is not None and status.is_terminal else None

        assert await poll_until(settled, what="the job to be settled") is JobStatus.COMPLETED
        assert daemon.supervisor.watching == 0
        assert (await client.result(uid)).result == "long job\n"
    assert fake_azure.arm.creations == 1 and len(fake_azure.arm.received("PUT")) == 1


async def test_an_authentication_failure_fails_the_job_clearly(
    settings: Settings, vhost_url: str, fake_azure: FakeAzure
) -> None:
    env = fake_azure.env(**fake_azure.service_principal_env(secret="not-the-secret"))
    async with (
        Daemon(settings, vhost_url, environ=env),
        await JobdClient.connect(vhost_url, timeout=20) as client,
        client.events() as events,
    ):
        answer = await client.start(azure_job(), token=TOKEN)
        assert answer.uid
        seen = await events_until(events, ended(answer.uid))
    assert seen[-1].data.status is JobStatus.FAILED
    message = seen[-1].data.message or ""
    assert "Azure authentication failed with service principal" in message and "AADSTS7000215" in message
    assert "not-the-secret" not in message and fake_azure.arm.creations == 0


async def test_bad_azure_configuration_refuses_azure_jobs_only(
    settings: Settings, vhost_url: str, fake_azure: FakeAzure
) -> None:
    env = fake_azure.env(AZURE_JOB_SUBSCRIPTION="not-a-guid")
    async with (
        Daemon(settings, vhost_url, environ=env),
        await JobdClient.connect(vhost_url, timeout=20) as client,
        client.events() as events,
    ):
        raw = await client.call("job.start", {"job": azure_job(), "token": TOKEN})
        other = await client.start(reverse_job("sdrawkcab"))
        assert other.uid
        await events_until(events, ended(other.uid))
        assert (await client.result(other.uid)).result == "backwards"
    assert raw["ok"] is False and raw["error"]["code"] == "runner_disabled"
    assert "AZURE_JOB_SUBSCRIPTION is not a GUID" in raw["error"]["message"]
    assert TOKEN not in json.dumps(raw)
    assert fake_azure.arm.requests == []
