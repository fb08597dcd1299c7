"""Runs one dm-job handler folder unchanged, behind the daemon's async runner contract.

dm-job handlers are blocking: ``start()`` may do the whole job (shell style) or only deploy it (container
style), and ``progress()``/``result()``/``remove()`` talk to whatever runs it. Every call runs in a thread
owned by this runner. ``start`` returns at once; the thread running ``JobHandler.start()`` records in
``<state_dir>/<uid>.json`` how far it got, because that thread dies with the daemon and a new daemon must
tell "start() returned: ask progress()" from "start() was cut off".

Python cannot kill a thread: a ``start()`` that hangs keeps its worker busy until it returns, ``stop``
only asks the handler's ``remove()`` to clean up, and ``close`` does not wait for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from daemon.contracts import (
    Handle,
    JobResult,
    JobSpec,
    JobStatus,
    Log,
    NotFinished,
    RunnerContext,
    RunnerError,
    RunnerStatus,
    Started,
)

from .loader import HandlerFolder
from .shim import LogSink, Shim
from .state import Phase, StartRecord, StateFiles, StateUnreadable

__all__ = ["DmJobAdapter", "Redactor", "data_source_of", "log_sink"]

T = TypeVar("T")

#: Environment names whose values are secrets, and are cut out of every message and log line.
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "CONNECTION_STRING", "API_KEY")
#: Shorter values are not treated as secrets (they would mangle ordinary text); the job token always is.
_MIN_SECRET_LENGTH = 6


class Redactor:
    """Replaces secrets (the job token, secret-named variables) in text meant for messages and logs."""

    def __init__(self, secrets: Sequence[str]) -> None:
        # Longest first, so a secret containing another is cut out whole.
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    @classmethod
    def for_env(cls, env: Mapping[str, str], *extra: str | None) -> Redactor:
        found = [
            value
            for name, value in env.items()
            if len(value) >= _MIN_SECRET_LENGTH and any(word in name.upper() for word in _SECRET_WORDS)
        ]
        return cls([*found, *(e for e in extra if e)])

    def joined(self, other: Redactor) -> Redactor:
        return Redactor([*self._secrets, *other._secrets])

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def log_sink(log: Log, handler: str, redact: Redactor, uid: str | None = None) -> LogSink:
    """Where the compat ``logger`` of handler code writes: the daemon's log, tagged, secrets removed."""

    def sink(level: int, message: str, exc_text: str | None) -> None:
        method = (
            log.debug
            if level < logging.INFO
            else log.info
            if level < logging.WARNING
            else log.warning
            if level < logging.ERROR
            else log.error
        )
        fields: dict[str, Any] = {"handler": handler}
        if uid is not None:
            fields["uid"] = uid
        if exc_text:
            fields["exception"] = redact(exc_text)
        method(redact(message), **fields)

    return sink


def data_source_of(address: str | None) -> str:
    """``dmss://DS/$id`` (or dm-job's older ``DS/$id``) -> ``DS``; no address -> ``""``."""
    if not address:
        return ""
    rest = address.split("://", 1)[1] if "://" in address else address
    return rest.split("/", 1)[0]


def _plain(value: Any) -> Any:
    """Mappings and sequences as the plain dicts and lists dm-job handlers were given (a deep copy)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _status_of(value: Any) -> JobStatus | None:
    """A handler's status (dm-job's enum, its value, or its name in any case) as the daemon's status."""
    raw = getattr(value, "value", value)
    if not isinstance(raw, str):
        return None
    try:
        return JobStatus(raw.strip().lower().replace("_", " "))
    except ValueError:
        return None


def _lines(value: Any, redact: Redactor) -> tuple[str, ...]:
    """Handler logs (a string, a list of strings, or None) as log lines."""
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(redact(line) for item in items for line in str(item).splitlines())


def _percentage(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _text(value: Any) -> str:
    """What ``start()``/``remove()`` returned, as text (dm-job allowed a list of lines too)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    return str(value)


@dataclass(frozen=True)
class _Outcome:
    """How ``JobHandler.start()`` ended."""

    ok: bool
    message: str


@dataclass(eq=False)
class _Run:
    """What this process knows about one job."""

    uid: str
    job: Any
    redact: Redactor
    sink: LogSink
    record: StartRecord
    handler: Any = None
    future: concurrent.futures.Future[_Outcome] | None = None
    #: Known without a thread: start() ended in an earlier daemon (from the record).
    outcome: _Outcome | None = None
    began: threading.Event = field(default_factory=threading.Event)
    #: The record is updated from the event loop and the start() thread.
    lock: threading.Lock = field(default_factory=threading.Lock)
    removed: bool = False
    progressed: bool = False


class DmJobAdapter:
    """The runner for one handler folder; the daemon keeps one per folder ``discover`` found."""

    def __init__(
        self,
        handler: HandlerFolder,
        ctx: RunnerContext,
        shim: Shim,
        *,
        start_workers: int = 32,
        call_workers: int = 8,
        call_timeout: float = 300.0,
    ) -> None:
        self._folder = handler
        self._ctx = ctx
        self._shim = shim
        self._name = handler.folder.name
        self._state = StateFiles(ctx.state_dir)
        self._redact = Redactor.for_env(ctx.env)
        self._call_timeout = call_timeout
        self._runs: dict[str, _Run] = {}
        self._start_lock = asyncio.Lock()
        self._closed = False
        # Two pools: a long start() must never hold up progress()/result()/remove() of other jobs.
        self._start_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=start_workers, thread_name_prefix=f"dmjob-start-{self._name}"
        )
        self._call_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=call_workers, thread_name_prefix=f"dmjob-call-{self._name}"
        )

    @property
    def types(self) -> tuple[str, ...]:
        return self._folder.types

    @property
    def origin(self) -> str:
        return self._folder.origin

    def __repr__(self) -> str:
        return f"<DmJobAdapter {self._folder.folder}>"

    # -- the runner contract -------------------------------------------------------------------------

    async def start(self, job: JobSpec) -> Started:
        """Hand ``JobHandler.start()`` to a worker thread and return at once; never start a uid twice."""
        self._check_open()
        handle = self._handle(job)
        async with self._start_lock:
            run = self._runs.get(job.uid)
            if run is not None:
                return Started(handle, self._repeat_status(run))
            record = await self._read_record(job)
            if record is not None and not (record.phase is Phase.QUEUED and not record.removed):
                # start() was called by an earlier daemon (a queued one never was: that may start now).
                return Started(handle, self._record_status(record, repeat=True))
            run = self._new_run(job, JobStatus.STARTING, Phase.QUEUED)
            self._runs[job.uid] = run
            try:
                await asyncio.to_thread(self._update_record, run, strict=True)
                run.future = self._start_pool.submit(self._run_start, run)
            except BaseException:
                del self._runs[job.uid]
                raise
        self._ctx.log.info("dm-job handler start() submitted", handler=self._name, uid=job.uid)
        return Started(handle, RunnerStatus(JobStatus.RUNNING, "JobHandler.start() submitted"))

    async def poll(self, job: JobSpec, handle: Handle) -> RunnerStatus:
        """RUNNING while ``start()`` runs; then the handler's ``progress()``, or COMPLETED without one."""
        self._check_open()
        run = self._runs.get(job.uid)
        if run is None:
            record = await self._read_record(job)
            if record is None:
                return RunnerStatus(JobStatus.FAILED, f"not started: {self._no_record(job)}")
            if record.removed or record.phase is not Phase.RETURNED:
                return self._record_status(record, repeat=False)
            run = self._restored_run(job, record)
            self._runs.setdefault(job.uid, run)
            run = self._runs[job.uid]
        status = await self._poll_run(run)
        if status.status.is_terminal and (run.future is None or run.future.done()):
            # Settled: forget the handler object; result()/stop() rebuild it from the record if asked.
            self._runs.pop(job.uid, None)
        return status

    async def result(self, job: JobSpec, handle: Handle) -> JobResult:
        """The handler's ``result()``: text when its bytes are UTF-8, else bytes."""
        self._check_open()
        run = await self._settled_run(job, "result")
        try:
            value = await self._call(run, lambda: self._handler_of(run).result(), "JobHandler.result()")
        except NotImplementedError:
            raise RunnerError(
                f"the dm-job handler {self._name!r} has no result: its JobHandler does not implement result()"
            ) from None
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError(self._failure("result", exc, run)) from None
        data = value[1] if isinstance(value, tuple | list) and len(value) == 2 else value
        if data is None:
            data = b""
        if isinstance(data, str):
            return JobResult(data=data, media_type="text/plain")
        if isinstance(data, bytes | bytearray | memoryview):
            raw = bytes(data)
            try:
                return JobResult(data=raw.decode("utf-8"), media_type="text/plain")
            except UnicodeDecodeError:
                return JobResult(data=raw, media_type="application/octet-stream")
        raise RunnerError(
            f"the dm-job handler {self._name!r} returned {type(data).__name__} from result(); "
            "expected (message, bytes)"
        )

    async def stop(self, job: JobSpec, handle: Handle) -> None:
        """Ask the handler's ``remove()`` to clean up (none is fine: nothing to remove).

        A ``start()`` still running in its thread cannot be killed: it finishes on its own, and the job
        stays removed whatever it returns.
        """
        self._check_open()
        run = self._runs.get(job.uid)
        if run is None:
            record = await self._read_record(job)
            if record is None:
                self._ctx.log.info(
                    "dm-job job to stop was never started here", handler=self._name, uid=job.uid
                )
                return
            run = self._restored_run(job, record)
        if run.future is not None and run.future.cancel():
            # Still queued: start() was never called, so there is nothing to remove.
            await self._mark_removed(run)
            self._ctx.log.info("dm-job job removed before start() ran", handler=self._name, uid=job.uid)
            return
        try:
            answer = await self._call(run, lambda: self._handler_of(run).remove(), "JobHandler.remove()")
        except NotImplementedError:
            self._ctx.log.info(
                "dm-job handler has no remove(): nothing to remove", handler=self._name, uid=job.uid
            )
        except RunnerError:
            raise
        except Exception as exc:
            raise RunnerError(self._failure("remove", exc, run)) from None
        else:
            message = answer[-1] if isinstance(answer, tuple | list) and answer else answer
            self._ctx.log.info(
                "dm-job handler remove() returned",
                handler=self._name,
                uid=job.uid,
                message=run.redact(_text(message)),
            )
        await self._mark_removed(run)
        if run.future is not None and not run.future.done():
            self._ctx.log.warning(
                "JobHandler.start() is still running in its thread and cannot be killed; it will end on its "
                "own and the job stays removed",
                handler=self._name,
                uid=job.uid,
            )

    async def close(self) -> None:
        """Stop taking work. Does not wait for running ``start()`` threads: they cannot be interrupted."""
        if self._closed:
            return
        self._closed = True
        still = [uid for uid, run in self._runs.items() if run.future is not None and not run.future.done()]
        if still:
            self._ctx.log.warning(
                "closing while JobHandler.start() still runs; after a restart these jobs read as failed",
                handler=self._name,
                uids=still,
            )
        self._start_pool.shutdown(wait=False, cancel_futures=True)
        self._call_pool.shutdown(wait=False, cancel_futures=True)

    # -- start() in its thread ------------------------------------------------------------------------

    def _run_start(self, run: _Run) -> _Outcome:
        """Worker thread: create the JobHandler, call start(), record how it ended."""
        with self._shim.bound(self._ctx.env, run.sink):
            run.began.set()
            self._update_record(run, phase=Phase.RUNNING)
            try:
                run.handler = self._folder.handler_class(run.job, data_source_of(run.job.dmss_id))
            except (Exception, SystemExit) as exc:
                outcome = _Outcome(False, self._failure("__init__", exc, run))
            else:
                try:
                    outcome = _Outcome(True, run.redact(_text(run.handler.start())))
                except (Exception, SystemExit) as exc:
                    outcome = _Outcome(False, self._failure("start", exc, run))
            if outcome.ok:
                run.job.append_log(outcome.message)
                self._ctx.log.info(
                    "dm-job handler start() returned",
                    handler=self._name,
                    uid=run.uid,
                    message=outcome.message,
                )
            else:
                run.job.status = self._shim.status_enum("failed")
            phase = Phase.RETURNED if outcome.ok else Phase.FAILED
            self._update_record(run, phase=phase, message=outcome.message)
            return outcome

    def _update_record(
        self,
        run: _Run,
        *,
        phase: Phase | None = None,
        message: str | None = None,
        removed: bool | None = None,
        strict: bool = False,
    ) -> None:
        """Change and rewrite the run's record; ``strict`` raises when it cannot be written."""
        with run.lock:
            run.record = run.record.but(phase=phase, message=message, removed=removed)
            try:
                self._state.write(run.record)
            except OSError as exc:
                if strict:
                    raise RunnerError(
                        f"cannot write the dm-job adapter record {self._state.path(run.uid)}: "
                        f"{exc.strerror or exc}"
                    ) from None
                self._ctx.log.error(
                    "cannot write the dm-job adapter record; a restart will not find this job",
                    handler=self._name,
                    uid=run.uid,
                    error=str(exc),
                )

    # -- polling ---------------------------------------------------------------------------------------

    async def _poll_run(self, run: _Run) -> RunnerStatus:
        if run.removed:
            return self._removed_status(run)
        outcome = run.outcome
        if outcome is None:
            if run.future is None or not run.future.done():
                message = (
                    "JobHandler.start() is running"
                    if run.began.is_set()
                    else "JobHandler.start() is waiting for a free worker thread"
                )
                return RunnerStatus(
                    JobStatus.RUNNING,
                    message,
                    _lines(run.job.log, run.redact),
                    _percentage(run.job.percentage),
                )
            if run.future.cancelled():
                return RunnerStatus(JobStatus.FAILED, "JobHandler.start() was cancelled before it ran")
            try:
                outcome = run.future.result()
            except BaseException as exc:  # the worker catches Exception; anything else ends up here
                outcome = _Outcome(False, self._failure("start", exc, run))
        if not outcome.ok:
            return RunnerStatus(JobStatus.FAILED, outcome.message, _lines(run.job.log, run.redact))
        return await self._progress(run, outcome.message)

    async def _progress(self, run: _Run, started: str) -> RunnerStatus:
        """After start() returned: ask progress() if the handler has one (dm-job's status endpoint did)."""
        own = getattr(self._folder.handler_class, "progress", None)
        if own is not None and own is not getattr(self._shim.interface_class, "progress", None):
            if not run.progressed:
                # Tentatively done: a progress() that echoes self.job.status then reads as completed.
                run.job.status = self._shim.status_enum("completed")
            try:
                value = await self._call(
                    run, lambda: self._handler_of(run).progress(), "JobHandler.progress()"
                )
            except NotImplementedError:
                value = None
            except RunnerError:
                raise
            except Exception as exc:
                raise RunnerError(self._failure("progress", exc, run)) from None
            if value is not None:
                status = self._read_progress(value, started, run)
                run.progressed = True
                run.job.status = self._shim.status_enum(status.status.value)
                run.job.log = list(status.logs) if status.logs else run.job.log
                if status.percentage is not None:
                    run.job.percentage = status.percentage
                return status
        return RunnerStatus(
            JobStatus.COMPLETED,
            started or "JobHandler.start() returned",
            _lines(run.job.log, run.redact),
            _percentage(run.job.percentage),
        )

    def _read_progress(self, value: Any, started: str, run: _Run) -> RunnerStatus:
        """``(status, logs)`` or ``(status, logs, percentage)`` -> a RunnerStatus."""
        if isinstance(value, tuple | list) and len(value) in (2, 3):
            raw_status, raw_logs = value[0], value[1]
            raw_percentage = value[2] if len(value) == 3 else None
        elif isinstance(value, tuple | list) and len(value) == 1:
            raw_status, raw_logs, raw_percentage = value[0], None, None
        else:
            raw_status, raw_logs, raw_percentage = value, None, None
        status = _status_of(raw_status)
        if status is None:
            self._ctx.log.warning(
                "dm-job handler progress() returned an unknown status; read as unknown",
                handler=self._name,
                uid=run.uid,
                status=run.redact(repr(raw_status)[:200]),
            )
            status = JobStatus.UNKNOWN
        logs = _lines(raw_logs, run.redact)
        percentage = _percentage(raw_percentage)
        if status is JobStatus.UNKNOWN:
            # start() returned and the handler cannot tell more: that is how dm-job's simple jobs ended.
            status = JobStatus.COMPLETED
        elif status is JobStatus.NOT_STARTED:
            # start() returned but the deployed work has not begun: still on its way.
            status = JobStatus.STARTING
        if status is JobStatus.FAILED:
            message = "the job handler reports failed" + (f": {logs[-1]}" if logs else "")
        elif status is JobStatus.REMOVED:
            message = "the job handler reports the job removed"
        else:
            message = started or "JobHandler.start() returned"
        return RunnerStatus(status, message, logs, percentage)

    # -- runs, records and statuses -------------------------------------------------------------------

    def _handle(self, job: JobSpec) -> Handle:
        return {
            "adapter": "dmjob",
            "handler": str(self._folder.folder),
            "uid": job.uid,
            "state_file": f"{job.uid}.json",
        }

    def _new_run(self, spec: JobSpec, status: JobStatus, phase: Phase) -> _Run:
        try:
            uid = UUID(spec.uid)
        except ValueError:
            raise RunnerError(f"job uid {spec.uid!r} is not a UUID; dm-job handlers need one") from None
        try:
            self._state.path(spec.uid)
        except ValueError as exc:
            raise RunnerError(str(exc)) from None
        entity = _plain(spec.entity)
        entity = entity if isinstance(entity, dict) else {}

        def text(key: str) -> str | None:
            value = entity.get(key)
            return value if isinstance(value, str) else None

        def mapping(key: str) -> dict[str, Any] | None:
            value = entity.get(key)
            return value if isinstance(value, dict) else None

        job = self._shim.job_class(
            type=str(entity.get("type", "")),
            dmss_id=spec.address or "",
            job_uid=uid,
            status=self._shim.status_enum(status.value),
            name=text("name"),
            label=text("label"),
            triggeredBy=text("triggeredBy"),
            application_input=entity.get("applicationInput"),
            started=datetime.now().replace(microsecond=0),
            outputTarget=text("outputTarget"),
            result=mapping("result"),
            runner=mapping("runner") or {},
            referenceTarget=text("referenceTarget"),
            schedule=mapping("schedule"),
            log=[],
            percentage=None,
            token=spec.token,
            state=None,
            entity=entity,
            env=dict(spec.env),
        )
        redact = self._redact.joined(Redactor.for_env(spec.env, spec.token))
        record = StartRecord(uid=spec.uid, handler=str(self._folder.folder), phase=phase).but()
        return _Run(uid=spec.uid, job=job, redact=redact, sink=self._sink(spec.uid, redact), record=record)

    def _restored_run(self, spec: JobSpec, record: StartRecord) -> _Run:
        """A run from an earlier daemon's record; its handler is created again when first needed."""
        run = self._new_run(spec, JobStatus.COMPLETED, record.phase)
        run.record = record
        run.removed = record.removed
        if record.phase is Phase.RETURNED:
            run.outcome = _Outcome(True, record.message or "")
        elif record.phase is Phase.FAILED:
            run.outcome = _Outcome(False, record.message or "JobHandler.start() failed")
        return run

    def _handler_of(self, run: _Run) -> Any:
        """Worker thread: the run's JobHandler, created on first use (dm-job created one per request)."""
        if run.handler is None:
            try:
                run.handler = self._folder.handler_class(run.job, data_source_of(run.job.dmss_id))
            except (Exception, SystemExit) as exc:
                raise RunnerError(self._failure("__init__", exc, run)) from None
        return run.handler

    async def _settled_run(self, job: JobSpec, method: str) -> _Run:
        run = self._runs.get(job.uid)
        if run is not None:
            if run.future is not None and not run.future.done():
                raise NotFinished(f"JobHandler.start() is still running; {method}() has to wait for it")
            return run
        record = await self._read_record(job)
        if record is None:
            raise RunnerError(f"not started: {self._no_record(job)}")
        if record.phase in (Phase.QUEUED, Phase.RUNNING):
            raise RunnerError(
                "JobHandler.start() never finished (the daemon stopped while it ran), "
                f"so there is no {method}()"
            )
        return self._restored_run(job, record)

    async def _read_record(self, job: JobSpec) -> StartRecord | None:
        try:
            return await asyncio.to_thread(self._state.read, job.uid)
        except ValueError as exc:
            raise RunnerError(str(exc)) from None
        except StateUnreadable as exc:
            raise RunnerError(str(exc)) from None

    async def _mark_removed(self, run: _Run) -> None:
        run.removed = True
        await asyncio.to_thread(self._update_record, run, removed=True)

    def _removed_status(self, run: _Run) -> RunnerStatus:
        if run.future is not None and not run.future.done() and not run.future.cancelled():
            return RunnerStatus(
                JobStatus.REMOVED,
                "removed; JobHandler.start() is still running in its thread and cannot be killed",
            )
        return RunnerStatus(JobStatus.REMOVED, "removed")

    def _repeat_status(self, run: _Run) -> RunnerStatus:
        """What a second ``start`` for a uid this process started answers (without calling start())."""
        if run.removed:
            return self._removed_status(run)
        outcome = run.outcome
        future = run.future
        if outcome is None and future is not None and future.done():
            if future.cancelled():
                return RunnerStatus(JobStatus.FAILED, "JobHandler.start() was cancelled before it ran")
            error = future.exception()
            if error is not None:
                return RunnerStatus(JobStatus.FAILED, self._failure("start", error, run))
            outcome = future.result()
        if outcome is None:
            return RunnerStatus(JobStatus.RUNNING, "already started: JobHandler.start() is running")
        if not outcome.ok:
            return RunnerStatus(JobStatus.FAILED, outcome.message)
        return RunnerStatus(
            JobStatus.RUNNING, f"already started: JobHandler.start() returned {outcome.message!r}"
        )

    def _record_status(self, record: StartRecord, *, repeat: bool) -> RunnerStatus:
        """The status an earlier daemon's record implies, when this process has no thread for the job."""
        if record.removed:
            return RunnerStatus(JobStatus.REMOVED, "removed")
        match record.phase:
            case Phase.RETURNED:
                return RunnerStatus(
                    JobStatus.RUNNING,
                    f"already started: JobHandler.start() returned {record.message or ''!r}",
                )
            case Phase.FAILED:
                return RunnerStatus(JobStatus.FAILED, record.message or "JobHandler.start() failed")
            case Phase.RUNNING:
                return RunnerStatus(
                    JobStatus.FAILED,
                    "JobHandler.start() was still running when the previous daemon stopped; its thread died "
                    "with that daemon, so the job's outcome is unknown",
                )
            case _:
                return RunnerStatus(
                    JobStatus.FAILED,
                    "the previous daemon stopped before JobHandler.start() began"
                    + ("" if repeat else "; start the job again"),
                )

    # -- threads, logs and errors ----------------------------------------------------------------------

    async def _call(self, run: _Run, fn: Callable[[], T], what: str) -> T:
        """Run a blocking handler call in the call pool, bound to the daemon's environment and log."""
        self._check_open()
        future = self._call_pool.submit(self._bound, run.sink, fn)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self._call_timeout)
        except TimeoutError:
            raise RunnerError(
                f"{what} of the dm-job handler {self._name!r} did not return within {self._call_timeout:g} s "
                "(it keeps running in its thread)"
            ) from None

    def _bound(self, sink: LogSink, fn: Callable[[], T]) -> T:
        with self._shim.bound(self._ctx.env, sink):
            return fn()

    def _sink(self, uid: str, redact: Redactor) -> LogSink:
        return log_sink(self._ctx.log, self._name, redact, uid)

    def _failure(self, method: str, exc: BaseException, run: _Run) -> str:
        """A handler exception as a clear message (dm-job's wording for missing attributes), logged once."""
        cls = f"The jobHandler '{self._folder.handler_class.__name__}' of handler folder {self._name!r}"
        if isinstance(exc, KeyError):
            message = f"{cls} tried to access a missing attribute: {exc}"
        elif isinstance(exc, NotImplementedError):
            message = f"{cls} is missing some implementations: {exc}"
        elif isinstance(exc, SystemExit):
            message = f"{cls} called sys.exit({exc.code!r}) in {method}()"
        else:
            text = str(exc)
            what = "could not be created" if method == "__init__" else f"failed in {method}()"
            message = f"{cls} {what}: {type(exc).__name__}" + (f": {text}" if text else "")
        message = run.redact(message)
        self._ctx.log.error(
            f"dm-job handler {method}() raised",
            handler=self._name,
            uid=run.uid,
            error=message,
            traceback=run.redact("".join(traceback.format_exception(exc))),
        )
        return message

    def _no_record(self, job: JobSpec) -> str:
        return f"the dm-job adapter for {self._name!r} has no record of job {job.uid}"

    def _check_open(self) -> None:
        if self._closed:
            raise RunnerError(f"the dm-job adapter for {self._name!r} is closed")
