"""A private PostgreSQL server for the test session: Debian's binaries, ``initdb`` in a temporary folder,
listening on its own Unix socket and port only. Started as the ``postgres`` user when the tests run as
root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import psycopg

__all__ = ["PrivatePostgres", "pg_bin"]


def pg_bin() -> Path:
    """Debian's PostgreSQL binaries (the newest version installed)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed: scripts/setup installs Debian's postgresql package")
    return versions[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """``base`` defaults to a new folder under the system's temporary folder: the server's user must be
    able to reach it, which pytest's per-user temporary folders (mode 700) do not allow."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = base or Path(tempfile.mkdtemp(prefix="dm-jobd-postgres-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]

    async def _run(self, *args: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._as, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {out.decode(errors='replace')}")

    async def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as:
            user = pwd.getpwnam("postgres")
            for path in (self.base, self.socket_dir):
                os.chown(path, user.pw_uid, user.pw_gid)
        await self._run(str(pg_bin() / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")
        await self.resume()

    async def resume(self) -> None:
        """Start the server on its data folder (again, after :meth:`halt`: it recovers from its WAL)."""
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses='' -c fsync=on"
            " -c max_connections=200 -c shared_buffers=64MB"
        )
        log = self.base / "server.log"
        await self._run(
            str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start"
        )

    async def halt(self) -> None:
        """Stop the server as a crash would (``immediate``: no checkpoint, every connection cut)."""
        await self._run(str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    async def stop(self) -> None:
        if self.data.exists():
            await self._run(str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    async def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        async with await psycopg.AsyncConnection.connect(self.url(), autocommit=True) as conn:
            await conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
