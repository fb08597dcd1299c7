"""Recurring jobs against the real broker: fires, runs, pause/resume/trigger/remove, exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from helpers import JOB, poll_until, reverse_job

from daemon.app import Daemon
from daemon.client import JobdClient
from daemon.config import Settings
from daemon.contracts import JobStatus, Outgoing

RECURRING = "dmss://WorkflowDS/Blueprints/RecurringJob"
HANDLER = "dmss://WorkflowDS/Blueprints/RecurringJobHandler"


def recurring(cron: str, **schedule: Any) -> dict[str, Any]:
    """dm-job's recurring-job example: a RecurringJob repeating a ReverseDescription job."""
    return {
        "type": RECURRING,
        "label": "reverse, again and again",
        "status": "not started",
        "applicationInput": reverse_job("sdrawkcaBsIsihT"),
        "runner": {"type": HANDLER},
        "schedule": {"type": "dmss://WorkflowDS/Blueprints/CronJob", "cron": cron, "runs": [], **schedule},
    }


async def runs_of(client: JobdClient, uid: str) -> list[Any]:
    answer = await client.schedule("show", uid)
    assert answer.ok and answer.schedule is not None, answer
    return list(answer.schedule.runs)


async def at_least_runs(client: JobdClient, uid: str, n: int, timeout: float = 20) -> list[Any]:
    async def enough() -> list[Any] | None:
        runs = await runs_of(client, uid)
        return runs if len(runs) >= n else None

    return await poll_until(enough, timeout=timeout, what=f"{n} runs of schedule {uid}")


async def completed(client: JobdClient, uid: str) -> None:
    async def done() -> bool | None:
        status = (await client.status(uid)).status
        return True if status is JobStatus.COMPLETED else None

    await poll_until(done, what=f"run {uid} to complete")


async def test_a_due_schedule_runs_its_job_each_fire(client: JobdClient) -> None:
    answer = await client.start(recurring("* * * * * *"))  # every second (6 fields: seconds first)
    assert answer.ok and answer.status is JobStatus.REGISTERED, answer
    uid = str(answer.uid)
    assert answer.schedule is not None and answer.schedule.next_fire is not None
    runs = await at_least_runs(client, uid, 2)
    fires = [run.scheduled_for for run in runs]
    assert len(set(fires)) == len(fires), "one run per fire"
    for run in runs[:2]:
        await completed(client, run.uid)
        status = await client.status(run.uid)
        assert status.job is not None and status.job.triggered_by == f"Schedule ({uid})"
        assert status.job.schedule == uid
        assert (await client.result(run.uid)).result == "ThisIsBackwards"
    assert (await client.status(uid)).status is JobStatus.REGISTERED
    listed = await client.schedules()
    assert listed.schedules is not None and [s.uid for s in listed.schedules] == [uid]
    stopped = await client.stop(uid)
    assert stopped.status is JobStatus.REMOVED
    view = (await client.schedule("show", uid)).schedule
    assert view is not None and view.state == "removed" and view.next_fire is None


async def test_run_events_carry_the_schedule_and_fires_are_announced(client: JobdClient) -> None:
    async with client.events(keys=["job.completed.*", "schedule.#"]) as events:
        answer = await client.start(recurring("* * * * * *"))
        uid = str(answer.uid)
        seen_fire = seen_run = False
        while not (seen_fire and seen_run):
            raw = await events.raw(timeout=20)  # both kinds of event, raw
            key, body = raw
            if key.startswith(f"schedule.fired.{uid}"):
                seen_fire = True
            elif key.startswith("job.completed.") and f'"schedule":"{uid}"' in body.decode():
                seen_run = True
    await client.stop(uid)


async def test_pause_stops_fires_resume_restarts_them_trigger_fires_now(client: JobdClient) -> None:
    answer = await client.start(recurring("* * * * * *"))
    uid = str(answer.uid)
    await at_least_runs(client, uid, 1)
    paused = await client.schedule("pause", uid)
    assert paused.schedule is not None and paused.schedule.state == "paused"
    assert paused.schedule.next_fire is None
    count = len(await runs_of(client, uid))
    loop = asyncio.get_running_loop()
    until = loop.time() + 2.5  # two and a half fire periods: a paused schedule must stay quiet

    async def periods_passed() -> bool | None:
        return True if loop.time() >= until else None

    await poll_until(periods_passed, what="a few fire periods")
    assert len(await runs_of(client, uid)) == count, "a paused schedule does not fire"
    resumed = await client.schedule("resume", uid)
    assert resumed.schedule is not None and resumed.schedule.state == "active"
    await at_least_runs(client, uid, count + 1)
    await client.stop(uid)

    rare = await client.start(recurring("0 0 1 1 *"))  # once a year
    rare_uid = str(rare.uid)
    fired = await client.schedule("trigger", rare_uid)
    assert fired.ok and fired.message == "fired now"
    (run,) = await at_least_runs(client, rare_uid, 1)
    await completed(client, run.uid)
    await client.stop(rare_uid)


async def test_forbid_skips_a_fire_while_the_previous_run_is_active(
    client: JobdClient, tmp_path: Any
) -> None:
    gate = tmp_path / "gate"
    entity = recurring("0 0 1 1 *", overlap="forbid")
    entity["applicationInput"] = {
        "type": JOB,
        "runner": {
            "type": "dmss://WorkflowDS/Blueprints/Shell",
            "script": f"while [ ! -e {gate} ]; do sleep 0.05; done",
        },
    }
    uid = str((await client.start(entity)).uid)
    first = await client.schedule("trigger", uid)
    assert first.message == "fired now"
    (run,) = await at_least_runs(client, uid, 1)

    async def running() -> bool | None:
        return True if (await client.status(run.uid)).status is JobStatus.RUNNING else None

    await poll_until(running, what="the first run to be running")
    second = await client.schedule("trigger", uid)
    assert second.message.startswith("skipped"), second
    gate.touch()
    await completed(client, run.uid)
    assert len(await runs_of(client, uid)) == 1
    await client.stop(uid)


async def test_bad_schedules_are_refused_clearly(client: JobdClient) -> None:
    bad_cron = await client.call("job.start", {"job": recurring("61 * * * *")})
    assert bad_cron["error"]["code"] == "invalid" and "61" in bad_cron["message"]
    bad_tz = await client.call("job.start", {"job": recurring("* * * * *", timeZone="Mars/Olympus")})
    assert bad_tz["error"]["code"] == "invalid" and "Mars/Olympus" in bad_tz["message"]
    entity = recurring("* * * * *")
    entity["applicationInput"]["runner"]["type"] = "dmss://No/Such"
    unknown = await client.call("job.start", {"job": entity})
    assert unknown["error"]["code"] == "unknown_runner"


async def test_a_fire_published_twice_starts_one_job(jobd: Daemon, client: JobdClient) -> None:
    """A crash between publishing a fire and recording it: the fire is published again, same id."""
    original = jobd.scheduler.starts.publish
    failed_once: set[str] = set()

    async def publish_then_crash(command: Outgoing) -> None:
        await original(command)
        message_id = command.message_id
        if command.routing_key == "job.start" and message_id not in failed_once and len(failed_once) < 2:
            failed_once.add(message_id)
            raise ConnectionError("the daemon died right after publishing")

    jobd.scheduler.starts.publish = publish_then_crash
    uid = str((await client.start(recurring("* * * * * *"))).uid)
    runs = await at_least_runs(client, uid, 3)
    await client.stop(uid)
    assert len(failed_once) == 2, "fires were re-published"
    fires = Counter(run.scheduled_for for run in runs)
    assert max(fires.values()) == 1, fires


async def test_two_daemons_on_one_store_and_broker_start_one_run_per_fire(
    settings: Settings, vhost_url: str
) -> None:
    async with (
        Daemon(settings, vhost_url) as one,
        Daemon(settings.model_copy(), vhost_url) as two,
        await JobdClient.connect(vhost_url) as client,
    ):
        uid = str((await client.start(recurring("* * * * * *"))).uid)

        async def both_schedule_it() -> bool | None:
            return True if one.scheduler.scheduled and two.scheduler.scheduled else None

        await poll_until(both_schedule_it, what="both daemons to schedule the new schedule")
        runs = await at_least_runs(client, uid, 4)
        await client.stop(uid)
    fires = Counter(run.scheduled_for for run in runs)
    assert max(fires.values()) == 1, fires


async def test_registering_twice_with_one_message_id_makes_one_schedule(client: JobdClient) -> None:
    first = await client.call("job.start", {"job": recurring("0 0 1 1 *")}, message_id="sched-once")
    again = await client.call("job.start", {"job": recurring("0 0 1 1 *")}, message_id="sched-once")
    assert first == again
    listed = await client.schedules()
    assert listed.schedules is not None and len(listed.schedules) == 1
