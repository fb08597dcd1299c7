"""The :class:`LocalBroker` itself: start (or adopt), stop and restart the node of one base folder."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from .node import PID_FILE, enabled_plugins, node_env, write_config
from .process import (
    CLI_TIMEOUT,
    STOP_TIMEOUT,
    file_lock,
    is_ours,
    kill_epmd,
    port_open,
    proc_alive,
    run_tool,
    spawn,
    tail,
    terminate,
)
from .rabbitmq import CTL, DIAGNOSTICS, QUEUES, LocalBrokerError, ensure_installed
from .state import StateFile

__all__ = ["LocalBroker"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_POLL = 0.1


class LocalBroker:
    """A private RabbitMQ node on 127.0.0.1, its state kept in ``base_dir``.

    The node runs in its own session and is not a child of this process, so it survives this process
    when left running (``python -m daemon.localbroker start``) and is adopted by the next ``start()``.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        name: str = "dmjobd",
        port: int | None = None,
        management: bool = False,
        epmd_port: int | None = None,
        home: Path | None = None,
    ) -> None:
        """``epmd_port`` and ``home`` are for the nodes of a cluster on one host, which share one epmd
        and one Erlang cookie (in ``home``); a node given ``epmd_port`` leaves that epmd running when it
        stops, since its peers still use it (whoever runs the cluster stops it last)."""
        if not _NAME_RE.match(name):
            raise ValueError(f"broker name must match {_NAME_RE.pattern}: {name!r}")
        self._base = Path(base_dir).absolute()
        self._base.mkdir(parents=True, exist_ok=True)
        self._management = management
        self._home = Path(home).absolute() if home is not None else None
        self._own_epmd = epmd_port is None
        self._lock = asyncio.Lock()
        self._state_file = StateFile(self._base, name, port=port, management=management, epmd=epmd_port)
        self._state = self._state_file.resolve()

    # ------------------------------------------------------------------ public surface

    @property
    def base_dir(self) -> Path:
        return self._base

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self._state.amqp}/"

    @property
    def node(self) -> str:
        """The Erlang node name (``name@localhost``): what ``join_cluster`` and queue leaders name."""
        return f"{self._state.name}@localhost"

    @property
    def port(self) -> int:
        """The AMQP port."""
        return self._state.amqp

    @property
    def management_url(self) -> str | None:
        if not self._management or self._state.management is None:
            return None
        return f"http://127.0.0.1:{self._state.management}/"

    async def is_running(self) -> bool:
        """A node from this folder is alive and accepting AMQP connections."""
        return self._running_pid() is not None and await port_open(self._state.amqp)

    async def start(self, timeout: float = 60) -> bool:
        """Start the node, or adopt the one already running from this folder; idempotent.

        True when this call launched the node, False when it adopted one: only a launcher should stop it.
        """
        return await self._start(time.monotonic() + timeout, keep_ports=False)

    async def stop(self) -> None:
        """Stop the node running from this folder (whoever started it), then its private epmd."""
        async with self._lock, file_lock(self._base / "lock", time.monotonic() + STOP_TIMEOUT):
            self._state = self._state_file.resolve()
            self._url_path.unlink(missing_ok=True)  # readers must not pick up a dying node's URL
            await self._kill_node(None)

    async def kill(self) -> None:
        """``kill -9`` the node: the crash a drill wants (no clean shutdown, no goodbye to its peers).

        Returns once the node is gone and its AMQP port closed, so a client's next connection attempt
        finds no node there. The port is the sign, not the process: the VM's main thread shows as a
        zombie while its other threads, which hold the sockets, are still exiting.
        """
        async with self._lock:
            pid = self._running_pid()
            self._url_path.unlink(missing_ok=True)
            if pid is None:
                return
            await terminate(pid, kill_at_once=True)
            deadline = time.monotonic() + STOP_TIMEOUT
            while await port_open(self._state.amqp):
                if time.monotonic() >= deadline:
                    raise LocalBrokerError(f"broker {self._state.name!r} still listens after SIGKILL")
                await asyncio.sleep(_POLL)

    async def restart(self) -> None:
        """Stop and start again on the same ports and data, so clients can reconnect to the same URL."""
        await self.stop()
        await self._start(time.monotonic() + 60, keep_ports=True)

    async def ctl(self, *args: str) -> str:
        """Run ``rabbitmqctl`` against this node (``close_all_connections``, ``list_queues``...); its output.

        The broker's own tool, for drills and tests that fault the broker the way an operator would.
        """
        return await self._tool(CTL, *args)

    async def diagnostics(self, *args: str) -> str:
        """Run ``rabbitmq-diagnostics`` against this node (``check_running``, ``cluster_status``...)."""
        return await self._tool(DIAGNOSTICS, *args)

    async def queues(self, *args: str) -> str:
        """Run ``rabbitmq-queues`` against this node (``quorum_status <queue>``...)."""
        return await self._tool(QUEUES, *args)

    async def _tool(self, program: Path, *args: str) -> str:
        code, out = await self._run(str(program), *args)
        if code != 0:
            raise LocalBrokerError(f"{program.name} {' '.join(args)} failed ({code}): {out.strip()[-500:]}")
        return out

    @property
    def pid(self) -> int | None:
        """The node's OS process id while it runs (a drill may ``kill -9`` it)."""
        return self._running_pid()

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

    # ------------------------------------------------------------------ files and processes

    @property
    def _pid_path(self) -> Path:
        return self._base / PID_FILE

    @property
    def _server_log(self) -> Path:
        return self._base / "server.log"

    @property
    def _url_path(self) -> Path:
        return self._base / "url"

    def _running_pid(self) -> int | None:
        try:
            pid = int(self._pid_path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if is_ours(pid, self._base) else None

    async def _run(self, *argv: str, limit: float = CLI_TIMEOUT) -> tuple[int, str]:
        """Run a RabbitMQ/Erlang CLI tool with the node's environment; never raises on failure."""
        return await run_tool(*argv, env=self._env(), cwd=self._base, limit=limit)

    def _env(self) -> dict[str, str]:
        return node_env(self._base, self._state, self._home)

    # ------------------------------------------------------------------ start/stop

    async def _start(self, deadline: float, *, keep_ports: bool) -> bool:
        ensure_installed()
        async with self._lock, file_lock(self._base / "lock", deadline):
            self._state = self._state_file.resolve()  # another process may have moved ports meanwhile
            pid = self._running_pid()
            if pid is not None:
                # Running, or still booting because another process started it: adopt it.
                if self._management and "rabbitmq_management" not in enabled_plugins(self._base):
                    raise LocalBrokerError(
                        f"the broker running from {self._base} has no management plugin: stop it first"
                    )
                if not await port_open(self._state.amqp):
                    await self._wait_ready(pid, deadline)
                self._url_path.write_text(self.url + "\n")
                return False
            self._state_file.repick_busy_ports(self._state, keep_ports=keep_ports)
            write_config(self._base, self._state, management=self._management, home=self._home)
            self._pid_path.unlink(missing_ok=True)
            self._url_path.unlink(missing_ok=True)
            wrapper = await spawn(self._server_log, self._env(), self._base)
            try:
                await self._wait_ready(wrapper, deadline)
            except BaseException:
                # Timed out, failed or cancelled: leave no half-started node behind.
                await self._kill_node(wrapper)
                raise
            self._url_path.write_text(self.url + "\n")
            return True

    async def _kill_node(self, wrapper: int | None) -> None:
        """Stop the Erlang VM (pid file) first: the rabbitmq-server wrapper only forwards signals."""
        pid = self._running_pid()
        if pid is not None:
            await terminate(pid)
        if wrapper is not None and proc_alive(wrapper):
            await terminate(wrapper)
        if self._own_epmd:
            await kill_epmd(self._env(), self._base)
        self._pid_path.unlink(missing_ok=True)
        self._url_path.unlink(missing_ok=True)

    async def _wait_ready(self, pid: int, deadline: float) -> None:
        """Poll until the AMQP port opens, then confirm every listener with rabbitmq-diagnostics."""
        while True:
            if not proc_alive(pid):
                raise LocalBrokerError(self._failure(f"broker {self._state.name!r} exited while starting"))
            if await port_open(self._state.amqp):
                remaining = max(1.0, deadline - time.monotonic())
                code, _ = await self._run(
                    str(DIAGNOSTICS), "-q", "check_port_connectivity", limit=min(remaining, CLI_TIMEOUT)
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
            f"--- {self._server_log}\n{tail(self._server_log)}\n--- {node_log}\n{tail(node_log)}"
        )
