import time
from pathlib import Path

from services.job_handler_interface import JobHandlerInterface
from utils.logging import logger

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/SlowShell"


class JobHandler(JobHandlerInterface):
    """Does the whole job inside start(), like the shell handlers: start() returns when the work is done.

    Its work is waiting for applicationInput.releaseFile (at most 30 s); every call of start() is
    counted in applicationInput.callsFile, and applicationInput.beganFile appears when start() begins.
    """

    def start(self) -> str:
        application_input = self.job.entity["applicationInput"]
        with open(application_input["callsFile"], "a") as calls:
            calls.write(f"{self.job.job_uid}\n")
        Path(application_input["beganFile"]).touch()
        release = Path(application_input["releaseFile"])
        deadline = time.monotonic() + 30
        while not release.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("nobody released the job")
            self.job.percentage = 10.0
            time.sleep(0.01)
        logger.info("slow job done")
        return "script finished"
