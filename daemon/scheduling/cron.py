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

What to do with the fires (overlap, catch-up after downtime, jitter) is :mod:`daemon.scheduling.policy`'s job.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadTypeRangeError, CroniterError, croniter

__all__ = ["TICK", "CronError", "CronSpec", "Exhausted", "aware_utc"]


TICK = timedelta(microseconds=1)  # datetime's resolution: "> x - TICK" is ">= x"
_SECOND = timedelta(seconds=1)  # cron's resolution: no fire falls strictly between two whole seconds


class CronError(ValueError):
    """A schedule, timestamp, duration or policy that cannot be used; the message says what and where."""


class Exhausted(CronError):
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


def aware_utc(value: datetime, what: str) -> datetime:
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
            raise Exhausted(f"no fire after {wall.isoformat()} (local): {exc}") from None

    def before(self, wall: datetime) -> datetime:
        """The last matching wall time strictly before ``wall``."""
        try:
            return self._iter.get_prev(datetime, start_time=wall)
        except (CroniterError, CroniterBadTypeRangeError, ValueError, OverflowError) as exc:
            raise Exhausted(f"no fire before {wall.isoformat()} (local): {exc}") from None


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
        return self.next_from(self.walker(), aware_utc(t, "t"))

    def fires_between(self, after: datetime, until: datetime, *, limit: int) -> list[datetime]:
        """Scheduled times in ``(after, until]``, ascending, aware UTC, at most ``limit`` of them."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        return self.forward_from(self.walker(), aware_utc(after, "after"), aware_utc(until, "until"), limit)

    # -- internals: instants are aware UTC datetimes, walls are naive local wall-clock times ----------

    def walker(self) -> _Walker:
        return _Walker(self._cron, self._seconds_first)

    def forward_from(self, walker: _Walker, after: datetime, until: datetime, limit: int) -> list[datetime]:
        """Up to ``limit`` fires in ``(after, until]`` ascending (bounded work whatever the range)."""
        out: list[datetime] = []
        t = after
        while len(out) < limit:
            try:
                t = self.next_from(walker, t)
            except Exhausted:
                break
            if t > until:
                break
            out.append(t)
        return out

    def _instant(self, wall: datetime, fold: int) -> datetime:
        try:
            return wall.replace(tzinfo=self._tz, fold=fold).astimezone(UTC)
        except OverflowError:
            raise Exhausted(f"{wall.isoformat()} (local) is outside datetime's range") from None

    def _local(self, t: datetime) -> tuple[datetime, int]:
        """The naive wall time showing at instant ``t`` and which pass of a repeated hour it is."""
        try:
            local = t.astimezone(self._tz)
        except OverflowError:
            raise Exhausted(f"{t.isoformat()} is outside datetime's range") from None
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

    def next_from(self, walker: _Walker, t: datetime) -> datetime:
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

    def prev_from(self, walker: _Walker, t: datetime) -> datetime:
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
