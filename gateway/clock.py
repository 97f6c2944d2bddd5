"""Time helpers, one definition each: Unix milliseconds, UTC datetimes, ISO 8601.

The OTP engine counts in Unix milliseconds (what its Lua scripts and Redis keep);
the account records in timezone-aware UTC datetimes kept to the millisecond
(what survives a round trip through Redis). Both print ISO 8601 UTC to the second.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def now_ms() -> int:
    """Unix milliseconds, now."""
    return time.time_ns() // 1_000_000


def iso_ms(ms: int) -> str:
    """Unix milliseconds as ISO 8601 UTC to the second: "2026-11-26T18:00:00Z"."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms // 1000))


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_ms(value: datetime) -> int:
    """Unix milliseconds; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def iso(value: datetime) -> str:
    """ISO 8601 UTC to the second: "2026-11-26T18:00:00Z"."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize_time(value: datetime) -> datetime:
    """What survives a round trip through Redis: UTC, millisecond precision."""
    return from_ms(to_ms(value))
