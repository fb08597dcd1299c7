"""Retention: ended jobs, their runners' files and their idempotency keys go after a configurable age.

Each sweep takes the oldest ended jobs in batches: first the runner forgets the job's files, then
the store deletes the job, its idempotency keys and any write-back still queued for it, in one
transaction. A daemon killed between the two redoes the batch on its next sweep (forgetting is
idempotent), so nothing is left half-pruned; active jobs are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from daemon.clock import Clock
from daemon.contracts import JobdError, Log
from daemon.jobs.registry import Registry
from daemon.store.records import JobRecord, JobStore

__all__ = ["Retention"]


class Retention:
    """Prunes jobs that ended more than ``keep`` ago, every ``every`` seconds (``keep=None``: never)."""

    def __init__(
        self,
        store: JobStore,
        registry: Registry,
        clock: Clock,
        log: Log,
        *,
        keep: timedelta | None,
        every: float = 3600.0,
        batch: int = 500,
        on_pruned: Callable[[int], None] | None = None,
    ) -> None:
        self.store, self.registry, self.clock, self.log = store, registry, clock, log
        self.keep, self.every, self.batch = keep, every, batch
        self.on_pruned = on_pruned
        #: Jobs pruned since start, for metrics and tests.
        self.pruned = 0

    async def sweep(self) -> int:
        """Prune everything due now; how many jobs were deleted."""
        if self.keep is None:
            return 0
        cutoff = self.clock.now() - self.keep
        deleted = 0
        while records := await self.store.ended_before(cutoff, self.batch):
            for record in records:
                await self._forget_files(record)
            count = await self.store.forget([r.uid for r in records])
            deleted += count
            if len(records) < self.batch:
                break
        if deleted:
            self.pruned += deleted
            if self.on_pruned is not None:
                self.on_pruned(deleted)
            self.log.info("pruned ended jobs", jobs=deleted, ended_before=cutoff.isoformat())
        return deleted

    async def _forget_files(self, record: JobRecord) -> None:
        try:
            runner = self.registry.get(record.runner_type)
        except JobdError:  # the runner is gone or off: whatever it kept is beyond its reach, and ours
            return
        try:
            await runner.forget(record.uid)
        except JobdError as exc:  # the store row goes anyway: a job's files must not pin it for ever
            self.log.warning(
                "a runner could not delete an ended job's files", uid=record.uid, error=exc.message
            )

    async def run(self) -> None:
        """Sweep now and then every ``every`` seconds, until cancelled; a failed sweep is retried later."""
        while self.keep is not None:
            try:
                await self.sweep()
            except Exception as exc:
                self.log.warning("retention sweep failed; trying again later", error=str(exc))
            await self.clock.sleep(self.every)
