"""The handler side of the adapter: JobHandler objects, ``start()`` and its record, failures as messages.

Most of this runs in worker threads (see :mod:`.threads`); the record of a run is written from the event
loop and from its ``start()`` thread alike, under the run's lock.
"""

from __future__ import annotations

import traceback
from typing import Any

from daemon.contracts import Log, RunnerError

from .loader import HandlerFolder
from .runs import Outcome, Run, data_source_of
from .shim import Shim
from .state import Phase, StateFiles
from .statuses import text_of

__all__ = ["HandlerCalls"]


class HandlerCalls:
    """What one handler folder's runner does with its JobHandler class and the records of its jobs."""

    def __init__(self, folder: HandlerFolder, shim: Shim, state: StateFiles, log: Log) -> None:
        self._folder = folder
        self._shim = shim
        self._state = state
        self._log = log
        self._name = folder.folder.name

    def run_start(self, run: Run) -> Outcome:
        """Worker thread: create the JobHandler, call start(), record how it ended."""
        run.began.set()
        self.update_record(run, phase=Phase.RUNNING)
        try:
            run.handler = self._new_handler(run)
        except (Exception, SystemExit) as exc:
            outcome = Outcome(False, self.failure("__init__", exc, run))
        else:
            try:
                outcome = Outcome(True, run.redact(text_of(run.handler.start())))
            except (Exception, SystemExit) as exc:
                outcome = Outcome(False, self.failure("start", exc, run))
        if outcome.ok:
            run.job.append_log(outcome.message)
            self._log.info(
                "dm-job handler start() returned",
                handler=self._name,
                uid=run.uid,
                message=outcome.message,
            )
        else:
            run.job.status = self._shim.status_enum("failed")
        phase = Phase.RETURNED if outcome.ok else Phase.FAILED
        self.update_record(run, phase=phase, message=outcome.message)
        return outcome

    def update_record(
        self,
        run: Run,
        *,
        phase: Phase | None = None,
        message: str | None = None,
        removed: bool | None = None,
        strict: bool = False,
    ) -> None:
        """Change and rewrite the run's record (with the job's status and state); ``strict`` raises when
        it cannot be written."""
        status = getattr(run.job.status, "value", None)
        state = run.job.state if isinstance(run.job.state, dict) else None
        with run.lock:
            run.record = run.record.but(
                phase=phase, message=message, removed=removed, status=status, state=state
            )
            try:
                self._state.write(run.record)
            except OSError as exc:
                if strict:
                    raise RunnerError(
                        f"cannot write the dm-job adapter record {self._state.path(run.uid)}: "
                        f"{exc.strerror or exc}"
                    ) from None
                self._log.error(
                    "cannot write the dm-job adapter record; a restart will not find this job",
                    handler=self._name,
                    uid=run.uid,
                    error=str(exc),
                )

    def handler_of(self, run: Run) -> Any:
        """Worker thread: the run's JobHandler, created on first use (dm-job created one per request)."""
        if run.handler is None:
            try:
                run.handler = self._new_handler(run)
            except (Exception, SystemExit) as exc:
                raise RunnerError(self.failure("__init__", exc, run)) from None
        return run.handler

    def failure(self, method: str, exc: BaseException, run: Run) -> str:
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
        self._log.error(
            f"dm-job handler {method}() raised",
            handler=self._name,
            uid=run.uid,
            error=message,
            traceback=run.redact("".join(traceback.format_exception(exc))),
        )
        return message

    def _new_handler(self, run: Run) -> Any:
        """Worker thread: a JobHandler for the run, given what dm-job gave it."""
        return self._folder.handler_class(run.job, data_source_of(run.job.dmss_id))
