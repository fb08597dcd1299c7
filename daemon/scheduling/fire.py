"""What one fire is on the wire and in the store: its id, its start command, and how it is recorded.

Pure functions shared by the scheduler's paths (a fire now, a burst held ahead, a trigger) and the
dispatcher, which recognises a scheduled fire's command by its id.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from daemon.contracts import Outgoing, ScheduleState
from daemon.jobs.events import EventFactory
from daemon.scheduling.cron import CronSpec
from daemon.scheduling.policy import Plan
from daemon.store.records import ScheduleChange, ScheduleRecord

__all__ = ["cron_spec", "fire_message_id", "record_fire", "start_body"]


def fire_message_id(uid: str, scheduled: datetime) -> str:
    """The idempotency key of one fire: the same for every daemon and every retry."""
    return f"schedule:{uid}:{scheduled.astimezone(UTC).isoformat()}"


@functools.lru_cache(maxsize=4096)
def cron_spec(cron: str, time_zone: str) -> CronSpec:
    """Parsed once per expression: many schedules share a few cron lines, and a burst re-reads them."""
    return CronSpec.parse(cron, time_zone)


def start_body(record: ScheduleRecord, scheduled: datetime) -> bytes:
    """The ``job.start`` of one run: the job to repeat, the schedule, the fire time, the token."""
    body: dict[str, Any] = {
        "job": record.job,
        "schedule": record.uid,
        "scheduledFor": scheduled.astimezone(UTC).isoformat(),
    }
    if record.token:
        body["token"] = record.token
    return json.dumps(body).encode()


def record_fire(
    events: EventFactory, outcome: Plan, started: Sequence[datetime], skipped: Sequence[datetime]
) -> Callable[[ScheduleRecord], ScheduleChange | None]:
    """The compare-and-set that records a fire: a no-op when another daemon recorded it first.

    ``started``/``skipped`` are the fires of ``outcome`` that were published / skipped for overlap.
    """
    handled = max([*outcome.fire, *([outcome.last_missed] if outcome.last_missed else [])], default=None)

    def decide(current: ScheduleRecord) -> ScheduleChange | None:
        if current.state is not ScheduleState.ACTIVE:
            return None
        if handled is not None and current.last_fire is not None and current.last_fire >= handled:
            return None  # another daemon recorded this fire already
        new = dataclasses.replace(current, next_fire=outcome.next_fire)
        if handled is not None:
            new.last_fire = handled
        out: list[Outgoing] = []
        out += [events.schedule(new, "fired", scheduled_for=t) for t in started]
        out += [
            events.schedule(new, "skipped", scheduled_for=t, message="the previous run is still active")
            for t in skipped
        ]
        if outcome.missed:
            out.append(
                events.schedule(
                    new,
                    "missed",
                    scheduled_for=outcome.last_missed,
                    missed=outcome.missed,
                    message=f"{outcome.missed} fire(s) missed while the daemon was away",
                )
            )
        if outcome.retired:
            new.state = ScheduleState.RETIRED
            new.next_fire = None
            out.append(events.schedule(new, "retired", message="past the schedule's end date"))
        return ScheduleChange(new, out)

    return decide
