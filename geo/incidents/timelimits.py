"""Incident due times under the four clock types (urgent, working hours, working days, calendar days).

All arithmetic happens in Asia/Shanghai local time (UTC+8, no DST since 1991).

Clock rules:

* ``urgent`` — the clock always runs: ``due = reported + limit`` (unit ``hours`` or ``days``).
* ``calendar_days`` — ``due = reported + limit`` as elapsed time (unit ``days``; ``hours`` also
  accepted and means plain elapsed hours).
* ``working_hours`` — only time inside 08:00–12:00 and 14:00–18:00 on working days counts
  (unit ``hours`` only). A report outside a window starts counting at the next window. A limit
  that is used up exactly at a window's end is due at that end (e.g. 12:00, not 14:00).
* ``working_days`` — unit ``days`` only. The *anchor day* is the report day if it is a working
  day and the report arrives before 18:00, otherwise the next working day. The case is due at
  18:00 on the N-th working day after the anchor day. With 1 working day: Monday 10:00 → due
  Tuesday 18:00; Monday 19:00 (anchor Tuesday) → Wednesday 18:00; Saturday (anchor Monday) →
  Tuesday 18:00.

"Same day" (e.g. a hotline emergency) is ``time_limit=0, unit="days"``:

* with ``urgent`` or ``calendar_days`` it is due at 24:00 local of the report day;
* with ``working_days`` it is due at 18:00 of the anchor day (the report day when that is a
  working day before 18:00, otherwise the next working day).

Working days and make-up working days (调休) come from ``chinese_calendar.is_workday``. For years
the installed package does not cover yet it raises NotImplementedError; there we fall back to
Monday–Friday, which is the best available guess until the package is updated.
"""

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import chinese_calendar
import numpy as np
import pandas as pd

TZ = ZoneInfo("Asia/Shanghai")
# Times given as input must fall in these years: nothing is reported outside them, and the extremes of the
# calendar (0001, 9999) overflow once a time limit or a zone is applied.
MIN_YEAR, MAX_YEAR = 1900, 2200


def year_problem(moment) -> str | None:
    """Why a date or time is outside the supported years, or None if it is inside."""
    if moment is not None and not MIN_YEAR <= moment.year <= MAX_YEAR:
        return f"must fall between the years {MIN_YEAR} and {MAX_YEAR}; got {moment.isoformat()}"
    return None
CLOCKS = ("urgent", "working_hours", "working_days", "calendar_days")
UNITS = ("hours", "days")

_S = 1_000_000  # work in integer microseconds of local wall-clock time
_H = 3600 * _S
_DAY = 24 * _H
_AM, _NOON, _PM, _EVE = 8 * _H, 12 * _H, 14 * _H, 18 * _H
_WORK_S = 8 * _H  # working seconds per working day
_EPOCH = pd.Timestamp("1970-01-01")


def _check(time_limit: int, unit: str, clock: str) -> None:
    if clock not in CLOCKS:
        raise ValueError(f"Unknown clock {clock!r}: expected one of {', '.join(CLOCKS)}.")
    if unit not in UNITS:
        raise ValueError(f"Unknown time_limit_unit {unit!r}: expected 'hours' or 'days'.")
    if int(time_limit) != time_limit or time_limit < 0:
        raise ValueError(f"time_limit must be a non-negative integer, got {time_limit!r}.")
    if clock == "working_hours" and unit != "hours":
        raise ValueError("Clock 'working_hours' needs unit 'hours'; use 'working_days' for days.")
    if clock == "working_days" and unit != "days":
        raise ValueError("Clock 'working_days' needs unit 'days'; use 'working_hours' for hours.")
    if time_limit == 0 and unit == "hours":
        raise ValueError("A zero limit is only meaningful as 'same day': use unit 'days'.")


@lru_cache(maxsize=64)
def _year_workdays(year: int) -> np.ndarray:
    """Boolean working-day flags for every day of one year, from chinese_calendar."""
    start = pd.Timestamp(year, 1, 1)
    days = pd.date_range(start, pd.Timestamp(year, 12, 31), freq="D")
    try:
        return np.array([chinese_calendar.is_workday(d.date()) for d in days], dtype=bool)
    except NotImplementedError:
        # Year not covered by the installed chinese_calendar: Monday–Friday.
        return days.day_of_week.to_numpy() < 5


def _workday_table(first_day: int, last_day: int) -> tuple[int, np.ndarray]:
    """Working-day flags for local day numbers (days since 1970-01-01) covering the range."""
    y0 = (_EPOCH + pd.Timedelta(days=int(first_day))).year
    y1 = (_EPOCH + pd.Timedelta(days=int(last_day))).year
    flags = np.concatenate([_year_workdays(y) for y in range(y0, y1 + 1)])
    return int((pd.Timestamp(y0, 1, 1) - _EPOCH).days), flags


def _to_local_us(reported) -> np.ndarray:
    idx = pd.DatetimeIndex(reported)
    if idx.tz is None:
        raise ValueError("reported_at must be timezone-aware (e.g. +08:00); naive datetimes are ambiguous.")
    local = idx.tz_convert(TZ).tz_localize(None)
    return local.as_unit("us").asi8.astype(np.int64)  # local wall-clock microseconds since epoch


def due_at_many(reported, time_limit: int, unit: str, clock: str) -> pd.DatetimeIndex:
    """Vectorised due_at for many report times sharing one category (tz-aware, Asia/Shanghai)."""
    _check(time_limit, unit, clock)
    us = _to_local_us(reported)
    n = int(time_limit)
    if us.size == 0:
        return pd.DatetimeIndex([], tz=TZ)
    day, tod = np.divmod(us, _DAY)

    if clock in ("urgent", "calendar_days"):
        if n == 0:  # same day: 24:00 local of the report day
            out = (day + 1) * _DAY
        else:
            out = us + n * (_H if unit == "hours" else _DAY)
    else:
        # Enough days ahead for the longest run of holidays plus the limit.
        span = (n if clock == "working_days" else n // 8 + 1) * 2 + 40
        base, work = _workday_table(int(day.min()) - 1, int(day.max()) + span)
        # k-th working day (0-based ordinal) and count of working days before each table day.
        work_days = np.flatnonzero(work) + base
        before = np.concatenate([[0], np.cumsum(work)])[:-1]
        i = day - base
        is_work = work[i]
        if clock == "working_days":
            late = ~is_work | (tod >= _EVE)
            # Ordinal of the anchor: today if workday before 18:00, else the next working day.
            anchor = before[i] + np.where(is_work & late, 1, 0)
            out = work_days[anchor + n] * _DAY + _EVE
        else:
            done = np.clip(tod - _AM, 0, _NOON - _AM) + np.clip(tod - _PM, 0, _EVE - _PM)
            target = before[i] * _WORK_S + np.where(is_work, done, 0) + n * _H
            k = -(-target // _WORK_S) - 1  # ordinal of the working day where the limit runs out
            rest = target - k * _WORK_S  # in (0, 8h]
            tod_due = np.where(rest <= _NOON - _AM, _AM + rest, _PM + rest - (_NOON - _AM))
            out = work_days[k] * _DAY + tod_due
    local = pd.DatetimeIndex(out.astype("datetime64[us]"))
    return local.tz_localize(TZ)


def due_at(reported_at: datetime, time_limit: int, unit: str, clock: str) -> datetime:
    """Due time of one incident; tz-aware in Asia/Shanghai. See the module docstring for rules."""
    if not isinstance(reported_at, datetime):
        raise TypeError(f"reported_at must be a datetime, got {type(reported_at).__name__}.")
    if reported_at.tzinfo is None or reported_at.utcoffset() is None:
        raise ValueError("reported_at must be timezone-aware (e.g. +08:00); naive datetimes are ambiguous.")
    return due_at_many([reported_at], time_limit, unit, clock)[0].to_pydatetime()
