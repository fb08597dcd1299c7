"""The container runner: one job, one container on the engine, found by labels, settled into files.

Every container carries the labels ``dm-jobd.owner`` (this daemon's state folder's id, kept in the file
``owner``) and ``dm-jobd.job-uid``; never a token. Labels, not the daemon's memory, tie a container to
its job: a repeated ``start`` finds the container it made before, a restarted daemon re-attaches, and
``reconcile`` removes containers of jobs the store no longer runs. Several daemons (or test runs) can
share one engine, each touching only what it owns.

Settling: when a container has exited, the runner copies into the job's folder what the job leaves
behind: ``result`` (the file at ``/dm-job/result`` in the container, copied out with the archive API),
``stdout`` (the whole standard output, the result when there is no file), and ``outcome.json`` (exit
code, out-of-memory flag, last log lines), written last, atomically. Then it removes the container.
The files are the truth from then on: ``result`` and later polls read them, after a restart too; a
crash between the two steps leaves an exited container that the next poll (or ``reconcile``) removes.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from daemon.contracts import (
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    Log,
    RunnerStatus,
    Started,
    remove_job_folder,
)

from .engine import Engine, EngineError, NameClash
from .exits import ExitFollower
from .spec import DEFAULT_RESULT_PATH, ContainerSpec, parse_spec

__all__ = ["JOB_LABEL", "OWNER_LABEL", "ContainerRunner"]

OWNER_LABEL = "dm-jobd.owner"
JOB_LABEL = "dm-jobd.job-uid"
#: Log lines carried in a failed job's message (the job's log holds more).
_MESSAGE_LINES = 5


def _lines(text: str, keep: int) -> tuple[str, ...]:
    return tuple(text.splitlines()[-keep:])


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class ContainerRunner:
    def __init__(
        self,
        engine: Engine,
        state_dir: Path,
        log: Log,
        *,
        log_lines: int = 200,
        default_network: str | None = None,
    ) -> None:
        self.engine = engine
        self.state_dir = state_dir
        self.log = log
        self.log_lines = log_lines
        self.default_network = default_network
        self.owner = self._owner()
        self.exits = ExitFollower(engine, {OWNER_LABEL: self.owner}, log)
        #: One lock per job being polled, so two polls never settle a container at once.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _owner(self) -> str:
        """This state folder's id: the label that separates its containers from everyone else's."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "owner"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            owner = uuid.uuid4().hex
            _write_atomically(path, owner.encode())
            return owner

    def _dir(self, uid: str) -> Path:
        return self.state_dir / "jobs" / uid

    def runner_fields(self, runner_type: str) -> frozenset[str]:
        return frozenset({"image", "computeResource", "customCommand"})

    async def forget(self, uid: str) -> None:
        """The job's folder: the result and output copied out of its container."""
        await remove_job_folder(self.state_dir / "jobs", uid)

    def _lock(self, uid: str) -> asyncio.Lock:
        lock = self._locks.get(uid)
        if lock is None:
            lock = self._locks[uid] = asyncio.Lock()
        return lock

    # -- start -----------------------------------------------------------------------------------

    async def start(self, job: JobSpec) -> Started:
        spec = parse_spec(job.runner, default_network=self.default_network)
        folder = self._dir(job.uid)
        folder.mkdir(parents=True, exist_ok=True)
        name = spec.name or f"dm-jobd-{job.uid}"
        handle: Handle = {"dir": str(folder), "container": None, "name": name, "resultPath": spec.result_path}
        if (folder / "outcome.json").exists():  # ran and settled before a crash hid the handle
            return Started(handle, await self.poll(job, handle))
        mine = await self.engine.find({OWNER_LABEL: self.owner, JOB_LABEL: job.uid})
        if mine:  # created before: never run the job twice
            handle["container"] = str(mine[0]["Id"])
            if mine[0].get("State") == "created":
                await self._start_or_remove(handle["container"])
            return Started(handle, await self.poll(job, handle))
        await self.engine.ensure_image(spec.image, spec.registry)
        try:
            container = await self.engine.create(self._config(job, spec), name)
        except NameClash:
            raise NameClash(
                f"a container named {name!r} already exists on the engine; "
                "choose another runner.name or remove that container"
            ) from None
        result_dir = os.path.dirname(spec.result_path) if spec.result_path == DEFAULT_RESULT_PATH else None
        await self._start_or_remove(container, result_dir)
        handle["container"] = container
        self.log.info("container started", uid=job.uid, container=container[:12], image=spec.image)
        return Started(handle, RunnerStatus(JobStatus.RUNNING, message=f"running as container {name}"))

    async def _start_or_remove(self, container: str, result_dir: str | None = None) -> None:
        """Start a created container; one the engine cannot start is removed, so a retry starts afresh."""
        try:
            if result_dir is not None:  # the folder exists whatever the image holds, writable by any user
                await self.engine.make_dir(container, result_dir)
            await self.engine.start(container)
        except EngineError as exc:
            await self.engine.remove(container)
            raise EngineError(f"the container could not start: {exc}") from None

    def _config(self, job: JobSpec, spec: ContainerSpec) -> dict[str, Any]:
        env = {**job.env, "DM_JOB_RESULT": spec.result_path, "DM_JOB_UID": job.uid}
        host: dict[str, Any] = {}
        if spec.nano_cpus is not None:
            host["NanoCpus"] = spec.nano_cpus
        if spec.memory is not None:
            host["Memory"] = spec.memory
        if spec.network is not None:
            host["NetworkMode"] = spec.network
        config: dict[str, Any] = {
            "Image": spec.image,
            "Env": [f"{key}={value}" for key, value in env.items()],
            "Labels": {OWNER_LABEL: self.owner, JOB_LABEL: job.uid},
            "HostConfig": host,
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "Tty": False,
        }
        if spec.command is not None:
            config["Cmd"] = spec.command
        return config

    # -- status ----------------------------------------------------------------------------------

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        folder = Path(handle["dir"])
        async with self._lock(job.uid):
            settled = self._settled(folder)
            if settled is not None:
                return settled
            if (folder / "stopped").exists():
                return RunnerStatus(JobStatus.REMOVED, message="stopped")
            container = handle.get("container")
            info = await self.engine.inspect(container) if isinstance(container, str) else None
            if info is None:
                return RunnerStatus(
                    JobStatus.FAILED, message="the container is gone (removed outside dm-jobd?)"
                )
            state = info.get("State") or {}
            if state.get("Status") in ("exited", "dead"):
                path = str(handle.get("resultPath") or DEFAULT_RESULT_PATH)
                await self._settle(folder, container, state, path)  # type: ignore[arg-type]
                return self._settled(folder) or RunnerStatus(JobStatus.UNKNOWN)
            if state.get("Status") == "created":
                return RunnerStatus(JobStatus.STARTING, message="the container is created, not started")
            logs = _lines(await self.engine.logs(str(container), tail=self.log_lines), self.log_lines)
            return RunnerStatus(JobStatus.RUNNING, logs=logs)

    def _settled(self, folder: Path) -> RunnerStatus | None:
        try:
            outcome = json.loads((folder / "outcome.json").read_text())
        except FileNotFoundError:
            return None
        code, logs = outcome["exitCode"], tuple(outcome["logs"])
        if code == 0 and not outcome.get("oomKilled"):
            return RunnerStatus(JobStatus.COMPLETED, message="exit code 0", logs=logs)
        message = f"the container failed with exit code {code}"
        if outcome.get("oomKilled"):
            message += " (killed: out of memory)"
        if outcome.get("error"):
            message += f" ({outcome['error']})"
        if logs:
            message += "; last lines:\n" + "\n".join(logs[-_MESSAGE_LINES:])
        return RunnerStatus(JobStatus.FAILED, message=message, logs=logs)

    async def _settle(self, folder: Path, container: str, state: Mapping[str, Any], result_path: str) -> None:
        """Copy result, output and exit code of an exited container into the job's folder; remove it."""
        result = await self.engine.read_file(container, result_path)
        if result is not None:
            _write_atomically(folder / "result", result)
        stdout = await self.engine.logs(container, stderr=False)
        _write_atomically(folder / "stdout", stdout.encode())
        logs = await self.engine.logs(container, tail=self.log_lines)
        outcome = {
            "exitCode": state.get("ExitCode"),
            "oomKilled": bool(state.get("OOMKilled")),
            "error": state.get("Error") or None,
            "finishedAt": state.get("FinishedAt"),
            "logs": list(_lines(logs, self.log_lines)),
        }
        _write_atomically(folder / "outcome.json", json.dumps(outcome).encode())
        await self.engine.remove(container)

    async def watch(self, job: JobSpec, handle: Handle) -> AsyncIterator[RunnerStatus]:
        """Push a container's exit (from the engine's event stream) the moment it happens."""
        container = handle.get("container")
        if not isinstance(container, str):
            return
        await self.exits.died(container)
        yield await self.poll(job, handle)

    # -- result, stop, clean-up ------------------------------------------------------------------

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        folder = Path(handle.get("dir") or self._dir(job.uid))
        if (folder / "result").exists():
            return JobResult((folder / "result").read_bytes(), media_type="application/octet-stream")
        if (folder / "stdout").exists():
            return JobResult((folder / "stdout").read_bytes(), media_type="text/plain")
        raise EngineError(f"no result is kept for job {job.uid} (its folder {folder} is empty)")

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        """Kill and remove the container; a ``stopped`` marker keeps later polls from calling it lost."""
        folder = Path(handle.get("dir") or self._dir(job.uid))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "stopped").touch()
        containers = {handle.get("container")} | {
            str(c["Id"]) for c in await self.engine.find({OWNER_LABEL: self.owner, JOB_LABEL: job.uid})
        }
        for container in containers - {None}:
            await self.engine.remove(str(container))

    async def reconcile(self, is_active: Callable[[str], Awaitable[bool]]) -> None:
        """Remove this daemon's containers whose jobs the store no longer runs."""
        for info in await self.engine.find({OWNER_LABEL: self.owner}):
            uid = (info.get("Labels") or {}).get(JOB_LABEL)
            if isinstance(uid, str) and not await is_active(uid):
                await self.engine.remove(str(info["Id"]))
                self.log.info("removed an orphaned container", uid=uid, container=str(info["Id"])[:12])

    async def close(self) -> None:
        await self.exits.close()
        await self.engine.close()
