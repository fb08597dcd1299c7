"""The scheduler: emits ordinary ``job.start`` commands for recurring jobs when they are due.

The next fire of every active schedule sits in a heap; the task sleeps until the earliest and wakes
early when a schedule changes. No per-second polling, no scan of all schedules.

Exactly once, however many daemons run and however often they restart: a fire's start command carries
a deterministic message id (schedule uid + scheduled time), so the command queue's idempotency keys
let at most one job start per fire. The command is published (and confirmed) *before* the schedule's
``last_fire`` advances, and the advance is a compare-and-set in the store: a crash in between fires
again after the restart with the same id (a no-op), and of two daemons only one records the fire.

Bursts are handed to the broker early. When at least ``burst`` schedules fall due at one instant, their
start commands are published up to ``lead`` seconds ahead into a hold queue that releases them at
that instant (:class:`daemon.bus.amqp.CommandHold`): the broker moves thousands of messages in a fraction
of a second, where publishing them at the instant takes seconds. Only fires whose decision cannot
change are held: no jitter, and no active run unless the overlap policy is ``allow``; the others fire
at their instant as usual. Pause, removal and ``forbid`` are checked again when a fire's command
arrives (:meth:`Scheduler.admit`), and a held fire that never arrived is published again (same id).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta

from daemon.clock import Clock, SystemClock
from daemon.contracts import ACTIVE, Answer, Log, Outgoing, ScheduleCloudEvent, ScheduleState
from daemon.jobs.events import EventFactory
from daemon.scheduling.cron import CronSpec
from daemon.scheduling.fire import cron_spec, fire_message_id, record_fire, start_body
from daemon.scheduling.policy import Plan, Policy, plan
from daemon.store.records import JobStore, ScheduleChange, ScheduleRecord

__all__ = ["Hold", "Landed", "Publish", "Scheduler"]

#: Publish one command. Raises when the broker did not confirm it.
Publish = Callable[[Outgoing], Awaitable[None]]
#: Publish commands to be delivered at an instant; which ones the broker confirmed.
Hold = Callable[[Sequence[Outgoing], datetime], Awaitable[list[bool]]]
#: Whether a start command with this message id reached the daemon (its idempotency key exists).
Landed = Callable[[str], Awaitable[bool]]


class Scheduler:
    def __init__(
        self,
        store: JobStore,
        publish: Publish,
        events: EventFactory,
        *,
        log: Log,
        clock: Clock | None = None,
        concurrency: int = 4096,
        rng: random.Random | None = None,
        hold: Hold | None = None,
        landed: Landed | None = None,
        lead: float = 30.0,
        burst: int = 100,
        audit_after: float = 60.0,
        hold_batch: int = 500,
    ) -> None:
        self.store = store
        self.publish = publish
        self.events = events
        self.log = log
        self.clock: Clock = clock or SystemClock()
        self._heap: list[tuple[datetime, str]] = []
        self._next: dict[str, datetime] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(concurrency)
        self._firing: set[asyncio.Task[None]] = set()
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self.hold = hold
        self.landed = landed
        self.lead = timedelta(seconds=lead if hold is not None else 0.0)
        self.burst = burst
        self.audit_after = audit_after
        self.hold_batch = hold_batch
        #: Fires within ``lead`` of now, by instant: taken off the heap, not yet fired.
        self._soon: dict[datetime, list[str]] = {}
        self._soon_heap: list[datetime] = []
        #: Instants whose burst went to the hold queue; what joins them later fires at the instant.
        self._held: set[datetime] = set()
        #: Schedules whose next fire could not be held: they fire at the instant, not early.
        self._direct: set[str] = set()
        #: Schedules being fired now, with the instant: an event that still shows that instant is stale.
        self._firing_at: dict[str, datetime] = {}

    # -- the heap ----------------------------------------------------------------------------------

    async def start(self) -> int:
        """Load every active schedule's next fire and start the loop; returns how many."""
        for uid, state, next_fire in await self.store.schedules():
            if state == ScheduleState.ACTIVE and next_fire is not None:
                self._push(uid, next_fire)
        self._task = asyncio.create_task(self._loop(), name="scheduler")
        return len(self._next)

    def _push(self, uid: str, when: datetime) -> None:
        self._next[uid] = when
        heapq.heappush(self._heap, (when, uid))

    def reschedule(self, uid: str, when: datetime | None) -> None:
        """A schedule changed: its next fire is ``when`` (None: not scheduled any more)."""
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
            if self.hold is not None:
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

    async def _fire_due(self, uids: list[str], held: datetime | None = None) -> None:
        """Everything due at once: one store read for all of them, then each fires on its own."""
        try:
            records = await self.store.get_schedules(uids)
        except Exception as exc:
            self.log.error("reading due schedules failed; retrying soon", error=repr(exc))
            for uid in uids:
                self.reschedule(uid, held or self.clock.now() + timedelta(seconds=1))
            return
        if held is None:
            await asyncio.gather(*(self._guarded_fire(uid, records.get(uid)) for uid in uids))
            return
        fires: list[Outgoing] = []
        for start in range(0, len(uids), self.hold_batch):
            chunk = uids[start : start + self.hold_batch]
            try:
                fires += await self._hold_chunk(chunk, records, held)
            except Exception as exc:
                self.log.error("holding fires failed; they fire at their instant", error=repr(exc))
                for uid in chunk:
                    if uid in self._firing_at:
                        self._direct.add(uid)
                        self.reschedule(uid, held)
        if fires:
            ahead = (held - self.clock.now()).total_seconds()
            self.log.info(
                "fires held in the broker", count=len(fires), instant=held.isoformat(), ahead_s=ahead
            )
        if fires and self.landed is not None:
            self._spawn(self._audit(held, fires))

    async def _hold_chunk(
        self, uids: list[str], records: Mapping[str, ScheduleRecord], instant: datetime
    ) -> list[Outgoing]:
        """Hold a slice of a burst: plan each, publish the holdable ones together, advance them together.

        What cannot be held (jitter, an active run, anything but exactly this fire due) goes back on
        the heap for the instant itself.
        """
        ready: list[tuple[ScheduleRecord, Plan, Outgoing]] = []
        for uid in uids:
            record = records.get(uid)
            if record is None or record.state is not ScheduleState.ACTIVE:
                self._firing_at.pop(uid, None)
                continue
            outcome, policy = self._plan(record, instant)
            if not await self._holdable(record, outcome, policy, instant):
                self._direct.add(uid)
                self.reschedule(uid, instant)
                continue
            ready.append((record, outcome, _start(record, instant)))
        if not ready:
            return []
        assert self.hold is not None
        confirmed = await self.hold([fire for _, _, fire in ready], instant)
        decisions = {}
        fires: list[Outgoing] = []
        for (record, outcome, fire), ok in zip(ready, confirmed, strict=True):
            if ok:
                decisions[record.uid] = record_fire(self.events, outcome, [instant], [])
                fires.append(fire)
            else:
                self._direct.add(record.uid)
                self.reschedule(record.uid, instant)
        updated = await self.store.modify_schedules(decisions)
        for uid in decisions:
            self.reschedule(uid, _next_if_active(updated.get(uid)))
        return fires

    async def _guarded_fire(self, uid: str, record: ScheduleRecord | None = None) -> None:
        async with self._limit:
            try:
                await self.fire(uid, record)
            except Exception as exc:
                self.log.error("a schedule failed to fire; retrying soon", schedule=uid, error=repr(exc))
                self.reschedule(uid, self.clock.now() + timedelta(seconds=1))

    async def _audit(self, instant: datetime, fires: list[Outgoing]) -> None:
        """Publish again, directly, any held fire that never reached a daemon (same id: no duplicate)."""
        assert self.landed is not None
        delay = (instant - self.clock.now()).total_seconds() + self.audit_after
        await self.clock.sleep(delay)  # a timer: the audit's moment, not a synchronisation
        lost = 0
        for fire in fires:
            if not await self.landed(fire.message_id):
                lost += 1
                with contextlib.suppress(Exception):
                    await self.publish(fire)
        if lost:
            self.log.warning("held fires had not arrived; published again", count=lost, instant=str(instant))

    # -- firing ------------------------------------------------------------------------------------

    def _plan(self, record: ScheduleRecord, now: datetime) -> tuple[Plan, Policy]:
        policy = Policy.from_entity(record.policy)
        outcome = plan(
            cron_spec(record.cron, record.time_zone),
            last=record.last_fire,
            now=now,
            policy=policy,
            start_date=record.start_date,
            end_date=record.end_date,
        )
        return outcome, policy

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
        now = self.clock.now()
        outcome, policy = self._plan(record, now)
        started: list[datetime] = []
        skipped: list[datetime] = []
        for scheduled in outcome.fire:
            if await self._run(record, scheduled, policy, trigger=None):
                started.append(scheduled)
            else:
                skipped.append(scheduled)
        updated = await self.store.modify_schedule(uid, record_fire(self.events, outcome, started, skipped))
        self.reschedule(uid, _next_if_active(updated))

    async def _holdable(
        self, record: ScheduleRecord, outcome: Plan, policy: Policy, instant: datetime
    ) -> bool:
        """Whether nothing can change this fire's decision before its instant."""
        if outcome.fire != (instant,) or outcome.retired or policy.jitter > timedelta(0):
            return False
        return policy.overlap == "allow" or await self._active_run(record) is None

    async def _run(
        self, record: ScheduleRecord, scheduled: datetime, policy: Policy, *, trigger: str | None
    ) -> bool:
        """Apply the overlap policy and publish the start; False when the fire is skipped."""
        active = await self._active_run(record)
        if active is not None and policy.overlap == "forbid":
            return False
        if active is not None and policy.overlap == "replace":
            stop = json.dumps({"uid": active}).encode()
            await self.publish(Outgoing("job.stop", f"schedule:{record.uid}:replace:{active}", stop))
        if policy.jitter > timedelta(0) and trigger is None:
            await self.clock.sleep(self._rng.uniform(0, policy.jitter.total_seconds()))  # the jitter itself
        await self.publish(_start(record, scheduled, trigger))
        return True

    async def _active_run(self, record: ScheduleRecord) -> str | None:
        """The schedule's newest run if it is still active, read from durable state."""
        if not record.runs:
            return None
        newest = str(record.runs[-1]["uid"])
        job = await self.store.get(newest)
        return newest if job is not None and job.status in ACTIVE else None

    # -- commands ----------------------------------------------------------------------------------

    async def trigger(self, uid: str, message_id: str) -> bool:
        """Fire now, through the same overlap policy and idempotency as a scheduled fire."""
        record = await self.store.get_schedule(uid)
        if record is None:
            return False
        now = self.clock.now()
        ran = await self._run(
            record, now, Policy.from_entity(record.policy), trigger=f"schedule:{uid}:trigger:{message_id}"
        )
        event = self.events.schedule(
            record,
            "fired" if ran else "skipped",
            scheduled_for=now,
            message="triggered on request" if ran else "the previous run is still active",
        )
        await self.store.modify_schedule(uid, lambda current: ScheduleChange(current, [event]))
        return ran

    async def admit(self, uid: str, scheduled: datetime, key: str) -> bytes | None:
        """Check a scheduled fire's start command as it arrives; the answer when it must not run.

        A fire may have been decided seconds earlier (held for a burst, or queued behind a backlog):
        a schedule paused or removed since, or a run that started since under ``forbid``, wins. The
        refusal is stored under the command's key, so a redelivered copy gets the same answer.
        """
        stored = await self.store.answer_for(key)
        if stored is not None:
            return None  # a duplicate: the normal path answers it from the key
        record = await self.store.get_schedule(uid)
        reason = None
        if record is None or record.state is not ScheduleState.ACTIVE:
            reason = f"the schedule is {record.state if record else 'gone'}"
        elif Policy.from_entity(record.policy).overlap == "forbid" and await self._active_run(record):
            reason = "the previous run is still active"
        if reason is None:
            return None
        answer = Answer(ok=True, uid=uid, message=f"fire skipped: {reason}").model_dump_json(by_alias=True)
        events = []
        if record is not None:
            events.append(self.events.schedule(record, "skipped", scheduled_for=scheduled, message=reason))
        existing = await self.store.remember(key, uid, answer.encode(), events)
        return existing or answer.encode()

    async def set_state(self, uid: str, state: ScheduleState) -> ScheduleRecord | None:
        """Pause, resume or remove. Resuming skips what fell due while paused: it starts afresh from now."""
        now = self.clock.now()
        events = self.events
        event = {
            ScheduleState.PAUSED: "paused",
            ScheduleState.ACTIVE: "resumed",
            ScheduleState.REMOVED: "removed",
        }[state]

        def decide(current: ScheduleRecord) -> ScheduleChange | None:
            if current.state.is_final or current.state is state:
                return None
            new = dataclasses.replace(current, state=state)
            if state is ScheduleState.ACTIVE:
                spec = CronSpec.parse(current.cron, current.time_zone)
                start = max(now, current.start_date) if current.start_date else now
                new.last_fire = now
                new.next_fire = spec.next_after(start)
            else:
                new.next_fire = None
            return ScheduleChange(new, [events.schedule(new, event)])

        updated = await self.store.modify_schedule(uid, decide)
        if updated is not None:
            self.reschedule(uid, _next_if_active(updated))
        return updated

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._firing) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _next_if_active(record: ScheduleRecord | None) -> datetime | None:
    """When an active schedule fires next; None for one that is not (it leaves the heap)."""
    return record.next_fire if record is not None and record.state is ScheduleState.ACTIVE else None


def _start(record: ScheduleRecord, scheduled: datetime, message_id: str | None = None) -> Outgoing:
    """A fire's start command; its message id is the fire's own unless a trigger names one."""
    return Outgoing(
        "job.start", message_id or fire_message_id(record.uid, scheduled), start_body(record, scheduled)
    )
