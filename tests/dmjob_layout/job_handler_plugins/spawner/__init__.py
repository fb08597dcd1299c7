"""Starts the job entity its applicationInput references, through dm-job's job service, as dm-job's
recurring handler starts each run; removing it removes that job too."""

from services.job_handler_interface import JobHandlerInterface, JobStatus
from services.job_service import register_job, remove_job

from job_handler_plugins.staged_shell.steps import run_steps

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/Spawner"


class JobHandler(JobHandlerInterface):
    def start(self) -> str:
        run_steps(["true"])  # a sibling folder's module, by its absolute name
        uid, _message, status = register_job(self.job.application_input["address"], self.job.token)
        self.job.state = {"spawned": uid}
        return f'Job: "{uid}", Status: "{status.value}"'

    def progress(self) -> tuple[JobStatus, str, float | None]:
        spawned = (self.job.state or {}).get("spawned")
        return JobStatus.RUNNING, f"spawned {spawned}", None

    def remove(self) -> tuple[JobStatus, str]:
        spawned = (self.job.state or {}).get("spawned")
        if spawned:
            remove_job(spawned)
        return JobStatus.REMOVED, f"removed {spawned}"
