"""scripts/chaos runs end to end on a small drill and reports every figure; its exit code follows them.

It checks that the drill works, never how well the daemon survives it: the drill starts its own broker
(it restarts it), so it needs the rabbitmq-server package but not the session's broker.
"""

from __future__ import annotations

import asyncio
import json
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
GATES = ("lost", "run_twice", "falsely_failed", "terminal_events_missing", "unpublished")


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
    damaged = [name for name in GATES if figures[name] > 0]
    if figures["daemon_exit_code"] != 0:
        damaged.append("daemon_exit_code")
    assert figures["failures"] == damaged
    assert code == (1 if damaged else 0), (code, damaged)
