"""Processes of a node: liveness, launching, stopping, running CLI tools, and the folder's lock file."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from .rabbitmq import EPMD, SERVER, LocalBrokerError

__all__ = [
    "CLI_TIMEOUT",
    "STOP_TIMEOUT",
    "file_lock",
    "is_ours",
    "kill_epmd",
    "port_open",
    "proc_alive",
    "run_tool",
    "spawn",
    "tail",
    "terminate",
]

STOP_TIMEOUT = 30.0
CLI_TIMEOUT = 30.0


def proc_alive(pid: int) -> bool:
    """True for a live process; a zombie counts as dead (our init may be slow to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X", "")


def is_ours(pid: int, base: Path) -> bool:
    """A pid file can outlive a reboot: only a live process started with our mnesia dir is ours."""
    if pid <= 0 or not proc_alive(pid):
        return False
    marker = f"RABBITMQ_MNESIA_BASE={base / 'mnesia'}".encode()
    try:
        return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except PermissionError:
        with contextlib.suppress(OSError):
            return Path(f"/proc/{pid}/comm").read_text().strip() == "beam.smp"
        return False
    except OSError:
        return False


def tail(path: Path, lines: int = 25) -> str:
    """The end of a log for an error message; logs of a long-lived node can be large."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def run_tool(
    *argv: str, env: Mapping[str, str], cwd: Path, limit: float = CLI_TIMEOUT
) -> tuple[int, str]:
    """Run a RabbitMQ/Erlang CLI tool with the node's environment; never raises on failure."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        await _reap(proc)
        return -1, f"{argv[0]} timed out after {limit} s"
    except BaseException:
        await _reap(proc)
        raise
    return proc.returncode or 0, out.decode(errors="replace")


async def _reap(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


async def spawn(log: Path, env: Mapping[str, str], cwd: Path) -> int:
    """Launch the server through a shell that backgrounds it and exits, so it is not our child.

    Not being our child means asyncio never kills it when an event loop closes, and the node
    keeps running after ``python -m daemon.localbroker start`` returns.
    """
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        script,
        "sh",
        str(log),
        str(SERVER),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    out, _ = await proc.communicate()
    try:
        return int(out.decode().strip())
    except ValueError:
        raise LocalBrokerError(f"could not launch {SERVER}: {out.decode(errors='replace')}") from None


async def _wait_exit(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while proc_alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def terminate(pid: int, *, kill_at_once: bool = False) -> None:
    """SIGTERM is RabbitMQ's clean shutdown (~1 s); SIGKILL only if it hangs, or at once when asked."""
    steps = (
        [(signal.SIGKILL, 10.0)] if kill_at_once else [(signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 10.0)]
    )
    for sig, wait in steps:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if await _wait_exit(pid, wait):
            return
    raise LocalBrokerError(f"broker pid {pid} did not exit after SIGKILL")


async def kill_epmd(env: Mapping[str, str], cwd: Path) -> None:
    """epmd outlives the node; ours is private to this folder, so killing it harms no one."""
    with contextlib.suppress(FileNotFoundError):  # no Erlang installed: no epmd either
        await run_tool(EPMD, "-kill", env=env, cwd=cwd, limit=10)


@contextlib.asynccontextmanager
async def file_lock(path: Path, deadline: float) -> AsyncIterator[None]:
    """Serialise start/stop between processes (the daemon and the CLI may race on one folder)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    raise LocalBrokerError(f"{path} is held by another process") from exc
            await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock
