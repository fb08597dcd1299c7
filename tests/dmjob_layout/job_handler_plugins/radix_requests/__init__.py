"""A Radix job through the scheduler's REST API with requests, the way dm-job's radix handler talks to it."""

import json

import requests
from config import config
from services.job_handler_interface import JobHandlerInterface, JobStatus
from utils.logging import logger

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/RadixRequests"


class JobHandler(JobHandlerInterface):
    def _url(self) -> str:
        return f"http://{self.job.runner['jobName']}:{self.job.runner['schedulerPort']}/api/v1/jobs"

    def start(self) -> str:
        payload = {"DMSS_TOKEN": self.job.token, "DMSS_URL": config.DMSS_URL, "JOB_DMSS_ID": self.job.dmss_id}
        response = requests.post(self._url(), json={"payload": json.dumps(payload)}, timeout=10)
        response.raise_for_status()
        self.job.state = {"job_name": response.json()["name"]}
        logger.info(f"Radix job {self.job.state['job_name']} scheduled")
        return str(response.status_code)

    def progress(self) -> tuple[JobStatus, str, float | None]:
        if not self.job.state:
            return self.job.status, "Radix job is not running yet.", 0
        response = requests.get(f"{self._url()}/{self.job.state['job_name']}", timeout=10)
        response.raise_for_status()
        status = response.json().get("status")
        mapping = {"Running": JobStatus.RUNNING, "Failed": JobStatus.FAILED, "Succeeded": JobStatus.COMPLETED}
        if status is None:
            return JobStatus.STARTING, "no status yet", None
        return mapping.get(status, JobStatus.UNKNOWN), f"Radix says {status}", None

    def remove(self) -> tuple[JobStatus, str]:
        if self.job.state:
            requests.delete(f"{self._url()}/{self.job.state['job_name']}", timeout=10)
        return JobStatus.REMOVED, "Removed"
