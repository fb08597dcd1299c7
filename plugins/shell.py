"""The local shell runner: ``runner.script`` runs with bash in its own process group.

Off unless ``DM_JOBD_ENABLE_SHELL`` is set: it executes whatever script a command carries.

Every job gets a folder under the plugin's state dir. A small ``sh`` wrapper writes the job's pid,
runs the script with its output in ``output.log``, and writes the exit code to ``exit_code`` when the
script ends. The files, not the daemon's memory, are the truth: a job that ended while the daemon was
down is settled by its real exit code. A ``launched`` marker is created before the process, so a
start repeated after a crash never runs the script twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from daemon.contracts import (
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    RunnerContext,
    RunnerStatus,
    RunnerUnavailable,
    Started,
)

__all__ = ["PLUGIN", "ShellRunner"]

TYPES = ("dmss://WorkflowDS/Blueprints/Shell",)
_WRAPPER = (
    'echo "$$" > pid.tmp && mv pid.tmp pid; '
    "bash ./script.sh > output.log 2>&1; "
    'echo "$?" > exit_code.tmp && mv exit_code.tmp exit_code'
)
_TAIL_BYTES = 64 * 1024
_TRUE = {"1", "true", "yes", "on"}


def _tail(path: Path, lines: int) -> tuple[str, ...]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            data = f.read()
    except FileNotFoundError:
        return ()
    text = data.decode("utf-8", errors="replace").splitlines()
    return tuple(text[-lines:])


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/<pid>/stat): guards against pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


class ShellRunner:
    def __init__(
        self, state_dir: Path, environ: Mapping[str, str], *, log_lines: int = 200, stop_grace: float = 3.0
    ) -> None:
        self.state_dir = state_dir
        self.environ = {k: v for k, v in environ.items() if not k.startswith("DM_JOBD_")}
        self.log_lines = log_lines
        self.stop_grace = stop_grace
        self._exits: dict[str, asyncio.Future[int]] = {}

    def _dir(self, uid: str) -> Path:
        return self.state_dir / uid

    async def start(self, job: JobSpec) -> Started:
        script = job.runner.get("script")
        if not isinstance(script, str) or not script.strip():
            raise ValueError("runner.script must hold the bash script to run")
        folder = self._dir(job.uid)
        folder.mkdir(parents=True, exist_ok=True)
        handle: Handle = {"dir": str(folder)}
        try:
            (folder / "launched").open("x").close()
        except FileExistsError:  # started before: never run the script twice
            return Started(handle=await self._handle(folder), status=await self.poll(job, handle))
        (folder / "script.sh").write_text(script)
        env = {**self.environ, **job.env, "DM_JOB_RESULT": str(folder / "result")}
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            _WRAPPER,
            cwd=folder,
            env=env,
            start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self._exits[job.uid] = asyncio.ensure_future(proc.wait())
        return Started(
            handle=await self._handle(folder, proc.pid),
            status=RunnerStatus(JobStatus.RUNNING, message=f"running as process {proc.pid}"),
        )

    async def _handle(self, folder: Path, pid: int | None = None) -> Handle:
        handle: Handle = {"dir": str(folder)}
        if pid is None:
            with contextlib.suppress(FileNotFoundError, ValueError):
                pid = int((folder / "pid").read_text())
        if pid is not None:
            handle["pid"] = pid
            handle["startTime"] = _start_time(pid)
        return handle

    def _alive(self, handle: Handle) -> bool:
        pid = handle.get("pid")
        if not isinstance(pid, int):
            return False
        now = _start_time(pid)
        return now is not None and (handle.get("startTime") in (None, now))

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        folder = Path(handle["dir"])
        logs = _tail(folder / "output.log", self.log_lines)
        try:
            code = int((folder / "exit_code").read_text())
        except (FileNotFoundError, ValueError):
            code = None
        if code == 0:
            return RunnerStatus(JobStatus.COMPLETED, message="exit code 0", logs=logs)
        if code is not None:
            return RunnerStatus(
                JobStatus.FAILED, message=f"the script failed with exit code {code}", logs=logs
            )
        if (folder / "stopped").exists():
            return RunnerStatus(JobStatus.REMOVED, message="stopped", logs=logs)
        if self._alive(handle) or (job.uid in self._exits and not self._exits[job.uid].done()):
            return RunnerStatus(JobStatus.RUNNING, logs=logs)
        if (folder / "pid").exists() or "pid" in handle:
            return RunnerStatus(
                JobStatus.FAILED, message="the process ended without an exit code (killed?)", logs=logs
            )
        return RunnerStatus(
            JobStatus.FAILED, message="the daemon stopped while launching the job; it did not run"
        )

    async def watch(self, job: JobSpec, handle: Handle) -> AsyncIterator[RunnerStatus]:
        """Push the exit of a process this daemon started; after a restart there is none: polling."""
        exit_future = self._exits.get(job.uid)
        if exit_future is None:
            return
        await asyncio.shield(exit_future)
        self._exits.pop(job.uid, None)
        yield await self.poll(job, handle)

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        folder = Path(handle["dir"])
        result = folder / "result"
        if result.exists():
            return JobResult(result.read_bytes(), media_type="application/octet-stream")
        output = folder / "output.log"
        return JobResult(output.read_bytes() if output.exists() else b"", media_type="text/plain")

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        """SIGTERM the job's process group, SIGKILL it after a grace period."""
        folder = Path(handle["dir"])
        (folder / "stopped").touch()
        handle = await self._handle(folder) if "pid" not in handle else handle
        if not self._alive(handle):
            return
        pid = int(handle["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_grace
        while self._alive(handle) and loop.time() < deadline:  # noqa: ASYNC110 (not our child after a restart)
            await asyncio.sleep(0.05)  # waiting on another process's exit: nothing to await on
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    async def close(self) -> None:
        self._exits.clear()


class _Plugin:
    types = TYPES

    def create(self, ctx: RunnerContext) -> ShellRunner:
        if ctx.env.get("DM_JOBD_ENABLE_SHELL", "").lower() not in _TRUE:
            raise RunnerUnavailable(
                "the shell runner is off (it runs arbitrary scripts); "
                "set DM_JOBD_ENABLE_SHELL=1 to turn it on"
            )
        return ShellRunner(ctx.state_dir, ctx.env)


PLUGIN = _Plugin()
