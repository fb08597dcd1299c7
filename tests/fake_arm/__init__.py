"""Fake Azure for tests: ARM for Container Instances and the token issuers, served in-process.

``async with serve_fake_azure(folder) as azure:`` starts ARM and Entra ID on https (a throwaway CA in
``folder``) and managed identity on http, on free loopback ports; :meth:`FakeAzure.env` gives the
settings that point the runners at them, exactly as a deployment would configure a private cloud.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from .arm import API_VERSION, FakeArm, Fault, Group, Program, Recorded
from .identity import FakeIdentity
from .tls import Tls, make_tls

__all__ = [
    "API_VERSION",
    "FakeArm",
    "FakeAzure",
    "FakeIdentity",
    "Fault",
    "Group",
    "Program",
    "Recorded",
    "serve_fake_azure",
]


@dataclass
class FakeAzure:
    arm: FakeArm
    identity: FakeIdentity
    tls: Tls
    arm_url: str
    entra_url: str
    identity_url: str
    resource_group: str = "dm-jobs"

    def env(self, **extra: str) -> dict[str, str]:
        """The daemon's environment for the Azure runners against this fake (managed identity)."""
        return {
            "AZURE_JOB_SUBSCRIPTION": self.arm.subscription,
            "AZURE_JOB_RESOURCE_GROUP": self.resource_group,
            "DM_JOBD_AZURE_ARM_ENDPOINT": self.arm_url,
            "DM_JOBD_AZURE_CA_BUNDLE": str(self.tls.ca_bundle),
            "DM_JOBD_AZURE_POLLING_SECONDS": "0.02",
            "DM_JOBD_AZURE_RETRY_BASE_SECONDS": "0.05",
            "DM_JOBD_AZURE_SDK_RETRIES": "1",
            **extra,
        }

    def identity_env(self) -> dict[str, str]:
        """azure-identity's App Service managed-identity variables (read from the process environment)."""
        return {"IDENTITY_ENDPOINT": self.identity_url, "IDENTITY_HEADER": self.identity.identity_header}

    def service_principal_env(self, secret: str | None = None) -> dict[str, str]:
        return {
            "AZURE_JOB_TENANT_ID": self.identity.tenant,
            "AZURE_JOB_CLIENT_ID": self.identity.client_id,
            "AZURE_SP_SECRET": secret or self.identity.client_secret,
            "DM_JOBD_AZURE_AUTHORITY_HOST": self.entra_url,
        }


async def _serve(app: web.Application, tls: Tls | None) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context() if tls else None)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"{'https' if tls else 'http'}://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def serve_fake_azure(folder: Path) -> AsyncIterator[FakeAzure]:
    tls = make_tls(folder)
    arm = FakeArm(subscription=str(uuid.uuid4()))
    identity = FakeIdentity(tokens=arm.tokens)
    runners: list[web.AppRunner] = []
    try:
        arm_runner, arm_url = await _serve(arm.app(), tls)
        runners.append(arm_runner)
        arm.base_url = arm_url
        entra_runner, entra_url = await _serve(identity.entra_app(), tls)
        runners.append(entra_runner)
        mi_runner, mi_url = await _serve(identity.managed_identity_app(), None)
        runners.append(mi_runner)
        yield FakeAzure(arm, identity, tls, arm_url, entra_url, mi_url + "/msi/token")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
