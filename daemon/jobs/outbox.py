"""Relaying the event outbox to the bus: publish with confirms, delete what was confirmed.

Events are written to the outbox in the transaction that changes the job, so a broker outage delays
them and loses none. Whatever was not confirmed stays and is published again on the next round, so a
consumer can see an event twice: it deduplicates on the CloudEvents ``id``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta

from daemon.bus.message import BusUnavailable
from daemon.bus.ports import Publisher
from daemon.clock import Clock, SystemClock
from daemon.contracts import Log
from daemon.store.records import JobStore, StoreUnavailable

__all__ = ["OutboxRelay"]


class OutboxRelay:
    def __init__(
        self,
        store: JobStore,
        publisher: Publisher,
        *,
        log: Log,
        batch: int = 500,
        idle_poll: float = 1.0,
        retry_max: float = 5.0,
        claimant: Callable[[], str] | None = None,
        claim_seconds: float = 30.0,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.claimant = claimant
        self.claim_seconds = claim_seconds
        self.clock: Clock = clock or SystemClock()
        self.publisher = publisher
        self.log = log
        self.batch = batch
        self.idle_poll = idle_poll
        self.retry_max = retry_max
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def notify(self) -> None:
        """Something was written to the outbox: relay it now rather than at the next idle poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox relay")

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                sent = await self.relay_once()
                backoff = 0.1
            except (BusUnavailable, StoreUnavailable, ConnectionError, OSError) as exc:
                if self._closing:
                    return
                away = "store" if isinstance(exc, StoreUnavailable) else "broker"
                self.log.warning(f"events wait for the {away}", error=str(exc), retry_in=backoff)
                await asyncio.sleep(backoff)  # a back-off between attempts, not a synchronisation
                backoff = min(backoff * 2, self.retry_max)
                continue
            if self._closing and sent == 0:
                return
            if sent == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.idle_poll)

    async def relay_once(self) -> int:
        """Publish one batch; returns how many were confirmed.

        With a ``claimant`` the batch is claimed first, so replicas sharing a store relay each event
        once in steady state; a relay that dies mid-batch leaves its claim to run out, and another
        publishes the rows again (at least once, with the same CloudEvents ids).
        """
        if self.claimant is not None:
            now = self.clock.now()
            until = now + timedelta(seconds=self.claim_seconds)
            rows = await self.store.claim_outbox(self.claimant(), now=now, until=until, limit=self.batch)
        else:
            rows = await self.store.outbox(self.batch)
        if not rows:
            return 0
        confirmed = await self.publisher.publish([row.message for row in rows])
        done = [row.id for row, ok in zip(rows, confirmed, strict=True) if ok]
        await self.store.outbox_done(done)
        if len(done) < len(rows):
            raise BusUnavailable(f"{len(rows) - len(done)} events were not confirmed")
        return len(done)

    async def close(self, *, drain_timeout: float = 5.0) -> None:
        """Publish what is pending (within a deadline), then stop."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), drain_timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
