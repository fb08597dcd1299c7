"""A runner that does nothing and completes at once: the benchmark's yardstick for daemon overhead."""

from __future__ import annotations

from daemon.contracts import Handle, JobResult, JobSpec, JobStatus, RunnerContext, RunnerStatus, Started

__all__ = ["PLUGIN", "NoopRunner"]

TYPE = "dm-jobd://NoOp"


class NoopRunner:
    async def start(self, job: JobSpec) -> Started:
        return Started(handle={}, status=RunnerStatus(JobStatus.COMPLETED, message="nothing to do"))

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        return RunnerStatus(JobStatus.COMPLETED, message="nothing to do")

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        return JobResult("")

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        return None

    async def close(self) -> None:
        return None


class _Plugin:
    types: tuple[str, ...] = (TYPE,)

    def create(self, ctx: RunnerContext) -> NoopRunner:
        return NoopRunner()


PLUGIN = _Plugin()
