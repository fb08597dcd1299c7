from services.job_handler_interface import JobHandlerInterface

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/NeedsAnAttribute"


class JobHandler(JobHandlerInterface):
    def start(self) -> str:
        image = self.job.runner["image"]
        return f"would run {image}"
