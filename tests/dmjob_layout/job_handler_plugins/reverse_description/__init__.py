"""Reverses the description of the entity its applicationInput references, read through DMSS."""

import os
from pathlib import Path

from services.dmss import get_document
from services.job_handler_interface import Job, JobHandlerInterface, JobStatus
from utils.logging import logger

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/ReverseDescription"


class JobHandler(JobHandlerInterface):
    def __init__(self, job: Job, data_source: str):
        super().__init__(job, data_source)
        self.results = Path(__file__).parent / "results"
        os.makedirs(self.results, exist_ok=True)

    def start(self) -> str:
        source = get_document(self.job.application_input["address"], token=self.job.token)
        (self.results / str(self.job.job_uid)).write_text(source.get("description", "Backup")[::-1])
        logger.info("reversed the description")
        self.job.set_job_status(JobStatus.COMPLETED)
        return "OK"

    def result(self) -> tuple[str, bytes]:
        path = self.results / str(self.job.job_uid)
        return ("Done", path.read_bytes()) if path.is_file() else ("No result file found", b"")

    def progress(self) -> tuple[JobStatus, str, float | None]:
        return self.job.status, "Progress tracking not implemented", self.job.percentage
