"""scripts/bench --quick --json runs end to end on the session broker and reports every figure.

It checks that the benchmark works, never how fast anything is.
"""

from __future__ import annotations

from pathlib import Path

from helpers import run_bench_json

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench"

FIGURES = (
    "jobs",
    "calls",
    "daemon_jobs_per_s",
    "daemon_seconds",
    "daemon_publish_seconds",
    "daemon_cpu_seconds",
    "status_serial_per_s",
    "status_serial_p50_ms",
    "status_serial_p99_ms",
    "status_concurrent_per_s",
    "status_concurrent_p50_ms",
    "status_concurrent_p99_ms",
    "status_concurrency",
    "ceiling_msgs_per_s",
    "ceiling_seconds",
    "ceiling_publish_seconds",
    "ceiling_cpu_seconds",
    "ratio",
    "target_ratio",
    "total_seconds",
)


async def test_quick_bench_reports_every_figure_as_a_positive_number(vhost_url: str) -> None:
    figures = await run_bench_json(BENCH, "--quick", amqp_url=vhost_url)
    assert figures["jobs"] == 500 and figures["calls"] == 300
    assert figures["mode"] == "subprocess" and figures["broker"] == "DM_JOBD_AMQP_URL"
    for name in FIGURES:
        value = figures.get(name)
        assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
        assert value > 0, (name, value)
