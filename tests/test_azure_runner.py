"""The Azure runners against the fake ARM and identity endpoints, through the real Azure SDK clients.

Unit level (no broker): what ARM receives, state mapping, throttling and quota, re-attaching,
stopping. Credentials and configuration: test_azure_credentials.py; through the daemon:
test_azure_daemon.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fake_arm import FakeAzure, Fault, Program, fixtures
from fake_arm.fixtures import IMAGE_REF, SUBNET, TOKEN, azure_job, make_runner
from helpers import RecordingLog, poll_until

from daemon.contracts import JobSpec, JobStatus, RunnerStatus
from plugins.azure import CLASSIC_TYPES, AzureRunner

fake_azure = fixtures.fake_azure


async def run_to_end(runner: AzureRunner, job: JobSpec, handle: dict[str, Any]) -> list[RunnerStatus]:
    seen: list[RunnerStatus] = []

    async def step() -> RunnerStatus | None:
        status = await runner.poll(job, handle)
        seen.append(status)
        return status if status.status.is_terminal else None

    await poll_until(step, every=0.01, what="the container to end")
    return seen


def statuses(seen: list[RunnerStatus]) -> list[JobStatus]:
    """The distinct statuses in order."""
    out: list[JobStatus] = []
    for s in seen:
        if not out or out[-1] is not s.status:
            out.append(s.status)
    return out


async def test_the_group_ARM_receives_follows_the_aci_rest_format(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    env = fake_azure.env(IMAGE_REGISTRY_USERNAME="puller", IMAGE_REGISTRY_PASSWORD="registry-pw")
    log = RecordingLog()
    runner = make_runner(env, tmp_path, log)
    job = azure_job(
        name="My_Tool.v2", customCommand="/app/run.sh --fast", computeResource={"cpu": 8, "memory": "64Gi"}
    )
    try:
        started = await runner.start(job)
    finally:
        await runner.close()
    assert started.status.status is JobStatus.STARTING
    [put] = fake_azure.arm.received("PUT")
    assert put.path.endswith(
        f"/resourceGroups/dm-jobs/providers/Microsoft.ContainerInstance/containerGroups/dm-job-{job.uid}"
    )
    assert put.query == {"api-version": "2023-05-01"}
    assert put.headers["Content-Type"] == "application/json"
    assert put.headers["Authorization"].removeprefix("Bearer ") in fake_azure.arm.tokens
    body = put.body
    assert body["location"] == "norwayeast" and body["tags"]["dm-jobd-uid"] == job.uid
    props = body["properties"]
    assert props["restartPolicy"] == "Never" and props["osType"] == "Linux"
    assert props["imageRegistryCredentials"] == [
        {"server": "example.azurecr.io", "username": "puller", "password": "registry-pw"}
    ]
    assert "subnetIds" not in props and "diagnostics" not in props
    [container] = props["containers"]
    assert container["name"] == "my-tool-v2"
    cp = container["properties"]
    assert cp["image"] == IMAGE_REF and cp["command"] == ["/app/run.sh", "--fast"]
    assert cp["resources"] == {"requests": {"cpu": 4.0, "memoryInGB": 16.0}}, "clamped to ACI's limits"
    assert any(level == "warning" and "clamped" in event for level, event, _ in log.calls)
    variables = {e["name"]: e for e in cp["environmentVariables"]}
    assert variables["DMSS_TOKEN"] == {"name": "DMSS_TOKEN", "secureValue": TOKEN}
    assert variables["MODE"] == {"name": "MODE", "value": "fast"}
    assert TOKEN not in log.text() and "registry-pw" not in log.text()
    [identity] = fake_azure.identity.requests
    assert identity.query["resource"] == fake_azure.arm_url, "the ARM scope, /.default stripped"
    assert identity.headers["X-IDENTITY-HEADER"] == fake_azure.identity.identity_header


async def test_states_map_to_job_statuses_and_a_nonzero_exit_fails(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    fake_azure.arm.images[IMAGE_REF] = Program(exit_code=3, logs="working\nbroken\n")
    runner = make_runner(fake_azure.env(), tmp_path)
    job = azure_job()
    try:
        started = await runner.start(job)
        seen = await run_to_end(runner, job, started.handle)
        result = await runner.result(job, started.handle)
    finally:
        await runner.close()
    assert statuses(seen) == [JobStatus.STARTING, JobStatus.RUNNING, JobStatus.FAILED]
    assert "exit code 3" in (seen[-1].message or "") and seen[-1].logs == ("working", "broken")
    assert result.data == "working\nbroken\n" and result.media_type == "text/plain"
    assert fake_azure.arm.received("GET", "/containers/job/logs"), "logs come from list_logs"


async def test_completed_job_result_follows_the_output_convention(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    fake_azure.arm.images[IMAGE_REF] = Program(logs='step 1\ndm-job-result: {"answer": 42}\nbye\n')
    runner = make_runner(fake_azure.env(), tmp_path)
    job = azure_job()
    try:
        started = await runner.start(job)
        seen = await run_to_end(runner, job, started.handle)
        await poll_until(_operation_done(fake_azure), what="the create operation to be followed")
        result = await runner.result(job, started.handle)
    finally:
        await runner.close()
    assert seen[-1].status is JobStatus.COMPLETED and seen[-1].message == "the container exited with code 0"
    assert result.data == '{"answer": 42}' and result.media_type == "application/json"
    ops = [r for r in fake_azure.arm.requests if "/operations/" in r.path]
    assert ops, "the SDK followed Azure-AsyncOperation"


def _operation_done(azure: FakeAzure) -> Any:
    async def check() -> bool | None:
        return True if len([r for r in azure.arm.requests if "/operations/" in r.path]) >= 2 else None

    return check


@pytest.mark.parametrize("runner_type", CLASSIC_TYPES)
async def test_omnia_classic_group_has_subnet_and_log_analytics(
    fake_azure: FakeAzure, tmp_path: Path, runner_type: str
) -> None:
    workspace = str(uuid.uuid4())
    env = fake_azure.env(
        DM_JOBD_AZURE_LOG_ANALYTICS_WORKSPACE_ID=workspace, DM_JOBD_AZURE_LOG_ANALYTICS_WORKSPACE_KEY="ws-key"
    )
    runner = make_runner(env, tmp_path)
    resource_id = "/subscriptions/x/resourceGroups/y/providers/Microsoft.OperationalInsights/workspaces/z"
    job = azure_job(
        runner_type,
        image=IMAGE_REF,
        command=["python", "run.py"],
        subnetId=SUBNET,
        logAnalyticsWorkspaceResourceId=resource_id,
    )
    try:
        await runner.start(job)
        with pytest.raises(ValueError, match=r"runner\.subnetId or DM_JOBD_AZURE_SUBNET_ID"):
            await runner.start(azure_job(runner_type))
    finally:
        await runner.close()
    [put] = fake_azure.arm.received("PUT")
    props = put.body["properties"]
    assert props["subnetIds"] == [{"id": SUBNET}]
    assert props["diagnostics"] == {
        "logAnalytics": {
            "workspaceId": workspace,
            "workspaceKey": "ws-key",
            "logType": "ContainerInstanceLogs",
            "workspaceResourceId": resource_id,
        }
    }
    cp = props["containers"][0]["properties"]
    assert cp["command"] == ["python", "run.py"], "the token travels as a secure variable, not --token="
    assert {"name": "DMSS_TOKEN", "secureValue": TOKEN} in cp["environmentVariables"]
    view = fake_azure.arm._view(fake_azure.arm.groups[f"dm-job-{job.uid}"])
    assert "workspaceKey" not in str(view) and TOKEN not in str(view), "ARM never echoes secrets"


async def test_throttling_and_quota_wait_in_starting_and_create_one_group(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    arm = fake_azure.arm
    arm.inject(Fault("PUT", 429, "TooManyRequests", "Too many requests.", retry_after="1"))
    arm.inject(Fault("PUT", 409, "ContainerGroupQuotaReached", "Resource type quota reached.", times=2))
    runner = make_runner(fake_azure.env(), tmp_path)
    job = azure_job()
    try:
        started = await runner.start(job)
        assert started.status.status is JobStatus.STARTING
        assert "throttling" in (started.status.message or "") and "retry 1 of 20" in (
            started.status.message or ""
        )
        seen = await run_to_end(runner, job, started.handle)
    finally:
        await runner.close()
    assert statuses(seen) == [JobStatus.STARTING, JobStatus.RUNNING, JobStatus.COMPLETED]
    assert any("ContainerGroupQuotaReached" in (s.message or "") for s in seen)
    assert len(arm.received("PUT")) == 4 and arm.creations == 1, "one group, however often retried"


async def test_quota_past_the_retry_limit_fails_the_job(fake_azure: FakeAzure, tmp_path: Path) -> None:
    fake_azure.arm.inject(Fault("PUT", 409, "ContainerGroupQuotaReached", "Quota reached.", times=10))
    runner = make_runner(fake_azure.env(DM_JOBD_AZURE_RETRY_LIMIT="2"), tmp_path)
    job = azure_job()
    try:
        started = await runner.start(job)
        seen = await run_to_end(runner, job, started.handle)
    finally:
        await runner.close()
    assert seen[-1].status is JobStatus.FAILED
    assert "gave up" in (seen[-1].message or "") and "after 3 attempts" in (seen[-1].message or "")
    assert fake_azure.arm.creations == 0


async def test_a_repeated_start_and_a_new_runner_reattach_by_name(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    fake_azure.arm.images[IMAGE_REF] = Program(hold=True, logs="still going\n")
    job = azure_job()
    first = make_runner(fake_azure.env(), tmp_path)
    try:
        started = await first.start(job)
        again = await first.start(job)
    finally:
        await first.close()
    assert again.handle["created"] and fake_azure.arm.creations == 1
    second = make_runner(fake_azure.env(), tmp_path)  # as after a daemon restart
    try:
        running = await poll_until(_until(second, job, started.handle, JobStatus.RUNNING), what="running")
        assert running.logs == ("still going",)
        fake_azure.arm.finish(started.handle["group"], 0)
        seen = await run_to_end(second, job, started.handle)
    finally:
        await second.close()
    assert seen[-1].status is JobStatus.COMPLETED
    assert fake_azure.arm.creations == 1 and len(fake_azure.arm.received("PUT")) == 1


def _until(runner: AzureRunner, job: JobSpec, handle: dict[str, Any], want: JobStatus) -> Any:
    async def check() -> RunnerStatus | None:
        status = await runner.poll(job, handle)
        return status if status.status is want else None

    return check


async def test_a_create_deferred_before_a_restart_is_made_after_it(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    fake_azure.arm.inject(Fault("PUT", 429, "TooManyRequests", "Slow down.", retry_after="1"))
    job = azure_job()
    first = make_runner(fake_azure.env(), tmp_path)
    try:
        started = await first.start(job)
    finally:
        await first.close()
    assert started.handle["created"] is False and fake_azure.arm.creations == 0
    second = make_runner(fake_azure.env(), tmp_path)
    try:
        seen = await run_to_end(second, job, started.handle)
    finally:
        await second.close()
    assert seen[-1].status is JobStatus.COMPLETED and fake_azure.arm.creations == 1


async def test_stop_deletes_the_group_and_a_group_already_gone_counts_as_removed(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    fake_azure.arm.images[IMAGE_REF] = Program(hold=True)
    runner = make_runner(fake_azure.env(), tmp_path)
    job = azure_job()
    try:
        started = await runner.start(job)
        await poll_until(_until(runner, job, started.handle, JobStatus.RUNNING), what="running")
        await runner.stop(job, started.handle)
        assert fake_azure.arm.groups == {}, "deleted, after polling the delete operation"
        await runner.stop(job, started.handle)  # already gone: no error
    finally:
        await runner.close()
    deletes = fake_azure.arm.received("DELETE")
    assert len(deletes) == 2 and deletes[0].path == fake_azure.arm.received("PUT")[0].path


async def test_a_failed_deployment_fails_the_job_with_arms_reason(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    fake_azure.arm.images[IMAGE_REF] = Program(
        provision_error=("InaccessibleImage", "The image is not accessible.")
    )
    runner = make_runner(fake_azure.env(), tmp_path)
    job = azure_job()
    try:
        started = await runner.start(job)
        seen = await run_to_end(runner, job, started.handle)
    finally:
        await runner.close()
    assert seen[-1].status is JobStatus.FAILED
    assert "failed to deploy" in (seen[-1].message or "") and "not accessible" in (seen[-1].message or "")


async def test_throttled_reads_are_retried_after_retry_after(fake_azure: FakeAzure, tmp_path: Path) -> None:
    runner = make_runner(fake_azure.env(), tmp_path)
    job = azure_job()
    try:
        started = await runner.start(job)
        fake_azure.arm.inject(
            Fault("GET", 429, "TooManyRequests", "Slow down.", retry_after="1", path_suffix=job.uid)
        )
        before = len(fake_azure.arm.received("GET", job.uid))
        status = await runner.poll(job, started.handle)
    finally:
        await runner.close()
    assert status.status in (JobStatus.STARTING, JobStatus.RUNNING)
    assert len(fake_azure.arm.received("GET", job.uid)) >= before + 2, "the SDK retried the throttled GET"


async def test_transient_arm_errors_on_create_are_retried(fake_azure: FakeAzure, tmp_path: Path) -> None:
    fake_azure.arm.inject(Fault("PUT", 503, "ServiceUnavailable", "Try again later."))
    runner = make_runner(fake_azure.env(), tmp_path)
    job = azure_job()
    try:
        started = await runner.start(job)
        assert "ARM is unavailable" in (started.status.message or "")
        seen = await run_to_end(runner, job, started.handle)
    finally:
        await runner.close()
    assert seen[-1].status is JobStatus.COMPLETED and fake_azure.arm.creations == 1


async def test_a_bad_image_field_fails_the_start_and_sends_nothing(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    runner = make_runner(fake_azure.env(), tmp_path)
    try:
        with pytest.raises(ValueError, match=r"runner\.image\.imageName"):
            await runner.start(azure_job(image={"registryName": "example.azurecr.io"}))
    finally:
        await runner.close()
    assert fake_azure.arm.requests == []


async def test_a_throttled_create_waits_what_retry_after_says_not_the_backoff_base(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    """ARM said 'Retry-After: 2': retried after 2 s, not after the 10 s backoff base taken as a floor."""
    fake_azure.arm.inject(Fault("PUT", 429, "TooManyRequests", "Slow down.", retry_after="2"))
    fake_azure.arm.inject(Fault("PUT", 409, "ContainerGroupQuotaReached", "Quota reached.", times=1))
    runner = make_runner(fake_azure.env(DM_JOBD_AZURE_RETRY_BASE_SECONDS="10"), tmp_path)
    job = azure_job()
    try:
        started = await runner.start(job)
        assert "again in 2 s" in (started.status.message or ""), started.status

        async def quota() -> RunnerStatus | None:  # the poll that makes the deferred create, 2 s later
            seen = await runner.poll(job, started.handle)
            return seen if "ContainerGroupQuotaReached" in (seen.message or "") else None

        seen = await poll_until(quota, timeout=10, what="the create to be made again")
        assert "again in 20 s" in (seen.message or ""), "no Retry-After: our own backoff (10 s, doubled)"
    finally:
        await runner.close()
