import os
from pathlib import Path

from services.job_handler_interface import Job, JobHandlerInterface, JobStatus
from utils.logging import logger

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/ReverseDescription"


class JobHandler(JobHandlerInterface):
    """
    A silly test jobHandler that reverses the description of its input
    """

    results_directory = f"{Path(__file__).parent}/results"
    os.makedirs(results_directory, exist_ok=True)

    def __init__(self, job: Job, data_source: str):
        super().__init__(job, data_source)
        self.headers = {"Access-Key": job.token}

    def start(self) -> str:
        logger.info("Starting ReverseDescription job.")
        input_entity = self.job.entity["applicationInput"]
        result = input_entity["description"][::-1]
        with open(f"{self.results_directory}/{self.job.job_uid}", "w") as result_file:
            result_file.write(result)
        logger.info("ReverseDescription job completed")
        self.job.set_job_status(JobStatus.COMPLETED)  # as dm-job's own reverse_description does
        return "OK"

    def result(self) -> tuple[str, bytes]:
        result_file_path = Path(f"{self.results_directory}/{self.job.job_uid}")
        if not result_file_path.is_file():
            return "No result file found", b""

        with open(result_file_path, "rb") as result_file:
            return "Done", result_file.read()

    def progress(self) -> tuple[JobStatus, str]:
        return self.job.status, "Progress tracking not implemented"
