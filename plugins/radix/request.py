"""What a job asks of Radix: its runner fields checked, the scheduler's URL, the JobScheduleDescription."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from daemon.contracts import JobSpec

from .errors import RadixError

__all__ = ["DEFAULT_URL_TEMPLATE", "base_url", "description"]

DEFAULT_URL_TEMPLATE = "http://{jobName}:{schedulerPort}"
#: A Kubernetes DNS label: a job component's name, which becomes a host name.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _int_field(runner: Mapping[str, Any], name: str, *, low: int, high: int) -> int | None:
    """An optional integer field; a whole float (JSON from some DMSS clients) counts as one."""
    value = runner.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RadixError(f"runner.{name} must be a whole number from {low} to {high}, not {value!r}")
    return value


def _resources(value: object) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping) or not set(value) <= {"requests", "limits"}:
        raise RadixError(
            'runner.resources must look like {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": ...}'
        )
    out: dict[str, dict[str, str]] = {}
    for kind, amounts in value.items():
        if not isinstance(amounts, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in amounts.items()
        ):
            raise RadixError(f'runner.resources.{kind} must map resource names to amounts ("cpu": "500m")')
        out[kind] = dict(amounts)
    return out


def _check_env_list(runner: Mapping[str, Any]) -> None:
    """The daemon refuses these at start already; a job reaching this runner another way is checked too."""
    variables = runner.get("environmentVariables")
    if variables is None:
        return
    if not isinstance(variables, list) or not all(isinstance(v, str) for v in variables):
        raise RadixError("runner.environmentVariables must be a list of 'NAME=value' or 'NAME' strings")
    for item in variables:
        name = item.partition("=")[0]
        if not _ENV_NAME.fullmatch(name):
            raise RadixError(f"runner.environmentVariables: {name!r} is not a valid variable name")


def base_url(template: str, runner: Mapping[str, Any]) -> str:
    """The scheduler's ``/api/v1`` URL for the job component the runner names."""
    name = runner.get("jobName")
    if not isinstance(name, str) or not _DNS_LABEL.fullmatch(name):
        raise RadixError(
            f"runner.jobName must name the Radix job component (lowercase letters, digits and '-', "
            f"at most 63), not {name!r}"
        )
    port = _int_field(runner, "schedulerPort", low=1, high=65535)
    if port is None:
        raise RadixError("runner.schedulerPort must give the Radix job scheduler's port")
    return template.format(jobName=name, schedulerPort=port).rstrip("/") + "/api/v1"


def description(job: JobSpec) -> dict[str, Any]:
    """dm-job's JobScheduleDescription, plus ``jobId`` (the uid) and the pass-through fields."""
    runner = job.runner
    _check_env_list(runner)
    out: dict[str, Any] = {"payload": json.dumps(dict(job.env)), "jobId": job.uid}
    tag = runner.get("imageTagName")
    if tag is not None:
        if not isinstance(tag, str) or not tag.strip():
            raise RadixError(f"runner.imageTagName must be an image tag, not {tag!r}")
        out["imageTagName"] = tag
    limit = _int_field(runner, "timeLimitSeconds", low=1, high=2**63 - 1)
    if limit is not None:
        out["timeLimitSeconds"] = limit
    backoff = _int_field(runner, "backoffLimit", low=0, high=2**31 - 1)
    if backoff is not None:
        out["backoffLimit"] = backoff
    if runner.get("resources") is not None:
        out["resources"] = _resources(runner["resources"])
    return out
