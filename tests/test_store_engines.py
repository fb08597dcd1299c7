"""The store's contract, held by both engines: SQLite (the embedded default) and PostgreSQL (shared by
replicas), each the real thing (a file; the session's private PostgreSQL server)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from helpers import NOOP
from pg import PrivatePostgres

from daemon.contracts import JobStatus, Outgoing
from daemon.store.postgres import PostgresStore, safe_url
from daemon.store.records import (
    Change,
    JobQuery,
    JobRecord,
    PendingWriteback,
    ScheduleChange,
    ScheduleRecord,
    StoreTooNew,
    StoreUnavailable,
)
from daemon.store.sql import SCHEMA_VERSION, SqlStore
from daemon.store.sqlite import SqliteStore

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def where(request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PrivatePostgres) -> str:
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "jobd.sqlite3")
    return await postgres_server.new_database()


def make_store(where: str) -> SqlStore:
    return PostgresStore(where) if where.startswith("postgresql://") else SqliteStore(Path(where))


@pytest.fixture
async def store(where: str) -> AsyncIterator[SqlStore]:
    s = make_store(where)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def record(status: JobStatus = JobStatus.STARTING, *, created: datetime = NOW, **kw: object) -> JobRecord:
    base = JobRecord(
        uid=str(uuid.uuid4()), status=status, runner_type=NOOP, entity={"type": "x"}, created=created
    )
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def event(uid: str, n: int) -> Outgoing:
    return Outgoing(f"progress.{uid}", f"{uid}-{n}", b'{"n": %d}' % n, (("traceparent", "00-x"),))


async def test_insert_is_idempotent_by_key_and_launches_once(store: SqlStore) -> None:
    launched: list[str] = []
    store.on_insert = lambda r, s: launched.append(r.uid)
    first = record(label="a job", logs=["one"], percentage=12.5, time_limit=3.5)
    assert (
        await store.insert(first, key="start:1", answer=b'{"ok": true}', events=[event(first.uid, 1)]) is None
    )
    again = record()
    assert await store.insert(again, key="start:1", answer=b"{}", events=()) == b'{"ok": true}'
    assert launched == [first.uid]
    assert await store.get(again.uid) is None
    got = await store.get(first.uid)
    assert got == first, "every field read back as written"
    assert await store.answer_for("start:1") == b'{"ok": true}'
    [row] = await store.outbox(10)
    assert row.message == event(first.uid, 1), "the event with its headers"
    await store.outbox_done([row.id])
    assert await store.outbox(10) == []


async def test_modify_commits_the_change_and_its_events_together(store: SqlStore) -> None:
    job = record()
    await store.insert(job, key=None, answer=b"{}", events=())

    def run(current: JobRecord) -> Change:
        new = dataclasses.replace(current, status=JobStatus.RUNNING, started=NOW, logs=["x"])
        return Change(new, [event(current.uid, 2)])

    updated = await store.modify(job.uid, run)
    assert updated is not None and updated.status is JobStatus.RUNNING
    assert (await store.get(job.uid)) == updated
    assert [r.message.message_id for r in await store.outbox(10)] == [f"{job.uid}-2"]
    assert await store.modify("no-such-job", run) is None
    assert [r.uid for r in await store.active()] == [job.uid]


async def test_changes_queued_together_each_see_the_one_before(store: SqlStore) -> None:
    """A batch reads the rows it changes ahead (PostgreSQL): a second change to one job in it, or a
    change to a job the batch itself inserted, still starts from the first's result."""
    jobs = [record() for _ in range(3)]
    for job in jobs:
        await store.insert(job, key=None, answer=b"{}", events=())
    fresh = record()

    def log(line: str) -> Callable[[JobRecord], Change]:
        return lambda current: Change(dataclasses.replace(current, logs=[*current.logs, line]), [])

    results = await asyncio.gather(
        store.modify(jobs[0].uid, log("a")),
        store.modify(jobs[1].uid, log("b")),
        store.modify(jobs[0].uid, log("c")),
        store.insert(fresh, key=None, answer=b"{}", events=()),
        store.modify(fresh.uid, log("d")),
        store.modify(jobs[2].uid, log("e")),
        store.modify(jobs[0].uid, log("f")),
    )
    assert [r.logs if isinstance(r, JobRecord) else r for r in results] == [
        ["a"],
        ["b"],
        ["a", "c"],
        None,
        ["d"],
        ["e"],
        ["a", "c", "f"],
    ]
    logs = {r.uid: r.logs for r in [await store.get(j.uid) for j in [*jobs, fresh]] if r is not None}
    assert logs == {jobs[0].uid: ["a", "c", "f"], jobs[1].uid: ["b"], jobs[2].uid: ["e"], fresh.uid: ["d"]}


async def test_a_key_taken_before_is_answered_from_the_store_within_a_group_commit(store: SqlStore) -> None:
    """PostgreSQL takes a batch's keys to be new; one that was taken sends the batch write by write,
    so the repeat gets the first answer and starts nothing, and the new ones start once each."""
    first = record()
    await store.insert(first, key="k:taken", answer=b'{"first": true}', events=())
    launched: list[str] = []
    store.on_insert = lambda r, s: launched.append(r.uid)
    fresh = [record() for _ in range(3)]
    repeat = record()
    outcomes = await asyncio.gather(
        store.insert(fresh[0], key="k:0", answer=b"{}", events=[event(fresh[0].uid, 1)]),
        store.insert(repeat, key="k:taken", answer=b"{}", events=[event(repeat.uid, 1)]),
        store.insert(fresh[1], key="k:1", answer=b"{}", events=[event(fresh[1].uid, 1)]),
        store.insert(fresh[2], key=None, answer=b"{}", events=[event(fresh[2].uid, 1)]),
    )
    assert list(outcomes) == [None, b'{"first": true}', None, None]
    assert sorted(launched) == sorted(r.uid for r in fresh)
    assert await store.get(repeat.uid) is None
    ids = sorted(r.message.message_id for r in await store.outbox(10))
    assert ids == sorted(f"{r.uid}-1" for r in fresh), "the repeat's event was not kept"


async def test_a_failing_write_in_a_group_commit_fails_alone(store: SqlStore) -> None:
    """Writes queued together commit together; the one that fails (a uid taken) gets its own error,
    the others their effects and events, whichever order they came in."""
    taken = record()
    await store.insert(taken, key=None, answer=b"{}", events=())
    before = record()
    after = record()

    def run(current: JobRecord) -> Change:
        return Change(dataclasses.replace(current, status=JobStatus.RUNNING), [event(current.uid, 3)])

    outcomes = await asyncio.gather(
        store.insert(before, key="k:before", answer=b"{}", events=[event(before.uid, 1)]),
        store.insert(dataclasses.replace(taken, label="again"), key="k:again", answer=b"{}", events=()),
        store.modify(taken.uid, run),
        store.insert(after, key="k:after", answer=b"{}", events=[event(after.uid, 2)]),
        return_exceptions=True,
    )
    assert outcomes[0] is None and outcomes[3] is None, outcomes
    assert isinstance(outcomes[1], Exception), outcomes
    assert isinstance(outcomes[2], JobRecord) and outcomes[2].status is JobStatus.RUNNING, outcomes
    assert await store.answer_for("k:again") is None, "the failed write left nothing behind"
    assert await store.answer_for("k:before") == b"{}" and await store.answer_for("k:after") == b"{}"
    got = await store.get(taken.uid)
    assert got is not None and got.label is None and got.status is JobStatus.RUNNING
    ids = sorted(r.message.message_id for r in await store.outbox(10))
    assert ids == sorted([f"{before.uid}-1", f"{after.uid}-2", f"{taken.uid}-3"])


async def test_concurrent_changes_to_one_job_from_two_stores_lose_nothing(where: str) -> None:
    """Two replicas (two stores, two connections) appending to one job's log lines at once."""
    a, b = make_store(where), make_store(where)
    await asyncio.gather(a.open(), b.open())  # a fresh store migrated by both at once: once
    try:
        job = record()
        await a.insert(job, key=None, answer=b"{}", events=())

        async def append(store: SqlStore, name: str) -> None:
            for i in range(25):

                def add(current: JobRecord, line: str = f"{name}{i}") -> Change:
                    return Change(dataclasses.replace(current, logs=[*current.logs, line]))

                await store.modify(job.uid, add)

        await asyncio.gather(append(a, "a"), append(b, "b"))
        final = await a.get(job.uid)
        assert final is not None
        assert len(final.logs) == 50, final.logs
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_listing_pages_filters_and_counts(store: SqlStore) -> None:
    jobs = [record(created=NOW + timedelta(seconds=i), label=f"l{i % 2}") for i in range(5)]
    for job in jobs:
        await store.insert(job, key=None, answer=b"{}", events=())
    newest = await store.list_jobs(JobQuery(), 2)
    assert [j.uid for j in newest] == [jobs[4].uid, jobs[3].uid]
    after = (newest[-1].created, newest[-1].uid)
    assert [j.uid for j in await store.list_jobs(JobQuery(after=after), 10)] == [j.uid for j in jobs[2::-1]]
    assert {j.uid for j in await store.list_jobs(JobQuery(label="l1"), 10)} == {jobs[1].uid, jobs[3].uid}
    since = JobQuery(created_since=NOW + timedelta(seconds=3))
    assert {j.uid for j in await store.list_jobs(since, 10)} == {jobs[3].uid, jobs[4].uid}
    counts = await store.counts()
    assert counts.jobs == {(NOOP, "starting"): 5} and counts.outbox == 0 and counts.writeback == 0


async def test_write_backs_are_replaced_retried_and_done_by_version(store: SqlStore) -> None:
    job = record(token="secret")
    pending = PendingWriteback(job.uid, "entity", "dmss://DS/$1", {"status": "running"})
    await store.insert(job, key=None, answer=b"{}", events=(), writebacks=[pending])
    newer = dataclasses.replace(pending, body={"status": "completed"})
    await store.modify(job.uid, lambda c: Change(c, writebacks=[newer]))
    [row] = await store.writebacks(now=1.0, limit=10)
    assert row.body == {"status": "completed"} and row.version == 2 and row.token == "secret"
    await store.writeback_retry(row, not_before=100.0)
    assert await store.writebacks(now=1.0, limit=10) == []
    assert await store.next_writeback() == 100.0
    [again] = await store.writebacks(now=100.0, limit=10)
    assert again.attempts == 1
    await store.writeback_done(again)
    assert await store.next_writeback() is None


async def test_retention_deletes_only_what_ended_before_the_cutoff(store: SqlStore) -> None:
    old = record(JobStatus.COMPLETED, ended=NOW)
    recent = record(JobStatus.FAILED, ended=NOW + timedelta(days=40))
    active = record(JobStatus.RUNNING)
    for job in (old, recent, active):
        await store.insert(job, key=f"k-{job.uid}", answer=b"{}", events=())
    due = await store.ended_before(NOW + timedelta(days=30), 10)
    assert [j.uid for j in due] == [old.uid]
    assert await store.forget([old.uid, active.uid]) == 1, "an active job is kept whatever is asked"
    assert await store.get(old.uid) is None and await store.answer_for(f"k-{old.uid}") is None
    assert await store.get(active.uid) is not None


async def test_the_schema_version_is_recorded_and_a_newer_store_is_refused(where: str) -> None:
    store = make_store(where)
    await store.open()
    assert await store.schema_version() == SCHEMA_VERSION
    await store.close()
    if where.startswith("postgresql://"):
        with psycopg.connect(where, autocommit=True) as conn:
            conn.execute("UPDATE dm_jobd_schema SET version = version + 1")
    else:
        import sqlite3

        with sqlite3.connect(where) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreTooNew, match="newer dm-jobd"):
        await make_store(where).open()


async def test_runs_recorded_before_version_9_are_kept_by_the_migration(where: str) -> None:
    """Version 9 keeps a schedule's runs apart from its row: a store of version 8 (runs in
    ``schedules.runs``) shows them after the upgrade, and records the next beside them."""
    store = make_store(where)
    await store.open()
    parent = record(JobStatus.REGISTERED)
    schedule = ScheduleRecord(
        uid=parent.uid, cron="* * * * *", time_zone="UTC", job={"type": "x"}, policy={}, created=NOW
    )
    await store.insert(parent, key=None, answer=b"{}", events=(), schedule=schedule)
    await store.close()
    old_runs = '[{"uid":"run-1","scheduledFor":null,"started":null}]'
    downgrade = (
        "DELETE FROM schedule_runs",
        f"UPDATE schedules SET runs = '{old_runs}'",
    )
    if where.startswith("postgresql://"):
        with psycopg.connect(where, autocommit=True) as conn:
            for statement in (
                *downgrade,
                "DROP TABLE schedule_runs",
                "UPDATE dm_jobd_schema SET version = 8",
            ):
                conn.execute(statement)
    else:
        import sqlite3

        with sqlite3.connect(where) as conn:
            for statement in (*downgrade, "DROP TABLE schedule_runs", "PRAGMA user_version = 8"):
                conn.execute(statement)
    store = make_store(where)
    await store.open()
    try:
        assert await store.schema_version() == SCHEMA_VERSION
        got = await store.get_schedule(parent.uid)
        assert got is not None and [r["uid"] for r in got.runs] == ["run-1"]
        await store.insert(record(schedule=parent.uid), key=None, answer=b"{}", events=(), scheduled_for=NOW)
        got = await store.get_schedule(parent.uid)
        assert got is not None and len(got.runs) == 2 and got.runs[0]["uid"] == "run-1"
    finally:
        await store.close()


async def test_a_dropped_postgresql_connection_is_opened_again(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    try:
        job = record()
        await store.insert(job, key=None, answer=b"{}", events=())
        await asyncio.gather(*(store.get(job.uid) for _ in range(16)))  # the read pool holds several
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            dropped = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        assert len(dropped) > 2, "the writer's connection and more than one reader's"
        reads = await asyncio.gather(*(store.get(job.uid) for _ in range(16)))
        assert all(r is not None for r in reads), "each read made again on a new connection"

        def run(current: JobRecord) -> Change:
            return Change(dataclasses.replace(current, status=JobStatus.RUNNING), [])

        with pytest.raises(StoreUnavailable, match="cannot be reached"):
            await store.modify(job.uid, run)  # the write in flight when it dropped fails...
        assert await store.modify(job.uid, run) is not None  # ...and the next opens a new connection
    finally:
        await store.close()


def test_a_postgresql_url_is_shown_without_its_password() -> None:
    assert safe_url("postgresql://jobd:s3cret@db:5432/jobs") == "postgresql://jobd:***@db:5432/jobs"
    assert safe_url("postgresql://db/jobs") == "postgresql://db/jobs"


async def test_schedules_are_kept_changed_and_their_runs_recorded(store: SqlStore) -> None:
    parent = record(JobStatus.REGISTERED)
    schedule = ScheduleRecord(
        uid=parent.uid, cron="* * * * *", time_zone="UTC", job={"type": "x"}, policy={}, created=NOW,
        next_fire=NOW + timedelta(minutes=1),
    )  # fmt: skip
    await store.insert(parent, key=None, answer=b"{}", events=(), schedule=schedule)
    assert await store.get_schedule(parent.uid) == schedule
    fired = NOW + timedelta(minutes=1)

    def advance(current: ScheduleRecord) -> ScheduleChange:
        moved = dataclasses.replace(current, last_fire=fired, next_fire=fired + timedelta(minutes=1))
        return ScheduleChange(moved, [event(parent.uid, 9)])

    changed = await store.modify_schedules({parent.uid: advance, "no-such": advance})
    assert set(changed) == {parent.uid} and changed[parent.uid].last_fire == fired
    run = record(schedule=parent.uid)
    await store.insert(run, key=None, answer=b"{}", events=(), scheduled_for=fired)
    [kept] = (await store.get_schedules([parent.uid, "no-such"])).values()
    assert [r["uid"] for r in kept.runs] == [run.uid]
    assert await store.schedules() == [(parent.uid, "active", fired + timedelta(minutes=1))]
    assert [s.uid for s in await store.list_schedules()] == [parent.uid]
    assert (await store.counts()).schedules == {"active": 1}


async def test_leases_are_adopted_only_when_free_and_reachable(store: SqlStore) -> None:
    cloud, local = "test://Cloud", NOOP
    later = NOW + timedelta(seconds=30)
    held = record(runner_type=cloud, owner="a", owner_host="h1", lease_until=later)
    expired = record(runner_type=cloud, owner="b", owner_host="h2", lease_until=NOW - timedelta(seconds=1))
    elsewhere = record(runner_type=local, owner="b", owner_host="h2", lease_until=NOW - timedelta(seconds=1))
    here = record(runner_type=local, owner="b", owner_host="h1", lease_until=NOW - timedelta(seconds=1))
    free = record(runner_type=local)
    done = record(JobStatus.COMPLETED, runner_type=cloud)
    for job in (held, expired, elsewhere, here, free, done):
        await store.insert(job, key=None, answer=b"{}", events=())
    taken = await store.adopt("c", "h1", until=later, now=NOW, anywhere=[cloud], on_host=[local])
    assert {r.uid for r in taken} == {expired.uid, here.uid, free.uid}, "not held, not elsewhere, not ended"
    assert all(r.owner == "c" and r.owner_host == "h1" and r.lease_until == later for r in taken)
    assert await store.adopt("d", "h1", until=later, now=NOW, anywhere=[cloud], on_host=[local]) == []
    assert await store.renew("c", later + timedelta(seconds=30)) == 3, "one statement renews them all"
    mine = await store.adopt("c", "h1", until=later, now=NOW, anywhere=[cloud], on_host=[local], mine=True)
    assert {r.uid for r in mine} == {expired.uid, here.uid, free.uid}, (
        "a restarted replica takes its own back"
    )
    assert await store.release("c", NOW) == 3
    again = await store.adopt("d", "h1", until=later, now=NOW, anywhere=[cloud], on_host=[local])
    assert {r.uid for r in again} == {expired.uid, here.uid, free.uid}, "released: adopted at once"


async def test_outbox_rows_are_claimed_by_one_relay_until_the_claim_runs_out(where: str) -> None:
    a, b = make_store(where), make_store(where)
    await asyncio.gather(a.open(), b.open())
    try:
        job = record()
        await a.insert(job, key=None, answer=b"{}", events=[event(job.uid, n) for n in range(40)])
        later = NOW + timedelta(seconds=30)
        first, second = await asyncio.gather(
            a.claim_outbox("a", now=NOW, until=later, limit=25),
            b.claim_outbox("b", now=NOW, until=later, limit=25),
        )
        ids_a, ids_b = {r.id for r in first}, {r.id for r in second}
        assert not ids_a & ids_b and len(ids_a | ids_b) == 40, "each event taken by one relay"
        assert [r.id for r in first] == sorted(ids_a), "oldest first"
        assert await b.claim_outbox("b", now=NOW, until=later, limit=100) == second, "its own again"
        await a.outbox_done(sorted(ids_a))
        # b dies with its claims: once they run out, a publishes them again
        assert await a.claim_outbox("a", now=NOW, until=later, limit=100) == []
        again = await a.claim_outbox("a", now=later + timedelta(seconds=1), until=later, limit=100)
        assert {r.id for r in again} == ids_b
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_a_due_fire_is_claimed_by_one_replica_until_recorded_or_run_out(where: str) -> None:
    a, b = make_store(where), make_store(where)
    await asyncio.gather(a.open(), b.open())
    try:
        due = NOW + timedelta(minutes=1)
        uids: list[str] = []
        for _ in range(30):
            parent = record(JobStatus.REGISTERED)
            schedule = ScheduleRecord(
                uid=parent.uid, cron="* * * * *", time_zone="UTC", job={"type": "x"}, policy={},
                created=NOW, next_fire=due,
            )  # fmt: skip
            await a.insert(parent, key=None, answer=b"{}", events=(), schedule=schedule)
            uids.append(parent.uid)
        until = due + timedelta(seconds=10)
        early = await a.claim_schedules("a", uids, horizon=due - timedelta(seconds=1), now=due, until=until)
        assert early == {}, "a fire not yet due by the horizon is nobody's"
        won_a, won_b = await asyncio.gather(
            a.claim_schedules("a", uids, horizon=due, now=due, until=until),
            b.claim_schedules("b", uids, horizon=due, now=due, until=until),
        )
        assert not set(won_a) & set(won_b) and set(won_a) | set(won_b) == set(uids), "each fire one claim"
        assert all(r.next_fire == due for r in (*won_a.values(), *won_b.values()))
        assert await a.claim_schedules("a", list(won_b), horizon=due, now=due, until=until) == {}
        assert set(await b.claim_schedules("b", list(won_b), horizon=due, now=due, until=until)) == set(won_b)

        def fired(current: ScheduleRecord) -> ScheduleChange:
            return ScheduleChange(
                dataclasses.replace(current, last_fire=due, next_fire=due + timedelta(minutes=1))
            )

        first = uids[0]
        owner, store = ("a", a) if first in won_a else ("b", b)
        await store.modify_schedules({first: fired})
        other = "b" if owner == "a" else "a"
        assert await a.claim_schedules(other, [first], horizon=due, now=due, until=until) == {}, (
            "a recorded fire is not claimed again"
        )
        later = due + timedelta(minutes=1)
        assert set(await a.claim_schedules(other, [first], horizon=later, now=due, until=until)) == {first}, (
            "recording the fire ended its claim: the next one is anyone's at once"
        )
        # b dies holding its claims: they run out; a stopping replica lets its own go at once
        rest = [u for u in won_b if u != first]
        assert await a.claim_schedules("a", rest, horizon=due, now=due, until=until) == {}
        after = until + timedelta(seconds=1)
        assert set(await a.claim_schedules("a", rest, horizon=due, now=after, until=after)) == set(rest)
        assert await a.release_schedules("a") >= len(rest)
        assert set(await b.claim_schedules("b", rest, horizon=due, now=due, until=until)) == set(rest)
    finally:
        await asyncio.gather(a.close(), b.close())
