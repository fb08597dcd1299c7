"""The JobStore protocol: what the daemon keeps durably, independent of the storage technology.

One job row per run, the runner handle that finds it again after a restart, idempotency keys with the
answer they produced, and the event outbox. Changes to a job and the events they cause are written in
one transaction (:meth:`JobStore.modify`), which is what makes the outbox trustworthy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from daemon.contracts import Handle, JobStatus, Outgoing, ScheduleState, Trace

__all__ = [
    "Change",
    "JobQuery",
    "JobRecord",
    "JobStore",
    "OutboxRow",
    "PendingWriteback",
    "ScheduleChange",
    "ScheduleRecord",
    "StoreTooNew",
    "StoreUnavailable",
    "WritebackRow",
]


@dataclass
class JobRecord:
    uid: str
    status: JobStatus
    runner_type: str
    entity: dict[str, Any]
    created: datetime
    label: str | None = None
    triggered_by: str | None = None
    address: str | None = None
    token: str | None = field(default=None, repr=False)
    handle: Handle | None = None
    message: str | None = None
    logs: list[str] = field(default_factory=list)
    percentage: float | None = None
    started: datetime | None = None
    ended: datetime | None = None
    time_limit: float | None = None
    #: The recurring job this run belongs to, when the scheduler started it.
    schedule: str | None = None
    #: Why DMSS is out of date for this job (a write-back it refused, or that was given up on).
    writeback: str | None = None
    #: The job this one reruns (``job.rerun``).
    rerun_of: str | None = None
    #: The job's trace context: its answer, events, environment and HTTP calls carry it.
    trace: Trace | None = None
    #: The replica that watches it while it is active, the host it runs on, and until when its lease
    #: holds unless renewed (after which another replica that can reach the job adopts it).
    owner: str | None = None
    owner_host: str | None = None
    lease_until: datetime | None = None


@dataclass(frozen=True)
class StoreCounts:
    """What the store holds, counted: the metrics' jobs, schedules and backlogs."""

    #: ``(runner_type, status) -> jobs``
    jobs: dict[tuple[str, str], int]
    #: ``state -> schedules``
    schedules: dict[str, int]
    #: Events not yet published, and DMSS write-backs not yet made.
    outbox: int
    writeback: int


@dataclass(frozen=True)
class ReplicaRecord:
    """A daemon using the store, as its heartbeats say: who, where, since when, last seen when."""

    id: str
    host: str
    pid: int
    version: str
    started: datetime
    last_seen: datetime


@dataclass
class ScheduleRecord:
    """A recurring job's schedule: its definition and its durable state."""

    uid: str
    cron: str
    time_zone: str
    #: The job entity to run at each fire (the recurring job's ``applicationInput``).
    job: dict[str, Any]
    #: The overlap, catch-up and jitter policy as the entity spelled it (camelCase keys).
    policy: dict[str, Any]
    created: datetime
    label: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    state: ScheduleState = ScheduleState.ACTIVE
    next_fire: datetime | None = None
    #: The newest scheduled time already handled (fired, skipped or missed).
    last_fire: datetime | None = None
    #: Recent runs, newest last: ``{"uid", "scheduledFor", "started"}``.
    runs: list[dict[str, Any]] = field(default_factory=list)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ScheduleChange:
    record: ScheduleRecord
    events: Sequence[Outgoing] = ()


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """An event waiting in the outbox: its row id (to delete it once confirmed) and the message."""

    id: int
    message: Outgoing


@dataclass(frozen=True)
class PendingWriteback:
    """A DMSS write to make for a job, queued with the change that causes it.

    One row per (job, kind): a newer one replaces the older, so a DMSS outage leaves the latest state
    to write, not a backlog. ``kind`` is ``entity`` (``body`` is the partial update for the job entity
    at ``address``) or ``result`` (store the job's result at ``address``, its ``outputTarget``).
    """

    uid: str
    kind: str
    address: str
    body: dict[str, Any]


@dataclass(frozen=True)
class WritebackRow:
    """A queued write-back as the relay reads it, with the job's token (read from the job's row)."""

    uid: str
    kind: str
    address: str
    body: dict[str, Any]
    #: Bumped whenever a newer write replaces this one: done/retry touch only the version they read.
    version: int
    attempts: int
    token: str | None = field(default=None, repr=False)
    #: The job's trace context, for the write's ``traceparent`` header.
    trace: Trace | None = None


@dataclass(frozen=True)
class JobQuery:
    """Which jobs ``list_jobs`` returns: every field that is set must match; newest first."""

    statuses: Sequence[JobStatus] = ()
    runner_type: str | None = None
    label: str | None = None
    triggered_by: str | None = None
    schedule: str | None = None
    created_since: datetime | None = None
    created_until: datetime | None = None
    #: Only jobs that sort after this one (``(created, uid)`` of the last job of the previous page).
    after: tuple[datetime, str] | None = None


class StoreTooNew(Exception):
    """The store was written by a newer dm-jobd, whose schema this version does not know."""


class StoreUnavailable(Exception):
    """The store's server cannot be reached (stopped, restarting, the network away).

    Nothing of the call was kept: what asked may ask again once the server is back. A command waits
    for it rather than being redelivered until its delivery limit dead-letters it.
    """


@dataclass(frozen=True)
class Change:
    """What a :meth:`JobStore.modify` callback decided: the new record and the events it causes."""

    record: JobRecord
    events: Sequence[Outgoing] = ()
    writebacks: Sequence[PendingWriteback] = ()


class JobStore(Protocol):
    #: Called after each commit, so the outbox relay wakes without polling.
    on_commit: Callable[[], None] | None
    #: Called after the commit that inserted a job (never for a duplicate), with the job and, for a
    #: recurring job, its schedule. What follows an accepted job (its launch, its first fire) hangs on
    #: the commit, not on the caller still waiting for it: a cancelled handler leaves nothing undone.
    on_insert: Callable[[JobRecord, ScheduleRecord | None], None] | None

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def insert(
        self,
        record: JobRecord,
        *,
        key: str | None,
        answer: bytes,
        events: Sequence[Outgoing],
        schedule: ScheduleRecord | None = None,
        scheduled_for: datetime | None = None,
        run_limit: int = 100,
        writebacks: Sequence[PendingWriteback] = (),
    ) -> bytes | None:
        """Insert a new job with its idempotency key, events and DMSS write-backs.

        With ``schedule``, the job is a recurring job and its schedule is inserted with it. A job
        whose ``record.schedule`` names a schedule is one of its runs and is appended to that
        schedule's run history (the newest ``run_limit`` kept), in the same transaction.

        Returns ``None`` when inserted, or the answer stored under ``key`` when the key was already
        used (then nothing is written): the command is a duplicate.
        """
        ...

    async def answer_for(self, key: str) -> bytes | None: ...

    async def remember(self, key: str, uid: str, answer: bytes, events: Sequence[Outgoing]) -> bytes | None:
        """Store ``answer`` under ``key`` with ``events``, for a command refused without a job.

        Returns the answer already stored under ``key`` (then nothing is written), else ``None``.
        """
        ...

    async def get(self, uid: str) -> JobRecord | None: ...

    async def modify(self, uid: str, decide: Callable[[JobRecord], Change | None]) -> JobRecord | None:
        """Read a job, let ``decide`` compute its change, and write it with its events, atomically.

        ``decide`` runs inside the transaction and must be quick and pure; returning ``None`` writes
        nothing. What a change writes is the job's progress (status, handle, message, logs, percentage,
        started, ended); the entity, token and other fields set at insert are fixed.
        Returns the record as it is afterwards, or ``None`` for an unknown uid.
        """
        ...

    async def active(self) -> list[JobRecord]:
        """Jobs a runner may still be running: the ones to re-attach after a restart."""
        ...

    async def list_jobs(self, query: JobQuery, limit: int) -> list[JobRecord]:
        """Up to ``limit`` jobs matching ``query``, newest first (by created time, then uid)."""
        ...

    async def ended_before(self, cutoff: datetime, limit: int) -> list[JobRecord]:
        """Up to ``limit`` ended jobs that ended before ``cutoff``, oldest first: what retention prunes."""
        ...

    async def forget(self, uids: Sequence[str]) -> int:
        """Delete these ended jobs with their idempotency keys and queued write-backs, in one transaction.

        A job that is not ended is kept whatever is asked. Returns how many jobs were deleted.
        """
        ...

    async def schema_version(self) -> int: ...

    async def counts(self) -> StoreCounts:
        """Jobs by runner type and status, schedules by state, and the relays' backlogs."""
        ...

    async def adopt(
        self,
        owner: str,
        host: str,
        *,
        until: datetime,
        now: datetime,
        anywhere: Sequence[str],
        on_host: Sequence[str],
        mine: bool = False,
    ) -> list[JobRecord]:
        """Take the active jobs nobody holds (no owner, or a lease run out before ``now``; with ``mine``
        also those ``owner`` holds, from before a restart) that this replica can reach: of the runner
        types in ``anywhere``, or in ``on_host`` when they ran on ``host`` (or nobody knows where).
        Returns them, now leased to ``owner`` until ``until``."""
        ...

    async def renew(self, owner: str, until: datetime) -> int:
        """Extend every lease ``owner`` holds, in one statement; how many jobs it holds."""
        ...

    async def release(self, owner: str, now: datetime) -> int:
        """Give up every lease ``owner`` holds (a replica that stops): the others adopt at once.

        The lease ends ``now`` rather than vanishing, so a job left unadopted shows since when.
        """
        ...

    async def stranded(self, before: datetime, *, flagged: str, limit: int) -> list[JobRecord]:
        """Active jobs nobody has held since ``before`` (no replica that runs adopted them), oldest
        first, except those whose message already starts with ``flagged`` (they were reported)."""
        ...

    async def store_id(self) -> str:
        """The store's own identity, made with it: daemons on one store see one id."""
        ...

    async def heartbeat(self, replica: ReplicaRecord) -> None:
        """Record that ``replica`` is alive now (``last_seen``), adding it the first time."""
        ...

    async def replicas(self) -> list[ReplicaRecord]:
        """Every replica that has a heartbeat on record, oldest first."""
        ...

    async def leave(self, replica_id: str) -> None:
        """A replica stopped: its row goes."""
        ...

    async def outbox(self, limit: int) -> list[OutboxRow]: ...

    async def claim_outbox(
        self, owner: str, *, now: datetime, until: datetime, limit: int
    ) -> list[OutboxRow]:
        """Take up to ``limit`` events to publish, oldest first: unclaimed ones, ones whose claim ran out
        (their relay died mid-batch), and ``owner``'s own; no other live relay takes them meanwhile."""
        ...

    async def schedules(self) -> list[tuple[str, str, datetime | None]]:
        """Every schedule's uid, state and next fire: what the scheduler's heap is built from."""
        ...

    async def get_schedule(self, uid: str) -> ScheduleRecord | None: ...

    async def list_schedules(self) -> list[ScheduleRecord]: ...

    async def get_schedules(self, uids: Sequence[str]) -> dict[str, ScheduleRecord]:
        """Several schedules by uid in one read (the unknown ones left out)."""
        ...

    async def modify_schedule(
        self, uid: str, decide: Callable[[ScheduleRecord], ScheduleChange | None]
    ) -> ScheduleRecord | None:
        """Like :meth:`modify`, for a schedule: read, decide, write with events, atomically."""
        ...

    async def modify_schedules(
        self, decisions: Mapping[str, Callable[[ScheduleRecord], ScheduleChange | None]]
    ) -> dict[str, ScheduleRecord]:
        """:meth:`modify_schedule` for many schedules in one transaction (a burst of fires).

        Returns each schedule as it now is; a uid with no schedule is left out.
        """
        ...

    async def claim_schedules(
        self, owner: str, uids: Sequence[str], *, horizon: datetime, now: datetime, until: datetime
    ) -> dict[str, ScheduleRecord]:
        """Claim the next fire of each of ``uids`` that is due by ``horizon``, until ``until``.

        Of several replicas scheduling the same schedules, the one whose claim is granted publishes
        the fire; the others wait for its record (which ends the claim) or for the claim to run out
        (its claimant died). Granted only to an active schedule whose recorded next fire is due by
        ``horizon``, with no live claim of another owner. Returns the claimed schedules as they now are.
        """
        ...

    async def release_schedules(self, owner: str) -> int:
        """A stopping replica lets its fire claims go, so the others need not wait for them to run out."""
        ...

    async def outbox_done(self, ids: Sequence[int]) -> None: ...

    async def writebacks(self, now: float, limit: int) -> list[WritebackRow]:
        """Queued DMSS write-backs due at ``now`` (epoch seconds), oldest first."""
        ...

    async def next_writeback(self) -> float | None:
        """When the earliest queued write-back is due (epoch seconds), or None when none is queued."""
        ...

    async def writeback_done(self, row: WritebackRow) -> None:
        """Delete ``row`` unless a newer write replaced it meanwhile."""
        ...

    async def writeback_retry(self, row: WritebackRow, not_before: float) -> None:
        """Count a failed attempt and wait until ``not_before`` (unless a newer write replaced it)."""
        ...
