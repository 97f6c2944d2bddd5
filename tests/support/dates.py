"""Dates for tests, always relative to today, so that no test expires.

An absolute date in a test turns from future to past one day and the test
starts failing on its own (tests/test_no_absolute_dates.py finds them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def midnight_in(days: int) -> datetime:
    """Midnight UTC, `days` days from today (negative: in the past)."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today + timedelta(days=days)


def iso_in(days: int) -> str:
    """`midnight_in(days)` as the API writes it: `YYYY-MM-DDT00:00:00Z`."""
    return midnight_in(days).strftime("%Y-%m-%dT%H:%M:%SZ")
