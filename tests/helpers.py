"""Small helpers the tests share: job entities, and waiting with a deadline instead of sleeping."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from daemon.client import EventStream
from daemon.contracts import CloudEvent

T = TypeVar("T")

JOB = "dmss://WorkflowDS/Blueprints/Job"
SHELL = "dmss://WorkflowDS/Blueprints/Shell"
REVERSE = "dmss://WorkflowDS/Blueprints/ReverseDescription"
NOOP = "dm-jobd://NoOp"


def shell_job(script: str, **runner: Any) -> dict[str, Any]:
    return {"type": JOB, "label": "a shell job", "runner": {"type": SHELL, "script": script, **runner}}


def reverse_job(description: str) -> dict[str, Any]:
    return {
        "type": JOB,
        "label": "Example reverse job",
        "status": "not started",
        "applicationInput": {
            "type": "dmss://system/SIMOS/NamedEntity",
            "name": "x",
            "description": description,
        },
        "runner": {"type": REVERSE},
    }


async def poll_until(
    check: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 20.0,
    every: float = 0.05,
    what: str = "the condition",
) -> T:
    """Call ``check`` until it returns something other than None, or fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value is not None:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(every)


async def events_until(
    stream: EventStream, done: Callable[[CloudEvent], bool], *, timeout: float = 20.0
) -> list[CloudEvent]:
    """Collect events until one satisfies ``done`` (inclusive), failing at the deadline."""
    seen: list[CloudEvent] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"timed out; events so far: {[(e.type, e.subject) for e in seen]}")
        try:
            event = await stream.next(timeout=remaining)
        except TimeoutError:
            continue
        seen.append(event)
        if done(event):
            return seen


def ended(uid: str) -> Callable[[CloudEvent], bool]:
    """A status event saying job ``uid`` is over."""
    return lambda e: e.subject == uid and not e.type.endswith(".progress") and e.data.status.is_terminal


async def run_bench_json(script: Path, *argv: str, amqp_url: str, timeout: float = 240) -> dict[str, Any]:
    """Run a benchmark script with ``--json`` against ``amqp_url`` and return its figures."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *argv,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "DM_JOBD_AMQP_URL": amqp_url},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-4000:]
    figures: dict[str, Any] = json.loads(out)
    return figures


@dataclass
class RecordingLog:
    """A Log (the runner contract's slice of structlog) that keeps every call, for assertions."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def _add(self, level: str, event: str, kw: dict[str, Any]) -> None:
        self.calls.append((level, event, kw))

    def debug(self, event: str, **kw: Any) -> None:
        self._add("debug", event, kw)

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, kw)

    def at(self, level: str) -> list[tuple[str, dict[str, Any]]]:
        return [(event, kw) for lvl, event, kw in self.calls if lvl == level]

    def text(self) -> str:
        return "\n".join(f"{lvl} {event} {kw!r}" for lvl, event, kw in self.calls)


async def cli(
    *args: str,
    url: str | None,
    cwd: Path,
    stdin: bytes | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """Run ``dm-jobd`` as a user would (a fresh process, no DM_JOBD_* but these); code, stdout, stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DM_JOBD_")}
    env["DM_JOBD_STATE_DIR"] = str(cwd / ".state")
    if url is not None:
        env["DM_JOBD_AMQP_URL"] = url
    env.update(extra_env or {})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon.cli",
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
