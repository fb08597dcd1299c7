"""The Azure runners' configuration, read once from the daemon's environment and checked.

dm-job's variable names (``AZURE_JOB_SUBSCRIPTION``, ``AZURE_JOB_RESOURCE_GROUP``, ``AZURE_JOB_CLIENT_ID``,
``AZURE_SP_SECRET``, ``AZURE_JOB_TENANT_ID``, ``IMAGE_REGISTRY_USERNAME``/``_PASSWORD``) keep working;
the rest is ``DM_JOBD_AZURE_*``. A wrong value raises :class:`ConfigError` naming the variable, which
the plugin turns into ``RunnerUnavailable``: Azure jobs are refused with that reason, other runners run.
Secrets are kept out of ``repr`` so the settings can be logged.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["AzureConfig", "ConfigError", "ServicePrincipal"]

_RESOURCE_GROUP = re.compile(r"^[-\w.()]{0,89}[-\w()]$")
_SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+"
    r"/subnets/[^/]+$",
    re.IGNORECASE,
)
_TENANT_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


_Getter = Callable[[str], "str | None"]


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it (never its value when it is secret)."""


@dataclass(frozen=True)
class ServicePrincipal:
    """dm-job's service principal: used instead of DefaultAzureCredential when configured."""

    tenant_id: str
    client_id: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class AzureConfig:
    subscription: str
    resource_group: str
    service_principal: ServicePrincipal | None = None
    arm_endpoint: str = "https://management.azure.com"
    #: The token scope for ARM; defaults to the endpoint's ``/.default`` (right for sovereign clouds too).
    arm_scope: str = "https://management.azure.com/.default"
    authority_host: str | None = None
    #: A CA bundle for ARM and the token authority (``connection_verify``); None: the system's.
    ca_bundle: str | None = None
    location: str = "norwayeast"
    polling_seconds: float = 5.0
    sdk_retries: int = 3
    retry_limit: int = 20
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 300.0
    max_cpu: float = 4.0
    max_memory_gb: float = 16.0
    default_cpu: float = 1.0
    default_memory_gb: float = 1.5
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    workspace_id: str | None = None
    workspace_key: str | None = field(default=None, repr=False)
    default_subnet_id: str | None = None
    #: Names of job variables sent as secureValue besides the ones that look secret.
    secure_variables: frozenset[str] = frozenset()
    log_lines: int = 200

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, log_lines: int = 200) -> AzureConfig:
        """Read and check every setting; raises ConfigError naming the first wrong one."""

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        subscription = _guid(get("AZURE_JOB_SUBSCRIPTION"), "AZURE_JOB_SUBSCRIPTION", "the subscription id")
        resource_group = get("AZURE_JOB_RESOURCE_GROUP")
        if resource_group is None:
            raise ConfigError("AZURE_JOB_RESOURCE_GROUP is not set (the resource group for job containers)")
        if not _RESOURCE_GROUP.match(resource_group):
            raise ConfigError(f"AZURE_JOB_RESOURCE_GROUP {resource_group!r} is not a resource group name")
        endpoint = _https_url(
            get("DM_JOBD_AZURE_ARM_ENDPOINT") or "https://management.azure.com", "DM_JOBD_AZURE_ARM_ENDPOINT"
        )
        authority = get("DM_JOBD_AZURE_AUTHORITY_HOST")
        if authority is not None:
            authority = _https_url(authority, "DM_JOBD_AZURE_AUTHORITY_HOST")
        ca_bundle = get("DM_JOBD_AZURE_CA_BUNDLE")
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            raise ConfigError(f"DM_JOBD_AZURE_CA_BUNDLE {ca_bundle!r} is not a readable file")
        workspace_id = get("DM_JOBD_AZURE_LOG_ANALYTICS_WORKSPACE_ID")
        if workspace_id is not None:
            workspace_id = _guid(workspace_id, "DM_JOBD_AZURE_LOG_ANALYTICS_WORKSPACE_ID", "a workspace id")
        workspace_key = get("DM_JOBD_AZURE_LOG_ANALYTICS_WORKSPACE_KEY")
        if (workspace_id is None) != (workspace_key is None):
            raise ConfigError(
                "DM_JOBD_AZURE_LOG_ANALYTICS_WORKSPACE_ID and DM_JOBD_AZURE_LOG_ANALYTICS_WORKSPACE_KEY "
                "go together: set both or neither"
            )
        subnet = get("DM_JOBD_AZURE_SUBNET_ID")
        if subnet is not None:
            subnet = subnet_id(subnet, "DM_JOBD_AZURE_SUBNET_ID")
        username, password = get("IMAGE_REGISTRY_USERNAME"), get("IMAGE_REGISTRY_PASSWORD")
        if (username is None) != (password is None):
            raise ConfigError("IMAGE_REGISTRY_USERNAME and IMAGE_REGISTRY_PASSWORD go together")
        secure = frozenset(
            n.strip() for n in (get("DM_JOBD_AZURE_SECURE_VARIABLES") or "").split(",") if n.strip()
        )
        return cls(
            subscription=subscription,
            resource_group=resource_group,
            service_principal=_service_principal(get),
            arm_endpoint=endpoint,
            arm_scope=get("DM_JOBD_AZURE_ARM_SCOPE") or endpoint + "/.default",
            authority_host=authority,
            ca_bundle=ca_bundle,
            location=get("DM_JOBD_AZURE_LOCATION") or "norwayeast",
            polling_seconds=_number(get, "DM_JOBD_AZURE_POLLING_SECONDS", 5.0),
            sdk_retries=int(_number(get, "DM_JOBD_AZURE_SDK_RETRIES", 3, minimum=0)),
            retry_limit=int(_number(get, "DM_JOBD_AZURE_RETRY_LIMIT", 20, minimum=0)),
            retry_base_seconds=_number(get, "DM_JOBD_AZURE_RETRY_BASE_SECONDS", 10.0),
            retry_max_seconds=_number(get, "DM_JOBD_AZURE_RETRY_MAX_SECONDS", 300.0),
            max_cpu=_number(get, "DM_JOBD_AZURE_MAX_CPU", 4.0),
            max_memory_gb=_number(get, "DM_JOBD_AZURE_MAX_MEMORY_GB", 16.0),
            registry_username=username,
            registry_password=password,
            workspace_id=workspace_id,
            workspace_key=workspace_key,
            default_subnet_id=subnet,
            secure_variables=secure,
            log_lines=log_lines,
        )


def subnet_id(value: str, setting: str) -> str:
    """A subnet's ARM resource id, checked; ``setting`` names where it came from."""
    if not _SUBNET_ID.match(value):
        raise ConfigError(
            f"{setting} {value!r} is not a subnet resource id "
            "(/subscriptions/…/resourceGroups/…/providers/Microsoft.Network/virtualNetworks/…/subnets/…)"
        )
    return value


def _guid(value: str | None, name: str, what: str) -> str:
    if value is None:
        raise ConfigError(f"{name} is not set ({what}, a GUID)")
    try:
        uuid.UUID(value)
    except ValueError:
        raise ConfigError(f"{name} is not a GUID ({what})") from None
    if len(value) != 36:
        raise ConfigError(f"{name} is not a GUID in its usual form ({what}: 8-4-4-4-12 hex digits)")
    return value


def _https_url(value: str, name: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc:
        raise ConfigError(f"{name} {value!r} must be an https URL (Azure refuses tokens over plain http)")
    return value.rstrip("/")


def _number(get: _Getter, name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} {raw!r} is not a number") from None
    if value < minimum or (value == 0 and name.endswith(("_CPU", "_GB"))):
        raise ConfigError(f"{name} {raw!r} is out of range")
    return value


def _service_principal(get: _Getter) -> ServicePrincipal | None:
    names = ("AZURE_JOB_TENANT_ID", "AZURE_JOB_CLIENT_ID", "AZURE_SP_SECRET")
    values = [get(n) for n in names]
    if all(v is None for v in values):
        return None
    missing = [n for n, v in zip(names, values, strict=True) if v is None]
    if missing:
        raise ConfigError(
            f"the service principal needs {', '.join(names)}; {', '.join(missing)} not set "
            "(unset all three to use DefaultAzureCredential)"
        )
    tenant, client, secret = (v or "" for v in values)
    if not _TENANT_DOMAIN.match(tenant):
        tenant = _guid(tenant, "AZURE_JOB_TENANT_ID", "the tenant id")
    return ServicePrincipal(
        tenant_id=tenant, client_id=_guid(client, "AZURE_JOB_CLIENT_ID", "the client id"), secret=secret
    )
