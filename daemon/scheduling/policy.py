"""What to fire for a schedule: its policies, the plan after a pause, and the CronJob's times.

Pure like :mod:`daemon.scheduling.cron`, whose fire times it builds on: every "now" is a parameter.
The plan is the part that must never wedge: however long the daemon was down, deciding what to fire
is bounded work.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

from daemon.scheduling.cron import TICK, CronError, CronSpec, Exhausted, aware_utc

__all__ = [
    "CatchUpMode",
    "Overlap",
    "Plan",
    "Policy",
    "parse_duration",
    "parse_timestamp",
    "plan",
]

Overlap = Literal["allow", "forbid", "replace"]
CatchUpMode = Literal["none", "latest", "all"]

_OVERLAPS: tuple[str, ...] = get_args(Overlap)
_CATCH_UPS: tuple[str, ...] = get_args(CatchUpMode)


# -- timestamps and durations ----------------------------------------------------------------------


def parse_timestamp(value: str) -> datetime:
    """A dm-job timestamp as aware UTC: ISO 8601 with offset or ``Z``, naive (read as UTC), or a date."""
    if not isinstance(value, str):
        raise CronError(f"timestamp must be a string, got {type(value).__name__}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise CronError(
            f"timestamp {value!r} is not ISO 8601 (e.g. '2023-12-21T12:10:00.000+01:00' or '2023-12-21')"
        ) from None


_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_SHORT_PART = re.compile(rf"({_NUMBER})(ms|s|m|h|d|w)", re.I)
_SHORT = re.compile(rf"(?:(?:{_NUMBER})(?:ms|s|m|h|d|w))+", re.I)
_ISO_NUMBER = r"[0-9]+(?:[.,][0-9]+)?"
_ISO = re.compile(
    rf"P(?:(?P<years>{_ISO_NUMBER})Y)?(?:(?P<months>{_ISO_NUMBER})M)?(?:(?P<weeks>{_ISO_NUMBER})W)?"
    rf"(?:(?P<days>{_ISO_NUMBER})D)?"
    rf"(?:T(?:(?P<hours>{_ISO_NUMBER})H)?(?:(?P<minutes>{_ISO_NUMBER})M)?(?:(?P<seconds>{_ISO_NUMBER})S)?)?",
    re.I,
)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def _seconds(value: str) -> float | None:
    """Seconds in a duration string, or None when it is in no accepted form."""
    if re.fullmatch(_NUMBER, value):
        return float(value)
    if _SHORT.fullmatch(value):
        return sum(float(n) * _UNIT_SECONDS[unit.lower()] for n, unit in _SHORT_PART.findall(value))
    iso = _ISO.fullmatch(value)
    if iso is None or value.upper() in ("P", "PT") or value.upper().endswith("T"):
        return None
    if iso["years"] or iso["months"]:
        raise CronError(f"duration {value!r}: years and months have no fixed length; use days (P30D)")
    parts = {k: float(v.replace(",", ".")) for k, v in iso.groupdict().items() if v is not None}
    scale = {"weeks": 604800.0, "days": 86400.0, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}
    return sum(parts[k] * scale[k] for k in parts)


def parse_duration(value: str | int | float) -> timedelta:
    """A non-negative duration: seconds as a number, ISO 8601 (``PT5M``, ``P1DT2H``) or short (``90s``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise CronError(f"duration must be a number of seconds or a string, got {type(value).__name__}")
    if isinstance(value, str):
        text = value.strip()
        negative = text.startswith("-")
        seconds = _seconds(text[1:].strip() if negative else text)
        if seconds is None:
            raise CronError(
                f"duration {value!r} is not seconds, ISO 8601 (PT5M, P1DT2H) or short form (90s, 5m, 2h, 1d)"
            )
        if negative and seconds:
            raise CronError(f"duration {value!r} is negative")
    else:
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise CronError(f"duration {value!r:.40} is too long") from None
    if not math.isfinite(seconds):
        raise CronError(f"duration {value!r} is not finite")
    if seconds < 0:
        raise CronError(f"duration {value!r} is negative")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise CronError(f"duration {value!r} is too long") from None


# -- policies and the plan -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How a schedule treats overlapping runs, fires missed while the daemon was down, and jitter.

    ``catch_up_window`` must exceed the scheduler's own lateness: a fire more than the window late is
    missed, so a zero window misses any fire not planned at its exact scheduled instant.
    ``jitter`` is data for the caller (the maximum random delay it adds); :func:`plan` does not apply it.
    """

    overlap: Overlap = "forbid"  # a slow run is not piled up on
    catch_up_window: timedelta = timedelta(minutes=5)
    catch_up: CatchUpMode = "latest"
    jitter: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.overlap not in _OVERLAPS:
            raise CronError(f"overlap: expected one of {', '.join(_OVERLAPS)}, got {self.overlap!r}")
        if self.catch_up not in _CATCH_UPS:
            raise CronError(f"catchUp: expected one of {', '.join(_CATCH_UPS)}, got {self.catch_up!r}")
        for key, value in (("catchUpWindow", self.catch_up_window), ("jitter", self.jitter)):
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise CronError(f"{key}: expected a non-negative duration, got {value!r}")

    @classmethod
    def from_entity(cls, schedule: Mapping[str, Any]) -> Policy:
        """The policy in a CronJob entity's optional camelCase keys; absent or null keys keep defaults."""
        if not isinstance(schedule, Mapping):
            raise CronError(f"schedule must be an object, got {type(schedule).__name__}")
        kwargs: dict[str, Any] = {}
        for key, attr, choices in (("overlap", "overlap", _OVERLAPS), ("catchUp", "catch_up", _CATCH_UPS)):
            value = schedule.get(key)
            if value is None:
                continue
            if value not in choices:
                raise CronError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
            kwargs[attr] = value
        for key, attr in (("catchUpWindow", "catch_up_window"), ("jitter", "jitter")):
            value = schedule.get(key)
            if value is None:
                continue
            try:
                kwargs[attr] = parse_duration(value)
            except CronError as exc:
                raise CronError(f"{key}: {exc}") from None
        return cls(**kwargs)


@dataclass(frozen=True)
class Plan:
    """What to do now for one schedule: the fires to start, what was missed, and when to look again.

    ``missed`` counts due fires that are not started (before the catch-up window, or inside it under
    ``none``/``latest``, or older than the ``limit`` newest under ``all``). It is exact up to ``limit`` and
    capped there, so a long downtime costs bounded work; ``first_missed``/``last_missed`` are always exact.
    """

    fire: tuple[datetime, ...]
    missed: int
    first_missed: datetime | None
    last_missed: datetime | None
    next_fire: datetime | None
    retired: bool

    @property
    def last_handled(self) -> datetime | None:
        """The newest due time this plan disposes of (fired or missed): the caller's next ``last``.

        None when nothing was due; then keep the previous ``last``.
        """
        return self.fire[-1] if self.fire else self.last_missed


def plan(
    spec: CronSpec,
    *,
    last: datetime | None,
    now: datetime,
    policy: Policy,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    limit: int = 1000,
) -> Plan:
    """Split the fires due in ``(last, now]`` into ones to start and ones missed, with bounded work.

    ``last`` is the newest scheduled time already handled (fired or missed); ``None`` means the schedule
    has never been planned, so nothing is due yet and only ``next_fire`` is given: store the registration
    time as ``last`` so that fires after it count. Fires before ``start_date`` or after ``end_date`` never
    count. A due fire at or after ``now - catch_up_window`` is inside the window and handled by
    ``catch_up`` (``all``: up to ``limit`` of them fire, the newest; ``latest``: only the newest fires;
    ``none``: none fires); every due fire that does not fire is missed.

    ``next_fire`` is the first scheduled time after ``now`` (and after ``last``, so a clock that stepped
    back never offers a handled time again), or None past ``end_date``, which makes the plan ``retired``.
    The work is O(``limit``) croniter steps whatever the downtime: ``missed`` is capped at ``limit``.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    now_utc = aware_utc(now, "now")
    last_utc = None if last is None else aware_utc(last, "last")
    floor = None if start_date is None else aware_utc(start_date, "start_date") - TICK  # fires are > floor
    end = None if end_date is None else aware_utc(end_date, "end_date")
    walker = spec.walker()

    base = max(x for x in (now_utc, last_utc, floor) if x is not None)
    try:
        next_fire: datetime | None = spec.next_from(walker, base)
    except Exhausted:
        next_fire = None
    if next_fire is not None and end is not None and next_fire > end:
        next_fire = None
    nothing = Plan((), 0, None, None, next_fire, next_fire is None)
    if last_utc is None:
        return nothing

    low = last_utc if floor is None else max(last_utc, floor)  # due fires are in (low, high]
    high = now_utc if end is None else min(now_utc, end)
    if high <= low:
        return nothing
    inside_low = max(low, now_utc - policy.catch_up_window - TICK)  # inside fires are in (inside_low, high]

    # The fires to start: the newest ones inside the window, walked backwards from `high`.
    want = {"none": 0, "latest": 1, "all": limit}[policy.catch_up]
    newest_first: list[datetime] = []
    t = high + TICK
    while len(newest_first) < want:
        try:
            t = spec.prev_from(walker, t)
        except Exhausted:
            break
        if t <= inside_low:
            break
        newest_first.append(t)
    fire = tuple(reversed(newest_first))

    # Every due fire older than the oldest started one is missed: count it up to `limit`.
    missed_high = fire[0] - TICK if fire else high
    counted = spec.forward_from(walker, low, missed_high, limit)
    if not counted:
        return Plan(fire, 0, None, None, next_fire, next_fire is None)
    last_missed = counted[-1]
    if len(counted) == limit:  # there may be more: find the newest exactly, without walking to it
        last_missed = spec.prev_from(walker, missed_high + TICK)
    return Plan(fire, len(counted), counted[0], last_missed, next_fire, next_fire is None)
