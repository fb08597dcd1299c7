"""``dm-jobd run`` waits for a broker that is not there yet, and stops at once when asked, broker or not.

Real daemon processes, a real broker started late and stopped under them; every line the daemon
writes in JSON mode must be one JSON object, the libraries' own lines included.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import require_rabbitmq
from helpers import poll_until

from daemon.localbroker import LocalBroker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _spawn(tmp_path: Path, url: str) -> tuple[asyncio.subprocess.Process, Path]:
    log = tmp_path / "daemon.log"
    env = {
        **os.environ,
        "DM_JOBD_AMQP_URL": url,
        "DM_JOBD_STATE_DIR": str(tmp_path / "state"),
        "DM_JOBD_ENABLE_SHELL": "1",
        "DM_JOBD_LOG_FORMAT": "json",
    }
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.cli", "run", env=env, stdout=err, stderr=err
        )
    return proc, log


def _lines(log: Path) -> list[dict[str, Any]]:
    """Every line the daemon wrote, each parsed as the JSON object it must be."""
    out = []
    for number, line in enumerate(log.read_text().splitlines(), 1):
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {line!r}") from None
        assert isinstance(parsed, dict), line
        out.append(parsed)
    return out


def _count(log: Path, event: str) -> int:
    return sum(1 for line in _lines(log) if line.get("event") == event)


async def test_the_daemon_waits_for_a_late_broker_and_stops_promptly_without_one(tmp_path: Path) -> None:
    require_rabbitmq()
    port = _free_port()
    broker = LocalBroker(tmp_path / "broker", name="late", port=port)
    proc, log = await _spawn(tmp_path, broker.url)
    try:
        waiting = "the broker is not reachable; waiting"
        await poll_until(lambda: _true(_count(log, waiting) >= 2), timeout=30, what="two waiting lines")
        assert proc.returncode is None, "still waiting, not exited"
        await broker.start()
        await poll_until(lambda: _true(_count(log, "dm-jobd ready") == 1), timeout=60, what="ready")
        attempts = [line["attempt"] for line in _lines(log) if line.get("event") == waiting]
        assert attempts == list(range(1, len(attempts) + 1)), "one line per attempt"

        await broker.stop()  # the broker goes away under a running daemon: SIGTERM must still work
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert _count(log, "dm-jobd stopped") == 1
        _lines(log)  # and every line of it JSON, the broker library's complaints included
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await broker.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_stop_request_while_waiting_for_the_broker_is_honoured(tmp_path: Path, sig: int) -> None:
    proc, log = await _spawn(tmp_path, f"amqp://guest:guest@127.0.0.1:{_free_port()}/")
    try:
        await poll_until(
            lambda: _true(_count(log, "the broker is not reachable; waiting") >= 1),
            timeout=30,
            what="waiting",
        )
        proc.send_signal(sig)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert _count(log, "dm-jobd stopped") == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_broker_that_refuses_the_password_ends_the_daemon_with_exit_2(
    tmp_path: Path, amqp_url: str
) -> None:
    wrong = amqp_url.replace("guest:guest@", "guest:wrong-password@")
    proc, log = await _spawn(tmp_path, wrong)
    assert await asyncio.wait_for(proc.wait(), 60) == 2
    refused = [line for line in _lines(log) if line.get("event") == "cannot run"]
    assert refused and "refused" in refused[0]["reason"]
    assert "wrong-password" not in log.read_text(), "the password never reaches a log"


async def _true(value: bool) -> bool | None:
    return True if value else None
