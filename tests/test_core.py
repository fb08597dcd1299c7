"""The core without a broker: the whole daemon on the in-memory bus, with time moved by hand.

Dispatcher, job service, supervisor, outbox relay and scheduler are the real ones; only the bus is
:class:`~daemon.bus.memory.MemoryBus` and the clock :class:`~daemon.clock.ManualClock`. These run in
well under a second each; what only RabbitMQ can show stays in the tests against the real broker.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from core_kit import BOOM, GATE, Gate, ended, job, poll, start
from helpers import NOOP

from daemon.app import Daemon
from daemon.bus.memory import MemoryBus, topic_matches
from daemon.clock import ManualClock

# -- the job service, through the dispatcher ----------------------------------------------------------


async def test_a_job_runs_to_completed_and_every_change_is_an_event(core: Daemon, bus: MemoryBus) -> None:
    uid = (await start(bus, job(NOOP)))["uid"]
    await bus.wait_for_event(ended(uid))
    status = await bus.request("job.status", {"uid": uid})
    assert status["status"] == "completed"
    changes = [e["data"]["status"] for e in bus.events() if e["subject"] == uid]
    assert changes[-1] == "completed" and len(changes) == len(set(changes)), changes
    assert len({e["id"] for e in bus.events()}) == len(bus.events()), "every event has its own id"


async def test_one_message_id_starts_one_job(core: Daemon, bus: MemoryBus, gate: Gate) -> None:
    first = await start(bus, job(GATE), message_id="only-once")
    again = await start(bus, job(GATE), message_id="only-once")
    assert again["uid"] == first["uid"]
    await bus.join()
    assert gate.started == [first["uid"]]


async def test_bad_input_is_answered_and_dead_lettered_at_its_first_delivery(
    core: Daemon, bus: MemoryBus
) -> None:
    answer = await bus.request("job.start", b"{not json")
    assert answer["ok"] is False and answer["error"]["code"] == "bad_json"
    unknown = await bus.request("job.explode", {"uid": "x"})
    assert unknown["error"]["code"] == "unknown_command"
    assert [d.delivery_count for d in bus.dead_letters] == [0, 0]


async def test_stop_ends_a_running_job_through_its_runner(core: Daemon, bus: MemoryBus, gate: Gate) -> None:
    uid = (await start(bus, job(GATE)))["uid"]
    await bus.wait_for_event(lambda e: e.get("subject") == uid and e["data"]["status"] == "running")
    answer = await bus.request("job.stop", {"uid": uid})
    assert answer["ok"] and answer["status"] == "removed", answer
    assert gate.stopped == [uid]
    again = await bus.request("job.stop", {"uid": uid})
    assert again["message"] == "nothing to stop: the job is removed"


async def test_a_runner_raising_anything_fails_its_job_alone(core: Daemon, bus: MemoryBus) -> None:
    uid = (await start(bus, job(BOOM)))["uid"]
    event = await bus.wait_for_event(ended(uid))
    assert event["data"]["status"] == "failed"
    assert "no such engine" in event["data"]["message"]
    after = (await start(bus, job(NOOP)))["uid"]
    await bus.wait_for_event(ended(after))


async def test_a_restarted_daemon_re_attaches_its_running_jobs(
    make_daemon: Callable[..., Daemon], bus: MemoryBus, gate: Gate
) -> None:
    async with make_daemon():
        uid = (await start(bus, job(GATE)))["uid"]
        await bus.wait_for_event(lambda e: e.get("subject") == uid and e["data"]["status"] == "running")
    async with make_daemon():
        gate.open(uid)
        await bus.wait_for_event(ended(uid))
        result = await bus.request("job.result", {"uid": uid})
    assert result["ok"] and result["result"] == "opened", result
    assert gate.started == [uid], "started once, re-attached after the restart"


async def test_a_restart_over_more_jobs_than_a_batch_answers_at_once_and_re_attaches_them_all(
    make_daemon: Callable[..., Daemon], bus: MemoryBus, gate: Gate
) -> None:
    """The jobs to resume are leased before the daemon consumes and watched a batch per turn after:
    a command is answered while they are being re-attached, and none is left out or started again."""
    async with make_daemon() as first:
        uids = [(await start(bus, job(GATE)))["uid"] for _ in range(600)]
        await poll(lambda: _value(first.supervisor.watching), lambda n: n == len(uids))
    async with make_daemon() as second:
        assert second.supervisor.watching < len(uids), "ready before every watch began"
        status = await bus.request("job.status", {"uid": uids[-1]})
        assert status["ok"] and status["status"] == "running"
        await poll(lambda: _value(second.supervisor.watching), lambda n: n == len(uids))
        for uid in uids:
            gate.open(uid)
        for uid in uids:
            await bus.wait_for_event(ended(uid))
    assert sorted(gate.started) == sorted(uids), "each started once, re-attached after the restart"


async def _value(n: int) -> int:
    return n


async def test_events_wait_in_the_outbox_while_the_bus_is_away(core: Daemon, bus: MemoryBus) -> None:
    bus.available = False
    uid = (await start(bus, job(NOOP)))["uid"]
    rows = await poll(
        lambda: core.store.outbox(100),
        lambda rows: any(r.message.routing_key.startswith("job.completed") for r in rows),
    )
    assert all(json.loads(r.message.body)["subject"] == uid for r in rows)
    assert not bus.events(), "nothing published while the bus is away"
    bus.available = True
    await bus.wait_for_event(ended(uid), timeout=10)
    await poll(lambda: core.store.outbox(100), lambda rows: not rows)  # deleted once confirmed


async def test_a_job_past_its_time_limit_is_stopped_and_failed(
    core: Daemon, bus: MemoryBus, gate: Gate, clock: ManualClock
) -> None:
    answer = await bus.request("job.start", {"job": job(GATE), "timeLimitSeconds": 30})
    uid = answer["uid"]
    await bus.wait_for_event(lambda e: e.get("subject") == uid and e["data"]["status"] == "running")
    await clock.advance(29)
    assert (await bus.request("job.status", {"uid": uid}))["status"] == "running"
    await clock.advance(2)
    event = await bus.wait_for_event(ended(uid))
    assert event["data"]["status"] == "failed" and "time limit of 30 s" in event["data"]["message"]
    assert gate.stopped == [uid]


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("job.*", "job.start", True),
        ("job.*", "job.start.x", False),
        ("schedule.*.*", "schedule.fired.u1", True),
        ("#", "anything.at.all", True),
        ("job.#", "job", True),
        ("job.*.u1", "job.completed.u2", False),
    ],
)
def test_the_memory_bus_routes_by_amqp_topic_rules(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


# -- queries: job.list, job.logs, job.rerun, runner.list; a failed job's result -----------------------


async def test_job_list_filters_and_pages_newest_first(
    core: Daemon, bus: MemoryBus, clock: ManualClock
) -> None:
    uids = []
    for i in range(5):
        uids.append((await start(bus, job(NOOP, label="listed" if i % 2 == 0 else "other")))["uid"])
        await clock.advance(1)  # distinct creation times
    for uid in uids:
        await bus.wait_for_event(ended(uid))
    first = await bus.request("job.list", {"limit": 2})
    assert [j["uid"] for j in first["jobs"]] == uids[::-1][:2] and first["nextCursor"]
    second = await bus.request("job.list", {"limit": 2, "cursor": first["nextCursor"]})
    third = await bus.request("job.list", {"limit": 2, "cursor": second["nextCursor"]})
    paged = [j["uid"] for page in (first, second, third) for j in page["jobs"]]
    assert paged == uids[::-1]
    assert third.get("nextCursor") is None, "the last page says so"
    labelled = await bus.request("job.list", {"label": "listed", "status": ["completed"]})
    assert [j["uid"] for j in labelled["jobs"]] == [uids[4], uids[2], uids[0]]
    none = await bus.request("job.list", {"status": ["running"]})
    assert none["jobs"] == []
    bad = await bus.request("job.list", {"cursor": "not-a-cursor"})
    assert bad["error"]["code"] == "invalid"


async def test_job_logs_from_an_offset(core: Daemon, bus: MemoryBus, gate: Gate) -> None:
    uid = (await start(bus, job(GATE)))["uid"]
    await bus.request("job.progress", {"uid": uid, "logs": ["one", "two", "three"]})
    answer = await bus.request("job.logs", {"uid": uid, "offset": 1})
    assert answer["logs"] == ["two", "three"] and answer["nextOffset"] == 3
    unknown = await bus.request("job.logs", {"uid": "nope"})
    assert unknown["error"]["code"] == "unknown_job"


async def test_rerun_starts_a_linked_job_once_per_message_id(
    core: Daemon, bus: MemoryBus, gate: Gate
) -> None:
    uid = (await start(bus, job(GATE)))["uid"]
    running = await bus.request("job.rerun", {"uid": uid})
    assert running["error"]["code"] == "not_finished"
    gate.open(uid)
    await bus.wait_for_event(ended(uid))
    again = await bus.request("job.rerun", {"uid": uid}, message_id="rerun-1")
    twice = await bus.request("job.rerun", {"uid": uid}, message_id="rerun-1")
    assert again["ok"] and again["uid"] != uid and twice["uid"] == again["uid"]
    assert again["job"]["rerunOf"] == uid
    await bus.join()
    assert gate.started == [uid, again["uid"]], "one new run"


async def test_a_failed_jobs_result_answers_with_its_error_and_view(core: Daemon, bus: MemoryBus) -> None:
    uid = (await start(bus, job(BOOM)))["uid"]
    await bus.wait_for_event(ended(uid))
    answer = await bus.request("job.result", {"uid": uid})
    assert answer["ok"] is False and answer["error"]["code"] == "no_result"
    assert answer["status"] == "failed" and "no such engine" in answer["job"]["message"]


async def test_runner_list_names_what_this_daemon_loaded(core: Daemon, bus: MemoryBus) -> None:
    answer = await bus.request("runner.list", {})
    ready = {r["type"] for r in answer["runners"] if r["ready"]}
    assert {NOOP, GATE, BOOM} <= ready
