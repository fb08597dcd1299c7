"""scripts/bench runs end to end on the session broker and reports every figure: SQLite with one
daemon (``--quick``), SQLite beside PostgreSQL with one and two replicas in the same run, the
backlog mode (jobs queued before the daemon starts), and ``--compare`` (the same backlog drained by
Celery and by the raw consumer too).

It checks that the benchmark works and loses no job, never how fast anything is.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from helpers import run_bench_json

from daemon.contracts import COMMAND_QUEUE as COMMANDS_QUEUE
from daemon.localbroker import LocalBroker

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench"

FIGURES = (
    "jobs",
    "calls",
    "daemon_jobs_per_s",
    "daemon_seconds",
    "daemon_publish_seconds",
    "daemon_cpu_seconds",
    "daemon_cpu_ms_per_job",
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
#: What every configuration's run reports.
RUN_FIGURES = (
    "replicas",
    "daemon_jobs_per_s",
    "daemon_seconds",
    "daemon_publish_seconds",
    "daemon_cpu_seconds",
    "daemon_cpu_ms_per_job",
    "status_serial_per_s",
    "status_serial_p50_ms",
    "status_serial_p99_ms",
    "status_concurrent_per_s",
    "status_concurrent_p50_ms",
    "status_concurrent_p99_ms",
    "ratio",
)


def positive(figures: dict[str, Any], name: str) -> None:
    value = figures.get(name)
    assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
    assert value > 0, (name, value)


async def test_quick_bench_reports_every_figure_as_a_positive_number(vhost_url: str) -> None:
    figures = await run_bench_json(BENCH, "--quick", amqp_url=vhost_url)
    assert figures["jobs"] == 500 and figures["calls"] == 300
    assert figures["mode"] == "subprocess" and figures["broker"] == "DM_JOBD_AMQP_URL"
    assert figures["store"] == "sqlite" and figures["replicas"] == 1
    for name in FIGURES:
        positive(figures, name)
    [run] = figures["runs"]
    assert run["name"] == "sqlite x1" and run["store_jobs"] == {"completed": 500}, run
    assert figures["comparisons"] == [], "nothing to compare one configuration with"


async def test_sqlite_and_postgres_replicas_in_one_run_lose_nothing_and_are_compared(
    vhost_url: str, postgres_url: str
) -> None:
    jobs = 40
    figures = await run_bench_json(
        BENCH,
        *("--store", f"sqlite,{postgres_url}", "--replicas", "1,2"),
        *("--jobs", str(jobs), "--calls", "30"),
        amqp_url=vhost_url,
    )
    runs = {run["name"]: run for run in figures["runs"]}
    assert list(runs) == ["sqlite x1", "postgres-url x1", "postgres-url x2"], "SQLite with one daemon only"
    assert figures["configurations"] == list(runs)
    for run in runs.values():
        for name in RUN_FIGURES:
            positive(run, name)
        assert run["store_jobs"] == {"completed": jobs}, run["name"]
    for name in ("postgres-url x1", "postgres-url x2"):
        detail = runs[name]["store_detail"]
        assert detail["server"] == "given" and detail["database"].startswith("dmjobd_bench_"), detail
        assert "fsync" in detail and "synchronous_commit" in detail, "the server's durability is reported"
        assert "synchronous_commit" in runs[name]["store_description"]
    made = [runs[name]["store_detail"]["database"] for name in ("postgres-url x1", "postgres-url x2")]
    assert len(set(made)) == 2, "a fresh database per run"

    two = runs["postgres-url x2"]
    replicas = two["replica_figures"]
    assert [r["replica"] for r in replicas] == [1, 2]
    assert len({r["pid"] for r in replicas}) == 2 and len({r["id"] for r in replicas}) == 2, replicas
    assert sum(r["jobs"] for r in replicas) == jobs, "every job is owned by one of the two replicas"
    assert all(r["jobs"] > 0 for r in replicas), f"both replicas consumed: {replicas}"
    assert two["daemon_cpu_seconds"] == pytest.approx(sum(r["cpu_seconds"] for r in replicas))

    pairs = [(c["run"], c["against"], c["target_jobs_per_s_ratio"]) for c in figures["comparisons"]]
    assert pairs == [("postgres-url x1", "sqlite x1", 0.8), ("postgres-url x2", "postgres-url x1", 1.0)]
    for comparison in figures["comparisons"]:
        assert comparison["jobs_per_s_ratio"] > 0 and comparison["cpu_per_job_ratio"] > 0, comparison

    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        cursor = await conn.execute("SELECT to_regclass('jobs') IS NULL")
        assert (await cursor.fetchone()) == (True,), "the bench left the named database alone"
        cursor = await conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", [made])
        assert await cursor.fetchall() == [], "the runs' databases are dropped afterwards"


async def test_the_backlog_mode_drains_jobs_queued_before_the_daemon_and_times_its_start_up(
    vhost_url: str,
) -> None:
    jobs = 100
    figures = await run_bench_json(
        BENCH, "--backlog", "--jobs", str(jobs), "--calls", "20", amqp_url=vhost_url
    )
    [run] = figures["runs"]
    assert run["backlog"] is True and run["store_jobs"] == {"completed": jobs}, run
    for name in (
        "daemon_jobs_per_s",
        "daemon_drain_jobs_per_s",
        "daemon_ready_seconds",
        "daemon_cpu_ms_per_job",
    ):
        positive(run, name)
    ready, first = run["daemon_ready_seconds"], run["daemon_first_completed_seconds"]
    assert 0 < ready < first <= run["daemon_seconds"], run
    assert "daemon_publish_seconds" not in run, "nothing is published at a running daemon"


async def test_compare_drains_the_same_backlog_with_celery_and_the_raw_consumer_losing_nothing(
    vhost_url: str, broker: LocalBroker
) -> None:
    figures = await run_bench_json(BENCH, "--backlog", "--compare", "--quick", amqp_url=vhost_url)
    jobs = figures["jobs"]
    compare = figures["compare"]
    assert compare["units"] == jobs == 500 and compare["rounds"] == 1
    assert compare["configuration"] == "sqlite x1"
    [run] = figures["runs"]
    assert run["backlog"] is True and run["store_jobs"] == {"completed": jobs}, run
    systems = compare["systems"]
    assert set(systems) == {"dm_jobd", "celery", "raw_backlog"}
    for name, system in systems.items():
        for figure in (
            "units_per_s",
            "seconds",
            "startup_seconds",
            "drain_units_per_s",
            "cpu_seconds",
            "cpu_ms_per_unit",
        ):
            positive(system, figure)
        assert system["units"] == jobs and system["completed"] == jobs, (name, system)
        assert 0 < system["startup_seconds"] <= system["seconds"], (name, system)
        assert "broker_cpu_ms_per_unit" not in system, "DM_JOBD_AMQP_URL: the broker's CPU is unknown"
    assert systems["dm_jobd"]["units_per_s"] == pytest.approx(run["daemon_jobs_per_s"])
    celery = systems["celery"]
    assert celery["executions"] == jobs and celery["left_in_queue"] == 0, "each task ran once, none left"
    assert celery["pool"] == "threads" and celery["concurrency"] == 8 and celery["result_backend"] is None
    assert celery["version"].startswith("5."), celery
    for ratio in ("dm_jobd_to_celery", "dm_jobd_to_raw_backlog"):
        positive(compare["ratios"], ratio)
    assert compare["target_ratio_to_raw_backlog"] == 0.6
    [only] = compare["per_round"]
    assert only["ratios"] == compare["ratios"]

    # Only the daemon's names are left on the broker: Celery's and the raw consumer's are deleted.
    vhost = quote(vhost_url.rsplit("/", 1)[1], safe="")
    assert broker.management_url is not None
    async with httpx.AsyncClient(base_url=broker.management_url, auth=("guest", "guest")) as http:
        for kind in ("queues", "exchanges"):
            reply = await http.get(f"api/{kind}/{vhost}")
            reply.raise_for_status()
            names = {item["name"] for item in reply.json()}
            assert COMMANDS_QUEUE in names, (kind, names)
            left = {n for n in names if n and not n.startswith(("dm-job.", "amq."))}
            assert left == set(), f"{kind} the comparison left behind: {left}"


async def test_replicas_without_postgresql_are_refused_with_a_clear_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH),
        "--replicas",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "DM_JOBD_AMQP_URL"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and out == b""
    assert "--replicas 2 needs a PostgreSQL store" in err.decode(), err


async def test_compare_without_celery_fails_with_one_line_naming_scripts_setup(tmp_path: Path) -> None:
    # An interpreter that cannot import celery: a sitecustomize blocking it, ahead on the path.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['celery'] = None\n")
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH),
        "--compare",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and out == b""
    [line] = err.decode().splitlines()
    assert "--compare needs Celery" in line and "scripts/setup" in line, line
