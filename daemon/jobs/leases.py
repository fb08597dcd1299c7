"""Ownership of running jobs across replicas: each active job is leased to the one replica that watches it.

A replica leases the jobs it accepts (at insert), renews all its leases in one statement every third
of the lease, and adopts what nobody holds: jobs whose owner released them (it stopped) or whose lease
ran out (it died), among those it can reach (a cloud job from anywhere, a process or local container
only on its own host). An adopted job is re-attached through its persisted handle, as after a restart.
Leases are wall-clock times compared in the shared store, whatever clock the jobs run on.

A job nobody adopts (no replica that runs can reach it: its host's replicas are all gone, or none
loads its runner) is never dropped: once its lease has been over for two lease periods, the replicas
say so in its message (:data:`STRANDED`), which ``status``, listings and a progress event show, until
a replica that can reach it starts and adopts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

from daemon.clock import Clock
from daemon.contracts import REACH_ANYWHERE, Log
from daemon.jobs.registry import Registry
from daemon.store.records import JobRecord, JobStore

__all__ = ["STRANDED", "Leases", "stranded_message"]

#: How a stranded job's message begins (and how the replicas know it was reported).
STRANDED = "No replica that runs can reach this job"


def stranded_message(record: JobRecord) -> str:
    """What a stranded job's message says: why nobody follows it, and what brings it back."""
    since = record.lease_until.isoformat(timespec="seconds") if record.lease_until else "before leases"
    where = f" from {record.owner_host}" if record.owner_host else ""
    return (
        f"{STRANDED}: its runner ({record.runner_type}) is followed only{where}, and no replica there"
        f" has held it since {since}. Start a replica there (same host and state folder, with that"
        " runner), or stop the job."
    )


class Leases:
    def __init__(
        self,
        store: JobStore,
        registry: Registry,
        clock: Clock,
        log: Log,
        *,
        owner: Callable[[], str],
        host: str,
        ttl: float,
        launch: Callable[[JobRecord], None],
        note: Callable[[str, str], Awaitable[object]] | None = None,
    ) -> None:
        self.store, self.registry, self.clock, self.log = store, registry, clock, log
        #: Sets a job's message (with its event): how a stranded job is reported, and its adoption.
        self._note = note
        self._owner = owner
        self.host = host
        self.ttl = ttl
        self._launch = launch
        #: Jobs adopted since start (after the first sweep), for logs and tests.
        self.adopted = 0

    @property
    def owner(self) -> str:
        return self._owner()

    def until(self) -> datetime:
        return self.clock.now() + timedelta(seconds=self.ttl)

    def stamp(self, record: JobRecord) -> None:
        """Lease a job this replica is about to insert: it watches it from the commit on."""
        record.owner, record.owner_host, record.lease_until = self.owner, self.host, self.until()

    def _reach(self) -> tuple[list[str], list[str]]:
        anywhere: list[str] = []
        on_host: list[str] = []
        for entry in self.registry.entries():
            if entry.runner is not None:
                (anywhere if entry.runner.reach(entry.type) == REACH_ANYWHERE else on_host).append(entry.type)
        return anywhere, on_host

    async def adopt(self, *, mine: bool = False) -> Sequence[JobRecord]:
        """Take and watch every job nobody holds that this replica can reach; the jobs taken.

        ``mine`` at start: also the jobs leased to this replica's id before it restarted.
        """
        records = await self.take(mine=mine)
        await self.watch(records)
        return records

    async def take(self, *, mine: bool = False) -> Sequence[JobRecord]:
        """Lease every job nobody holds that this replica can reach, without watching them yet."""
        anywhere, on_host = self._reach()
        now = self.clock.now()
        until = now + timedelta(seconds=self.ttl)
        return await self.store.adopt(
            self.owner, self.host, until=until, now=now, anywhere=anywhere, on_host=on_host, mine=mine
        )

    async def watch(self, records: Sequence[JobRecord], *, batch: int = 500) -> None:
        """Watch jobs taken, ``batch`` of them per turn of the loop: at start, 10,000 jobs to resume
        would otherwise hold the loop (and the commands waiting) for their first polls."""
        for start in range(0, len(records), batch):
            for record in records[start : start + batch]:
                if self._note is not None and record.message and record.message.startswith(STRANDED):
                    await self._note(record.uid, f"adopted by replica {self.owner}")
                self._launch(record)
            await asyncio.sleep(0)  # a turn for the rest of the loop, not a synchronisation

    async def report_stranded(self, limit: int = 100) -> int:
        """Say in their message which jobs nobody has held for two lease periods; how many were new."""
        if self._note is None:
            return 0
        before = self.clock.now() - timedelta(seconds=2 * self.ttl)
        records = await self.store.stranded(before, flagged=STRANDED, limit=limit)
        for record in records:
            await self._note(record.uid, stranded_message(record))
        if records:
            self.log.warning(
                "jobs no replica can reach", jobs=len(records), uids=[r.uid for r in records][:20]
            )
        return len(records)

    async def run(self) -> None:
        """Renew and adopt every third of the lease, until cancelled."""
        while True:
            await self.clock.sleep(self.ttl / 3)
            try:
                await self.store.renew(self.owner, self.until())
                adopted = await self.adopt()
                await self.report_stranded()
            except Exception as exc:  # the store is away: leases run out, and the others adopt
                self.log.warning("renewing job leases failed; trying again soon", error=str(exc))
                continue
            if adopted:
                self.adopted += len(adopted)
                self.log.info("adopted jobs", jobs=len(adopted), uids=[r.uid for r in adopted][:20])

    async def release(self) -> None:
        """Give every lease back (this replica stops): the others adopt at their next round."""
        try:
            released = await self.store.release(self.owner, self.clock.now())
        except Exception as exc:  # the store is away: the leases run out instead
            self.log.warning("releasing job leases failed; they run out instead", error=str(exc))
            return
        if released:
            self.log.info("released job leases", jobs=released)
