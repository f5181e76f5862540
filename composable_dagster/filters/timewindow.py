"""Relative and absolute time windows, resolved in Python from an injected `now`.

All instants are compared as naive UTC wall-clock timestamps: aware inputs are converted to
UTC and their zone dropped, naive inputs are taken to be UTC already. The compiler emits the
resulting bounds as timestamp literals, so the SQL never reads the warehouse clock and two
compilations with the same `now` produce the same statement.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import MAXYEAR, MINYEAR, UTC, date, datetime, timedelta

from composable_dagster.filters.errors import FilterError, join_path
from composable_dagster.filters.tree import TimeWindow


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """``low <= ts <= high`` with either side open (None) or exclusive."""

    low: datetime | None = None
    high: datetime | None = None
    low_inclusive: bool = True
    high_inclusive: bool = True


def to_utc_naive(value: datetime) -> datetime:
    """Drop the zone of an aware datetime after converting it to UTC."""
    if value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def parse_timestamp(value: object, *, path: str) -> datetime:
    """Parse an ISO-8601 date or timestamp string (``Z`` suffix allowed) into naive UTC.

    Raises:
        FilterError: `value` is not such a string, or it leaves years 1-9999 in UTC.
    """
    if isinstance(value, datetime):
        value = value.isoformat()  # one path below, with its range check
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if not isinstance(value, str):
        raise FilterError(path, f"expected an ISO-8601 timestamp string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise FilterError(path, f"invalid ISO-8601 timestamp {value!r}") from None
    try:
        return to_utc_naive(parsed)
    except OverflowError:  # 0001-01-01T00:30:00+01:00 is in year 0 in UTC
        raise FilterError(path, f"timestamp {value!r} is outside years 1-9999 in UTC") from None


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar month arithmetic: Mar 31 minus one month is Feb 28 (or 29), not Mar 3.

    Raises:
        OverflowError: The result is outside years 1-9999, as for `datetime - timedelta`.
    """
    index = moment.year * 12 + (moment.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    if not MINYEAR <= year <= MAXYEAR:
        raise OverflowError(f"year {year} is out of range")
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def units_ago(now: datetime, amount: int, unit: str) -> datetime:
    """`now` minus `amount` hours/days/weeks/calendar months.

    Raises:
        OverflowError: The result is before year 1 (or `amount` is beyond timedelta's range).
    """
    if unit == "months":
        return add_months(now, -amount)
    return now - timedelta(**{unit: amount})


def _bound(value: int | str, *, now: datetime, unit: str, path: str) -> tuple[datetime, bool]:
    """Resolve one window value; returns the instant and whether it was relative."""
    if isinstance(value, bool):
        raise FilterError(path, "expected a non-negative integer or an ISO-8601 timestamp")
    if isinstance(value, int):
        if value < 0:
            raise FilterError(path, f"time amount must be >= 0, got {value}")
        try:
            return units_ago(now, value, unit), True
        except OverflowError:
            raise FilterError(path, f"{value} {unit} before now is before year 1") from None
    return parse_timestamp(value, path=path), False


def window_bounds(window: TimeWindow, *, now: datetime, path: str) -> TimeBounds:
    """The timestamp range a window selects.

    - ``within N``: ``now - N <= ts <= now``
    - ``not_within N``: ``ts < now - N``
    - ``before N`` / ``before T``: ``ts < now - N`` / ``ts < T``
    - ``after N`` / ``after T``: ``ts > now - N`` / ``ts > T``
    - ``between A, B``: both ends inclusive, either A..B units ago (in any order) or two
      ISO timestamps.

    Args:
        window: The parsed window.
        now: The evaluation instant (injected, never read from a clock).
        path: JSON path of the window, for errors.
    """
    now = to_utc_naive(now)
    kind = window.type
    value_path = join_path(path, "value")
    if kind in ("within", "not_within") and not isinstance(window.value, int):
        raise FilterError(value_path, f"'{kind}' needs an integer amount of {window.unit}")
    start, _ = _bound(window.value, now=now, unit=window.unit, path=value_path)
    if kind == "within":
        return TimeBounds(low=start, high=now)
    if kind == "not_within":
        return TimeBounds(high=start, high_inclusive=False)
    if kind == "before":
        return TimeBounds(high=start, high_inclusive=False)
    if kind == "after":
        return TimeBounds(low=start, low_inclusive=False)
    # between
    if window.value2 is None:
        raise FilterError(join_path(path, "value2"), "'between' needs value2")
    end, relative2 = _bound(
        window.value2, now=now, unit=window.unit, path=join_path(path, "value2")
    )
    if isinstance(window.value, int) != relative2:
        raise FilterError(
            join_path(path, "value2"), "value and value2 must both be amounts or both timestamps"
        )
    low, high = sorted((start, end))
    return TimeBounds(low=low, high=high)
