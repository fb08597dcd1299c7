"""A private three-node RabbitMQ cluster on loopback, for failover tests with real faults.

Each node is a :class:`~daemon.localbroker.LocalBroker` of its own folder (name ``rcN``, its own AMQP,
distribution and CLI ports, mnesia, logs, pid file); all share one epmd port and one ``HOME`` (the
Erlang cookie), which is what lets them see each other as one cluster on one host. Nodes 2 and 3 are
joined to node 1 with ``rabbitmqctl join_cluster``, the way an operator forms a cluster.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from daemon.localbroker import LocalBroker, LocalBrokerError
from daemon.localbroker.process import kill_epmd
from daemon.localbroker.state import pick_ports

__all__ = ["RabbitCluster"]


class RabbitCluster:
    """Nodes ``rc1@localhost``, ``rc2@localhost``... clustered; stopped together with their epmd."""

    def __init__(self, base: Path, *, size: int = 3) -> None:
        self.base = Path(base).absolute()
        self.home = self.base / "home"
        self.epmd_port = pick_ports(1, set())[0]
        self.nodes = [
            LocalBroker(self.base / f"rc{i}", name=f"rc{i}", epmd_port=self.epmd_port, home=self.home)
            for i in range(1, size + 1)
        ]
        #: Seconds the last :meth:`start` took: booting the nodes, then joining them.
        self.timings: dict[str, float] = {}

    # -- addresses ----------------------------------------------------------------------------------

    def urls(self, *, vhost: str = "", user: tuple[str, str] = ("guest", "guest")) -> list[str]:
        """Every node's AMQP URL (node 1 first), for ``vhost`` and ``user``."""
        login, password = user
        return [f"amqp://{login}:{password}@127.0.0.1:{node.port}/{vhost}" for node in self.nodes]

    def node(self, name: str) -> LocalBroker:
        """The node named ``name`` (``rc2@localhost`` or ``rc2``)."""
        short = name.split("@", 1)[0]
        for node in self.nodes:
            if node.node.split("@", 1)[0] == short:
                return node
        raise KeyError(name)

    def by_port(self, port: int) -> LocalBroker:
        """The node listening for AMQP on ``port``."""
        return next(node for node in self.nodes if node.port == port)

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Boot every node at once, then join nodes 2.. to node 1.

        Only ``join_cluster`` goes one node at a time (two joins at once race on node 1's schema);
        stopping and starting the joining nodes' applications are independent, so they run together.
        """
        began = time.monotonic()
        try:
            await asyncio.gather(*(node.start() for node in self.nodes))
            booted = time.monotonic()
            first, rest = self.nodes[0], self.nodes[1:]
            await asyncio.gather(*(node.ctl("stop_app") for node in rest))
            for node in rest:
                await node.ctl("join_cluster", first.node)
            await asyncio.gather(*(node.ctl("start_app") for node in rest))
            await self.wait_clustered()
        except BaseException:
            await self.stop()
            raise
        self.timings = {"boot": booted - began, "join": time.monotonic() - booted}

    async def revive(self) -> list[LocalBroker]:
        """Start again every node that is down (a killed one rejoins by itself: its data knows the
        cluster), and wait until all run together; the nodes it started."""
        down = [node for node in self.nodes if not await node.is_running()]
        await asyncio.gather(*(node.start() for node in down))
        if down:
            await self.wait_clustered()
        return down

    async def wait_clustered(self) -> None:
        """Until every node runs its application and node 1 lists them all as running nodes."""
        await asyncio.gather(*(node.diagnostics("-q", "check_running") for node in self.nodes))
        status = json.loads(await self.nodes[0].diagnostics("-q", "cluster_status", "--formatter", "json"))
        running, wanted = set(status.get("running_nodes", [])), {node.node for node in self.nodes}
        if running != wanted:
            raise LocalBrokerError(f"the cluster runs {sorted(running)}, not {sorted(wanted)}")

    async def kill(self, node: LocalBroker) -> None:
        """``kill -9`` one node; returns once its process is gone."""
        await node.kill()

    async def stop(self) -> None:
        """Stop every node (a killed one is already gone), then the epmd they shared."""
        await asyncio.gather(*(node.stop() for node in self.nodes), return_exceptions=True)
        env = {"ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1", "HOME": str(self.home)}
        await kill_epmd(env, self.base)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- what the cluster holds ---------------------------------------------------------------------

    async def running(self) -> list[LocalBroker]:
        """The nodes whose process is alive and accepting AMQP connections."""
        return [node for node in self.nodes if await node.is_running()]

    async def ctl(self, *args: str) -> str:
        """``rabbitmqctl`` on the first running node (users, virtual hosts and queues are cluster-wide)."""
        running = await self.running()
        if not running:
            raise LocalBrokerError("no node of the cluster runs")
        return await running[0].ctl(*args)

    async def add_vhost(self, name: str, *, user: str = "guest") -> None:
        """A virtual host with every permission for ``user``."""
        await self.ctl("add_vhost", name)
        await self.ctl("set_permissions", "-p", name, user, ".*", ".*", ".*")

    async def add_user(self, name: str, password: str) -> None:
        await self.ctl("add_user", name, password)

    async def _rows(self, what: str, vhost: str, *items: str) -> list[dict[str, Any]]:
        out = await self.ctl(what, "-q", "-p", vhost, *items, "--formatter", "json")
        rows: list[dict[str, Any]] = json.loads(out)
        return rows

    async def leader(self, queue: str, *, vhost: str = "/") -> LocalBroker:
        """The node holding the quorum leader of ``queue``."""
        for row in await self._rows("list_queues", vhost, "name", "leader"):
            if row.get("name") == queue and row.get("leader"):
                return self.node(str(row["leader"]))
        raise LookupError(f"no quorum queue {queue!r} with a leader in {vhost!r}")

    async def members(self, queue: str, *, vhost: str = "/") -> set[LocalBroker]:
        """The nodes holding a replica of quorum queue ``queue``."""
        for row in await self._rows("list_queues", vhost, "name", "members"):
            if row.get("name") == queue:
                return {self.node(str(member)) for member in row.get("members") or []}
        raise LookupError(f"no queue {queue!r} in {vhost!r}")

    async def connected_to(self, connection_name: str, *, vhost: str = "/") -> list[LocalBroker]:
        """The nodes that clients calling their connection ``connection_name`` are connected to."""
        rows = await self._rows("list_connections", vhost, "port", "client_properties")
        found = []
        for row in rows:
            properties = row.get("client_properties") or []
            # The JSON formatter writes the AMQP table as [name, type, value] triples.
            names = [p[2] for p in properties if isinstance(p, list) and p[:1] == ["connection_name"]]
            if connection_name in names:
                found.append(self.by_port(int(row["port"])))
        return found
