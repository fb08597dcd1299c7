"""The scheduler: emits ordinary ``job.start`` commands for recurring jobs when they are due.

The next fire of every active schedule sits in a heap; the task sleeps until the earliest and wakes
early when a schedule changes. No per-second polling, no scan of all schedules.

Exactly once, however many daemons run and however often they restart: a fire's start command carries
a deterministic message id (schedule uid + scheduled time), so the command queue's idempotency keys
let at most one job start per fire. The command is published (and confirmed) *before* the schedule's
``last_fire`` advances, and the advance is a compare-and-set in the store: a crash in between fires
again after the restart with the same id (a no-op), and of two daemons only one records the fire.

One publish per fire across replicas: every replica keeps every schedule on its heap, but a due fire
is published only by the replica whose *claim* on it the store granted (``claim_schedules``: one
statement per instant and batch). The others put the schedule back for when the claim runs out and
learn the winner's record from its ``fired`` event (recording a fire ends its claim). A claimant that
dies leaves a claim that runs out after ``claim_seconds``: then another replica claims the fire and
publishes it, late but not lost (the schedule's catch-up policy decides about fires due meanwhile).

Bursts are handed to the broker early. When at least ``burst`` schedules fall due at one instant, their
start commands are published up to ``lead`` seconds ahead into a hold queue that releases them at
that instant (:mod:`daemon.scheduling.held`). Pause, removal and ``forbid`` are checked again when a
fire's command arrives (:meth:`~daemon.scheduling.commands.ScheduleCommands.admit`).

This module is the heap and its loop; a run's start is :mod:`~daemon.scheduling.starts`, the
commands that change a schedule are :mod:`~daemon.scheduling.commands`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta

from daemon.clock import Clock, SystemClock
from daemon.contracts import Log, Outgoing, ScheduleCloudEvent, ScheduleState
from daemon.jobs.events import EventFactory
from daemon.scheduling.commands import next_if_active
from daemon.scheduling.cron import CronError
from daemon.scheduling.fire import record_fire
from daemon.scheduling.held import HeldBursts
from daemon.scheduling.policy import Policy
from daemon.scheduling.starts import Starts
from daemon.store.records import JobStore, ScheduleRecord

__all__ = ["Scheduler"]


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        starts: Starts,
        events: EventFactory,
        *,
        log: Log,
        clock: Clock | None = None,
        held: HeldBursts | None = None,
        lead: float = 30.0,
        burst: int = 100,
        concurrency: int = 4096,
        owner: Callable[[], str] | None = None,
        claim_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.starts = starts
        self.events = events
        self.log = log
        self.clock: Clock = clock or SystemClock()
        #: The held-burst protocol; None: every fire is published at its instant.
        self.held = held
        self.lead = timedelta(seconds=lead if held is not None else 0.0)
        self.burst = burst
        #: This replica's id, for fire claims; None: the only scheduler on its store, no claims.
        self.owner = owner
        self.claim = timedelta(seconds=claim_seconds)
        self._heap: list[tuple[datetime, str]] = []
        self._next: dict[str, datetime] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(concurrency)
        self._firing: set[asyncio.Task[None]] = set()
        #: Fires within ``lead`` of now, by instant: taken off the heap, not yet fired.
        self._soon: dict[datetime, list[str]] = {}
        self._soon_heap: list[datetime] = []
        #: Instants whose burst went to the hold queue; what joins them later fires at the instant.
        self._held: set[datetime] = set()
        #: Schedules whose next fire could not be held: they fire at the instant, not early.
        self._direct: set[str] = set()
        #: Schedules being fired now, with the instant: an event that still shows that instant is stale.
        self._firing_at: dict[str, datetime] = {}
        #: Set once the store's schedules are loaded.
        self.loaded = asyncio.Event()
        #: Until then: those rescheduled meanwhile, which the load leaves as they are.
        self._changed_while_loading: set[str] = set()

    # -- the heap ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop, which first loads every active schedule's next fire (:meth:`_load`).

        Loading 100,000 schedules takes about 0.2 s: the daemon consumes meanwhile, and a fire due in
        that time goes out once the load is in.
        """
        self._task = asyncio.create_task(self._load_then_loop(), name="scheduler")

    async def _load_then_loop(self) -> None:
        pause = 0.1
        while True:
            try:
                await self._load()
                break
            except Exception as exc:  # the store is away: the daemon runs, and fires once it is back
                self.log.warning("loading the schedules failed; trying again", error=str(exc), retry_in=pause)
                await self.clock.sleep(pause)
                pause = min(pause * 2, 5.0)
        await self._loop()

    async def _load(self) -> None:
        """The store's schedules, except those changed while they were read: what a command or an
        event said of a schedule meanwhile (:meth:`reschedule`) is newer than the read."""
        rows = await self.store.schedules()
        changed, self._changed_while_loading = self._changed_while_loading, set()
        for uid, state, next_fire in rows:
            if state == ScheduleState.ACTIVE and next_fire is not None and uid not in changed:
                self._push(uid, next_fire)
        self.loaded.set()
        self.log.info("schedules loaded", schedules=len(self._next))

    def _push(self, uid: str, when: datetime) -> None:
        self._next[uid] = when
        heapq.heappush(self._heap, (when, uid))

    def reschedule(self, uid: str, when: datetime | None) -> None:
        """A schedule changed: its next fire is ``when`` (None: not scheduled any more)."""
        if not self.loaded.is_set():
            self._changed_while_loading.add(uid)
        self._firing_at.pop(uid, None)
        if when is None:
            self._next.pop(uid, None)  # its heap entry is now stale and is dropped when popped
            self._direct.discard(uid)
        else:
            self._push(uid, when)
        self._wake.set()

    def learn(self, body: bytes) -> None:
        """Follow a schedule event, ours or another daemon's: every daemon schedules every schedule,
        so losing one daemon loses no fire (the idempotency keys keep the fires single)."""
        try:
            event = ScheduleCloudEvent.model_validate_json(body)
        except ValueError:
            return
        data = event.data
        if data.event in ("paused", "removed", "retired"):
            self.reschedule(data.uid, None)
        elif data.next_fire is not None and self._next.get(data.uid) != data.next_fire:
            firing = self._firing_at.get(data.uid)
            if firing is not None and data.next_fire <= firing:
                return  # news of the fire under way (say, its registration event, relayed late)
            self.reschedule(data.uid, data.next_fire)

    @property
    def scheduled(self) -> int:
        return len(self._next)

    async def _loop(self) -> None:
        while True:
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now + self.lead:
                when, uid = heapq.heappop(self._heap)
                if self._next.get(uid) != when:
                    continue  # stale: rescheduled or removed since
                bucket = self._soon.get(when)
                if bucket is None:
                    bucket = self._soon[when] = []
                    heapq.heappush(self._soon_heap, when)
                bucket.append(uid)
            if self.held is not None:
                for when, bucket in self._soon.items():
                    if when > now and bucket and (when in self._held or len(bucket) >= self.burst):
                        self._held.add(when)
                        due = self._take(when, held=True)
                        if due:
                            self._spawn(self._fire_due(due, held=when))
            while self._soon_heap and self._soon_heap[0] <= now:
                when = heapq.heappop(self._soon_heap)
                self._held.discard(when)
                due = self._take(when)
                del self._soon[when]
                if due:
                    self._spawn(self._fire_due(due))
            wake = [self._soon_heap[0]] if self._soon_heap else []
            if self._heap:
                wake.append(self._heap[0][0] - self.lead)
            timeout = max(0.0, (min(wake) - now).total_seconds()) if wake else None
            self._wake.clear()
            await self.clock.wait(self._wake, timeout)

    def _take(self, when: datetime, *, held: bool = False) -> list[str]:
        """The schedules still due at ``when`` (not rescheduled since), now off the books.

        ``held``: only those that may be held; the rest stay for the instant itself.
        """
        due: list[str] = []
        keep: list[str] = []
        for uid in self._soon.get(when, ()):
            if self._next.get(uid) != when:
                continue
            if held and uid in self._direct:
                keep.append(uid)
                continue
            due.append(uid)
            del self._next[uid]
            self._direct.discard(uid)
            self._firing_at[uid] = when
        self._soon[when] = keep
        return due

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._firing.add(task)
        task.add_done_callback(self._firing.discard)

    async def _claimed(
        self, uids: Sequence[str], records: Mapping[str, ScheduleRecord], horizon: datetime
    ) -> dict[str, ScheduleRecord]:
        """The due schedules whose fire this replica claimed, as they now are; the rest put back.

        A schedule gone or paused is dropped; one whose fire another replica recorded meanwhile goes
        to its recorded next fire; one another replica holds a claim on comes back when that claim
        runs out, unless its ``fired`` event (:meth:`learn`) brings the next fire sooner.
        """
        if self.owner is None:
            return {uid: records[uid] for uid in uids if uid in records}
        due: list[str] = []
        jitter = timedelta(0)
        for uid in uids:
            record = records.get(uid)
            if record is None or record.state is not ScheduleState.ACTIVE or record.next_fire is None:
                self._firing_at.pop(uid, None)
            elif record.next_fire > horizon:
                self.reschedule(uid, record.next_fire)
            else:
                due.append(uid)
                with contextlib.suppress(CronError):
                    jitter = max(jitter, Policy.from_entity(record.policy).jitter)
        if not due:
            return {}
        now = self.clock.now()
        won = await self.store.claim_schedules(
            self.owner(), due, horizon=horizon, now=now, until=now + self.claim + jitter
        )
        for uid in due:
            if uid not in won and uid not in self._next:  # not learned meanwhile: look again later
                self.reschedule(uid, now + self.claim)
        return won

    async def _fire_due(self, uids: list[str], held: datetime | None = None) -> None:
        """Everything due at once: one store read and one claim for all of them, then each fires."""
        horizon = held or self.clock.now()
        try:
            records = await self.store.get_schedules(uids)
            if held is None or self.held is None:
                records = await self._claimed(uids, records, horizon)
        except Exception as exc:  # the store is unavailable: try again shortly, lose nothing
            self.log.error("reading due schedules failed; retrying soon", error=repr(exc))
            for uid in uids:
                self.reschedule(uid, held or self.clock.now() + timedelta(seconds=1))
            return
        if held is None or self.held is None:
            await asyncio.gather(*(self._guarded_fire(uid, record) for uid, record in records.items()))
            return
        fires: list[Outgoing] = []
        for start in range(0, len(uids), self.held.batch):
            chunk = uids[start : start + self.held.batch]
            try:
                # Claimed a slice at a time: each claim covers only its own slice's hold and record.
                claimed = await self._claimed(chunk, records, horizon)
                chunk = list(claimed)
                if not chunk:
                    continue
                outcome = await self.held.hold_slice(chunk, claimed, held)
            except Exception as exc:  # the broker or store failed the slice: fire at the instant instead
                self.log.error("holding fires failed; they fire at their instant", error=repr(exc))
                for uid in chunk:
                    if uid in self._firing_at:
                        self._direct.add(uid)
                        self.reschedule(uid, held)
                continue
            for uid in outcome.gone:
                self._firing_at.pop(uid, None)
            for uid in outcome.direct:
                self._direct.add(uid)
                self.reschedule(uid, held)
            for uid, record in outcome.advanced.items():
                self.reschedule(uid, next_if_active(record))
            fires += outcome.fires
        if fires:
            ahead = (held - self.clock.now()).total_seconds()
            self.log.info(
                "fires held in the broker", count=len(fires), instant=held.isoformat(), ahead_s=ahead
            )
            self._spawn(self.held.audit(held, fires))

    async def _guarded_fire(self, uid: str, record: ScheduleRecord | None = None) -> None:
        async with self._limit:
            try:
                await self.fire(uid, record)
            except Exception as exc:  # the broker or store failed this fire: it is tried again shortly
                self.log.error("a schedule failed to fire; retrying soon", schedule=uid, error=repr(exc))
                self.reschedule(uid, self.clock.now() + timedelta(seconds=1))

    async def fire(self, uid: str, record: ScheduleRecord | None = None) -> None:
        """Handle whatever is due for one schedule now, then put its next fire on the heap.

        ``record`` is the schedule as just read (a burst reads all due ones in one query); the
        advance re-checks it inside its transaction, so a stale read costs nothing but a no-op.
        """
        if record is None:
            record = await self.store.get_schedule(uid)
        if record is None or record.state is not ScheduleState.ACTIVE:
            self._firing_at.pop(uid, None)
            return
        outcome, policy = self.starts.plan(record, self.clock.now())
        started: list[datetime] = []
        skipped: list[datetime] = []
        for scheduled in outcome.fire:
            if await self.starts.run(record, scheduled, policy, trigger=None):
                started.append(scheduled)
            else:
                skipped.append(scheduled)
        updated = await self.store.modify_schedule(uid, record_fire(self.events, outcome, started, skipped))
        self.reschedule(uid, next_if_active(updated))

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._firing) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
