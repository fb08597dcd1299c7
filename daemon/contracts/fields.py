"""Spotting misspelt fields in a job entity: ``lable``, ``scirpt``, ``enviromentVariables``.

Unknown fields are kept (DM blueprints add their own), so a typo would otherwise pass silently and
the runner fail the job late, or not at all (a label that never shows). A field one edit away from
a known one (an insertion, a deletion, a substitution, or two neighbours swapped) that is not itself
known is named in the start's answer as a warning; the job still starts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

__all__ = ["DAEMON_RUNNER_FIELDS", "JOB_FIELDS", "field_warnings", "misspellings", "one_edit_apart"]

#: The fields of ``dmss://WorkflowDS/Blueprints/Job`` (and ``RecurringJob``) the daemon and DM know.
JOB_FIELDS = frozenset(
    {
        "_id",
        "uid",
        "name",
        "description",
        "type",
        "label",
        "status",
        "triggeredBy",
        "outputTarget",
        "applicationInput",
        "runner",
        "started",
        "ended",
        "result",
        "referenceTarget",
        "schedule",
        "timeLimitSeconds",
    }
)
#: ``runner`` fields the daemon itself reads, whatever the runner.
DAEMON_RUNNER_FIELDS = frozenset({"type", "environmentVariables"})
#: Names this short are left alone: one edit turns too many of them into one another.
_SHORTEST = 4


def one_edit_apart(a: str, b: str) -> bool:
    """Whether ``a`` becomes ``b`` by one insertion, deletion, substitution or swap of neighbours."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diffs) == 1:
            return True
        i = diffs[0]
        return len(diffs) == 2 and diffs[1] == i + 1 and a[i] == b[i + 1] and a[i + 1] == b[i]
    short, long = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long[i]:
        i += 1
    return short[i:] == long[i + 1 :]


def misspellings(given: Iterable[str], known: Collection[str]) -> list[tuple[str, str]]:
    """``(given, known)`` for each given name that is not known but one edit from a known one."""
    found = []
    for name in given:
        if name in known or len(name) < _SHORTEST:
            continue
        near = sorted(k for k in known if len(k) >= _SHORTEST and one_edit_apart(name, k))
        if near:
            found.append((name, near[0]))
    return found


def field_warnings(
    entity: Mapping[str, Any], runner_fields: Collection[str] | None, *, where: str = "job"
) -> list[str]:
    """The "did you mean" warnings for a job entity and its ``runner`` (with the runner's own fields)."""
    warnings = [
        f"{where}.{name}: unknown field; did you mean {known!r}? (kept as it is)"
        for name, known in misspellings(entity, JOB_FIELDS)
    ]
    runner = entity.get("runner")
    if isinstance(runner, Mapping):
        known_runner = DAEMON_RUNNER_FIELDS | frozenset(runner_fields or ())
        warnings += [
            f"{where}.runner.{name}: unknown field; did you mean {known!r}? (kept as it is)"
            for name, known in misspellings(runner, known_runner)
        ]
    return warnings
