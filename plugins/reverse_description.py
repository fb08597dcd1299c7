"""dm-job's example runner: the result is the description of ``applicationInput``, reversed.

The input entity is inline in the job for now; reading it by DMSS address comes with DMSS support.
"""

from __future__ import annotations

from collections.abc import Mapping

from daemon.contracts import Handle, JobResult, JobSpec, JobStatus, RunnerContext, RunnerStatus, Started

__all__ = ["PLUGIN", "ReverseDescriptionRunner"]

TYPES = ("dmss://WorkflowDS/Blueprints/ReverseDescription", "sys://WorkflowDS/Blueprints/ReverseDescription")


class ReverseDescriptionRunner:
    async def start(self, job: JobSpec) -> Started:
        source = job.entity.get("applicationInput")
        if not isinstance(source, Mapping):
            raise ValueError("applicationInput must be the input entity (an object)")
        if source.get("referenceType") == "link" and "description" not in source:
            raise ValueError("applicationInput is a link; reading it needs DMSS, which is not configured")
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
    types = TYPES

    def create(self, ctx: RunnerContext) -> ReverseDescriptionRunner:
        return ReverseDescriptionRunner()


PLUGIN = _Plugin()
