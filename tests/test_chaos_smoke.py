"""scripts/chaos runs end to end on a small drill and reports every figure; its exit code follows them.

It checks that the drill works, never how fast the daemon recovers: the drill starts its own broker
(it restarts it), so it needs the rabbitmq-server package but not the session's broker. The replica
drill runs on the session's PostgreSQL (``--store <url>``; the drill makes a database of its own there).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from conftest import require_rabbitmq

CHAOS = Path(__file__).resolve().parent.parent / "scripts" / "chaos"

COUNTS = (
    "published",
    "unpublished",
    "publish_retries",
    "jobs_in_store",
    "completed",
    "lost",
    "run_twice",
    "falsely_failed",
    "terminal_events_missing",
    "kills",
    "broker_restarts",
    "broker_kill9",
    "daemon_starts",
    "events_received",
)
GATES = (
    "lost",
    "run_twice",
    "falsely_failed",
    "terminal_events_missing",
    "unpublished",
    "not_adopted",
    "not_back",
)


async def run_chaos(*argv: str, timeout: float = 150) -> tuple[int, dict[str, Any], str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHAOS),
        *argv,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.terminate()  # the drill stops its daemon and broker on SIGTERM
            await proc.wait()
    stderr = err.decode(errors="replace")[-4000:]
    assert proc.returncode in (0, 1), f"the drill could not run ({proc.returncode}):\n{stderr}"
    figures: dict[str, Any] = json.loads(out)
    return proc.returncode, figures, stderr


async def test_a_small_chaos_drill_reports_every_figure_and_exits_by_them() -> None:
    require_rabbitmq()
    code, figures, stderr = await run_chaos(
        "--jobs", "60", "--kills", "2", "--broker-restarts", "1", "--seed", "7"
    )
    assert figures["seed"] == 7 and figures["jobs"] == 60, figures
    assert "seed 7" in stderr, "the seed is printed so a run can be replayed"
    for name in COUNTS:
        value = figures.get(name)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (name, value)
    assert figures["kills"] == 2 and figures["broker_restarts"] == 1 and figures["broker_kill9"] == 1
    assert figures["published"] + figures["unpublished"] == 60
    for name in ("total_seconds", "drill_seconds", "settle_seconds"):
        assert isinstance(figures[name], float) and figures[name] >= 0, (name, figures[name])
    assert "daemon_exit_code" in figures and isinstance(figures["settled"], bool)
    for name in ("lost", "run_twice", "falsely_failed", "terminal_events_missing"):
        assert isinstance(figures[f"{name}_examples"], list), name
    damaged = [name for name in GATES if figures.get(name, 0) > 0]
    if figures["daemon_exit_code"] != 0:
        damaged.append("daemon_exit_code")
    assert figures["failures"] == damaged
    assert code == (1 if damaged else 0), (code, damaged)


async def test_a_replica_drill_kills_replicas_and_reports_each_adoption(postgres_url: str) -> None:
    require_rabbitmq()
    code, figures, stderr = await run_chaos(
        *("--store", postgres_url, "--replicas", "2", "--lease", "2"),
        *("--jobs", "40", "--kills", "2", "--broker-restarts", "1", "--seed", "11"),
        timeout=300,
    )
    assert figures["store"] == "postgres" and figures["replicas"] == 2 and figures["lease_seconds"] == 2
    assert figures["store_detail"]["server"] == "given", "the given server, a database of its own"
    assert "synchronous_commit" in figures["store_description"]
    assert "--replicas 2 --lease 2 --state-folders own" in stderr, "the replay line names the replicas"
    description = " ".join(figures["drill_description"])
    assert "2 replicas, each its own state folder" in description and "Radix" in description
    assert figures["job_kinds"] == {"shell": 12, "reverse": 4, "radix": 12, "noop": 12}
    for name in COUNTS:
        value = figures.get(name)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (name, value)
    assert figures["published"] + figures["unpublished"] == 40
    assert figures["lost"] == 0 and figures["run_twice"] == 0, {k: figures[k] for k in GATES}

    kills = figures["replica_kills"]
    assert figures["kills"] == len(kills) == 2 and figures["daemon_starts"] == 4, "2 started, 2 restarted"
    assert [k["restart"] for k in kills] == ["late", "quick"]
    for kill in kills:
        assert kill["replica"] in ("replica 1", "replica 2") and kill["replica_id"], kill
        assert sum(kill["held"].values()) >= kill["reachable"] >= 0, kill
        assert kill["back"] is (kill["back_seconds"] is not None), kill
        if kill["restart"] == "late" and kill["reachable"]:
            assert kill["adopted"] is (kill["adoption_seconds"] is not None), kill
    assert figures["adoptions"] == sum(k["adoption_seconds"] is not None for k in kills)
    assert figures["adoption_target_seconds"] == 10
    codes = figures["daemon_exit_codes"]
    assert len(codes) == 2 and figures["daemon_exit_code"] == next((c for c in codes if c != 0), 0), codes
    damaged = [name for name in GATES if figures[name] > 0]
    if figures["daemon_exit_code"] != 0:
        damaged.append("daemon_exit_code")
    assert figures["failures"] == damaged
    assert code == (1 if damaged else 0), (code, damaged)


async def test_replicas_without_postgresql_are_refused_with_a_clear_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(CHAOS),
        "--replicas",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2 and out == b""
    assert "--replicas 2 needs a PostgreSQL store" in err.decode(), err
