import os
from pathlib import Path

from services.job_handler_interface import Job, JobHandlerInterface
from utils.logging import logger

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/UsesToken"


class JobHandler(JobHandlerInterface):
    """Careless with its token, as real handlers sometimes are: the adapter must keep it out of sight."""

    results_directory = f"{Path(__file__).parent}/results"
    os.makedirs(results_directory, exist_ok=True)

    def __init__(self, job: Job, data_source: str):
        super().__init__(job, data_source)
        self.headers = {"Access-Key": job.token}

    def start(self) -> str:
        logger.info(f"calling DMSS with Access-Key {self.headers['Access-Key']}")
        with open(f"{self.results_directory}/{self.job.job_uid}", "w") as token_file:
            token_file.write(self.job.token)
        if self.job.entity["applicationInput"].get("fail"):
            raise PermissionError(f"401 Unauthorized for token {self.job.token}")
        self.job.append_log(f"authenticated as {self.job.token}")
        return f"authenticated with {self.job.token}"
