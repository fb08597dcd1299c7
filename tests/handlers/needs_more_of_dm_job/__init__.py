"""Imports a part of dm-job the adapter does not provide (its DMSS client): discovery skips it."""

from services.dmss import get_document
from services.job_handler_interface import JobHandlerInterface

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/NeedsDmssClient"


class JobHandler(JobHandlerInterface):
    def start(self) -> str:
        return str(get_document(self.job.dmss_id))
