"""scripts/bench-schedules runs end to end on the session broker and reports every figure.

It checks that the benchmark works (and that each fire of its burst started exactly one run), never
how fast anything is.
"""

from __future__ import annotations

from pathlib import Path

from helpers import run_bench_json

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench-schedules"

FIGURES = (
    "register_seconds",
    "register_per_s",
    "register_publish_seconds",
    "register_daemon_cpu_seconds",
    "rss_before_mb",
    "rss_after_mb",
    "bytes_per_schedule",
    "idle_window_seconds",
    "idle_daemon_cpu_seconds",
    "idle_daemon_cpu_percent",
    "burst_registration_seconds",
    "burst_margin_seconds",
    "burst_lateness_min_s",
    "burst_lateness_p50_s",
    "burst_lateness_p99_s",
    "burst_lateness_max_s",
    "burst_daemon_cpu_seconds",
    "burst_runs_finished_after_s",
    "total_seconds",
)


async def test_small_schedule_bench_reports_every_figure(vhost_url: str) -> None:
    argv = ["--quick", "--schedules", "300", "--burst", "100", "--idle-seconds", "1", "--lead", "5"]
    figures = await run_bench_json(BENCH, *argv, amqp_url=vhost_url)
    assert figures["schedules"] == 300 and figures["burst"] == 100
    assert figures["broker"] == "DM_JOBD_AMQP_URL"
    for name in FIGURES:
        value = figures.get(name)
        assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
        assert value >= 0, (name, value)
    assert figures["burst_fires_arrived"] == 100
    assert figures["burst_duplicates"] == 0 and figures["burst_unexpected"] == 0
    assert figures["burst_runs_started"] == figures["burst_schedules_with_a_run"] == 100
    assert figures["burst_fires_ok"] is True
