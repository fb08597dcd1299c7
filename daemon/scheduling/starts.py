"""Starting a fire's run: the overlap policy applied, then the ``job.start`` published.

The one way a schedule starts a run, shared by the scheduler's own fires, a held burst's planning and
the ``schedule.trigger`` command, so the three cannot disagree about ``forbid``, ``replace`` or jitter.
"""

from __future__ import annotations

import json
import random
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from daemon.clock import Clock
from daemon.contracts import ACTIVE, Outgoing
from daemon.scheduling.fire import cron_spec, fire_message_id, start_body
from daemon.scheduling.policy import Plan, Policy, plan
from daemon.store.records import JobStore, ScheduleRecord

__all__ = ["Publish", "Starts", "start_command"]

#: Publish one command. Raises when the broker did not confirm it.
Publish = Callable[[Outgoing], Awaitable[None]]


def start_command(record: ScheduleRecord, scheduled: datetime, message_id: str | None = None) -> Outgoing:
    """A fire's start command; its message id is the fire's own unless a trigger names one."""
    body = start_body(record, scheduled)
    return Outgoing("job.start", message_id or fire_message_id(record.uid, scheduled), body)


class Starts:
    def __init__(
        self, store: JobStore, publish: Publish, clock: Clock, rng: random.Random | None = None
    ) -> None:
        self.store = store
        self.publish = publish
        self.clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)

    def plan(self, record: ScheduleRecord, now: datetime) -> tuple[Plan, Policy]:
        """What is due for ``record`` at ``now`` under its policy (catch-up, window, dates)."""
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

    async def active_run(self, record: ScheduleRecord) -> str | None:
        """The schedule's newest run if it is still active, read from durable state."""
        if not record.runs:
            return None
        newest = str(record.runs[-1]["uid"])
        job = await self.store.get(newest)
        return newest if job is not None and job.status in ACTIVE else None

    async def run(
        self, record: ScheduleRecord, scheduled: datetime, policy: Policy, *, trigger: str | None
    ) -> bool:
        """Apply the overlap policy and publish the start; False when the fire is skipped."""
        active = await self.active_run(record)
        if active is not None and policy.overlap == "forbid":
            return False
        if active is not None and policy.overlap == "replace":
            stop = json.dumps({"uid": active}).encode()
            await self.publish(Outgoing("job.stop", f"schedule:{record.uid}:replace:{active}", stop))
        if policy.jitter > timedelta(0) and trigger is None:
            await self.clock.sleep(self._rng.uniform(0, policy.jitter.total_seconds()))  # the jitter itself
        await self.publish(start_command(record, scheduled, trigger))
        return True

    async def holdable(
        self, record: ScheduleRecord, outcome: Plan, policy: Policy, instant: datetime
    ) -> bool:
        """Whether nothing can change this fire's decision before its instant (so it may be held)."""
        if outcome.fire != (instant,) or outcome.retired or policy.jitter > timedelta(0):
            return False
        return policy.overlap == "allow" or await self.active_run(record) is None
