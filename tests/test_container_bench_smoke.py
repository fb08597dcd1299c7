"""scripts/bench-containers runs end to end on the session broker and engine and reports every figure.

It checks that the benchmark works, never how fast anything is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dockerd import LocalDockerd
from helpers import run_bench_json

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench-containers"

FIGURES = (
    "daemon_seconds",
    "daemon_jobs_per_min",
    "docker_seconds",
    "docker_runs_per_min",
    "ratio",
    "daemon_serial_p50_s",
    "daemon_serial_max_s",
    "docker_serial_p50_s",
    "docker_serial_max_s",
    "total_seconds",
)


async def test_small_container_bench_reports_every_figure(
    vhost_url: str, docker_engine: LocalDockerd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DM_JOBD_DOCKER_HOST", docker_engine.url)
    figures = await run_bench_json(BENCH, "--jobs", "4", "--serial", "2", amqp_url=vhost_url)
    assert figures["jobs"] == 4 and figures["serial"] == 2
    assert figures["broker"] == "DM_JOBD_AMQP_URL" and figures["engine"] == "DM_JOBD_DOCKER_HOST"
    for name in FIGURES:
        value = figures.get(name)
        assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
        assert value > 0, (name, value)
