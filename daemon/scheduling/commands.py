"""The schedule commands that change or fire a schedule: trigger, pause/resume/remove, and admitting a fire.

Each decides inside a store transaction with the event it causes, then tells the scheduler's heap
(``reschedule``) what changed. Read-only commands (``schedule.list``, ``schedule.show``) need none of
this and are answered by the dispatcher from the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime

from daemon.clock import Clock
from daemon.contracts import Answer, ScheduleState
from daemon.jobs.events import EventFactory
from daemon.scheduling.cron import CronSpec
from daemon.scheduling.policy import Policy
from daemon.scheduling.starts import Starts
from daemon.store.records import JobStore, ScheduleChange, ScheduleRecord

__all__ = ["ScheduleCommands", "next_if_active"]

_EVENT_OF = {
    ScheduleState.PAUSED: "paused",
    ScheduleState.ACTIVE: "resumed",
    ScheduleState.REMOVED: "removed",
}


def next_if_active(record: ScheduleRecord | None) -> datetime | None:
    """When an active schedule fires next; None for one that is not (it leaves the heap)."""
    return record.next_fire if record is not None and record.state is ScheduleState.ACTIVE else None


class ScheduleCommands:
    def __init__(
        self,
        store: JobStore,
        events: EventFactory,
        starts: Starts,
        *,
        clock: Clock,
        reschedule: Callable[[str, datetime | None], None],
    ) -> None:
        self.store = store
        self.events = events
        self.starts = starts
        self.clock = clock
        self.reschedule = reschedule

    async def trigger(self, uid: str, message_id: str) -> bool:
        """Fire now, through the same overlap policy and idempotency as a scheduled fire."""
        record = await self.store.get_schedule(uid)
        if record is None:
            return False
        now = self.clock.now()
        policy = Policy.from_entity(record.policy)
        ran = await self.starts.run(record, now, policy, trigger=f"schedule:{uid}:trigger:{message_id}")
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
        if await self.store.answer_for(key) is not None:
            return None  # a duplicate: the normal path answers it from the key
        record = await self.store.get_schedule(uid)
        reason = None
        if record is None or record.state is not ScheduleState.ACTIVE:
            reason = f"the schedule is {record.state if record else 'gone'}"
        elif Policy.from_entity(record.policy).overlap == "forbid" and await self.starts.active_run(record):
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
        event = _EVENT_OF[state]

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
            self.reschedule(uid, next_if_active(updated))
        return updated
