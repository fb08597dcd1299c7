"""The held-burst protocol: a burst's start commands handed to the broker early, released at its instant.

When many schedules fall due at one instant, publishing their starts at that instant takes seconds;
the broker moves held messages in a fraction of one. So a burst is planned ``lead`` seconds early,
its holdable fires (no jitter, no active run unless ``allow``) published into a hold queue that
releases them at the instant, and their schedules advanced as fired. Whatever cannot be held fires at
the instant as usual. The audit publishes again, directly and under the same message id, any held
fire whose command never reached a daemon.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from daemon.clock import Clock
from daemon.contracts import Log, Outgoing, ScheduleState
from daemon.jobs.events import EventFactory
from daemon.scheduling.fire import record_fire
from daemon.scheduling.policy import Plan
from daemon.scheduling.starts import Starts, start_command
from daemon.store.records import JobStore, ScheduleChange, ScheduleRecord

__all__ = ["HeldBursts", "HeldSlice", "Hold", "Landed"]

#: Publish commands to be delivered at an instant; which ones the broker confirmed.
Hold = Callable[[Sequence[Outgoing], datetime], Awaitable[list[bool]]]
#: Whether a start command with this message id reached the daemon (its idempotency key exists).
Landed = Callable[[str], Awaitable[bool]]


@dataclass
class HeldSlice:
    """What became of a slice of a burst, for the scheduler's books."""

    #: The commands the broker holds now.
    fires: list[Outgoing] = field(default_factory=list)
    #: Schedules advanced past the held fire: their record now (None when gone meanwhile).
    advanced: dict[str, ScheduleRecord | None] = field(default_factory=dict)
    #: Schedules that could not be held: they fire at the instant itself.
    direct: list[str] = field(default_factory=list)
    #: Schedules no longer active: nothing to fire.
    gone: list[str] = field(default_factory=list)


class HeldBursts:
    def __init__(
        self,
        store: JobStore,
        events: EventFactory,
        starts: Starts,
        hold: Hold,
        *,
        clock: Clock,
        log: Log,
        landed: Landed | None = None,
        audit_after: float = 60.0,
        batch: int = 500,
    ) -> None:
        self.store = store
        self.events = events
        self.starts = starts
        self.hold = hold
        self.clock = clock
        self.log = log
        self.landed = landed
        self.audit_after = audit_after
        self.batch = batch

    async def hold_slice(
        self, uids: Sequence[str], records: Mapping[str, ScheduleRecord], instant: datetime
    ) -> HeldSlice:
        """Plan each, hold the holdable ones in one publish, advance those in one store write."""
        out = HeldSlice()
        ready: list[tuple[ScheduleRecord, Plan, Outgoing]] = []
        for uid in uids:
            record = records.get(uid)
            if record is None or record.state is not ScheduleState.ACTIVE:
                out.gone.append(uid)
                continue
            outcome, policy = self.starts.plan(record, instant)
            if await self.starts.holdable(record, outcome, policy, instant):
                ready.append((record, outcome, start_command(record, instant)))
            else:
                out.direct.append(uid)
        if not ready:
            return out
        confirmed = await self.hold([fire for _, _, fire in ready], instant)
        decisions: dict[str, Callable[[ScheduleRecord], ScheduleChange | None]] = {}
        for (record, outcome, fire), ok in zip(ready, confirmed, strict=True):
            if ok:
                decisions[record.uid] = record_fire(self.events, outcome, [instant], [])
                out.fires.append(fire)
            else:
                out.direct.append(record.uid)
        updated = await self.store.modify_schedules(decisions)
        out.advanced = {uid: updated.get(uid) for uid in decisions}
        return out

    async def audit(self, instant: datetime, fires: Sequence[Outgoing]) -> None:
        """Publish again, directly, any held fire that never reached a daemon (same id: no duplicate)."""
        if self.landed is None:
            return
        delay = (instant - self.clock.now()).total_seconds() + self.audit_after
        await self.clock.sleep(delay)  # a timer: the audit's moment, not a synchronisation
        lost = 0
        for fire in fires:
            if not await self.landed(fire.message_id):
                lost += 1
                try:
                    await self.starts.publish(fire)
                except Exception as exc:  # the broker is away again; the fire's key says it never ran
                    self.log.warning("a lost held fire could not be published again", error=repr(exc))
        if lost:
            self.log.warning("held fires had not arrived; published again", count=lost, instant=str(instant))
