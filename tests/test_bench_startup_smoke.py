"""scripts/bench-startup runs end to end on the session broker and reports every figure.

It checks that the benchmark works (a prepared store's schedules loaded, its jobs resumed to their
end), never how fast anything is.
"""

from __future__ import annotations

from pathlib import Path

from helpers import run_bench_json

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench-startup"


async def test_the_startup_bench_reports_every_figure_for_both_stores(vhost_url: str) -> None:
    figures = await run_bench_json(BENCH, "--quick", amqp_url=vhost_url)
    assert (figures["schedules"], figures["jobs"], figures["rounds"]) == (500, 100, 1)
    for store in ("empty", "full"):
        marks = figures[store]
        assert set(marks) == {"ready", "loaded", "resumed"}
        ready, loaded, resumed = marks["ready"][0], marks["loaded"][0], marks["resumed"][0]
        assert 0 < ready <= resumed and 0 < loaded <= resumed, marks
