"""The local shell runner: ``runner.script`` runs with bash in its own process group.

Off unless ``DM_JOBD_ENABLE_SHELL`` is set: it executes whatever script a command carries.

Every job gets a folder under the plugin's state dir, and the folder, not the daemon's memory, is the
truth, so a daemon killed at any point of a start can tell what happened when it comes back. A small
``sh`` wrapper takes an exclusive lock on ``lock`` (``flock``) and holds it for as long as it runs;
under that lock it refuses to run a script that has a ``pid`` file (it ran already), writes its own
pid to ``pid``, runs the script with its output in ``output.log``, and writes the exit code to
``exit_code``. Whoever can take the lock knows no wrapper is running, and then reads:

- ``exit_code``: the job exited with that code;
- ``pid`` but no ``exit_code``: the job was killed (a reboot, a kill from outside);
- neither: the job never started (the daemon died before or right after spawning): start it now.

A start repeated after a crash can therefore spawn another wrapper safely: two wrappers never both run
the script. The lock, not the pid, tells a live wrapper, so pid reuse cannot fool it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import os
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from daemon.contracts import (
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    RunnerContext,
    RunnerError,
    RunnerStatus,
    RunnerUnavailable,
    Started,
    remove_job_folder,
)

__all__ = ["PLUGIN", "ShellRunner"]

TYPES = ("dmss://WorkflowDS/Blueprints/Shell",)
#: Exit code of a wrapper that could not take the job's lock.
_NO_LOCK = 70
_WRAPPER = (
    f"exec 9>>lock; flock 9 || exit {_NO_LOCK}; "
    "if [ -e pid ] || [ -e stopped ]; then exit 0; fi; "  # ran already, or stopped before it began
    'echo "$$" > pid.tmp && mv pid.tmp pid; '
    "bash ./script.sh > output.log 2>&1 9>&-; "
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


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


class _Phase(enum.Enum):
    NEVER_STARTED = "never started"
    RUNNING = "running"
    EXITED = "exited"
    KILLED = "killed"


@dataclass(frozen=True)
class _State:
    phase: _Phase
    pid: int | None = None
    code: int | None = None


def _runs_in(pid: int, folder: Path) -> bool:
    """Process ``pid`` exists and works in ``folder``: a wrapper of a daemon that took no lock."""
    try:
        return os.readlink(f"/proc/{pid}/cwd") == str(folder)
    except OSError:
        return False


def _probe(folder: Path) -> _State:
    """What the job's folder says, read under the job's lock so no wrapper changes it meanwhile."""
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _State(_Phase.RUNNING, pid=_read_int(folder / "pid"))
        code = _read_int(folder / "exit_code")
        if code is not None:
            return _State(_Phase.EXITED, code=code)
        pid = _read_int(folder / "pid")
        if pid is None:
            return _State(_Phase.NEVER_STARTED)
        if _runs_in(pid, folder):  # started by an older dm-jobd, whose wrapper took no lock
            return _State(_Phase.RUNNING, pid=pid)
        return _State(_Phase.KILLED, pid=pid)
    finally:
        os.close(fd)  # releases the lock


class ShellRunner:
    def __init__(
        self, state_dir: Path, environ: Mapping[str, str], *, log_lines: int = 200, stop_grace: float = 3.0
    ) -> None:
        self.state_dir = state_dir
        self.environ = {k: v for k, v in environ.items() if not k.startswith("DM_JOBD_")}
        self.log_lines = log_lines
        self.stop_grace = stop_grace
        #: The wrappers this process spawned, by job uid: their exits are pushed, not polled.
        self._exits: dict[str, asyncio.Future[int]] = {}

    def _dir(self, uid: str) -> Path:
        return self.state_dir / uid

    def runner_fields(self, runner_type: str) -> frozenset[str]:
        return frozenset({"script"})

    async def forget(self, uid: str) -> None:
        """The job's folder: script, log, result and exit code."""
        await remove_job_folder(self.state_dir, uid)

    async def start(self, job: JobSpec) -> Started:
        """Idempotent: a repeat (after a crash) re-attaches, or starts a job that never started."""
        script = job.runner.get("script")
        if not isinstance(script, str) or not script.strip():
            raise RunnerError("runner.script must hold the bash script to run")
        folder = self._dir(job.uid)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "script.sh").exists():
            (folder / "script.sh.tmp").write_text(script)
            (folder / "script.sh.tmp").replace(folder / "script.sh")
        handle: Handle = {"dir": str(folder)}
        return Started(handle=handle, status=await self._status(job, folder))

    async def _spawn(self, job: JobSpec, folder: Path) -> int:
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
        return proc.pid

    async def _status(self, job: JobSpec, folder: Path) -> RunnerStatus:
        state = _probe(folder)
        logs = _tail(folder / "output.log", self.log_lines)
        if state.phase in (_Phase.EXITED, _Phase.KILLED):
            self._exits.pop(job.uid, None)
        if state.phase is _Phase.EXITED:
            if state.code == 0:
                return RunnerStatus(JobStatus.COMPLETED, message="exit code 0", logs=logs)
            return RunnerStatus(
                JobStatus.FAILED, message=f"the script failed with exit code {state.code}", logs=logs
            )
        if (folder / "stopped").exists():
            return RunnerStatus(JobStatus.REMOVED, message="stopped", logs=logs)
        if state.phase is _Phase.RUNNING:
            return RunnerStatus(JobStatus.RUNNING, logs=logs)
        if state.phase is _Phase.KILLED:
            return RunnerStatus(
                JobStatus.FAILED, message="the process ended without an exit code (killed?)", logs=logs
            )
        spawned = self._exits.get(job.uid)
        if spawned is not None and spawned.done():
            return RunnerStatus(
                JobStatus.FAILED,
                message=f"the job's wrapper could not take its lock (exit code {spawned.result()})",
            )
        if spawned is None:  # nobody started it yet, or its starter died first: start it now
            pid = await self._spawn(job, folder)
            return RunnerStatus(JobStatus.RUNNING, message=f"running as process {pid}")
        return RunnerStatus(JobStatus.RUNNING)

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        return await self._status(job, Path(handle["dir"]))

    async def watch(self, job: JobSpec, handle: Handle) -> AsyncIterator[RunnerStatus]:
        """Push the exit of a wrapper this process spawned; after a restart there is none: polling."""
        exit_future = self._exits.get(job.uid)
        if exit_future is None:
            return
        await asyncio.shield(exit_future)
        yield await self.poll(job, handle)

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        folder = Path(handle["dir"])
        result = folder / "result"
        if result.is_dir():
            raise RunnerError("$DM_JOB_RESULT is a directory; the job must write its result to that file")
        if result.exists():
            return JobResult(result.read_bytes(), media_type="application/octet-stream")
        output = folder / "output.log"
        return JobResult(output.read_bytes() if output.exists() else b"", media_type="text/plain")

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        """SIGTERM the job's process group, SIGKILL it after a grace period.

        The ``stopped`` marker comes first, so a wrapper that has not begun yet never runs the script.
        """
        folder = Path(handle["dir"])
        (folder / "stopped").touch()
        state = _probe(folder)
        if state.phase is not _Phase.RUNNING or state.pid is None:
            return
        pid = state.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.stop_grace
        while _probe(folder).phase is _Phase.RUNNING and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # waiting on another process's exit: nothing to await on
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    async def close(self) -> None:
        self._exits.clear()


class _Plugin:
    types: tuple[str, ...] = TYPES

    def create(self, ctx: RunnerContext) -> ShellRunner:
        if not ctx.settings.enable_shell:
            raise RunnerUnavailable(
                "the shell runner is off (it runs arbitrary scripts); "
                "set DM_JOBD_ENABLE_SHELL=1 to turn it on"
            )
        return ShellRunner(ctx.state_dir, ctx.env)


PLUGIN = _Plugin()
