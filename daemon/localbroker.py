"""A private RabbitMQ node for development and tests, run from Debian's ``rabbitmq-server`` package.

Why it exists: a developer's ``scripts/run`` and the test session need a real broker without systemd,
without touching the system node, and without a fixed port. Everything the node needs (Erlang cookie,
mnesia data, logs, config, pid file, a private epmd) lives under one base directory, so several nodes can
run side by side and a later process can find (adopt) or restart the same node with its data intact.

Layout of ``base_dir``::

    broker.json      node name and ports, reused by every later LocalBroker on this folder
    home/            HOME of server and CLI (the Erlang cookie)
    mnesia/ log/     RabbitMQ data and logs
    rabbitmq.conf advanced.config enabled_plugins
    rabbitmq.pid     written by the node itself
    server.log       the node's stdout and stderr
    url              the AMQP URL, present while the node runs (read by other processes)
    lock             serialises start/stop across processes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["LocalBroker", "LocalBrokerError", "ensure_installed"]

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
_SERVER = RABBITMQ_BIN / "rabbitmq-server"
_DIAGNOSTICS = RABBITMQ_BIN / "rabbitmq-diagnostics"
_EPMD = "epmd"
_INSTALL_HINT = (
    "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server"
    " (or run scripts/setup)"
)
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_CTL_RANGE = 10  # ports for concurrent CLI invocations (each CLI call is a hidden Erlang node)
# Ports RabbitMQ/Erlang use by default: never hand them out, a system node may want them later.
_RESERVED = frozenset({4369, 5671, 5672, 15672, 15692, 25672, 35672})
_POLL = 0.1
_STOP_TIMEOUT = 30.0
_CLI_TIMEOUT = 30.0


class LocalBrokerError(RuntimeError):
    """The private node could not be started or stopped; the message points at its logs."""


def ensure_installed() -> None:
    """Fail early with the install command, instead of a FileNotFoundError deep in a subprocess."""
    if not _SERVER.exists():
        raise RuntimeError(f"RabbitMQ is not installed ({_SERVER} is missing): run {_INSTALL_HINT}")


@dataclass
class _State:
    """What must stay the same across restarts of one node: its name (mnesia data) and its ports."""

    name: str
    amqp: int
    dist: int
    epmd: int
    ctl_dist_min: int
    ctl_dist_max: int
    management: int | None = None


def _port_range() -> tuple[int, int]:
    """Ports below the kernel's ephemeral range, so an outgoing connection never grabs a saved port."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low <= 12000:  # unusual kernel setting: fall back to the high end of the space
        return 61000, 65535 - _CTL_RANGE
    return max(10000, low - 16384), low - _CTL_RANGE


def _port_free(port: int) -> bool:
    """Bindable on loopback; SO_REUSEADDR like Erlang's listeners, so TIME_WAIT leftovers don't count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_ports(count: int, taken: set[int], *, consecutive: bool = False) -> list[int]:
    """Random free ports (``count`` consecutive ones when asked) outside ``taken``."""
    low, high = _port_range()
    for _ in range(2000):
        if consecutive:
            start = low + secrets.randbelow(high - low)
            ports = list(range(start, start + count))
        else:
            ports = [low + secrets.randbelow(high - low) for _ in range(count)]
        if len(set(ports)) != count or any(p in taken or p in _RESERVED for p in ports):
            continue
        if all(_port_free(p) for p in ports):
            return ports
    raise LocalBrokerError(f"no free loopback ports found in {low}-{high}")


def _proc_alive(pid: int) -> bool:
    """True for a live process; a zombie counts as dead (our init may be slow to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat[stat.rfind(")") + 2 : stat.rfind(")") + 3] not in ("Z", "X", "")


def _tail(path: Path, lines: int = 25) -> str:
    """The end of a log for an error message; logs of a long-lived node can be large."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16384))
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class LocalBroker:
    """A private RabbitMQ node on 127.0.0.1, its state kept in ``base_dir``.

    The node runs in its own session and is not a child of this process, so it survives this process
    when left running (``python -m daemon.localbroker start``) and is adopted by the next ``start()``.
    """

    def __init__(
        self, base_dir: Path, *, name: str = "dmjobd", port: int | None = None, management: bool = False
    ) -> None:
        if not _NAME_RE.match(name):
            raise ValueError(f"broker name must match {_NAME_RE.pattern}: {name!r}")
        self._base = Path(base_dir).absolute()
        self._base.mkdir(parents=True, exist_ok=True)
        self._management = management
        self._explicit_port = port
        self._name = name
        self._lock = asyncio.Lock()
        self._state = self._resolve_state()

    # ------------------------------------------------------------------ public surface

    @property
    def base_dir(self) -> Path:
        return self._base

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self._state.amqp}/"

    @property
    def management_url(self) -> str | None:
        if not self._management or self._state.management is None:
            return None
        return f"http://127.0.0.1:{self._state.management}/"

    async def is_running(self) -> bool:
        """A node from this folder is alive and accepting AMQP connections."""
        return self._running_pid() is not None and await self._port_open(self._state.amqp)

    async def start(self, timeout: float = 60) -> None:
        """Start the node, or adopt the one already running from this folder; idempotent."""
        await self._start(time.monotonic() + timeout, keep_ports=False)

    async def stop(self) -> None:
        """Stop the node running from this folder (whoever started it), then its private epmd."""
        async with self._lock, self._file_lock(time.monotonic() + _STOP_TIMEOUT):
            await self._stop_locked()

    async def restart(self) -> None:
        """Stop and start again on the same ports and data, so clients can reconnect to the same URL."""
        await self.stop()
        await self._start(time.monotonic() + 60, keep_ports=True)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ state and files

    @property
    def _state_path(self) -> Path:
        return self._base / "broker.json"

    @property
    def _pid_path(self) -> Path:
        return self._base / "rabbitmq.pid"

    @property
    def _server_log(self) -> Path:
        return self._base / "server.log"

    @property
    def _url_path(self) -> Path:
        return self._base / "url"

    def _read_state(self) -> _State | None:
        try:
            state = _State(**json.loads(self._state_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        ports = [state.amqp, state.dist, state.epmd, state.ctl_dist_min, state.ctl_dist_max]
        if not isinstance(state.name, str) or not all(isinstance(p, int) for p in ports):
            return None
        return state

    def _resolve_state(self) -> _State:
        """Reuse the saved name and ports so the mnesia data (keyed by node name) stays valid.

        A fresh folder's state file is created exclusively, so two processes starting on the same
        new folder agree on one set of ports.
        """
        for _ in range(5):
            state = self._read_state()
            if state is None:
                state = self._fresh_state()
                if self._write_state(state, exclusive=True):
                    return state
                continue
            if state.name != self._name:
                raise ValueError(
                    f"{self._base} holds the broker {state.name!r}, not {self._name!r}: use another folder"
                )
            changed = False
            if self._explicit_port is not None and state.amqp != self._explicit_port:
                state.amqp, changed = self._explicit_port, True
            if self._management and state.management is None:
                state.management, changed = _pick_ports(1, self._ports(state))[0], True
            if changed:
                self._write_state(state)
            return state
        raise LocalBrokerError(f"cannot read or create {self._state_path}")

    def _fresh_state(self) -> _State:
        taken = {self._explicit_port} if self._explicit_port is not None else set()
        amqp, dist, epmd = _pick_ports(3, taken)
        if self._explicit_port is not None:
            amqp = self._explicit_port
        taken |= {amqp, dist, epmd}
        ctl = _pick_ports(_CTL_RANGE, taken, consecutive=True)
        state = _State(self._name, amqp, dist, epmd, ctl[0], ctl[-1])
        if self._management:
            state.management = _pick_ports(1, self._ports(state))[0]
        return state

    @staticmethod
    def _ports(state: _State) -> set[int]:
        ports = {state.amqp, state.dist, state.epmd, *range(state.ctl_dist_min, state.ctl_dist_max + 1)}
        if state.management is not None:
            ports.add(state.management)
        return ports

    def _write_state(self, state: _State, *, exclusive: bool = False) -> bool:
        """Atomic write; ``exclusive`` returns False instead when the file appeared meanwhile."""
        tmp = self._base / f".broker.json.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
        try:
            if exclusive:
                try:
                    os.link(tmp, self._state_path)
                except FileExistsError:
                    return False
            else:
                tmp.replace(self._state_path)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def _repick_busy_ports(self, keep_ports: bool) -> None:
        """Move off ports something else took while the node was down (the saved ones are preferred)."""
        s = self._state
        candidates = {"amqp": s.amqp, "dist": s.dist}
        if self._management and s.management is not None:
            candidates["management"] = s.management
        busy = [field for field, port in candidates.items() if not _port_free(port)]
        ctl_busy = not all(_port_free(p) for p in range(s.ctl_dist_min, s.ctl_dist_max + 1))
        if not busy and not ctl_busy:
            return
        if keep_ports or (self._explicit_port is not None and "amqp" in busy):
            what = ", ".join(busy + (["ctl dist range"] if ctl_busy else []))
            raise LocalBrokerError(f"ports of broker {s.name!r} in {self._base} are taken ({what})")
        taken = self._ports(s)
        for field in busy:
            setattr(s, field, _pick_ports(1, taken)[0])
            taken.add(getattr(s, field))
        if ctl_busy:
            ctl = _pick_ports(_CTL_RANGE, taken, consecutive=True)
            s.ctl_dist_min, s.ctl_dist_max = ctl[0], ctl[-1]
        self._write_state(s)

    def _write_config(self) -> None:
        """Rewritten on every start so a change of options (management) takes effect."""
        home = self._base / "home"
        home.mkdir(exist_ok=True, mode=0o700)
        for sub in ("mnesia", "log"):
            (self._base / sub).mkdir(exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            # Written before the first start: if the server and a CLI call both created one, they'd differ.
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as fh:
                fh.write("".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(32)))
        conf = [
            "# Written by daemon.localbroker on every start; edits are lost.",
            "log.console = false",
            "log.file.level = info",
            # A developer's node may run for weeks: keep its log bounded.
            "log.file.rotation.size = 10485760",
            "log.file.rotation.count = 3",
        ]
        plugins = "[]."
        if self._management and self._state.management is not None:
            conf += [f"management.tcp.port = {self._state.management}", "management.tcp.ip = 127.0.0.1"]
            # What `rabbitmq-plugins enable --offline rabbitmq_management` writes, without a 1 s CLI boot.
            plugins = "[rabbitmq_management]."
        (self._base / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (self._base / "advanced.config").write_text("[].\n")
        (self._base / "enabled_plugins").write_text(plugins + "\n")

    def _enabled_plugins(self) -> str:
        try:
            return (self._base / "enabled_plugins").read_text()
        except OSError:
            return ""

    def _env(self) -> dict[str, str]:
        """The environment of server and CLI alike: they must agree on HOME (cookie), name and epmd."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k not in ("NOTIFY_SOCKET", "CONF_ENV_FILE")
        }
        s, b = self._state, self._base
        loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
        env.update(
            HOME=str(b / "home"),
            LANG="C.UTF-8",
            LC_ALL="C.UTF-8",
            RABBITMQ_NODENAME=f"{s.name}@localhost",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(s.amqp),
            RABBITMQ_DIST_PORT=str(s.dist),
            RABBITMQ_CTL_DIST_PORT_MIN=str(s.ctl_dist_min),
            RABBITMQ_CTL_DIST_PORT_MAX=str(s.ctl_dist_max),
            RABBITMQ_MNESIA_BASE=str(b / "mnesia"),
            RABBITMQ_LOG_BASE=str(b / "log"),
            RABBITMQ_CONFIG_FILE=str(b / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(b / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(b / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self._pid_path),
            RABBITMQ_CONF_ENV_FILE=str(b / "rabbitmq-env.conf.absent"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=loopback,
            RABBITMQ_CTL_ERL_ARGS=loopback,
            ERL_EPMD_PORT=str(s.epmd),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_CRASH_DUMP=str(b / "erl_crash.dump"),
        )
        return env

    # ------------------------------------------------------------------ processes

    def _is_ours(self, pid: int) -> bool:
        """A pid file can outlive a reboot: only a live process started with our mnesia dir is ours."""
        if pid <= 0 or not _proc_alive(pid):
            return False
        marker = f"RABBITMQ_MNESIA_BASE={self._base / 'mnesia'}".encode()
        try:
            return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except PermissionError:
            with contextlib.suppress(OSError):
                return Path(f"/proc/{pid}/comm").read_text().strip() == "beam.smp"
            return False
        except OSError:
            return False

    def _running_pid(self) -> int | None:
        try:
            pid = int(self._pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    @staticmethod
    async def _port_open(port: int) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _run(self, *argv: str, limit: float = _CLI_TIMEOUT) -> tuple[int, str]:
        """Run a RabbitMQ/Erlang CLI tool with the node's environment; never raises on failure."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env(),
            cwd=self._base,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), limit)
        except TimeoutError:
            await self._reap(proc)
            return -1, f"{argv[0]} timed out after {limit} s"
        except BaseException:
            await self._reap(proc)
            raise
        return proc.returncode or 0, out.decode(errors="replace")

    @staticmethod
    async def _reap(proc: asyncio.subprocess.Process) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()

    async def _spawn(self) -> int:
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
            str(self._server_log),
            str(_SERVER),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env(),
            cwd=self._base,
            start_new_session=True,
        )
        out, _ = await proc.communicate()
        try:
            return int(out.decode().strip())
        except ValueError:
            raise LocalBrokerError(f"could not launch {_SERVER}: {out.decode(errors='replace')}") from None

    async def _wait_exit(self, pid: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while _proc_alive(pid):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def _terminate(self, pid: int) -> None:
        """SIGTERM is RabbitMQ's clean shutdown (~1 s); SIGKILL only if it hangs."""
        for sig, wait in ((signal.SIGTERM, _STOP_TIMEOUT), (signal.SIGKILL, 10.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if await self._wait_exit(pid, wait):
                return
        raise LocalBrokerError(f"broker pid {pid} did not exit after SIGKILL")

    async def _kill_epmd(self) -> None:
        """epmd outlives the node; ours is private to this folder, so killing it harms no one."""
        with contextlib.suppress(FileNotFoundError):  # no Erlang installed: no epmd either
            await self._run(_EPMD, "-kill", limit=10)

    # ------------------------------------------------------------------ start/stop

    @contextlib.asynccontextmanager
    async def _file_lock(self, deadline: float) -> AsyncIterator[None]:
        """Serialise start/stop between processes (the daemon and the CLI may race on one folder)."""
        fd = os.open(self._base / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                        raise LocalBrokerError(f"{self._base}/lock is held by another process") from exc
                await asyncio.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    async def _start(self, deadline: float, *, keep_ports: bool) -> None:
        ensure_installed()
        async with self._lock, self._file_lock(deadline):
            self._state = self._resolve_state()  # another process may have moved ports meanwhile
            pid = self._running_pid()
            if pid is not None:
                # Running, or still booting because another process started it: adopt it.
                if self._management and "rabbitmq_management" not in self._enabled_plugins():
                    raise LocalBrokerError(
                        f"the broker running from {self._base} has no management plugin: stop it first"
                    )
                if not await self._port_open(self._state.amqp):
                    await self._wait_ready(pid, deadline)
                self._url_path.write_text(self.url + "\n")
                return
            self._repick_busy_ports(keep_ports)
            self._write_config()
            self._pid_path.unlink(missing_ok=True)
            self._url_path.unlink(missing_ok=True)
            wrapper = await self._spawn()
            try:
                await self._wait_ready(wrapper, deadline)
            except BaseException:
                # Timed out, failed or cancelled: leave no half-started node behind.
                await self._kill_node(wrapper)
                raise
            self._url_path.write_text(self.url + "\n")

    async def _kill_node(self, wrapper: int | None) -> None:
        """Stop the Erlang VM (pid file) first: the rabbitmq-server wrapper only forwards signals."""
        pid = self._running_pid()
        if pid is not None:
            await self._terminate(pid)
        if wrapper is not None and _proc_alive(wrapper):
            await self._terminate(wrapper)
        await self._kill_epmd()
        self._pid_path.unlink(missing_ok=True)
        self._url_path.unlink(missing_ok=True)

    async def _wait_ready(self, pid: int, deadline: float) -> None:
        """Poll until the AMQP port opens, then confirm every listener with rabbitmq-diagnostics."""
        while True:
            if not _proc_alive(pid):
                raise LocalBrokerError(self._failure(f"broker {self._state.name!r} exited while starting"))
            if await self._port_open(self._state.amqp):
                remaining = max(1.0, deadline - time.monotonic())
                code, _ = await self._run(
                    str(_DIAGNOSTICS), "-q", "check_port_connectivity", limit=min(remaining, _CLI_TIMEOUT)
                )
                if code == 0:
                    return
            if time.monotonic() >= deadline:
                raise LocalBrokerError(self._failure(f"broker {self._state.name!r} not ready in time"))
            await asyncio.sleep(_POLL)

    def _failure(self, what: str) -> str:
        node_log = self._base / "log" / f"{self._state.name}@localhost.log"
        return (
            f"{what} (port {self._state.amqp}, folder {self._base}).\n"
            f"--- {self._server_log}\n{_tail(self._server_log)}\n--- {node_log}\n{_tail(node_log)}"
        )

    async def _stop_locked(self) -> None:
        self._state = self._resolve_state()
        self._url_path.unlink(missing_ok=True)  # readers must not pick up a dying node's URL
        await self._kill_node(None)


# ---------------------------------------------------------------------- command line


def _saved_name(base: Path) -> str | None:
    """Scripts shouldn't have to repeat --name for stop/url: the folder knows its node."""
    try:
        name = json.loads((base / "broker.json").read_text())["name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


async def _cli(args: argparse.Namespace) -> int:
    name = args.name or _saved_name(Path(args.dir)) or "dmjobd"
    broker = LocalBroker(Path(args.dir), name=name, port=args.port, management=args.management)
    if args.command == "start":
        await broker.start(timeout=args.timeout)
        print(broker.url)
        if broker.management_url:
            print(f"management: {broker.management_url}", file=sys.stderr)
        return 0
    if args.command == "stop":
        await broker.stop()
        return 0
    if not await broker.is_running():
        print(f"no broker running from {args.dir}", file=sys.stderr)
        return 1
    print(broker.url)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for shell scripts: the node started here keeps running after the command returns."""
    parser = argparse.ArgumentParser(prog="python -m daemon.localbroker", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "url"])
    parser.add_argument("--dir", required=True, help="the broker's base folder")
    parser.add_argument("--name", default=None, help="node name (default: the saved one, else dmjobd)")
    parser.add_argument("--port", type=int, default=None, help="AMQP port (default: saved, or a free one)")
    parser.add_argument("--management", action="store_true", help="enable the management UI on loopback")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for start")
    args = parser.parse_args(argv)
    if args.command != "start" and not Path(args.dir, "broker.json").exists():
        # Nothing was ever started there: don't create a folder just to say so.
        if args.command == "url":
            print(f"no broker running from {args.dir}", file=sys.stderr)
            return 1
        return 0
    try:
        return asyncio.run(_cli(args))
    except (LocalBrokerError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
