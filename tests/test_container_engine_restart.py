"""The runner's event stream survives an engine restart: it reconnects, and exits are pushed again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dockerd import LocalDockerd
from helpers import ended, events_until
from test_container import container_job

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus


@pytest.fixture
async def own_engine(docker_engine: LocalDockerd, tmp_path: Path) -> AsyncIterator[LocalDockerd]:
    """An engine of this test's own, to restart (the session's engine serves the other tests)."""
    engine = LocalDockerd(tmp_path / "dockerd")
    try:
        await engine.start()
        await engine.import_busybox()
        yield engine
    finally:
        await engine.stop()


async def test_exits_are_pushed_again_after_the_engine_restarts(
    settings: Settings, vhost_url: str, own_engine: LocalDockerd
) -> None:
    """With polling slowed to once a minute, only a reconnected event stream can settle job two in time."""
    slow = settings.model_copy(update={"poll_min_seconds": 60.0, "poll_max_seconds": 60.0})
    environ = {"DM_JOBD_DOCKER_HOST": own_engine.url}
    async with Daemon(slow, vhost_url, environ=environ), await JobdClient.connect(vhost_url) as client:
        async with client.events() as events:
            first = (await client.start(container_job("echo one"))).uid
            assert first
            assert (await events_until(events, ended(first)))[-1].data.status is JobStatus.COMPLETED
            await own_engine.stop()
            await own_engine.start()
            second = (await client.start(container_job("echo two"))).uid
            assert second
            seen = await events_until(events, ended(second), timeout=30)
    assert seen[-1].data.status is JobStatus.COMPLETED and seen[-1].data.logs == ["two"]
