from services.job_handler_interface import JobHandlerInterface

_SUPPORTED_TYPE = ("dmss://WorkflowDS/Blueprints/BinaryA", "dmss://WorkflowDS/Blueprints/BinaryB")


class JobHandler(JobHandlerInterface):
    """Serves two runner types; no progress(), and a result that is not text."""

    def start(self) -> str:
        return f"ran a {self.job.runner['type'].rsplit('/', 1)[-1]} job"

    def result(self) -> tuple[str, bytes]:
        return "Done", bytes([0xFF, 0x00, 0xFE, 0x01])
