"""Running jobs as Azure Container Instances container groups, through the async Azure SDK.

``start`` creates the group (its name derived from the job uid) and returns at once; a background task
follows ARM's long-running operation so nothing waits on it. ``poll`` reads the group with its
instance view and the container's logs. Throttling and quota errors keep the job in ``starting``:
the create is retried from ``poll`` with backoff (honouring ``Retry-After``) up to a limit. Before any
create the group is looked up by name, so a retried or repeated start, or a daemon restart, re-attaches
to the group that exists instead of making a second one. ``stop`` deletes the group.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.core.polling import AsyncLROPoller
from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient
from azure.mgmt.containerinstance.models import ContainerGroup

from daemon.contracts import (
    REACH_ANYWHERE,
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    Log,
    RunnerStatus,
    Started,
    remove_job_folder,
)

from .clients import auth_message, make_client, make_credential
from .config import AzureConfig
from .groups import build_group, group_name
from .states import describe_error, group_state, is_retryable, read_result, retry_after

__all__ = ["AzureError", "AzureRunner"]


class AzureError(RuntimeError):
    """ARM refused a request in a way retrying will not fix; the message says why (never a secret)."""


@dataclass
class _Pending:
    """A create that was throttled or hit a quota: when to try again, and how often it failed."""

    failures: int
    due: float
    message: str


class AzureRunner:
    def __init__(self, cfg: AzureConfig, *, log: Log, state_dir: Path, classic_types: frozenset[str]) -> None:
        self.cfg = cfg
        self.log = log
        self.state_dir = state_dir
        self.classic_types = classic_types
        self._credential: AsyncTokenCredential | None = None
        self._client: ContainerInstanceManagementClient | None = None
        self._pending: dict[str, _Pending] = {}
        self._following: dict[str, asyncio.Task[None]] = {}
        self._provision_errors: dict[str, str] = {}
        #: Jobs whose group this process created or saw: a 404 for them means it is gone.
        self._created: set[str] = set()

    @property
    def client(self) -> ContainerInstanceManagementClient:
        if self._client is None:  # built on first use, inside the daemon's event loop
            self._credential = make_credential(self.cfg)
            self._client = make_client(self.cfg, self._credential)
        return self._client

    # -- the runner contract -------------------------------------------------------------------------

    async def start(self, job: JobSpec) -> Started:
        group = self._build(job, warn=True)
        name = group_name(job.uid)
        handle: Handle = {
            "group": name,
            "resourceGroup": self.cfg.resource_group,
            "container": group.containers[0].name,
            "created": False,
        }
        try:
            existing = await self._get(name)
            if existing is not None:  # a repeated start: attach to what is there
                self._created.add(job.uid)
                handle["created"] = True
                handle["container"] = _container(existing, handle)
                return Started(handle, await self._status(job, handle, existing))
            await self._create(job.uid, name, group)
        except ClientAuthenticationError as exc:
            raise AzureError(auth_message(self.cfg, exc)) from None
        except HttpResponseError as exc:
            if not is_retryable(exc) or self.cfg.retry_limit == 0:
                raise AzureError(
                    f"ARM refused to create container group {name}: {describe_error(exc)}"
                ) from None
            pending = self._defer(job.uid, exc, failures=1)
            return Started(handle, RunnerStatus(JobStatus.STARTING, pending.message))
        handle["created"] = True
        return Started(
            handle,
            RunnerStatus(
                JobStatus.STARTING,
                f"container group {name} created in {self.cfg.resource_group}; waiting for it to start",
            ),
        )

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        pending = self._pending.get(job.uid)
        if pending is not None:
            if asyncio.get_running_loop().time() < pending.due:
                return RunnerStatus(JobStatus.STARTING, pending.message)
            return await self._retry_create(job, handle, pending)
        name = str(handle["group"])
        try:
            group = await self._get(name)
        except ClientAuthenticationError as exc:
            raise AzureError(auth_message(self.cfg, exc)) from None
        if group is not None:
            self._created.add(job.uid)
            return await self._status(job, handle, group)
        if handle.get("created") or job.uid in self._created:
            return RunnerStatus(
                JobStatus.FAILED, f"container group {name} no longer exists (deleted outside dm-jobd?)"
            )
        # throttled before a restart: the retry schedule was in memory; try again now
        return await self._retry_create(job, handle, _Pending(failures=0, due=0.0, message=""))

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        saved = self._log_file(job.uid)
        if saved.exists():
            return read_result(saved.read_text(encoding="utf-8", errors="replace"))
        log = await self._logs(str(handle["group"]), str(handle["container"]), tail=None)
        return read_result(log or "")

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        """Delete the group (and with it the container); a group already gone counts as removed."""
        self._pending.pop(job.uid, None)
        task = self._following.pop(job.uid, None)
        if task is not None:
            task.cancel()
        name = str(handle["group"])
        try:
            poller = await self.client.container_groups.begin_delete(self.cfg.resource_group, name)
            await poller.result()
        except ResourceNotFoundError:
            pass
        except ClientAuthenticationError as exc:
            raise AzureError(auth_message(self.cfg, exc)) from None
        except HttpResponseError as exc:
            raise AzureError(f"ARM refused to delete container group {name}: {describe_error(exc)}") from None
        self._created.discard(job.uid)
        self._provision_errors.pop(job.uid, None)

    async def close(self) -> None:
        tasks = list(self._following.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
        if self._credential is not None:
            await self._credential.close()
        self._client = self._credential = None

    # -- creating --------------------------------------------------------------------------------------

    def _build(self, job: JobSpec, *, warn: bool) -> ContainerGroup:
        def warning(message: str) -> None:
            if warn:
                self.log.warning(message, uid=job.uid)

        return build_group(job, self.cfg, classic=job.runner_type in self.classic_types, warn=warning)

    async def _create(self, uid: str, name: str, group: ContainerGroup) -> None:
        """Send the PUT (no SDK retry: throttling is ours to schedule) and follow the operation."""
        poller = await self.client.container_groups.begin_create_or_update(
            self.cfg.resource_group, name, group, retry_total=0
        )
        self._created.add(uid)
        self.log.info("container group created", uid=uid, group=name)
        self._following[uid] = asyncio.create_task(self._follow(uid, poller), name=f"aci create {name}")

    async def _follow(self, uid: str, poller: AsyncLROPoller[ContainerGroup]) -> None:
        """Wait for the deployment in the background; keep its error to explain a failed group."""
        try:
            await poller.result()
        except HttpResponseError as exc:
            self._provision_errors[uid] = describe_error(exc)
        except Exception as exc:  # the GETs in poll() will tell; this is only a better message
            self.log.info("following the container group's deployment failed", uid=uid, error=str(exc))
        finally:
            self._following.pop(uid, None)

    def _defer(self, uid: str, exc: HttpResponseError, *, failures: int) -> _Pending:
        # ARM's own Retry-After is the wait it asked for; only without one do we back off ourselves.
        asked = retry_after(exc)
        backoff = min(self.cfg.retry_base_seconds * 2 ** (failures - 1), self.cfg.retry_max_seconds)
        delay = asked if asked is not None else backoff
        why = {429: "Azure is throttling requests"}.get(exc.status_code or 0, "an Azure quota is reached")
        if (exc.status_code or 0) >= 500 or exc.status_code == 408:
            why = "ARM is unavailable"
        message = (
            f"{why} ({describe_error(exc)}); creating the container group again in {delay:g} s "
            f"(retry {failures} of {self.cfg.retry_limit})"
        )
        self.log.warning("container group create deferred", uid=uid, delay=delay, failures=failures)
        pending = _Pending(failures, asyncio.get_running_loop().time() + delay, message)
        self._pending[uid] = pending
        return pending

    async def _retry_create(self, job: JobSpec, handle: Handle, pending: _Pending) -> RunnerStatus:
        name = str(handle["group"])
        try:
            existing = await self._get(name)
            if existing is None:
                await self._create(job.uid, name, self._build(job, warn=pending.failures == 0))
        except ClientAuthenticationError as exc:
            self._pending.pop(job.uid, None)
            return RunnerStatus(JobStatus.FAILED, auth_message(self.cfg, exc))
        except HttpResponseError as exc:
            if not is_retryable(exc):
                self._pending.pop(job.uid, None)
                message = f"ARM refused to create container group {name}: {describe_error(exc)}"
                return RunnerStatus(JobStatus.FAILED, message)
            if pending.failures >= self.cfg.retry_limit:
                self._pending.pop(job.uid, None)
                message = (
                    f"gave up creating container group {name} after {pending.failures + 1} attempts: "
                    f"{describe_error(exc)}"
                )
                return RunnerStatus(JobStatus.FAILED, message)
            return RunnerStatus(
                JobStatus.STARTING, self._defer(job.uid, exc, failures=pending.failures + 1).message
            )
        self._pending.pop(job.uid, None)
        if existing is not None:
            self._created.add(job.uid)
            return await self._status(job, handle, existing)
        return RunnerStatus(
            JobStatus.STARTING, f"container group {name} created after {pending.failures} deferral(s)"
        )

    # -- reading ---------------------------------------------------------------------------------------

    async def _get(self, name: str) -> ContainerGroup | None:
        try:
            return await self.client.container_groups.get(self.cfg.resource_group, name)
        except ResourceNotFoundError:
            return None

    async def _status(self, job: JobSpec, handle: Handle, group: ContainerGroup) -> RunnerStatus:
        state = group_state(group, self._provision_errors.get(job.uid))
        if state.container_state not in ("Running", "Terminated"):
            return self._seen(job.uid, RunnerStatus(state.status, state.message))
        container = _container(group, handle)
        if state.status.is_terminal:
            log = await self._logs(str(handle["group"]), container, tail=None)
            if log is not None:
                path = self._log_file(job.uid)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(log, encoding="utf-8")
        else:
            log = await self._logs(str(handle["group"]), container, tail=self.cfg.log_lines)
        lines = tuple(log.splitlines()[-self.cfg.log_lines :]) if log else ()
        return self._seen(job.uid, RunnerStatus(state.status, state.message, logs=lines))

    def _seen(self, uid: str, status: RunnerStatus) -> RunnerStatus:
        """Forget a job's in-memory traces once it is over (the daemon polls it no more)."""
        if status.status.is_terminal:
            self._created.discard(uid)
            self._provision_errors.pop(uid, None)
        return status

    async def _logs(self, name: str, container: str, *, tail: int | None) -> str | None:
        """The container's log; None while ACI cannot give it (not ready yet, or gone)."""
        kwargs: dict[str, Any] = {"tail": tail} if tail is not None else {}
        try:
            logs = await self.client.containers.list_logs(self.cfg.resource_group, name, container, **kwargs)
        except HttpResponseError as exc:
            if isinstance(exc, ClientAuthenticationError):
                raise AzureError(auth_message(self.cfg, exc)) from None
            self.log.debug("container logs not available", group=name, error=describe_error(exc))
            return None
        return logs.content or ""

    def _log_file(self, uid: str) -> Path:
        return self.state_dir / uid / "logs.txt"

    def reach(self, runner_type: str) -> str:
        """Its jobs live in the cloud: any replica with the credentials can follow them."""
        return REACH_ANYWHERE

    def runner_fields(self, runner_type: str) -> frozenset[str]:
        common = {"name", "image", "containerImage", "customCommand", "command", "computeResource"}
        classic = (
            {"subnetId", "logAnalyticsWorkspaceResourceId"} if runner_type in self.classic_types else set()
        )
        return frozenset(common | classic)

    async def forget(self, uid: str) -> None:
        """The job's folder of copied logs."""
        await remove_job_folder(self.state_dir, uid)


def _container(group: ContainerGroup, handle: Handle) -> str:
    if group.containers:
        return str(group.containers[0].name)
    return str(handle["container"])
