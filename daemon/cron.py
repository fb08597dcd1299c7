"""Cron schedules for recurring jobs: parsing, DST-correct fire times, and what to fire after a pause.

The module is pure on purpose: no I/O, no asyncio and no clock reads (every "now" is a parameter), so
the scheduler loop, the store and the tests can all reason about the same answers for the same inputs.

Cron expressions are read in the schedule's local wall-clock time (``time_zone``, an IANA name). croniter
walks naive wall-clock times and this module maps each one to UTC itself, because croniter's own tz
arithmetic does not follow cron's rules on the days the clocks change. The rules, after Vixie cron:

* an expression is *periodic* when its second (6-field), minute or hour field starts with ``*``
  (``0 * * * *``, ``*/15 * * * *``); otherwise it is *fixed-time* (``30 2 * * *``);
* a wall time that does not exist (skipped at spring-forward): a fixed-time expression fires once at the
  first instant after the gap; a periodic one does not fire for it (the wall clock never showed it);
* a wall time that happens twice (repeated at fall-back): a fixed-time expression fires once, at the first
  occurrence; a periodic one fires at both, since both are real instants that show it.

So ``0 * * * *`` in Europe/Oslo fires 23 times on spring-forward day and 25 on fall-back day, and
``30 2 * * *`` fires exactly once on each. Several wall times that land on one instant fire once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadTypeRangeError, CroniterError, croniter

__all__ = [
    "CatchUpMode",
    "CronError",
    "CronSpec",
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
_TICK = timedelta(microseconds=1)  # datetime's resolution: "> x - _TICK" is ">= x"
_SECOND = timedelta(seconds=1)  # cron's resolution: no fire falls strictly between two whole seconds


class CronError(ValueError):
    """A schedule, timestamp, duration or policy that cannot be used; the message says what and where."""


class _Exhausted(CronError):
    """No further (or earlier) fire exists within croniter's search horizon or datetime's range."""


# -- parsing the expression --------------------------------------------------------------------------

_FIELDS_5: tuple[tuple[str, int, int], ...] = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_FIELDS_6 = (("second", 0, 59), *_FIELDS_5)
_NAMES: dict[str, dict[str, int]] = {
    "month": {
        m: i + 1
        for i, m in enumerate(
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        )
    },
    "day-of-week": {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])},
}
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ITEM = re.compile(
    r"^(?:(?P<star>\*)|(?P<lo>[0-9]+|[a-z]+)(?:-(?P<hi>[0-9]+|[a-z]+))?)(?:/(?P<step>[0-9]+))?$", re.I
)
_HASHED = re.compile(r"^[hr](?:$|[(/])", re.I)
# Quartz-style extras croniter understands and validates itself: L, 15W/W15, 2#3, L5, and "?".
_SPECIAL = {
    "day-of-month": re.compile(r"^(?:\?|l|[0-9]+w|w[0-9]+|[0-9]+-l)$", re.I),
    "day-of-week": re.compile(r"^(?:\?|[a-z0-9]+#[0-9]+|l[0-9]+)$", re.I),
}


def _check_field(expression: str, name: str, low: int, high: int, text: str) -> None:
    """Reject a bad field with a message naming it; croniter's own messages do not say which field."""
    for item in text.split(","):
        where = f"cron {expression!r}: {name}"
        if not item:
            raise CronError(f"{where} has an empty value in {text!r}")
        if _HASHED.match(item):
            raise CronError(f"{where} {item!r}: hashed (H) and random (R) values are not supported")
        special = _SPECIAL.get(name)
        if special is not None and special.match(item):
            continue
        match = _ITEM.match(item)
        if match is None:
            raise CronError(f"{where} {item!r} is not a valid value")
        for bound in (match["lo"], match["hi"]):
            if bound is None:
                continue
            if bound.isdigit():
                if not low <= int(bound) <= high:
                    raise CronError(f"{where} {int(bound)} out of range {low}-{high}")
            elif bound.lower() not in _NAMES.get(name, {}):
                hint = {"month": " or a name jan-dec", "day-of-week": " or a name sun-sat"}.get(name, "")
                raise CronError(f"{where} {bound!r} is not a number{hint}")
        if match["step"] is not None and int(match["step"]) == 0:
            raise CronError(f"{where} step 0 in {item!r} must be at least 1")


def _split(expression: str) -> tuple[str, bool]:
    """The croniter form of an expression and whether it has a seconds field, or a CronError."""
    if not expression:
        raise CronError("cron '': empty expression")
    if expression.startswith("@"):
        alias = _ALIASES.get(expression.lower())
        if alias is None:
            known = ", ".join(sorted(_ALIASES))
            raise CronError(f"cron {expression!r}: unknown alias (known: {known})")
        return alias, False
    fields = expression.split(" ")
    if len(fields) not in (5, 6):
        raise CronError(
            f"cron {expression!r}: expected 5 fields (minute hour day-of-month month day-of-week) "
            f"or 6 (second first, then those 5), got {len(fields)}"
        )
    for (name, low, high), text in zip(_FIELDS_6 if len(fields) == 6 else _FIELDS_5, fields, strict=True):
        _check_field(expression, name, low, high, text)
    return expression, len(fields) == 6


def _zone(name: str) -> ZoneInfo:
    """The IANA zone for ``name``; a typo must fail at registration, not at the first fire."""
    if not isinstance(name, str) or not name.strip():
        raise CronError(f"time zone {name!r}: expected an IANA name such as 'Europe/Oslo'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"unknown time zone {name!r}: expected an IANA name such as 'Europe/Oslo'") from None


def _aware_utc(value: datetime, what: str) -> datetime:
    """``value`` in UTC; a naive time has no meaning here, so it is a caller's bug."""
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


class _Walker:
    """One croniter for one computation: building it costs several times more than stepping it."""

    def __init__(self, expression: str, seconds_first: bool) -> None:
        self._iter = croniter(expression, datetime(2000, 1, 1), datetime, second_at_beginning=seconds_first)

    def after(self, wall: datetime) -> datetime:
        """The first matching wall time strictly after ``wall``."""
        try:
            return self._iter.get_next(datetime, start_time=wall)
        except (CroniterError, CroniterBadTypeRangeError, ValueError, OverflowError) as exc:
            raise _Exhausted(f"no fire after {wall.isoformat()} (local): {exc}") from None

    def before(self, wall: datetime) -> datetime:
        """The last matching wall time strictly before ``wall``."""
        try:
            return self._iter.get_prev(datetime, start_time=wall)
        except (CroniterError, CroniterBadTypeRangeError, ValueError, OverflowError) as exc:
            raise _Exhausted(f"no fire before {wall.isoformat()} (local): {exc}") from None


# -- the schedule -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CronSpec:
    """A cron expression in an IANA time zone, validated on construction so a spec is always usable."""

    expression: str
    time_zone: str = "UTC"
    _cron: str = field(init=False, repr=False, compare=False)
    _seconds_first: bool = field(init=False, repr=False, compare=False)
    _periodic: bool = field(init=False, repr=False, compare=False)
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.expression, str):
            raise CronError(f"cron expression must be a string, got {type(self.expression).__name__}")
        normal = " ".join(self.expression.split())
        cron, seconds_first = _split(normal)
        fields = cron.split(" ")
        # croniter's "strict" rejects days no month has (0 0 31 2 *); with a weekday also given, cron
        # fires on either, so it would wrongly reject "0 0 31 2 mon" (Mondays in February).
        try:
            croniter.expand(cron, second_at_beginning=seconds_first, strict=fields[-1] in ("*", "?"))
        except (CroniterError, CroniterBadTypeRangeError) as exc:
            detail = re.sub(r"^\[.*?\] is not acceptable[.,]?\s*", "", str(exc)) or "not a valid expression"
            raise CronError(f"cron {normal!r}: {detail}") from None
        time_fields = fields[:3] if seconds_first else fields[:2]
        object.__setattr__(self, "expression", normal)
        object.__setattr__(self, "_cron", cron)
        object.__setattr__(self, "_seconds_first", seconds_first)
        object.__setattr__(self, "_periodic", any(f.startswith("*") for f in time_fields))
        object.__setattr__(self, "_tz", _zone(self.time_zone))

    @classmethod
    def parse(cls, expression: str, time_zone: str = "UTC") -> CronSpec:
        """Validate ``expression`` (5 fields, or 6 with seconds first) and ``time_zone``; CronError if bad."""
        return cls(expression, time_zone)

    def next_after(self, t: datetime) -> datetime:
        """The first scheduled time strictly after ``t`` (aware, any zone), as aware UTC."""
        return self._next(self._walker(), _aware_utc(t, "t"))

    def fires_between(self, after: datetime, until: datetime, *, limit: int) -> list[datetime]:
        """Scheduled times in ``(after, until]``, ascending, aware UTC, at most ``limit`` of them."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        return self._forward_from(
            self._walker(), _aware_utc(after, "after"), _aware_utc(until, "until"), limit
        )

    # -- internals: instants are aware UTC datetimes, walls are naive local wall-clock times ----------

    def _walker(self) -> _Walker:
        return _Walker(self._cron, self._seconds_first)

    def _forward_from(self, walker: _Walker, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Up to ``limit`` fires in ``(after, until]`` ascending (bounded work whatever the range)."""
        out: list[datetime] = []
        t = after
        while len(out) < limit:
            try:
                t = self._next(walker, t)
            except _Exhausted:
                break
            if t > until:
                break
            out.append(t)
        return out

    def _instant(self, wall: datetime, fold: int) -> datetime:
        try:
            return wall.replace(tzinfo=self._tz, fold=fold).astimezone(UTC)
        except OverflowError:
            raise _Exhausted(f"{wall.isoformat()} (local) is outside datetime's range") from None

    def _local(self, t: datetime) -> tuple[datetime, int]:
        """The naive wall time showing at instant ``t`` and which pass of a repeated hour it is."""
        try:
            local = t.astimezone(self._tz)
        except OverflowError:
            raise _Exhausted(f"{t.isoformat()} is outside datetime's range") from None
        return local.replace(tzinfo=None, fold=0), local.fold

    def _offsets(self, wall: datetime) -> tuple[timedelta, timedelta]:
        """UTC offsets for ``wall`` read before and after a transition: equal unless in a gap or a fold."""
        before = wall.replace(tzinfo=self._tz, fold=0).utcoffset()
        after = wall.replace(tzinfo=self._tz, fold=1).utcoffset()
        assert before is not None and after is not None  # a ZoneInfo always has an offset
        return before, after

    def _transition(
        self, wall: datetime, before: timedelta, after: timedelta
    ) -> tuple[datetime, datetime, datetime]:
        """For a wall time in a gap or a fold: the transition instant, and the wall range [start, end) it
        skips or repeats. zoneinfo does not expose transitions, so bisect on whole seconds (tzdata's)."""
        naive_utc = wall.replace(tzinfo=UTC)
        low = math.floor((naive_utc - max(before, after)).timestamp())  # still on the old offset
        high = math.floor((naive_utc - min(before, after)).timestamp())  # already on the new one
        while high - low > 1:
            mid = (low + high) // 2
            if datetime.fromtimestamp(mid, self._tz).utcoffset() == after:
                high = mid
            else:
                low = mid
        at = datetime.fromtimestamp(high, UTC)
        start = (at + min(before, after)).replace(tzinfo=None)
        end = (at + max(before, after)).replace(tzinfo=None)
        return at, start, end

    def _next(self, walker: _Walker, t: datetime) -> datetime:
        """First fire strictly after instant ``t``; see the module docstring for the DST rules."""
        wall, fold = self._local(t)
        before, after = self._offsets(wall)
        if before != after:  # t is inside a repeated hour (a real instant is never inside a gap)
            _, start, end = self._transition(wall, before, after)
            if fold == 0:
                candidate = walker.after(wall)
                if candidate < end:
                    return self._instant(candidate, 0)
                if self._periodic:  # the second pass shows the same walls again
                    candidate = walker.after(start - _SECOND)
                    if candidate < end:
                        return self._instant(candidate, 1)
            elif self._periodic:
                candidate = walker.after(wall)
                if candidate < end:
                    return self._instant(candidate, 1)
            wall = end - _SECOND  # the rest of the repeated hour has no fire left; go on from its end
        while True:
            candidate = walker.after(wall)
            before, after = self._offsets(candidate)
            if before >= after:  # plain, or repeated: its first pass comes first
                return self._instant(candidate, 0)
            at, _, end = self._transition(candidate, before, after)  # in a gap
            if not self._periodic:
                return at  # a skipped fixed time fires once, at the first instant after the gap
            wall = end - _SECOND

    def _prev(self, walker: _Walker, t: datetime) -> datetime:
        """Last fire strictly before instant ``t``: the mirror of :meth:`_next`."""
        wall, fold = self._local(t)
        before, after = self._offsets(wall)
        if before != after:  # t is inside a repeated hour
            _, start, end = self._transition(wall, before, after)
            if fold == 1:
                if self._periodic:
                    candidate = walker.before(wall)
                    if candidate >= start:
                        return self._instant(candidate, 1)
                candidate = walker.before(end)  # the latest of the first pass
                if candidate >= start:
                    return self._instant(candidate, 0)
            else:
                candidate = walker.before(wall)
                if candidate >= start:
                    return self._instant(candidate, 0)
            wall = start
        while True:
            candidate = walker.before(wall)
            before, after = self._offsets(candidate)
            if before == after:
                return self._instant(candidate, 0)
            if before > after:  # repeated: the later pass is the latest, if this expression fires on it
                return self._instant(candidate, 1 if self._periodic else 0)
            at, start, _ = self._transition(candidate, before, after)  # in a gap
            if not self._periodic and at < t:
                return at
            wall = start


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
        seconds = float(value)
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
    now_utc = _aware_utc(now, "now")
    last_utc = None if last is None else _aware_utc(last, "last")
    floor = None if start_date is None else _aware_utc(start_date, "start_date") - _TICK  # fires are > floor
    end = None if end_date is None else _aware_utc(end_date, "end_date")
    walker = spec._walker()

    base = max(x for x in (now_utc, last_utc, floor) if x is not None)
    try:
        next_fire: datetime | None = spec._next(walker, base)
    except _Exhausted:
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
    inside_low = max(low, now_utc - policy.catch_up_window - _TICK)  # inside fires are in (inside_low, high]

    # The fires to start: the newest ones inside the window, walked backwards from `high`.
    want = {"none": 0, "latest": 1, "all": limit}[policy.catch_up]
    newest_first: list[datetime] = []
    t = high + _TICK
    while len(newest_first) < want:
        try:
            t = spec._prev(walker, t)
        except _Exhausted:
            break
        if t <= inside_low:
            break
        newest_first.append(t)
    fire = tuple(reversed(newest_first))

    # Every due fire older than the oldest started one is missed: count it up to `limit`.
    missed_high = fire[0] - _TICK if fire else high
    counted = spec._forward_from(walker, low, missed_high, limit)
    if not counted:
        return Plan(fire, 0, None, None, next_fire, next_fire is None)
    last_missed = counted[-1]
    if len(counted) == limit:  # there may be more: find the newest exactly, without walking to it
        last_missed = spec._prev(walker, missed_high + _TICK)
    return Plan(fire, len(counted), counted[0], last_missed, next_fire, next_fire is None)
