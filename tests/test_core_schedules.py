"""The scheduler on a clock moved by hand: minutes of fires in milliseconds, nothing waits for time.

The real scheduler, job service and dispatcher on the in-memory bus; the hold, the audit, jitter and
the supervisor's time limits all wait on the injected :class:`~daemon.clock.ManualClock`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from core_kit import completed_runs, ended, fires, poll, recurring, start, value
from helpers import JOB, REVERSE

from daemon.app import Daemon
from daemon.bus.memory import MemoryBus
from daemon.clock import ManualClock


async def test_a_schedule_fires_once_per_tick_as_time_moves(
    core: Daemon, bus: MemoryBus, clock: ManualClock
) -> None:
    registered = await start(bus, recurring("* * * * *"))
    uid = registered["uid"]
    assert registered["status"] == "registered"
    assert registered["schedule"]["nextFire"].startswith("2030-01-01T00:01:00")
    await clock.sleeping()
    assert fires(bus, uid) == [], "nothing fires before its time"
    for minute in (1, 2, 3):
        await clock.advance(60)
        await poll(lambda: completed_runs(bus, uid), lambda n, m=minute: n == m)  # type: ignore[misc]
    assert fires(bus, uid) == [f"schedule:{uid}:2030-01-01T00:0{m}:00+00:00" for m in (1, 2, 3)]
    shown = await bus.request("schedule.show", {"uid": uid})
    assert len(shown["schedule"]["runs"]) == 3


async def test_dm_jobs_recurring_example_runs_each_minute(
    core: Daemon, bus: MemoryBus, clock: ManualClock
) -> None:
    """dm-job's own example: a ReverseDescription job repeated with cron '1/1 * * * *'."""
    reverse = {"type": JOB, "label": "reverse", "applicationInput": {"description": "sdrawkcaBsIsihT"}}
    entity = recurring("1/1 * * * *", job={**reverse, "runner": {"type": REVERSE}})
    uid = (await start(bus, entity))["uid"]
    await clock.sleeping()
    await clock.advance(60)
    await poll(lambda: completed_runs(bus, uid), lambda n: n == 1)
    (run,) = (await bus.request("schedule.show", {"uid": uid}))["schedule"]["runs"]
    assert run["scheduledFor"].startswith("2030-01-01T00:01:00"), "on the minute"
    assert (await bus.request("job.result", {"uid": run["uid"]}))["result"] == "ThisIsBackwards"


async def test_a_paused_schedule_does_not_fire_and_resumes_from_now(
    core: Daemon, bus: MemoryBus, clock: ManualClock
) -> None:
    uid = (await start(bus, recurring("* * * * *")))["uid"]
    paused = await bus.request("schedule.pause", {"uid": uid})
    assert paused["schedule"]["state"] == "paused"
    await clock.advance(180)
    assert fires(bus, uid) == []
    resumed = await bus.request("schedule.resume", {"uid": uid})
    assert resumed["schedule"]["nextFire"].startswith("2030-01-01T00:04:00"), "what fell due is skipped"
    await clock.sleeping()
    await clock.advance(60)
    await poll(lambda: completed_runs(bus, uid), lambda n: n == 1)
    assert fires(bus, uid) == [f"schedule:{uid}:2030-01-01T00:04:00+00:00"]


async def test_after_downtime_the_latest_missed_fire_runs_and_the_rest_are_reported(
    make_daemon: Callable[..., Daemon], bus: MemoryBus, clock: ManualClock
) -> None:
    entity = recurring("* * * * * *", catchUp="latest", catchUpWindow="PT30S")
    async with make_daemon():
        uid = (await start(bus, entity))["uid"]
        await clock.sleeping()
        await clock.advance(1)
        await poll(lambda: completed_runs(bus, uid), lambda n: n == 1)
    await clock.advance(5)  # the daemon is down for a few fires
    async with make_daemon():
        missed = await bus.wait_for_event(lambda e: e["type"].endswith("schedule.missed"))
        assert missed["data"]["missed"] >= 2, missed
        await poll(lambda: completed_runs(bus, uid), lambda n: n == 2)
    assert max(Counter(fires(bus, uid)).values()) == 1, "one publish per fire"
    latest = fires(bus, uid)[-1]
    assert latest == f"schedule:{uid}:2030-01-01T00:00:06+00:00", "the latest of the missed fires runs"


async def test_a_burst_is_held_in_the_bus_and_released_at_its_instant(
    make_daemon: Callable[..., Daemon], bus: MemoryBus, clock: ManualClock
) -> None:
    async with make_daemon(schedule_burst=3, schedule_lead_seconds=30):
        uids = [(await start(bus, recurring("* * * * *", label=f"burst {i}")))["uid"] for i in range(3)]
        await clock.sleeping()
        await clock.advance(30)  # the lead: the burst goes to the hold, nothing runs yet
        await poll(lambda: value(len(bus.held)), lambda n: n == 3)
        instant = clock.now() + timedelta(seconds=30)
        assert {due for due, _ in bus.held} == {round(instant.timestamp() * 1000)}
        assert all(fires(bus, uid) == [] for uid in uids), "held, not yet in the command queue"
        await clock.advance(30)
        for uid in uids:
            await poll(lambda u=uid: completed_runs(bus, u), lambda n: n == 1)  # type: ignore[misc]
            assert fires(bus, uid) == [f"schedule:{uid}:2030-01-01T00:01:00+00:00"]


async def test_a_held_fire_that_never_arrives_is_published_again_by_the_audit(
    make_daemon: Callable[..., Daemon], bus: MemoryBus, clock: ManualClock
) -> None:
    async with make_daemon(schedule_burst=2, schedule_lead_seconds=30) as daemon:
        lost: list[str] = []

        async def lose(commands: Any, due: Any) -> list[bool]:
            lost.extend(c.message_id for c in commands)
            return [True] * len(commands)  # "confirmed", then lost

        held = daemon.scheduler.held
        assert held is not None
        held.hold = lose
        uids = [(await start(bus, recurring("0 0 1 1 *", label=f"yearly {i}")))["uid"] for i in range(2)]
        await clock.sleeping()
        await clock.advance_to(clock.now().replace(year=2031) - timedelta(seconds=30))
        await poll(lambda: value(len(lost)), lambda n: n == 2)
        assert all(fires(bus, uid) == [] for uid in uids)
        await clock.advance(30 + held.audit_after)  # the instant, then the audit
        for uid in uids:
            await poll(lambda u=uid: completed_runs(bus, u), lambda n: n == 1)  # type: ignore[misc]
        assert sorted(f for uid in uids for f in fires(bus, uid)) == sorted(lost), "the same ids, again"


async def test_a_trigger_fires_now_under_the_overlap_policy(core: Daemon, bus: MemoryBus) -> None:
    uid = (await start(bus, recurring("0 0 1 1 *")))["uid"]  # once a year
    triggered = await bus.request("schedule.trigger", {"uid": uid}, message_id="t-1")
    assert triggered["ok"] and triggered["message"] == "fired now", triggered
    await poll(lambda: completed_runs(bus, uid), lambda n: n == 1)
    run = (await bus.request("schedule.show", {"uid": uid}))["schedule"]["runs"][0]["uid"]
    event = await bus.wait_for_event(ended(run))
    assert event["data"]["schedule"] == uid


async def test_a_restarted_daemon_loads_its_schedules_after_consuming_and_keeps_what_changed_meanwhile(
    make_daemon: Callable[..., Daemon], bus: MemoryBus, clock: ManualClock
) -> None:
    """The load runs beside the commands: a schedule a command took off the books while the store was
    read stays off, and the others fire as before."""
    async with make_daemon() as first:
        kept = (await start(bus, recurring("* * * * *")))["uid"]
        paused = (await start(bus, recurring("* * * * *")))["uid"]
        assert first.scheduler.scheduled == 2
    second = make_daemon()
    async with second:
        assert not second.scheduler.loaded.is_set(), "ready before the schedules are read"
        second.scheduler.reschedule(paused, None)  # what a pause's commit does, while the read is out
        await second.scheduler.loaded.wait()
        assert second.scheduler.scheduled == 1
        await clock.sleeping()
        await clock.advance(60)
        await poll(lambda: completed_runs(bus, kept), lambda n: n == 1)
        assert fires(bus, paused) == []
