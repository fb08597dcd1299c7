"""The runner contract: what every plugin implements, and what the daemon hands it.

A runner starts a job and returns a *handle*, a small JSON object the daemon persists, so that after a
restart the runner can find the job again from the handle alone. ``start`` must be idempotent per job
uid: the daemon may call it again for a job whose handle it never saw persisted (it crashed in between).
Plugins import this module and nothing else of the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .status import JobStatus

__all__ = [
    "REACH_ANYWHERE",
    "REACH_HOST",
    "DaemonSettings",
    "DescribedRunner",
    "Documents",
    "ForgettingRunner",
    "Handle",
    "JobControl",
    "JobResult",
    "JobSpec",
    "Log",
    "ReachingRunner",
    "ReconcilingRunner",
    "Registered",
    "Runner",
    "RunnerContext",
    "RunnerPlugin",
    "RunnerStatus",
    "RunnerUnavailable",
    "Started",
    "WatchingRunner",
    "remove_job_folder",
]

#: What a runner persists about a running job (process id, container id, ...). JSON only.
Handle = dict[str, Any]


@dataclass(frozen=True)
class JobSpec:
    """One run of a job, as a runner sees it."""

    uid: str
    entity: Mapping[str, Any]
    #: dm-job's environment for the job: DMSS_TOKEN, DMSS_URL, JOB_DMSS_ID, exported and runner variables.
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    token: str | None = field(default=None, repr=False)
    #: The DMSS address of the entity, when it was started by address.
    address: str | None = None

    @property
    def runner(self) -> Mapping[str, Any]:
        runner = self.entity.get("runner")
        return runner if isinstance(runner, Mapping) else {}

    @property
    def runner_type(self) -> str:
        return str(self.runner.get("type", ""))


@dataclass(frozen=True)
class RunnerStatus:
    """A runner's view of a job at one moment."""

    status: JobStatus
    message: str | None = None
    logs: tuple[str, ...] = ()
    percentage: float | None = None


@dataclass(frozen=True)
class Started:
    handle: Handle
    status: RunnerStatus


@dataclass(frozen=True)
class JobResult:
    data: bytes | str
    media_type: str = "text/plain"


class Log(Protocol):
    """The slice of a structlog logger that plugins use."""

    def debug(self, event: str, **kw: Any) -> Any: ...
    def info(self, event: str, **kw: Any) -> Any: ...
    def warning(self, event: str, **kw: Any) -> Any: ...
    def error(self, event: str, **kw: Any) -> Any: ...


@dataclass(frozen=True)
class Registered:
    """A job started through :class:`JobControl`: its uid, status and the start's message."""

    uid: str
    status: JobStatus
    message: str


class JobControl(Protocol):
    """The daemon's own start and stop, for runners that start jobs themselves.

    dm-job's handlers did (its recurring handler calls ``register_job`` for each run, and
    ``remove_job``); a start here is a ``job.start`` by DMSS address, with its token.
    """

    async def start(self, address: str, token: str | None) -> Registered: ...
    async def stop(self, uid: str) -> tuple[JobStatus, str]: ...


class Documents(Protocol):
    """Reading DMSS documents with a job's token: the daemon's own DMSS client, lent to runners.

    Raises :class:`~daemon.contracts.DmssError` when DMSS refuses (its message says why, never the
    token) and :class:`~daemon.contracts.DmssUnavailable` when it cannot be reached.
    """

    async def get(self, address: str, token: str | None, *, depth: int = 1) -> Any: ...


@dataclass(frozen=True)
class DaemonSettings:
    """The daemon's settings that runners need, parsed and checked once by the daemon.

    A runner reads these instead of the ``DM_JOBD_*`` variables they came from, so a value means the
    same to the daemon and to every runner. Settings of a runner's own (``DM_JOBD_AZURE_*``, say)
    stay with the runner, in ``RunnerContext.env``.
    """

    #: The shell runner runs arbitrary scripts: off unless the operator turns it on.
    enable_shell: bool = False
    #: Log lines kept per job.
    log_lines: int = 200
    #: The DMSS the daemon reads and writes jobs in, when one is configured.
    dmss_url: str | None = None


@dataclass(frozen=True)
class RunnerContext:
    """What the daemon gives a plugin when it creates its runner."""

    #: The daemon's environment (dm-job's variable names and a runner's own settings live here).
    env: Mapping[str, str]
    #: A folder that is the plugin's own and survives daemon restarts.
    state_dir: Path
    log: Log
    #: Starting and stopping other jobs (None where no daemon runs, as for ``dm-jobd runners``).
    jobs: JobControl | None = None
    settings: DaemonSettings = DaemonSettings()
    #: The daemon's DMSS client (None when no DMSS is configured).
    dmss: Documents | None = None


class RunnerUnavailable(Exception):
    """Raised by a plugin's ``create`` when it is switched off or misconfigured; the reason is shown."""


@runtime_checkable
class Runner(Protocol):
    async def start(self, job: JobSpec) -> Started: ...
    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus: ...
    async def result(self, job: JobSpec, handle: Handle) -> JobResult: ...
    async def stop(self, job: JobSpec, handle: Handle) -> None: ...
    async def close(self) -> None: ...


@runtime_checkable
class WatchingRunner(Protocol):
    """Optional: a runner that can push status changes instead of being polled."""

    def watch(self, job: JobSpec, handle: Handle) -> AsyncIterator[RunnerStatus]: ...


@runtime_checkable
class ReconcilingRunner(Protocol):
    """Optional: a runner that leaves things behind (containers, groups) and can clean them up.

    Called once after start-up, when the daemon has re-attached its active jobs. ``is_active(uid)`` reads
    the store at the moment it is asked: what the runner started for a uid that is not active is an
    orphan (its job was removed or settled, or never existed here) and may be deleted. Asking per item,
    after listing, means a job another daemon starts meanwhile is never mistaken for an orphan.
    """

    async def reconcile(self, is_active: Callable[[str], Awaitable[bool]]) -> None: ...


#: A job's handle works from any replica (a cloud API: Azure, Radix).
REACH_ANYWHERE = "anywhere"
#: A job's handle works only on the host (and state folder) it started on: processes, local
#: containers, dm-job handler threads. The default for a runner that does not say.
REACH_HOST = "host"


@runtime_checkable
class ReachingRunner(Protocol):
    """Optional: where the replicas that may adopt this runner's jobs must be (:data:`REACH_ANYWHERE`
    or :data:`REACH_HOST`), when the replica watching them is gone."""

    def reach(self, runner_type: str) -> str: ...


@runtime_checkable
class DescribedRunner(Protocol):
    """Optional: a runner that names the ``runner`` fields it reads (besides ``type`` and
    ``environmentVariables``), so that one misspelt is flagged in the start's answer."""

    def runner_fields(self, runner_type: str) -> frozenset[str]: ...


@runtime_checkable
class ForgettingRunner(Protocol):
    """Optional: a runner that keeps files for its jobs (logs, results, progress records).

    Called by retention before it deletes an ended job from the store: delete what is kept for
    ``uid``. Must be idempotent (a daemon killed after it and before the delete calls it again).
    """

    async def forget(self, uid: str) -> None: ...


async def remove_job_folder(base: Path, uid: str) -> None:
    """Delete ``base/uid`` and all in it, if there: what most runners' :meth:`ForgettingRunner.forget` is.

    Refuses a uid that would name anything but a folder right under ``base``.
    """
    folder = base / uid
    if not uid or folder.parent != base or uid in (".", ".."):
        raise ValueError(f"job uid {uid!r} cannot name a job folder")

    def remove() -> None:
        with contextlib.suppress(FileNotFoundError):  # forgotten already (idempotent), or no files
            shutil.rmtree(folder)

    await asyncio.to_thread(remove)


class RunnerPlugin(Protocol):
    """What an entry point in the ``dm_jobd.runners`` group names."""

    #: The runner types (``runner.type`` values) the plugin serves.
    types: tuple[str, ...]

    def create(self, ctx: RunnerContext) -> Runner: ...
