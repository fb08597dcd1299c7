"""Runs runner.steps one after another, as a dm-job deploy handler imports its helper (ARM_deployer)."""

from restful.exceptions import NotImplementedException
from services.job_handler_interface import JobHandlerInterface, JobStatus

from job_handler_plugins.staged_shell.steps import run_steps

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/StagedShell"


class JobHandler(JobHandlerInterface):
    def start(self) -> str:
        steps = (self.job.runner or {}).get("steps")
        if not steps:
            raise NotImplementedException("a staged shell job needs runner.steps", debug="no steps")
        self.job.append_log("\n".join(run_steps(steps)))
        self.job.set_job_status(JobStatus.COMPLETED)
        return f"{len(steps)} steps done"

    def progress(self) -> tuple[JobStatus, list[str] | None, float | None]:
        return self.job.status, self.job.log, 1.0
