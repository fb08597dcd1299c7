"""A container on a Docker engine through the docker SDK, as dm-job's local_container handler runs one."""

import docker
from config import config
from docker.errors import ImageNotFound
from restful.exceptions import NotFoundException
from services.job_handler_interface import JobHandlerInterface, JobStatus

_SUPPORTED_TYPE = "dmss://WorkflowDS/Blueprints/DockerSdkContainer"


class JobHandler(JobHandlerInterface):
    def __init__(self, job, data_source):
        super().__init__(job, data_source)
        self.client = docker.from_env(environment={"DOCKER_HOST": config.DOCKER_HOST})
        self.name = f"{job.runner['name']}_{str(job.job_uid).split('-')[0]}"

    def start(self) -> str:
        image = self.job.runner["image"]
        try:
            container = self.client.containers.run(
                f"{image['registryName']}/{image['imageName']}:{image['version']}",
                self.job.runner.get("customCommand"),
                name=self.name,
                detach=True,
                network_mode="none",
            )
        except ImageNotFound as error:
            raise NotFoundException(str(error)) from error
        self.job.state = {"container": container.id}
        return "*** Local container job started successfully ***"

    def progress(self) -> tuple[JobStatus, str, float | None]:
        container = self.client.containers.get(self.job.state["container"])
        if container.status == "exited":
            code = container.attrs["State"]["ExitCode"]
            logs = container.logs().decode().strip()
            return (JobStatus.COMPLETED if code == 0 else JobStatus.FAILED), logs, 1
        return JobStatus.RUNNING, "Job is running", 0

    def remove(self) -> tuple[JobStatus, str]:
        self.client.containers.get(self.job.state["container"]).remove(force=True)
        return JobStatus.REMOVED, f"Removed docker container {self.name}"
