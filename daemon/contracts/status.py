"""Job status words, spelled exactly as dm-job spells them in entities."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTIVE", "TERMINAL", "JobStatus", "ScheduleState", "routing_word"]


class JobStatus(StrEnum):
    """dm-job's status set; the values are what travels on the wire and lands in entities."""

    REGISTERED = "registered"
    NOT_STARTED = "not started"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"
    COMPLETED = "completed"
    REMOVED = "removed"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


class ScheduleState(StrEnum):
    """Where a recurring job's schedule stands: firing, paused by request, past its end, or removed."""

    ACTIVE = "active"
    PAUSED = "paused"
    RETIRED = "retired"
    REMOVED = "removed"

    @property
    def is_final(self) -> bool:
        """Retired and removed schedules never fire again, whatever is asked of them."""
        return self in (ScheduleState.RETIRED, ScheduleState.REMOVED)


#: A job in one of these states is over: the watcher lets go of it and nothing changes it again.
TERMINAL = frozenset({JobStatus.FAILED, JobStatus.COMPLETED, JobStatus.REMOVED})
#: A job in one of these states is watched, and re-attached after a daemon restart.
ACTIVE = frozenset({JobStatus.STARTING, JobStatus.RUNNING, JobStatus.UNKNOWN})


def routing_word(status: JobStatus) -> str:
    """The status as one routing-key word: AMQP topic words cannot hold spaces."""
    return status.value.replace(" ", "-")
