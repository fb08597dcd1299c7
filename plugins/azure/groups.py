"""From a job to the container group ARM is asked to create: names, image, command, variables, limits.

Pure functions of the job and the configuration, so what is sent can be read (and tested) in one place.
The group's name is derived from the job uid: a start repeated after a crash, or a create retried after
throttling, addresses the same group and never makes a second one.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from typing import Any

from azure.mgmt.containerinstance.models import (
    Container,
    ContainerGroup,
    ContainerGroupDiagnostics,
    ContainerGroupSubnetId,
    EnvironmentVariable,
    ImageRegistryCredential,
    LogAnalytics,
    ResourceRequests,
    ResourceRequirements,
)

from daemon.contracts import JobSpec

from .config import AzureConfig, ConfigError, subnet_id

__all__ = ["GROUP_PREFIX", "build_group", "container_name", "group_name", "is_secret"]

GROUP_PREFIX = "dm-job-"
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|CONNECTION_STRING|(^|_)KEY($|_)")
_MIN_CPU, _MIN_MEMORY_GB = 0.1, 0.1

Warn = Callable[[str], None]


def group_name(uid: str) -> str:
    """The container group for job ``uid``: lowercase letters, digits and single hyphens, <= 63 chars."""
    slug = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", uid.lower())).strip("-")
    return (GROUP_PREFIX + slug)[:63].rstrip("-")


def container_name(runner: Mapping[str, Any]) -> str:
    """The runner's ``name`` made valid for ACI (dm-job lowercased it and replaced ``.``/``_``)."""
    raw = str(runner.get("name") or "job").lower()
    name = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", raw)).strip("-")[:63].rstrip("-")
    return name or "job"


def is_secret(name: str, extra: frozenset[str] = frozenset()) -> bool:
    """Whether a job variable goes to ACI as a ``secureValue`` (never shown by ARM)."""
    return name == "DMSS_TOKEN" or name in extra or bool(_SECRET_NAME.search(name.upper()))


def build_group(job: JobSpec, cfg: AzureConfig, *, classic: bool, warn: Warn) -> ContainerGroup:
    """The container group for one job; raises ValueError (a bad runner field) or ConfigError."""
    runner = job.runner
    image, server = _image(runner)
    container = Container(
        name=container_name(runner),
        image=image,
        command=_command(runner, job.entity.get("referenceTarget")),
        environment_variables=[
            EnvironmentVariable(name=k, secure_value=v)
            if is_secret(k, cfg.secure_variables)
            else EnvironmentVariable(name=k, value=v)
            for k, v in sorted(job.env.items())
        ],
        resources=ResourceRequirements(requests=_resources(runner, cfg, warn)),
    )
    credentials = None
    if server is not None and cfg.registry_username is not None:
        credentials = [
            ImageRegistryCredential(
                server=server, username=cfg.registry_username, password=cfg.registry_password
            )
        ]
    group = ContainerGroup(
        location=cfg.location,
        tags={"dm-jobd-uid": job.uid, "dm-jobd-kind": "classic" if classic else "aci"},
        containers=[container],
        os_type="Linux",
        restart_policy="Never",
        image_registry_credentials=credentials,
    )
    if classic:
        group.subnet_ids = [ContainerGroupSubnetId(id=_subnet(runner, cfg))]
        group.diagnostics = _diagnostics(runner, cfg)
    return group


def _image(runner: Mapping[str, Any]) -> tuple[str, str | None]:
    """The image reference and its registry server (for credentials), from dm-job's shapes."""
    image = runner.get("image", runner.get("containerImage"))
    if isinstance(image, Mapping):
        registry = str(image.get("registryName") or "").strip().rstrip("/")
        name = str(image.get("imageName") or "").strip()
        version = str(image.get("version") or "latest").strip()
        if not name:
            raise ValueError("runner.image.imageName must name the container image")
        return (f"{registry}/{name}:{version}" if registry else f"{name}:{version}"), registry or None
    if isinstance(image, str) and image.strip():
        first, sep, _ = image.strip().partition("/")
        server = first if sep and ("." in first or ":" in first or first == "localhost") else None
        return image.strip(), server
    raise ValueError(
        "runner.image must name the container image ({registryName, imageName, version} or a string)"
    )


def _command(runner: Mapping[str, Any], reference_target: object) -> list[str] | None:
    raw = runner.get("customCommand", runner.get("command"))
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, str):
        command = shlex.split(raw)
    elif isinstance(raw, list) and all(isinstance(a, str) for a in raw):
        command = list(raw)
    else:
        raise ValueError("runner.customCommand must be a string or a list of strings")
    if isinstance(reference_target, str) and reference_target:
        command.append(f"--reference-target={reference_target}")  # as dm-job passed it
    return command


def _resources(runner: Mapping[str, Any], cfg: AzureConfig, warn: Warn) -> ResourceRequests:
    """The requested CPU and memory, clamped to ACI's limits with a warning."""
    compute = runner.get("computeResource")
    compute = compute if isinstance(compute, Mapping) else {}
    cpu = _quantity(compute.get("cpu"), cfg.default_cpu, "runner.computeResource.cpu")
    memory = _memory_gb(compute.get("memory"), cfg.default_memory_gb)
    used_cpu = min(max(cpu, _MIN_CPU), cfg.max_cpu)
    used_memory = round(min(max(memory, _MIN_MEMORY_GB), cfg.max_memory_gb), 1)  # 0.1 GB steps
    if used_cpu != cpu or abs(used_memory - memory) > 1e-9:
        warn(
            f"resources clamped to ACI's limits: cpu {cpu:g} -> {used_cpu:g}, "
            f"memory {memory:g} GB -> {used_memory:g} GB"
        )
    return ResourceRequests(cpu=used_cpu, memory_in_gb=used_memory)


def _quantity(value: object, default: float, field: str) -> float:
    if value is None or value == "":
        return default
    try:
        return float(str(value))
    except ValueError:
        raise ValueError(f"{field} {value!r} is not a number") from None


_UNITS = {"": 1.0, "g": 1.0, "gb": 1.0, "gi": 1.0, "m": 1 / 1024, "mb": 1 / 1024, "mi": 1 / 1024}


def _memory_gb(value: object, default: float) -> float:
    """Memory in GB: a number, or a string with a unit (``1.5``, ``2Gi``, ``512Mi``)."""
    if value is None or value == "":
        return default
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"runner.computeResource.memory {value!r} is not a size (like 1.5, 2Gi or 512Mi)")
    try:
        return float(match.group(1)) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"runner.computeResource.memory {value!r} is not a size") from None


def _subnet(runner: Mapping[str, Any], cfg: AzureConfig) -> str:
    value = runner.get("subnetId")
    if isinstance(value, str) and value.strip():
        return subnet_id(value.strip(), "runner.subnetId")
    if cfg.default_subnet_id is None:
        raise ValueError(
            "an Omnia classic job runs in a private subnet: set runner.subnetId or DM_JOBD_AZURE_SUBNET_ID"
        )
    return cfg.default_subnet_id


def _diagnostics(runner: Mapping[str, Any], cfg: AzureConfig) -> ContainerGroupDiagnostics | None:
    resource_id = runner.get("logAnalyticsWorkspaceResourceId")
    resource_id = resource_id.strip() if isinstance(resource_id, str) and resource_id.strip() else None
    if cfg.workspace_id is None or cfg.workspace_key is None:
        if resource_id is not None:
            raise ConfigError(
                "runner.logAnalyticsWorkspaceResourceId asks for Log Analytics, but "
                "DM_JOBD_AZURE_LOG_ANALYTICS_WORKSPACE_ID and _KEY are not set"
            )
        return None
    return ContainerGroupDiagnostics(
        log_analytics=LogAnalytics(
            workspace_id=cfg.workspace_id,
            workspace_key=cfg.workspace_key,
            log_type="ContainerInstanceLogs",
            workspace_resource_id=resource_id,
        )
    )
