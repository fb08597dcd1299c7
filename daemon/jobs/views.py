"""What answers say about a job: its view, an answer around it, a result answer. Pure functions."""

from __future__ import annotations

import base64

from daemon.contracts import Answer, Base64Result, JobResult, JobView, ResultAnswer
from daemon.store.records import JobRecord

__all__ = ["job_answer", "job_view", "result_answer"]


def job_view(record: JobRecord) -> JobView:
    """A job as answers and listings show it: never its token or handle."""
    return JobView(
        uid=record.uid,
        status=record.status,
        label=record.label,
        runner_type=record.runner_type,
        triggered_by=record.triggered_by,
        created=record.created,
        started=record.started,
        ended=record.ended,
        percentage=record.percentage,
        message=record.message,
        logs=record.logs,
        schedule=record.schedule,
        writeback=record.writeback,
        rerun_of=record.rerun_of,
        traceparent=record.trace.traceparent if record.trace else None,
    )


def job_answer(record: JobRecord, message: str) -> Answer:
    return Answer(ok=True, uid=record.uid, status=record.status, message=message, job=job_view(record))


def result_answer(record: JobRecord, outcome: JobResult) -> ResultAnswer:
    """A completed job's result: text as it is, bytes that are not UTF-8 as base64."""
    data: str | Base64Result
    if isinstance(outcome.data, str):
        data = outcome.data
    else:
        try:
            data = outcome.data.decode("utf-8")
        except UnicodeDecodeError:
            data = Base64Result(base64=base64.b64encode(outcome.data).decode("ascii"))
    base = job_answer(record, "result")
    return ResultAnswer(**base.model_dump(), result=data, media_type=outcome.media_type)
