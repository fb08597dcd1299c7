"""How the CLI prints answers, jobs, events and log lines: text for people, JSON for programs.

JSON output is one document for a one-shot command and one compact object per line (JSON Lines)
for a command that streams (``events``, ``submit --wait``, ``logs --follow``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from daemon.contracts import Answer, CloudEvent, JobView, RunnerView, ScheduleView

__all__ = [
    "describe_event",
    "describe_schedule",
    "emit_json",
    "history",
    "job_row",
    "new_lines",
    "print_answer",
    "runner_lines",
]


def emit_json(value: Any, *, stream: bool = False) -> None:
    """One JSON document (indented), or one JSON Lines record when the command streams."""
    print(json.dumps(value, indent=None if stream else 2, default=str), flush=True)


def print_answer(answer: Answer, as_json: bool, *, stream: bool = False) -> int:
    """An answer as the user asked for it; its exit code (0 ok, 1 an error answer)."""
    if as_json:
        emit_json(answer.model_dump(mode="json", by_alias=True, exclude_none=True), stream=stream)
        return 0 if answer.ok else 1
    if answer.ok:
        status = answer.status.value if answer.status else "-"
        print(f"{answer.uid or '-'}  {status}  {answer.message}")
        for warning in answer.warnings or ():
            print(f"  warning: {warning}")
        job = answer.job
        if job is not None:
            if job.percentage is not None:
                print(f"  progress: {job.percentage:g}%")
            if job.message and job.message != answer.message:
                print(f"  {job.message}")
            for line in job.logs[-10:]:
                print(f"  | {line}")
        return 0
    assert answer.error is not None
    print(f"error ({answer.error.code.value}): {answer.error.message}", file=sys.stderr)
    if answer.job is not None:  # e.g. the result of a failed job: why it failed, and its last lines
        job = answer.job
        print(
            f"  job {job.uid} is {job.status.value}" + (f": {job.message}" if job.message else ""),
            file=sys.stderr,
        )
        for line in job.logs[-20:]:
            print(f"  | {line}", file=sys.stderr)
    return 1


def _at(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment is not None else "-"


def history(job: JobView) -> list[str]:
    """A job's story so far, from its view: created, started, where it is now."""
    lines = [f"{_at(job.created)}  {job.uid}  created ({job.runner_type})"]
    if job.started is not None:
        lines.append(f"{_at(job.started)}  {job.uid}  started")
    note = f"  {job.message}" if job.message else ""
    pct = f" {job.percentage:g}%" if job.percentage is not None and not job.status.is_terminal else ""
    lines.append(
        f"{_at(job.ended) if job.ended else 'now'.ljust(19)}  {job.uid}  {job.status.value}{pct}{note}"
    )
    return lines


def describe_event(event: CloudEvent) -> str:
    data = event.data
    if event.type.endswith(".progress"):
        pct = f" {data.percentage:g}%" if data.percentage is not None else ""
        note = f"  {data.message}" if data.message else ""
        return f"{event.time:%H:%M:%S}  {data.uid}  progress{pct}{note}"
    was = f" (was {data.previous_status.value})" if data.previous_status else ""
    note = f"  {data.message}" if data.message else ""
    return f"{event.time:%H:%M:%S}  {data.uid}  {data.status.value}{was}{note}"


def describe_schedule(view: ScheduleView) -> str:
    nxt = f"next {view.next_fire:%Y-%m-%d %H:%M:%S %Z}" if view.next_fire else "no next fire"
    label = f"  {view.label}" if view.label else ""
    runs = f", {len(view.runs)} run(s), last {view.runs[-1].uid}" if view.runs else ""
    return f"{view.uid}  {view.state}  '{view.cron}' ({view.time_zone})  {nxt}{runs}{label}"


def job_row(job: JobView) -> str:
    label = f"  {job.label}" if job.label else ""
    return f"{job.uid}  {job.status.value:<10} {_at(job.created)}  {job.runner_type}{label}"


def runner_lines(runners: Sequence[RunnerView], skipped: Sequence[str]) -> list[str]:
    lines: list[str] = []
    for view in runners:
        state = "ready" if view.ready else f"off: {view.reason}"
        lines.append(f"{view.type}\n  from {view.origin}\n  {state}")
    lines.extend(f"(not loaded) handler folder {entry}" for entry in skipped)
    return lines


def new_lines(seen: Sequence[str], now: Sequence[str]) -> list[str]:
    """The lines of ``now`` (a job's kept tail of log lines) that ``seen`` (an earlier tail) lacks.

    A job keeps only its last lines, so the two tails are matched by their longest overlap (the end of
    ``seen`` equal to the start of ``now``) rather than by position.
    """
    for k in range(min(len(seen), len(now)), 0, -1):
        if list(seen[-k:]) == list(now[:k]):
            return list(now[k:])
    return list(now)
