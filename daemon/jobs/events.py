"""Building events: CloudEvents 1.0 bodies and their routing keys, ready for the outbox."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from daemon.contracts import (
    CloudEvent,
    EventData,
    JobStatus,
    Outgoing,
    ScheduleCloudEvent,
    ScheduleEventData,
    routing_word,
)
from daemon.store.records import JobRecord, ScheduleRecord

__all__ = ["EventFactory"]


class EventFactory:
    """Turns a job's change into the event that announces it. Carries no token or secret."""

    def __init__(self, *, source: str, log_lines: int) -> None:
        self.source = source
        self.log_lines = log_lines

    def status_changed(self, record: JobRecord, previous: JobStatus | None) -> Outgoing:
        """``job.<status>.<uid>``: one per status change."""
        key = f"job.{routing_word(record.status)}.{record.uid}"
        return self._event(record, previous, f"dm-job.job.{routing_word(record.status)}", key)

    def progressed(self, record: JobRecord) -> Outgoing:
        """``progress.<uid>``: percentage or log lines changed, the status did not."""
        return self._event(record, record.status, "dm-job.job.progress", f"progress.{record.uid}")

    def _event(self, record: JobRecord, previous: JobStatus | None, type_: str, key: str) -> Outgoing:
        event_id = str(uuid.uuid4())
        event = CloudEvent(
            id=event_id,
            source=self.source,
            type=type_,
            subject=record.uid,
            time=datetime.now(UTC),
            traceparent=record.trace.traceparent if record.trace else None,
            tracestate=record.trace.tracestate if record.trace else None,
            data=EventData(
                uid=record.uid,
                status=record.status,
                previous_status=previous,
                runner_type=record.runner_type,
                label=record.label,
                percentage=record.percentage,
                message=record.message,
                logs=record.logs[-self.log_lines :] if self.log_lines else [],
                triggered_by=record.triggered_by,
                schedule=record.schedule,
                writeback=record.writeback,
            ),
        )
        body = event.model_dump_json(by_alias=True).encode()
        headers = tuple(record.trace.headers().items()) if record.trace else ()
        return Outgoing(key, event_id, body, headers)

    def schedule(
        self,
        record: ScheduleRecord,
        event: str,
        *,
        scheduled_for: datetime | None = None,
        missed: int | None = None,
        message: str | None = None,
    ) -> Outgoing:
        """``schedule.<event>.<uid>``: registered, fired, skipped, missed, paused, resumed, retired..."""
        event_id = str(uuid.uuid4())
        body = ScheduleCloudEvent(
            id=event_id,
            source=self.source,
            type=f"dm-job.schedule.{event}",
            subject=record.uid,
            time=datetime.now(UTC),
            data=ScheduleEventData(
                uid=record.uid,
                event=event,
                label=record.label,
                scheduled_for=scheduled_for,
                missed=missed,
                next_fire=record.next_fire,
                message=message,
            ),
        )
        return Outgoing(
            f"schedule.{event}.{record.uid}", event_id, body.model_dump_json(by_alias=True).encode()
        )
