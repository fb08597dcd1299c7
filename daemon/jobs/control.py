"""Starting and stopping jobs from inside the daemon: ``job.stop``'s handling, and runners' JobControl.

One place for what a stop means (a recurring job's schedule is removed first, then its runner is
stopped), shared by the dispatcher and by runners that start and stop jobs themselves (dm-job's
``register_job``/``remove_job``). A start goes through :meth:`Intake.accept` like a ``job.start`` by DMSS
address, so it is durable, evented and launched from its commit like any other.
"""

from __future__ import annotations

from daemon.contracts import Answer, JobStatus, Registered, ScheduleState, StartCommand
from daemon.jobs.intake import Intake
from daemon.jobs.service import Jobs
from daemon.jobs.supervisor import Supervisor
from daemon.scheduling.commands import ScheduleCommands
from daemon.scheduling.recurring import RECURRING_HANDLER
from daemon.store.records import JobRecord

__all__ = ["JobService"]


class JobService:
    """Stop (and, for runners, start) jobs; satisfies the runner contract's ``JobControl``.

    Runners are created before the job service exists, so it is bound once the daemon has built it.
    """

    def __init__(self) -> None:
        self._parts: tuple[Jobs, Intake, Supervisor, ScheduleCommands] | None = None

    def bind(self, jobs: Jobs, intake: Intake, supervisor: Supervisor, schedules: ScheduleCommands) -> None:
        self._parts = (jobs, intake, supervisor, schedules)

    def _bound(self) -> tuple[Jobs, Intake, Supervisor, ScheduleCommands]:
        if self._parts is None:
            raise RuntimeError("the daemon is not running yet: no job can be started or stopped")
        return self._parts

    async def stop_job(self, uid: str) -> tuple[JobRecord, bool]:
        """Stop ``uid``; its record afterwards, and whether it was stopped (False: it was over)."""
        jobs, _, supervisor, schedules = self._bound()
        record = await jobs.get(uid)
        if record.runner_type == RECURRING_HANDLER and not record.status.is_terminal:
            await schedules.set_state(uid, ScheduleState.REMOVED)
        return await supervisor.stop(uid)

    async def start(self, address: str, token: str | None) -> Registered:
        _, intake, _, _ = self._bound()
        command = StartCommand.model_validate({"address": address, "token": token})
        accepted = await intake.accept(command, key=None, user_id=None)
        answer = Answer.model_validate_json(accepted.answer)
        assert answer.uid is not None and answer.status is not None  # an accepted start has both
        return Registered(uid=answer.uid, status=answer.status, message=answer.message or "")

    async def stop(self, uid: str) -> tuple[JobStatus, str]:
        record, stopped = await self.stop_job(uid)
        return record.status, "stopped" if stopped else f"nothing to stop: the job is {record.status.value}"
