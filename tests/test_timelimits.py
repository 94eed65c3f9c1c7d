"""Due times under each clock type, against hand-computed cases (no database)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from geo.incidents.timelimits import due_at, due_at_many

BJ = ZoneInfo("Asia/Shanghai")


def t(*args):
    return datetime(*args, tzinfo=BJ)


def test_working_day_across_weekend():
    # Fri 2026-11-13 is a working day; 1 working day lands on Monday.
    assert due_at(t(2026, 11, 13, 10), 1, "days", "working_days") == t(2026, 11, 16, 18)


def test_working_day_after_close_of_business_anchors_next_working_day():
    assert due_at(t(2026, 11, 13, 19), 1, "days", "working_days") == t(2026, 11, 17, 18)
    assert due_at(t(2026, 11, 14, 10), 1, "days", "working_days") == t(2026, 11, 17, 18)


def test_working_days_skip_national_day_2025_and_count_makeup_saturday():
    # 2025-10-01..08 holiday; Sat 2025-10-11 is a make-up working day.
    assert due_at(t(2025, 9, 30, 10), 3, "days", "working_days") == t(2025, 10, 11, 18)


def test_working_days_skip_national_day_2026():
    # 2026-10-01..07 holiday; Sat 2026-10-10 is a make-up working day.
    assert due_at(t(2026, 9, 30, 10), 1, "days", "working_days") == t(2026, 10, 8, 18)
    assert due_at(t(2026, 9, 30, 10), 3, "days", "working_days") == t(2026, 10, 10, 18)


def test_report_on_makeup_sunday_counts_that_day():
    # Sun 2025-09-28 is a make-up working day, so a same-day case is due that evening.
    assert due_at(t(2025, 9, 28, 9), 0, "days", "working_days") == t(2025, 9, 28, 18)


def test_hotline_complaint_13_working_days():
    assert due_at(t(2026, 11, 16, 9), 13, "days", "working_days") == t(2026, 12, 3, 18)


def test_working_hours_skip_lunch_break():
    assert due_at(t(2026, 11, 16, 11), 2, "hours", "working_hours") == t(2026, 11, 16, 15)
    assert due_at(t(2026, 11, 16, 12, 30), 1, "hours", "working_hours") == t(2026, 11, 16, 15)


def test_working_hours_ending_at_noon_is_due_at_noon():
    assert due_at(t(2026, 11, 16, 11), 1, "hours", "working_hours") == t(2026, 11, 16, 12)


def test_working_hours_over_night_and_holiday():
    assert due_at(t(2026, 11, 16, 17), 2, "hours", "working_hours") == t(2026, 11, 17, 9)
    assert due_at(t(2026, 9, 30, 16), 4, "hours", "working_hours") == t(2026, 10, 8, 10)


def test_working_hours_on_makeup_saturday():
    assert due_at(t(2026, 10, 10, 11), 2, "hours", "working_hours") == t(2026, 10, 10, 15)


def test_urgent_runs_across_midnight_and_holidays():
    assert due_at(t(2026, 11, 13, 23), 2, "hours", "urgent") == t(2026, 11, 14, 1)
    assert due_at(t(2026, 9, 30, 23, 30), 1, "hours", "urgent") == t(2026, 10, 1, 0, 30)


def test_calendar_days_ignore_holidays():
    assert due_at(t(2026, 9, 30, 10), 7, "days", "calendar_days") == t(2026, 10, 7, 10)


def test_same_day_urgent_is_due_at_midnight():
    assert due_at(t(2026, 11, 14, 15), 0, "days", "urgent") == t(2026, 11, 15, 0)


def test_other_time_zone_input_is_read_in_beijing_time():
    utc = datetime(2026, 11, 13, 2, tzinfo=UTC)  # 10:00 in Beijing
    assert due_at(utc, 1, "days", "working_days") == t(2026, 11, 16, 18)
    assert due_at(utc, 1, "days", "working_days").utcoffset() == timedelta(hours=8)


def test_many_matches_one_by_one():
    rng = np.random.default_rng(1)
    start = pd.Timestamp("2025-09-01", tz=BJ)
    times = start + pd.to_timedelta(rng.integers(0, 400 * 86400, 300), unit="s")
    for limit, unit, clock in [(3, "hours", "working_hours"), (5, "days", "working_days"),
                               (2, "hours", "urgent"), (0, "days", "working_days")]:
        many = due_at_many(times, limit, unit, clock)
        one = [due_at(x.to_pydatetime(), limit, unit, clock) for x in times]
        assert list(many) == one


@pytest.mark.parametrize(
    "args, message",
    [
        ((t(2026, 1, 5), 1, "days", "office"), "Unknown clock 'office'"),
        ((t(2026, 1, 5), 1, "weeks", "urgent"), "Unknown time_limit_unit 'weeks'"),
        ((t(2026, 1, 5), 1, "days", "working_hours"), "needs unit 'hours'"),
        ((t(2026, 1, 5), 1, "hours", "working_days"), "needs unit 'days'"),
        ((datetime(2026, 1, 5, 10), 1, "days", "working_days"), "timezone-aware"),
    ],
)
def test_bad_input_raises_clear_error(args, message):
    with pytest.raises(ValueError, match=message):
        due_at(*args)
