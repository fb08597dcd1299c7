"""The Prometheus endpoint, scraped as Prometheus would and linted by Prometheus's own ``promtool``."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import httpx
import pytest
from core_kit import completed_runs, poll, recurring, start
from helpers import SHELL, poll_until, shell_job
from prometheus_client.parser import text_string_to_metric_families

from daemon.app import Daemon
from daemon.bus.memory import MemoryBus
from daemon.client import JobdClient
from daemon.clock import ManualClock
from daemon.config import Settings

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture
async def metered(settings: Settings, vhost_url: str) -> AsyncIterator[Daemon]:
    on = settings.model_copy(
        update={"metrics_port": 0, "metrics_host": "127.0.0.1", "metrics_refresh_seconds": 0.05}
    )
    async with Daemon(on, vhost_url) as daemon:
        yield daemon


async def scrape(daemon: Daemon) -> str:
    assert daemon.metrics_server is not None
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{daemon.metrics_server.port}/metrics")
        response.raise_for_status()
        return response.text


async def test_the_endpoint_counts_commands_jobs_and_durations_and_promtool_accepts_it(
    metered: Daemon, vhost_url: str
) -> None:
    async with await JobdClient.connect(vhost_url) as client:
        done = await client.submit(shell_job("true"))
        failed = await client.submit(shell_job("exit 3"))
        await done.wait(timeout=20)
        await failed.wait(timeout=20)
        assert not (await client.status("no-such-job")).ok

    async def counted() -> Samples | None:
        found = samples(await scrape(metered))
        ready = value(found, "dmjobd_jobs", runner_type=SHELL, status="failed") == 1
        return found if ready and value(found, "dmjobd_outbox_backlog") == 0 else None

    found = await poll_until(counted, what="the store counted")
    assert value(found, "dmjobd_jobs", runner_type=SHELL, status="completed") == 1
    assert value(found, "dmjobd_commands_total", command="job.start", outcome="ok") == 2
    assert value(found, "dmjobd_commands_total", command="job.status", outcome="unknown_job") == 1
    for status in ("completed", "failed"):
        labels = {"runner_type": SHELL, "status": status}
        assert value(found, "dmjobd_job_duration_seconds_count", **labels) == 1
    assert value(found, "dmjobd_job_queue_seconds_count", runner_type=SHELL) == 2
    assert value(found, "dmjobd_broker_connected") == 1
    assert value(found, "dmjobd_watched_jobs") == 0
    assert value(found, "dmjobd_writeback_backlog") == 0
    assert any(name == "dmjobd_build_info" for name, _ in found)

    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool comes with Debian's prometheus package (scripts/setup)"
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    lint, _ = await proc.communicate((await scrape(metered)).encode())
    assert proc.returncode == 0 and lint.decode().strip() == "", lint.decode()


async def test_the_endpoint_is_off_unless_a_port_is_set(jobd: Daemon) -> None:
    assert jobd.metrics_server is None


async def test_fire_lateness_is_observed_once_per_run(
    core: Daemon, bus: MemoryBus, clock: ManualClock
) -> None:
    uid = (await start(bus, recurring("* * * * *")))["uid"]
    await clock.sleeping()
    await clock.advance(60)
    await poll(lambda: completed_runs(bus, uid), lambda n: n == 1)
    registry = core.metrics.registry
    assert registry.get_sample_value("dmjobd_schedule_fire_lateness_seconds_count") == 1
    assert registry.get_sample_value("dmjobd_commands_total", {"command": "job.start", "outcome": "ok"}) == 2
