"""The Azure SDK clients, built from configuration: a credential and the ACI management client.

The credential is dm-job's service principal when its three variables are set, else
DefaultAzureCredential (managed identity, workload identity, environment, developer tools), which reads
its own variables (``IDENTITY_ENDPOINT``, ``AZURE_CLIENT_ID``, ...) from the process environment. The
ARM endpoint, token scope, authority and CA bundle are ordinary settings, so sovereign clouds and
private endpoints work the same way as public Azure.
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import ClientSecretCredential, DefaultAzureCredential
from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient

from daemon.contracts import trace_headers

from .config import AzureConfig

__all__ = ["auth_message", "credential_description", "make_client", "make_credential"]


def _verify(cfg: AzureConfig) -> dict[str, Any]:
    return {"connection_verify": cfg.ca_bundle} if cfg.ca_bundle else {}


def make_credential(cfg: AzureConfig) -> AsyncTokenCredential:
    sp = cfg.service_principal
    authority = {"authority": cfg.authority_host} if cfg.authority_host else {}
    if sp is not None:
        return ClientSecretCredential(sp.tenant_id, sp.client_id, sp.secret, **authority, **_verify(cfg))
    return DefaultAzureCredential(**authority)


def make_client(cfg: AzureConfig, credential: AsyncTokenCredential) -> ContainerInstanceManagementClient:
    return ContainerInstanceManagementClient(
        credential,
        cfg.subscription,
        base_url=cfg.arm_endpoint,
        credential_scopes=[cfg.arm_scope],
        polling_interval=cfg.polling_seconds,
        retry_total=cfg.sdk_retries,
        raw_request_hook=_traced,
        **_verify(cfg),
    )


def _traced(request: Any) -> None:
    """Every ARM call for a job carries the job's ``traceparent`` (the daemon sets it per job)."""
    request.http_request.headers.update(trace_headers())


def credential_description(cfg: AzureConfig) -> str:
    sp = cfg.service_principal
    if sp is not None:
        return f"service principal {sp.client_id} in tenant {sp.tenant_id} (AZURE_JOB_CLIENT_ID)"
    return "DefaultAzureCredential (managed identity, workload identity or environment)"


def auth_message(cfg: AzureConfig, exc: ClientAuthenticationError) -> str:
    """A clear, secret-free message for an authentication failure (token or ARM's 401/403)."""
    detail = " ".join(str(exc.message or exc).split())[:600]
    return f"Azure authentication failed with {credential_description(cfg)}: {detail}"
