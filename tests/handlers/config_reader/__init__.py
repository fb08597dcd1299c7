from config import config
from services.job_handler_interface import JobHandlerInterface
from utils.logging import logger

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/ReadsConfig"

# Read at import, like handlers that build clients at module level.
IMPORTED_IN_ENVIRONMENT = config.ENVIRONMENT


class JobHandler(JobHandlerInterface):
    def start(self) -> str:
        exported = ",".join(config.SCHEDULER_ENVS_TO_EXPORT)
        logger.info("reading configuration for %s", self.job.job_uid)
        return (
            f"dmss={config.DMSS_API} env={config.ENVIRONMENT} ds={self.data_source} "
            f"exported={exported} other={config.SOME_OTHER_SETTING}"
        )
