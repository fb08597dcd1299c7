"""Azure credentials and configuration: the service principal, managed identity, auth failures, bad settings.

Against the fake Entra ID and ARM, through the real azure-identity and ACI clients.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fake_arm import FakeAzure, Fault, fixtures
from fake_arm.fixtures import TOKEN, azure_job, make_runner

from daemon.contracts import RunnerUnavailable
from plugins.azure import AzureError

fake_azure = fixtures.fake_azure


async def test_service_principal_from_dm_job_variables(fake_azure: FakeAzure, tmp_path: Path) -> None:
    runner = make_runner(fake_azure.env(**fake_azure.service_principal_env()), tmp_path)
    try:
        await runner.start(azure_job())
    finally:
        await runner.close()
    [token] = [r for r in fake_azure.identity.requests if r.method == "POST"]
    assert token.path == f"/{fake_azure.identity.tenant}/oauth2/v2.0/token"
    assert token.body["client_id"] == fake_azure.identity.client_id
    assert token.body["grant_type"] == "client_credentials"
    assert token.body["scope"] == fake_azure.arm_url + "/.default"
    assert fake_azure.arm.creations == 1
    assert not [r for r in fake_azure.identity.requests if r.method == "GET"], "no managed identity used"


async def test_authentication_failures_fail_the_start_with_a_clear_message(
    fake_azure: FakeAzure, tmp_path: Path
) -> None:
    env = fake_azure.env(**fake_azure.service_principal_env(secret="wrong-secret"))
    runner = make_runner(env, tmp_path)
    try:
        with pytest.raises(AzureError) as caught:
            await runner.start(azure_job())
    finally:
        await runner.close()
    message = str(caught.value)
    assert message.startswith("Azure authentication failed with service principal")
    assert "AADSTS7000215" in message and "wrong-secret" not in message and TOKEN not in message
    assert fake_azure.arm.requests == []


async def test_arm_refusing_the_token_fails_the_start(fake_azure: FakeAzure, tmp_path: Path) -> None:
    fake_azure.arm.inject(Fault("GET", 401, "InvalidAuthenticationToken", "The access token is invalid."))
    runner = make_runner(fake_azure.env(), tmp_path)
    try:
        with pytest.raises(AzureError, match="Azure authentication failed with DefaultAzureCredential"):
            await runner.start(azure_job())
    finally:
        await runner.close()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"AZURE_JOB_SUBSCRIPTION": ""}, "AZURE_JOB_SUBSCRIPTION is not set"),
        ({"AZURE_JOB_SUBSCRIPTION": "my-subscription"}, "AZURE_JOB_SUBSCRIPTION is not a GUID"),
        ({"AZURE_JOB_RESOURCE_GROUP": ""}, "AZURE_JOB_RESOURCE_GROUP is not set"),
        (
            {
                "AZURE_JOB_CLIENT_ID": "app",
                "AZURE_SP_SECRET": "sp-secret-value",
                "AZURE_JOB_TENANT_ID": str(uuid.uuid4()),
            },
            "AZURE_JOB_CLIENT_ID is not a GUID",
        ),
        ({"AZURE_JOB_CLIENT_ID": str(uuid.uuid4())}, "AZURE_JOB_TENANT_ID, AZURE_SP_SECRET not set"),
        ({"DM_JOBD_AZURE_ARM_ENDPOINT": "http://127.0.0.1:1"}, "DM_JOBD_AZURE_ARM_ENDPOINT"),
        ({"DM_JOBD_AZURE_CA_BUNDLE": "/nonexistent.pem"}, "DM_JOBD_AZURE_CA_BUNDLE"),
        ({"DM_JOBD_AZURE_SUBNET_ID": "subnet-1"}, "DM_JOBD_AZURE_SUBNET_ID 'subnet-1' is not a subnet"),
        ({"DM_JOBD_AZURE_RETRY_LIMIT": "many"}, "DM_JOBD_AZURE_RETRY_LIMIT"),
    ],
)
def test_configuration_errors_name_the_setting(tmp_path: Path, change: dict[str, str], named: str) -> None:
    env = {
        "AZURE_JOB_SUBSCRIPTION": str(uuid.uuid4()),
        "AZURE_JOB_RESOURCE_GROUP": "rg",
        **change,
    }
    with pytest.raises(RunnerUnavailable, match="the Azure runners are off") as caught:
        make_runner(env, tmp_path)
    assert named in str(caught.value)
    assert "sp-secret-value" not in str(caught.value)
