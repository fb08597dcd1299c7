"""Time as a dependency: the wall clock in production, a hand-driven clock in tests.

The scheduler (and the in-memory bus's hold) read the time and wait through a :class:`Clock`, so a
test moves time forward by a minute in a microsecond instead of waiting for it (Temporal's time
skipping, in miniature).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        """Wait for ``event`` or ``timeout`` seconds of this clock, whichever is first; whether it is set."""
        ...


class SystemClock:
    """The wall clock, and asyncio's timers."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    async def wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        return event.is_set()


class ManualClock:
    """A clock that stands still until :meth:`advance` moves it; sleepers wake in time order.

    For tests: ``await clock.advance(60)`` runs a minute of schedules at once. Time never moves on
    its own, so a test's outcome cannot depend on how fast the machine is.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._changed = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), next(self._order), future))
        self._changed.set()
        await future

    async def wait(self, event: asyncio.Event, timeout: float | None) -> bool:
        if event.is_set():
            return True
        if timeout is None:
            await event.wait()
            return True
        sleeper = asyncio.ensure_future(self.sleep(timeout))
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waiter):
                task.cancel()
            await asyncio.gather(sleeper, waiter, return_exceptions=True)
        return event.is_set()

    @property
    def sleepers(self) -> int:
        """How many waits are pending (cancelled ones not counted)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def sleeping(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait (in real time, bounded) until at least ``count`` waits are pending on this clock."""
        async with asyncio.timeout(timeout):
            while self.sleepers < count:
                self._changed.clear()
                await self._changed.wait()

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own instant, in order."""
        await self.advance_to(self._now + timedelta(seconds=seconds))

    async def advance_to(self, when: datetime) -> None:
        while self._sleepers and self._sleepers[0][0] <= when:
            due, _, future = heapq.heappop(self._sleepers)
            if future.done():
                continue
            self._now = max(self._now, due)
            future.set_result(None)
            for _ in range(3):  # let the woken task run up to its next wait
                await asyncio.sleep(0)
        self._now = max(self._now, when)
        await asyncio.sleep(0)
