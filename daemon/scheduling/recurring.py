"""Recurring jobs: turning a ``RecurringJob`` entity into a schedule, and a schedule into its view.

A RecurringJob (dm-job's blueprint) holds the job to repeat in ``applicationInput`` and, in
``schedule`` (a ``CronJob``), ``cron``, optional ``startDate``/``endDate``, ``runs``, and the policy
keys dm-jobd adds: ``timeZone``, ``overlap``, ``catchUp``, ``catchUpWindow``, ``jitter``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from daemon.contracts import (
    BadCommand,
    JobEntity,
    ScheduleRun,
    ScheduleState,
    ScheduleView,
    describe_validation_error,
)
from daemon.scheduling.cron import CronError, CronSpec
from daemon.scheduling.policy import Policy, parse_timestamp
from daemon.store.records import ScheduleRecord

__all__ = ["RECURRING_HANDLER", "RECURRING_JOB", "is_recurring", "new_schedule", "schedule_view"]

RECURRING_JOB = "dmss://WorkflowDS/Blueprints/RecurringJob"
RECURRING_HANDLER = "dmss://WorkflowDS/Blueprints/RecurringJobHandler"
_POLICY_KEYS = ("overlap", "catchUp", "catchUpWindow", "jitter")


def is_recurring(entity: Mapping[str, Any]) -> bool:
    runner = entity.get("runner") or {}
    return entity.get("type") == RECURRING_JOB or runner.get("type") == RECURRING_HANDLER


def new_schedule(
    uid: str, entity: Mapping[str, Any], *, now: datetime, token: str | None
) -> tuple[ScheduleRecord, JobEntity]:
    """Validate a RecurringJob entity and make its schedule; returns it and the job it repeats."""
    schedule = entity.get("schedule")
    if not isinstance(schedule, Mapping):
        raise BadCommand("a RecurringJob needs 'schedule' (a CronJob with 'cron')")
    cron = schedule.get("cron")
    if not isinstance(cron, str):
        raise BadCommand("schedule.cron must be a cron expression (5 fields, or 6 with seconds first)")
    try:
        spec = CronSpec.parse(cron, str(schedule.get("timeZone") or "UTC"))
        policy = {k: schedule[k] for k in _POLICY_KEYS if k in schedule}
        Policy.from_entity(policy)
        start = parse_timestamp(schedule["startDate"]) if schedule.get("startDate") else None
        end = parse_timestamp(schedule["endDate"]) if schedule.get("endDate") else None
    except CronError as exc:
        raise BadCommand(f"schedule: {exc}") from None
    try:
        job = JobEntity.model_validate(entity.get("applicationInput"))
    except ValidationError as exc:
        where = describe_validation_error(exc)
        raise BadCommand(f"a RecurringJob's applicationInput must be the job to repeat: {where}") from None
    first_after = max(now, start) if start is not None else now
    try:
        next_fire = spec.next_after(first_after)
    except CronError as exc:  # e.g. '0 0 30 2 *': no fire exists after the start
        raise BadCommand(f"schedule: {spec.expression!r} never fires: {exc}") from None
    record = ScheduleRecord(
        uid=uid,
        cron=spec.expression,
        time_zone=spec.time_zone,
        job=job.model_dump(by_alias=True, exclude_unset=True),
        policy=policy,
        created=now,
        label=entity.get("label"),
        start_date=start,
        end_date=end,
        state=ScheduleState.ACTIVE,
        last_fire=first_after,
        next_fire=next_fire,
        token=token,
    )
    if end is not None and record.next_fire is not None and record.next_fire > end:
        raise BadCommand("the schedule's endDate is before its first fire")
    return record, job


def schedule_view(record: ScheduleRecord) -> ScheduleView:
    policy = Policy.from_entity(record.policy)
    return ScheduleView(
        uid=record.uid,
        label=record.label,
        cron=record.cron,
        time_zone=record.time_zone,
        state=record.state,
        next_fire=record.next_fire,
        last_fire=record.last_fire,
        start_date=record.start_date,
        end_date=record.end_date,
        overlap=policy.overlap,
        catch_up=policy.catch_up,
        catch_up_window_seconds=policy.catch_up_window.total_seconds(),
        jitter_seconds=policy.jitter.total_seconds(),
        runs=[ScheduleRun.model_validate(run) for run in record.runs],
    )
