"""A private Docker engine for tests and benchmarks: its own socket, data root and exec root.

Debian's ``docker.io`` started as root with no iptables and no bridge (containers get loopback only), so
it touches nothing of the machine's own engine. No registry is reachable here, so :meth:`import_busybox`
builds the test image from Debian's ``busybox-static``. ``overlay2`` is tried first; a kernel or
filesystem that refuses it gets ``vfs`` (slower, works everywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from pathlib import Path

import httpx

__all__ = ["BUSYBOX", "DockerdError", "LocalDockerd", "missing"]

BUSYBOX = "localhost/busybox:local"
_BUSYBOX_BIN = Path("/bin/busybox")
_READY_SECONDS = 20.0
_STOP_SECONDS = 20.0


class DockerdError(RuntimeError):
    """The private engine could not be started."""


def missing() -> str | None:
    """Why a private engine cannot run here (a reason), or None when it can."""
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (Debian package docker.io; scripts/setup installs it)"
    if not _BUSYBOX_BIN.exists():
        return "/bin/busybox is missing (Debian package busybox-static; scripts/setup installs it)"
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    return None


def _busybox_rootfs_tar() -> bytes:
    """A root filesystem of busybox and its applet links, /etc/passwd, /etc/group and /tmp, as a tar."""
    applets = subprocess.run(
        [str(_BUSYBOX_BIN), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, data: bytes = b"", *, mode: int = 0o644, kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size = kind, mode, len(data)
            tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

        for folder in ("bin", "etc", "root"):
            add(folder, mode=0o755, kind=tarfile.DIRTYPE)
        add("tmp", mode=0o1777, kind=tarfile.DIRTYPE)
        add("bin/busybox", _BUSYBOX_BIN.read_bytes(), mode=0o755)
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        add("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buf.getvalue()


class LocalDockerd:
    """One dockerd under ``base``; ``url`` is what ``DM_JOBD_DOCKER_HOST`` should say.

    Its socket and exec root live in a short folder of their own under /tmp: containerd's sockets sit
    in the exec root, and a unix socket path must stay under 108 bytes, which pytest's folders exceed.
    The folder keeps its name across ``stop()`` and ``start()``, so ``url`` stays valid.
    """

    def __init__(self, base: Path) -> None:
        self.base = base.absolute()
        self.run_dir = Path(tempfile.mkdtemp(prefix="dmjd-"))
        self.socket = self.run_dir / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.storage_driver: str | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._log = self.base / "dockerd.log"

    def _http(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(transport=transport, base_url="http://docker", timeout=10)

    async def _ping(self) -> bool:
        try:
            async with self._http() as http:
                return (await http.get("/_ping")).status_code == 200
        except httpx.HTTPError:
            return False

    async def start(self) -> None:
        """Start the engine, overlay2 first, then vfs; ready when ``/_ping`` answers."""
        reason = missing()
        if reason is not None:
            raise DockerdError(reason)
        errors = []
        for driver in ("overlay2", "vfs"):
            try:
                await self._start(driver)
                self.storage_driver = driver
                return
            except DockerdError as exc:
                errors.append(f"{driver}: {exc}")
                await self.stop()
        raise DockerdError("; ".join(errors))

    async def _start(self, driver: str) -> None:
        (self.base / "data").mkdir(parents=True, exist_ok=True)
        (self.run_dir / "exec").mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        with self._log.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                "dockerd",
                f"--host={self.url}",
                f"--data-root={self.base / 'data'}",
                f"--exec-root={self.run_dir / 'exec'}",
                f"--pidfile={self.run_dir / 'dockerd.pid'}",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                f"--storage-driver={driver}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _READY_SECONDS
        while not await self._ping():
            if self._proc.returncode is not None:
                raise DockerdError(f"dockerd exited with {self._proc.returncode}: {self.log_tail()}")
            if loop.time() > deadline:
                raise DockerdError(f"dockerd did not answer within {_READY_SECONDS} s: {self.log_tail()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 0.05)

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def import_busybox(self, ref: str = BUSYBOX) -> str:
        """Import the busybox root filesystem as image ``ref`` (the engine's ``/images/create`` import)."""
        data = await asyncio.to_thread(_busybox_rootfs_tar)
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("fromSrc", "-"),
            ("repo", ref.rpartition(":")[0]),
            ("tag", ref.rpartition(":")[2]),
            ("changes", 'CMD ["/bin/sh"]'),
            ("changes", "ENV PATH=/bin"),
        ]
        async with self._http() as http:
            response = await http.post(
                "/images/create", params=params, content=data, headers={"Content-Type": "application/x-tar"}
            )
            response.raise_for_status()
            if '"error"' in response.text:
                raise DockerdError(f"importing {ref} failed: {response.text[-500:]}")
        return ref

    async def stop(self) -> None:
        """SIGTERM the engine (it stops its containers), wait, then unmount what it may leave mounted."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), _STOP_SECONDS)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        await asyncio.to_thread(self._unmount)

    def _unmount(self) -> None:
        """Unmount what dockerd may leave mounted (``<exec-root>/netns/default``), then remove the folder."""
        prefixes = (str(self.base) + "/", str(self.run_dir) + "/")
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefixes)]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
