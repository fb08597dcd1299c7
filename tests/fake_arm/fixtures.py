"""Pytest fixtures for the Azure tests: import them into a test module to use them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import RecordingLog

from daemon.contracts import JobSpec, RunnerContext
from plugins.azure import AZURE_TYPE, PLUGIN, AzureRunner

from . import FakeAzure, serve_fake_azure

__all__ = ["IMAGE", "IMAGE_REF", "SUBNET", "TOKEN", "azure_job", "fake_azure", "make_runner"]

IMAGE = {"registryName": "example.azurecr.io", "imageName": "tool", "version": "1.2"}
IMAGE_REF = "example.azurecr.io/tool:1.2"
SUBNET = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/net/providers/"
    "Microsoft.Network/virtualNetworks/vnet/subnets/aci"
)
#: The job's DMSS token: it must reach ACI as a secureValue and nowhere else.
TOKEN = "dmss-token-s3cr3t"

#: azure-identity reads these from the process environment; none may leak in from the machine.
_IDENTITY_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_USERNAME",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
)


@pytest.fixture
async def fake_azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeAzure]:
    """ARM and identity fakes; the process environment names the fake managed identity endpoint."""
    for name in _IDENTITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    async with serve_fake_azure(tmp_path / "fake-azure-tls") as azure:
        for name, value in azure.identity_env().items():
            monkeypatch.setenv(name, value)
        yield azure


def make_runner(env: dict[str, str], tmp_path: Path, log: RecordingLog | None = None) -> AzureRunner:
    """The plugin's runner, created as the daemon creates it."""
    ctx = RunnerContext(env=env, state_dir=tmp_path / "state", log=log or RecordingLog())
    return PLUGIN.create(ctx)


def azure_job(runner_type: str = AZURE_TYPE, uid: str | None = None, **runner: Any) -> JobSpec:
    """A job as the daemon hands it to a runner, with dm-job's environment."""
    uid = uid or str(uuid.uuid4())
    entity = {
        "type": "dmss://WorkflowDS/Blueprints/Job",
        "label": "azure",
        "runner": {"type": runner_type, "image": IMAGE, **runner},
    }
    env = {"DMSS_TOKEN": TOKEN, "DMSS_URL": "https://dmss.example", "DM_JOB_UID": uid, "MODE": "fast"}
    return JobSpec(uid=uid, entity=entity, env=env, token=TOKEN)
