"""dm-job's example runner: the result is the description of ``applicationInput``, reversed.

The input is the entity inline, or a reference (``{"referenceType": "link", "address": ...}``) read
through the daemon's DMSS client with the job's own ``DMSS_TOKEN``. A job started by address asks DMSS for
``<job address>.applicationInput`` at depth 1, so DMSS resolves the reference itself, relative
addresses (``~``, ``^``) included; an inline job's reference must be absolute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.contracts import (
    Documents,
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    RunnerContext,
    RunnerStatus,
    Started,
)

__all__ = ["PLUGIN", "ReverseDescriptionRunner"]

TYPES = ("dmss://WorkflowDS/Blueprints/ReverseDescription", "sys://WorkflowDS/Blueprints/ReverseDescription")


def _is_reference(value: Mapping[str, Any]) -> bool:
    return "referenceType" in value and isinstance(value.get("address"), str) and "description" not in value


async def read_input(job: JobSpec, reference: Mapping[str, Any], dmss: Documents | None) -> Any:
    """The entity ``reference`` points to, read through the daemon's DMSS client with the job's token."""
    if dmss is None:
        raise ValueError("applicationInput is a reference; reading it needs DMSS_URL, which is not set")
    address = f"{job.address}.applicationInput" if job.address else str(reference["address"])
    if address.startswith(("~", "^")):
        raise ValueError(f"applicationInput's address {address!r} is relative; start the job by address")
    return await dmss.get(address, job.env.get("DMSS_TOKEN") or job.token, depth=1)


class ReverseDescriptionRunner:
    def __init__(self, dmss: Documents | None = None) -> None:
        self._dmss = dmss

    async def start(self, job: JobSpec) -> Started:
        source = job.entity.get("applicationInput")
        if not isinstance(source, Mapping):
            raise ValueError("applicationInput must be the input entity (an object) or a reference to it")
        if _is_reference(source):
            source = await read_input(job, source, self._dmss)
            if not isinstance(source, Mapping):
                raise ValueError("applicationInput, read from DMSS, is not an entity (an object)")
        description = source.get("description", "Backup")  # dm-job's default, kept for compatibility
        if not isinstance(description, str):
            raise ValueError("applicationInput.description must be a string")
        return Started(
            handle={"result": description[::-1]},
            status=RunnerStatus(JobStatus.RUNNING, message="reversing the description"),
        )

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        return RunnerStatus(JobStatus.COMPLETED, message="description reversed")

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        return JobResult(str(handle.get("result", "")))

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        return None

    async def close(self) -> None:
        return None


class _Plugin:
    types: tuple[str, ...] = TYPES

    def create(self, ctx: RunnerContext) -> ReverseDescriptionRunner:
        return ReverseDescriptionRunner(ctx.dmss)


PLUGIN = _Plugin()
