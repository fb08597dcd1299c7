"""The core's test kit: runners a test controls, entities, and the in-memory daemon's fixtures' parts.

``Gate`` runs a job until the test opens it; ``Boom`` fails the way plugins do. Used by the tests of
the core on :class:`~daemon.bus.memory.MemoryBus` (``test_core*.py``; fixtures in ``conftest.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from helpers import JOB, NOOP

from daemon.bus.memory import MemoryBus
from daemon.contracts import (
    COMMANDS_EXCHANGE,
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    RunnerContext,
    RunnerStatus,
    Started,
)

GATE = "test://Gate"
BOOM = "test://Boom"
RECURRING = "dmss://WorkflowDS/Blueprints/RecurringJob"


class Gate:
    """A runner (and its plugin) whose jobs run until the test opens their gate.

    It pushes every change, so the supervisor sees an opened gate at once, without waiting on a poll.
    """

    types: tuple[str, ...] = (GATE,)

    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[str] = []
        self._open: set[str] = set()
        self._changed: dict[str, asyncio.Event] = {}

    def create(self, ctx: RunnerContext) -> Gate:
        return self

    def open(self, uid: str) -> None:
        self._open.add(uid)
        self._changed.setdefault(uid, asyncio.Event()).set()

    async def start(self, job: JobSpec) -> Started:
        self.started.append(job.uid)
        return Started(handle={"gate": job.uid}, status=RunnerStatus(JobStatus.RUNNING, message="waiting"))

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        if handle["gate"] in self._open:
            return RunnerStatus(JobStatus.COMPLETED, message="the gate opened")
        return RunnerStatus(JobStatus.RUNNING, message="waiting")

    async def watch(self, job: JobSpec, handle: Handle) -> AsyncIterator[RunnerStatus]:
        changed = self._changed.setdefault(job.uid, asyncio.Event())
        while True:
            await changed.wait()
            changed.clear()
            yield await self.poll(job, handle)

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        return JobResult("opened")

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        self.stopped.append(job.uid)

    async def close(self) -> None:
        return None


class Boom:
    """A runner that fails the way plugins do: with whatever exception its libraries raise."""

    types: tuple[str, ...] = (BOOM,)

    def create(self, ctx: RunnerContext) -> Boom:
        return self

    async def start(self, job: JobSpec) -> Started:
        raise KeyError("no such engine")

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        raise AssertionError("never started")

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        raise AssertionError("never started")

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        return None

    async def close(self) -> None:
        return None


def job(runner: str, label: str = "core") -> dict[str, Any]:
    return {"type": JOB, "label": label, "runner": {"type": runner}}


def recurring(
    cron: str, *, label: str = "every minute", job: dict[str, Any] | None = None, **schedule: Any
) -> dict[str, Any]:
    """A RecurringJob repeating ``job`` (by default a no-op job) on ``cron``."""
    return {
        "type": RECURRING,
        "label": label,
        "applicationInput": job or {"type": JOB, "label": f"{label}, a run", "runner": {"type": NOOP}},
        "runner": {"type": "dmss://WorkflowDS/Blueprints/RecurringJobHandler"},
        "schedule": {"type": "dmss://WorkflowDS/Blueprints/CronJob", "cron": cron, "runs": [], **schedule},
    }


def ended(uid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event.get("subject") == uid and JobStatus(event["data"]["status"]).is_terminal


async def start(bus: MemoryBus, entity: dict[str, Any], **kw: Any) -> dict[str, Any]:
    answer = await bus.request("job.start", {"job": entity}, **kw)
    assert answer["ok"], answer
    return answer


def fires(bus: MemoryBus, schedule: str) -> list[str]:
    """The message ids of the fires of ``schedule`` published to the command exchange, in order."""
    return [
        m.message_id
        for m in bus.published[COMMANDS_EXCHANGE]
        if m.routing_key == "job.start" and m.message_id.startswith(f"schedule:{schedule}:")
    ]


async def completed_runs(bus: MemoryBus, schedule: str) -> int:
    return len([e for e in bus.events("job.completed") if e["data"].get("schedule") == schedule])


async def value(of: Any) -> Any:
    return of


async def poll(read: Callable[[], Awaitable[Any]], ok: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    """Read until ``ok`` holds, with a deadline (in real time): the core's work crosses threads."""
    async with asyncio.timeout(timeout):
        while True:
            got = await read()
            if ok(got):
                return got
            await asyncio.sleep(0.005)  # a poll with a deadline, not a synchronisation
