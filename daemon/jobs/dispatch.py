"""From a raw delivery to an answer: size check, JSON, command model, then the job service.

Bad input is answered with a clear error, logged once and dead-lettered; it never raises out of here.
A failure of our own (a bug, the store unavailable) is retried through a requeue until the queue's
delivery limit, and answered as ``internal`` on the last attempt.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from daemon.bus.message import Delivery, Reply, Verdict
from daemon.clock import Clock, SystemClock
from daemon.contracts import (
    COMMAND_MODELS,
    Answer,
    BadCommand,
    Command,
    ErrorCode,
    ErrorInfo,
    JobdError,
    ListCommand,
    Log,
    LogsCommand,
    NoResult,
    ProgressCommand,
    ReplicaListCommand,
    RunnerListCommand,
    ScheduleListCommand,
    ScheduleState,
    StartCommand,
    Trace,
    UidCommand,
    UnknownJob,
    current_trace,
    describe_validation_error,
)
from daemon.jobs.control import JobService
from daemon.jobs.intake import Intake
from daemon.jobs.queries import job_logs, list_jobs, replica_list, runner_list
from daemon.jobs.service import Jobs
from daemon.jobs.views import job_answer, job_view
from daemon.scheduling.commands import ScheduleCommands
from daemon.scheduling.fire import fire_message_id
from daemon.scheduling.recurring import schedule_view
from daemon.store.records import ScheduleRecord, StoreUnavailable

__all__ = ["MAX_DEPTH", "Dispatcher", "Meter", "parse_body", "start_key"]


def _error_answer(exc: JobdError, uid: str | None = None) -> bytes:
    answer = Answer(
        ok=False, uid=uid, message=exc.message, error=ErrorInfo(code=exc.code, message=exc.message)
    )
    return answer.model_dump_json(by_alias=True).encode()


#: JSON nested deeper than this is refused: no job entity needs it, and deep nesting costs recursion.
MAX_DEPTH = 64


def parse_body(body: bytes) -> Any:
    """A command body as JSON, or ``bad_json``/``invalid`` for anything wrong with the content itself.

    Beyond what ``json.loads`` refuses: nesting past :data:`MAX_DEPTH`, integers past Python's digit
    limit, and strings holding a lone surrogate (``"\\ud800"``: valid JSON, not Unicode, and no store
    or answer could hold it). All are the message's own fault, answered at its first delivery.
    """
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadCommand(f"the body is not JSON: {exc}", code=ErrorCode.BAD_JSON) from None
    except RecursionError:
        raise BadCommand(f"the body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise BadCommand(f"the body is not usable JSON: {exc}", code=ErrorCode.BAD_JSON) from None
    _check_content(payload)
    return payload


def _check_content(payload: Any) -> None:
    """Refuse nesting past :data:`MAX_DEPTH` and strings that are not valid Unicode; no recursion."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise BadCommand(f"the body nests deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_text(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadCommand(
            "the body holds a string with a lone surrogate (such as \\ud800): not valid Unicode",
            code=ErrorCode.BAD_JSON,
        ) from None


def start_key(message_id: str) -> str:
    """The idempotency key of a start command: its message id, in the ``start`` namespace."""
    return f"start:{message_id}"


class Meter(Protocol):
    """What the dispatcher counts (:class:`daemon.metrics.Metrics`)."""

    def command(self, kind: str, outcome: str) -> None: ...

    def fired(self, late_seconds: float) -> None: ...


class Dispatcher:
    def __init__(
        self,
        jobs: Jobs,
        intake: Intake,
        control: JobService,
        schedules: ScheduleCommands,
        *,
        log: Log,
        max_body_bytes: int,
        delivery_limit: int,
        metrics: Meter | None = None,
        replica_id: str | None = None,
        heartbeat_seconds: float = 5.0,
        clock: Clock | None = None,
        store_wait_max: float = 2.0,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        #: The longest pause between two tries of a command while the store is away.
        self.store_wait_max = store_wait_max
        self._store_away = False
        self.metrics = metrics
        self.replica_id = replica_id
        self.heartbeat_seconds = heartbeat_seconds
        self.jobs = jobs
        self.intake = intake
        self.control = control
        self.schedules = schedules
        self.log = log
        self.max_body_bytes = max_body_bytes
        self.delivery_limit = delivery_limit
        self._handlers = self._table()

    @property
    def commands(self) -> frozenset[str]:
        """The command names this dispatcher handles."""
        return frozenset(self._handlers)

    async def __call__(self, delivery: Delivery) -> tuple[Verdict, Reply | None]:
        """Handle one delivery in its own trace context: a child of the command's ``traceparent``.

        The answer carries the context current when the handler returns: a start that created a job
        made the job's trace current, so its answer names the trace its events and environment carry.
        """
        reset = current_trace.set(delivery.trace.child() if delivery.trace is not None else None)
        kind = delivery.kind or delivery.routing_key or ""
        try:
            verdict, body, outcome = await self._handle(kind, delivery)
            if self.metrics is not None:
                self.metrics.command(kind if kind in self._handlers else "unknown", outcome)
            return verdict, (Reply(body, current_trace.get()) if body is not None else None)
        finally:
            current_trace.reset(reset)

    async def _handle(self, kind: str, delivery: Delivery) -> tuple[Verdict, bytes | None, str]:
        """The verdict, the answer, and the outcome the metrics count (``ok`` or the error code)."""
        with structlog.contextvars.bound_contextvars(command=kind, message_id=delivery.message_id):
            uid: str | None = None
            try:
                command = self._parse(kind, delivery)
                uid = getattr(command, "uid", None)
                if uid is not None:
                    structlog.contextvars.bind_contextvars(uid=uid)
                answer = await self._run_when_stored(kind, command, delivery)
                return Verdict.ACK, answer, "ok"
            except JobdError as exc:
                if exc.bad_input:
                    self.log.warning("command refused", code=exc.code.value, reason=exc.message)
                    return Verdict.DEAD_LETTER, _error_answer(exc, uid), exc.code.value
                self.log.info("command failed", code=exc.code.value, reason=exc.message)
                return Verdict.ACK, _error_answer(exc, uid), exc.code.value
            except Exception as exc:
                last = delivery.delivery_count + 1 >= self.delivery_limit
                self.log.error(
                    "command crashed", error=repr(exc), attempt=delivery.delivery_count + 1, final=last
                )
                if not last:
                    return Verdict.RETRY, None, "retry"
                failure = JobdError(f"internal error: {type(exc).__name__}", code=ErrorCode.INTERNAL)
                return Verdict.DEAD_LETTER, _error_answer(failure), ErrorCode.INTERNAL.value

    async def _run_when_stored(self, kind: str, command: Command, delivery: Delivery) -> bytes:
        """Run the command; while the store is away, wait for it and run it again.

        Redelivering instead would spend the command's delivery limit in a blink and dead-letter it.
        The delivery stays unsettled meanwhile, so a daemon stopped while waiting leaves it to the
        broker to deliver again. Said once per outage, not once per waiting command.
        """
        pause = 0.05
        while True:
            try:
                answer = await self._run(kind, command, delivery)
            except StoreUnavailable as exc:
                if not self._store_away:
                    self._store_away = True
                    self.log.warning("the store is away; commands wait for it", error=str(exc))
                await self.clock.sleep(pause)
                pause = min(pause * 2, self.store_wait_max)
                continue
            if self._store_away:
                self._store_away = False
                self.log.info("the store is back; waiting commands run")
            return answer

    def _parse(self, kind: str, delivery: Delivery) -> Command:
        if len(delivery.body) > self.max_body_bytes:
            raise BadCommand(
                f"the body is {len(delivery.body)} bytes; the limit is {self.max_body_bytes}",
                code=ErrorCode.TOO_LARGE,
            )
        model = COMMAND_MODELS.get(kind)
        if model is None:
            known = ", ".join(COMMAND_MODELS)
            raise BadCommand(f"unknown command {kind!r} (known: {known})", code=ErrorCode.UNKNOWN_COMMAND)
        payload = parse_body(delivery.body)
        if not isinstance(payload, dict):
            raise BadCommand(f"the body must be a JSON object, not {type(payload).__name__}")
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            raise BadCommand(f"{kind}: {describe_validation_error(exc)}") from None
        except (ValueError, TypeError, RecursionError) as exc:  # a validator's own failure: still the input's
            raise BadCommand(f"{kind}: {exc}") from None

    async def _run(self, kind: str, command: Command, delivery: Delivery) -> bytes:
        handler = self._handlers[kind]  # COMMAND_MODELS and the table name the same commands
        if isinstance(command, UidCommand):
            with structlog.contextvars.bound_contextvars(uid=command.uid):
                return await handler(command, delivery)
        return await handler(command, delivery)

    def _table(self) -> dict[str, Callable[[Any, Delivery], Awaitable[bytes]]]:
        """The command table: one handler per command name, each answering with the answer's bytes."""
        return {
            "job.start": self._start,
            "job.stop": self._stop,
            "job.status": self._status,
            "job.result": self._result,
            "job.progress": self._progress,
            "job.list": self._list,
            "job.logs": self._logs,
            "job.rerun": self._rerun,
            "schedule.list": self._list_schedules,
            "schedule.show": self._show_schedule,
            "schedule.pause": self._pause_schedule,
            "schedule.resume": self._resume_schedule,
            "schedule.trigger": self._trigger_schedule,
            "runner.list": self._runners,
            "replica.list": self._replicas,
        }

    async def _start(self, command: StartCommand, delivery: Delivery) -> bytes:
        key = start_key(delivery.message_id) if delivery.message_id else None
        uid, scheduled = command.schedule, command.scheduled_for
        if (
            key is not None
            and uid is not None
            and scheduled is not None
            and delivery.message_id == fire_message_id(uid, scheduled)  # a scheduled fire, not a trigger
        ):
            refused = await self.schedules.admit(uid, scheduled, key)
            if refused is not None:
                return refused
        # A start without a trace begins one: the job's answer, events and HTTP calls all carry it.
        trace = current_trace.get() or Trace.new()
        current_trace.set(trace)
        # The launch (or the first fire) follows from the commit itself (the store's on_insert),
        # so a handler cancelled after the commit, by a dropped connection say, loses nothing.
        accepted = await self.intake.accept(command, key=key, user_id=delivery.user_id, trace=trace)
        if accepted.schedule is not None:
            self.log.info("schedule registered", uid=accepted.schedule.uid, cron=accepted.schedule.cron)
        elif accepted.record is not None:
            self.log.debug("job accepted", uid=accepted.record.uid, runner_type=accepted.record.runner_type)
            if scheduled is not None and self.metrics is not None:  # a fire's run, counted once
                self.metrics.fired((accepted.record.created - scheduled).total_seconds())
        return accepted.answer

    async def _stop(self, command: UidCommand, delivery: Delivery) -> bytes:
        record, stopped = await self.control.stop_job(command.uid)
        if stopped:
            self.log.info("job stopped", uid=record.uid)
        message = "stopped" if stopped else f"nothing to stop: the job is {record.status.value}"
        return self._dump(job_answer(record, message))

    async def _status(self, command: UidCommand, delivery: Delivery) -> bytes:
        return self._dump(job_answer(await self.jobs.get(command.uid), "status"))

    async def _result(self, command: UidCommand, delivery: Delivery) -> bytes:
        try:
            return self._dump(await self.jobs.result(command.uid))
        except NoResult as exc:  # answered with the job's view: its message and logs say why
            record = await self.jobs.get(command.uid)
            error = ErrorInfo(code=exc.code, message=exc.message)
            view = job_view(record)
            answer = Answer(
                ok=False, uid=record.uid, status=record.status, message=exc.message, error=error, job=view
            )
            self.log.info("command failed", code=exc.code.value, reason=exc.message)
            return self._dump(answer)

    async def _list(self, command: ListCommand, delivery: Delivery) -> bytes:
        return self._dump(await list_jobs(self.jobs.store, command))

    async def _logs(self, command: LogsCommand, delivery: Delivery) -> bytes:
        return self._dump(await job_logs(self.jobs.store, command))

    async def _rerun(self, command: UidCommand, delivery: Delivery) -> bytes:
        key = f"rerun:{delivery.message_id}" if delivery.message_id else None
        trace = current_trace.get() or Trace.new()
        current_trace.set(trace)
        accepted = await self.intake.rerun(command.uid, key=key, user_id=delivery.user_id, trace=trace)
        if accepted.record is not None:
            self.log.info("job rerun", uid=accepted.record.uid, rerun_of=command.uid)
        return accepted.answer

    async def _runners(self, command: RunnerListCommand, delivery: Delivery) -> bytes:
        return self._dump(runner_list(self.jobs.registry))

    async def _replicas(self, command: ReplicaListCommand, delivery: Delivery) -> bytes:
        now = self.jobs.clock.now()
        answer = await replica_list(
            self.jobs.store, now=now, every=self.heartbeat_seconds, me=self.replica_id
        )
        return self._dump(answer)

    async def _progress(self, command: ProgressCommand, delivery: Delivery) -> bytes:
        record = await self.jobs.progress(command)
        return self._dump(job_answer(record, "progress recorded"))

    async def _list_schedules(self, command: ScheduleListCommand, delivery: Delivery) -> bytes:
        views = [schedule_view(s) for s in await self.jobs.store.list_schedules()]
        return self._dump(Answer(ok=True, message=f"{len(views)} schedule(s)", schedules=views))

    async def _schedule_of(self, uid: str) -> ScheduleRecord:
        record = await self.jobs.store.get_schedule(uid)
        if record is None:
            raise UnknownJob(f"no schedule for uid {uid!r} (start a RecurringJob to make one)")
        return record

    async def _show_schedule(self, command: UidCommand, delivery: Delivery) -> bytes:
        return self._schedule_answer(await self._schedule_of(command.uid), "schedule")

    async def _pause_schedule(self, command: UidCommand, delivery: Delivery) -> bytes:
        return await self._set_schedule(command.uid, ScheduleState.PAUSED)

    async def _resume_schedule(self, command: UidCommand, delivery: Delivery) -> bytes:
        return await self._set_schedule(command.uid, ScheduleState.ACTIVE)

    async def _set_schedule(self, uid: str, state: ScheduleState) -> bytes:
        record = await self._schedule_of(uid)
        record = await self.schedules.set_state(uid, state) or record
        return self._schedule_answer(record, f"the schedule is {record.state}")

    async def _trigger_schedule(self, command: UidCommand, delivery: Delivery) -> bytes:
        uid = command.uid
        record = await self._schedule_of(uid)
        if record.state.is_final:
            raise BadCommand(f"the schedule is {record.state}; it cannot fire")
        ran = await self.schedules.trigger(uid, delivery.message_id or uuid.uuid4().hex)
        message = "fired now" if ran else "skipped: the previous run is still active (overlap: forbid)"
        return self._schedule_answer(await self.jobs.store.get_schedule(uid) or record, message)

    def _schedule_answer(self, record: ScheduleRecord, message: str) -> bytes:
        view = schedule_view(record)
        return self._dump(Answer(ok=True, uid=record.uid, message=message, schedule=view))

    @staticmethod
    def _dump(answer: Answer) -> bytes:
        return answer.model_dump_json(by_alias=True).encode()
