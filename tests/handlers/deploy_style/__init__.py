from pathlib import Path

from services.job_handler_interface import Job, JobHandlerInterface, JobStatus
from utils.logging import logger

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/TestDeployment"


class JobHandler(JobHandlerInterface):
    """Deploys the job somewhere else and asks about it later, like the container handlers did.

    The "deployment" finishes when the file named by applicationInput.doneFile appears.
    """

    def __init__(self, job: Job, data_source: str):
        super().__init__(job, data_source)
        self.done_file = Path(job.entity["applicationInput"]["doneFile"])
        self.removed_file = Path(job.entity["applicationInput"]["removedFile"])

    def start(self) -> str:
        logger.info(f"Deploying job '{self.job.job_uid}'")
        return "Deployment created"

    def progress(self) -> tuple[JobStatus, list[str] | str | None, float | None]:
        if self.done_file.exists():
            return JobStatus.COMPLETED, ["step 1 done", "step 2 done"], 100
        return JobStatus.RUNNING, "waiting for the deployment", 50.0

    def remove(self) -> tuple[str, str]:
        self.removed_file.write_text(str(self.job.job_uid))
        return JobStatus.REMOVED, "Deployment deleted"
