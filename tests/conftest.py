"""Shared fixtures. Sections: the real RabbitMQ broker first; others follow below it."""

from __future__ import annotations

import io
import logging
import os
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import structlog

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.localbroker import LocalBroker, ensure_installed
from daemon.logs import configure as configure_logging

# ---------------------------------------------------------------------------------------------------
# RabbitMQ: one real, private broker for the whole session (startup takes ~5 s, so it is shared).
# A test that needs a real part fails in CI when the part is missing; on a laptop it is skipped.
# ---------------------------------------------------------------------------------------------------


def require_rabbitmq() -> None:
    """Skip (laptop) or fail (CI) when the rabbitmq-server package is missing."""
    try:
        ensure_installed()
    except RuntimeError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def broker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalBroker]:
    """A started private RabbitMQ node on loopback, stopped when the session ends."""
    require_rabbitmq()
    node = LocalBroker(tmp_path_factory.mktemp("broker"), management=True)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


@pytest.fixture(scope="session")
def amqp_url(broker: LocalBroker) -> str:
    """The session broker's URL (guest on 127.0.0.1, a free port)."""
    return broker.url


# -- the daemon under test ---------------------------------------------------------------------------
# Each test gets its own virtual host on the session's broker, so queues, exchanges and leftovers of
# one test never reach another, and its own state folder (store, runner files).


@pytest.fixture
async def vhost_url(broker: LocalBroker) -> AsyncIterator[str]:
    """A fresh virtual host on the session broker, made through the management API."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    assert broker.management_url is not None
    async with httpx.AsyncClient(base_url=broker.management_url, auth=("guest", "guest")) as http:
        (await http.put(f"api/vhosts/{name}")).raise_for_status()
        permissions = {"configure": ".*", "write": ".*", "read": ".*"}
        (await http.put(f"api/permissions/{name}/guest", json=permissions)).raise_for_status()
        yield broker.url.rstrip("/") + "/" + name
        await http.delete(f"api/vhosts/{name}")


@pytest.fixture(scope="session", autouse=True)
def no_stray_jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Jobs outlive the daemon by design; a test that fails half-way must not leave its scripts behind."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if os.readlink(proc / "cwd").startswith(base):
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The daemon's real logging set-up (JSON lines), written into a buffer: tests look for secrets in it."""
    buffer = io.StringIO()
    root = logging.getLogger()
    saved = (root.level, root.handlers[:])
    configure_logging(fmt="json", level="debug")
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=buffer), cache_logger_on_first_use=False
    )
    root.handlers[0].setStream(buffer)  # type: ignore[attr-defined]
    root.setLevel(logging.WARNING)  # the libraries' warnings and errors, not their debug chatter
    yield buffer
    structlog.reset_defaults()
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=tmp_path / "state", enable_shell=True, poll_min_seconds=0.02, poll_max_seconds=0.5
    )


@pytest.fixture
async def jobd(settings: Settings, vhost_url: str) -> AsyncIterator[Daemon]:
    async with Daemon(settings, vhost_url) as daemon:
        yield daemon


@pytest.fixture
async def client(jobd: Daemon, vhost_url: str) -> AsyncIterator[JobdClient]:
    async with await JobdClient.connect(vhost_url, timeout=20) as c:
        yield c


# ---------------------------------------------------------------------------------------------------
# Docker: one private engine for the session (the local container runner's tests), with a busybox image
# imported from Debian's busybox-static (no registry is reachable). Fails in CI when the engine cannot
# start; skipped elsewhere. Tests reach it through DM_JOBD_DOCKER_HOST in the daemon's environment.
# ---------------------------------------------------------------------------------------------------

import aiodocker  # noqa: E402 (this section's own imports)
from dockerd import DockerdError, LocalDockerd  # noqa: E402
from dockerd import missing as dockerd_missing  # noqa: E402


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalDockerd]:
    """A started private dockerd with ``localhost/busybox:local`` imported, stopped at session end."""
    reason = dockerd_missing()
    engine = LocalDockerd(tmp_path_factory.mktemp("dockerd"))
    if reason is None:
        try:
            await engine.start()
            await engine.import_busybox()
        except (DockerdError, httpx.HTTPError) as exc:
            await engine.stop()
            reason = f"the private Docker engine did not start: {exc}"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield engine
    finally:
        await engine.stop()


@pytest.fixture
def docker_environ(docker_engine: LocalDockerd) -> dict[str, str]:
    """The daemon's environment with the private engine as its Docker host."""
    return {**os.environ, "DM_JOBD_DOCKER_HOST": docker_engine.url}


@pytest.fixture
async def container_jobd(
    settings: Settings, vhost_url: str, docker_environ: dict[str, str]
) -> AsyncIterator[Daemon]:
    async with Daemon(settings, vhost_url, environ=docker_environ) as daemon:
        yield daemon


@pytest.fixture
async def container_client(container_jobd: Daemon, vhost_url: str) -> AsyncIterator[JobdClient]:
    async with await JobdClient.connect(vhost_url, timeout=30) as c:
        yield c


@pytest.fixture
async def docker(docker_engine: LocalDockerd) -> AsyncIterator[aiodocker.Docker]:
    """A plain engine client for a test's own look at containers (not the runner's)."""
    client = aiodocker.Docker(url=docker_engine.url)
    try:
        yield client
    finally:
        await client.close()


# ---------------------------------------------------------------------------------------------------
# DMSS: a fake DMSS on a real local port (tests/fake_dmss.py), reached through ordinary configuration
# (the DMSS URL), and a daemon configured to use it.
# ---------------------------------------------------------------------------------------------------

from fake_dmss import FakeDmss  # noqa: E402 (this section's own imports)

DMSS_TOKEN = "dmss-tok-3e1f9a7c-secret"


@pytest.fixture
async def fake_dmss() -> AsyncIterator[FakeDmss]:
    """A fresh fake DMSS accepting the token ``DMSS_TOKEN``."""
    dmss = FakeDmss(tokens={DMSS_TOKEN})
    await dmss.start()
    try:
        yield dmss
    finally:
        await dmss.stop()


@pytest.fixture
def dmss_settings(settings: Settings, fake_dmss: FakeDmss) -> Settings:
    """The test settings with the fake DMSS's URL and short write-back retries."""
    return settings.model_copy(update={"dmss_url": fake_dmss.url, "dmss_retry_max_seconds": 0.3})


@pytest.fixture
async def dmss_jobd(dmss_settings: Settings, vhost_url: str) -> AsyncIterator[Daemon]:
    async with Daemon(dmss_settings, vhost_url) as daemon:
        yield daemon


@pytest.fixture
async def dmss_client(dmss_jobd: Daemon, vhost_url: str) -> AsyncIterator[JobdClient]:
    async with await JobdClient.connect(vhost_url, timeout=20) as c:
        yield c


# ---------------------------------------------------------------------------------------------------
# The core on the in-memory bus, with a clock moved by hand: no broker, no waiting (test_core*.py).
# ---------------------------------------------------------------------------------------------------

from core_kit import Boom, Gate  # noqa: E402 (this section's own imports)

from daemon.bus.memory import MemoryBus  # noqa: E402
from daemon.clock import ManualClock  # noqa: E402
from plugins.noop import PLUGIN as NOOP_PLUGIN  # noqa: E402
from plugins.reverse_description import PLUGIN as REVERSE_PLUGIN  # noqa: E402


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def bus(clock: ManualClock) -> AsyncIterator[MemoryBus]:
    memory = MemoryBus(clock=clock)
    yield memory
    await memory.shutdown()


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
def make_daemon(settings: Settings, bus: MemoryBus, clock: ManualClock, gate: Gate) -> Callable[..., Daemon]:
    """Daemons on the in-memory bus and the hand-moved clock; ``changes`` override settings.

    Retention is off unless a test turns it on: a clock moved on by years would wake its hourly
    sweep tens of thousands of times (test_retention covers it, with the real parts).
    """

    def make(**changes: Any) -> Daemon:
        return Daemon(
            settings.model_copy(update={"retention_days": 0, **changes}),
            bus=bus,
            clock=clock,
            plugins={"noop": NOOP_PLUGIN, "reverse": REVERSE_PLUGIN, "gate": gate, "boom": Boom()},
        )

    return make


@pytest.fixture
async def core(make_daemon: Callable[..., Daemon]) -> AsyncIterator[Daemon]:
    async with make_daemon() as daemon:
        yield daemon


# -- PostgreSQL: a private server for the session (tests/pg.py), a fresh database per test ----------------

from pg import PrivatePostgres  # noqa: E402 (this section's own imports)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def postgres_server() -> AsyncIterator[PrivatePostgres]:
    server = PrivatePostgres()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def postgres_url(postgres_server: PrivatePostgres) -> str:
    """An empty database of its own on the session's PostgreSQL."""
    return await postgres_server.new_database()


# -- a three-node RabbitMQ cluster on loopback (tests/rabbit_cluster.py), for failover with real faults --

from rabbit_cluster import RabbitCluster  # noqa: E402 (this section's own imports)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RabbitCluster]:
    """Nodes rc1..rc3, joined, for the module that asks (about 13 s to start); stopped after it."""
    require_rabbitmq()
    cluster = RabbitCluster(tmp_path_factory.mktemp("cluster"))
    await cluster.start()
    print(f"cluster started: boot {cluster.timings['boot']:.1f} s, join {cluster.timings['join']:.1f} s")
    try:
        yield cluster
    finally:
        await cluster.stop()
