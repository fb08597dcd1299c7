"""Ownership of running jobs across replicas: each active job is leased to the one replica that watches it.

A replica leases the jobs it accepts (at insert), renews all its leases in one statement every third
of the lease, and adopts what nobody holds: jobs whose owner released them (it stopped) or whose lease
ran out (it died), among those it can reach (a cloud job from anywhere, a process or local container
only on its own host). An adopted job is re-attached through its persisted handle, as after a restart.
Leases are wall-clock times compared in the shared store, whatever clock the jobs run on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from daemon.clock import Clock
from daemon.contracts import REACH_ANYWHERE, Log
from daemon.jobs.registry import Registry
from daemon.store.records import JobRecord, JobStore

__all__ = ["Leases"]


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
    ) -> None:
        self.store, self.registry, self.clock, self.log = store, registry, clock, log
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
        anywhere, on_host = self._reach()
        now = self.clock.now()
        until = now + timedelta(seconds=self.ttl)
        records = await self.store.adopt(
            self.owner, self.host, until=until, now=now, anywhere=anywhere, on_host=on_host, mine=mine
        )
        for record in records:
            self._launch(record)
        return records

    async def run(self) -> None:
        """Renew and adopt every third of the lease, until cancelled."""
        while True:
            await self.clock.sleep(self.ttl / 3)
            try:
                await self.store.renew(self.owner, self.until())
                adopted = await self.adopt()
            except Exception as exc:  # the store is away: leases run out, and the others adopt
                self.log.warning("renewing job leases failed; trying again soon", error=str(exc))
                continue
            if adopted:
                self.adopted += len(adopted)
                self.log.info("adopted jobs", jobs=len(adopted), uids=[r.uid for r in adopted][:20])

    async def release(self) -> None:
        """Give every lease back (this replica stops): the others adopt at their next round."""
        try:
            released = await self.store.release(self.owner)
        except Exception as exc:  # the store is away: the leases run out instead
            self.log.warning("releasing job leases failed; they run out instead", error=str(exc))
            return
        if released:
            self.log.info("released job leases", jobs=released)
