"""No test holds a date that is still to come: one day it passes and the test fails.

Dates in tests are relative to now (tests/support/dates.py) or fed to a clock the test
controls, and then written in the past. This scan finds ISO dates (year,
month, day with dashes) and `datetime(...)` / `date(...)` calls in every test
file and refuses any from today on.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

TESTS = Path(__file__).parent
ISO_DATE = re.compile(r"(?<![\d-])(\d{4})-(\d{2})-(\d{2})(?![\d-])")
DATE_CALL = re.compile(r"\b(?:datetime|date)\(\s*(\d{4})\s*,\s*(\d{1,2})\s*,\s*(\d{1,2})")


def future_dates(text: str, today: date) -> list[str]:
    """Every date literal in `text` that is `today` or later, as written."""
    found = []
    for pattern in (ISO_DATE, DATE_CALL):
        for match in pattern.finditer(text):
            year, month, day = (int(part) for part in match.groups())
            try:
                when = date(year, month, day)
            except ValueError:
                continue  # not a date (a version, a range of numbers)
            if when >= today:
                found.append(match.group(0))
    return found


def test_the_scan_finds_future_dates_in_both_spellings() -> None:
    today = datetime.now(UTC).date()
    year = today.year + 1
    text = f'a = "{year}-03-04T00:00:00Z"\nb = datetime({year}, 3, 4, tzinfo=UTC)\n'
    assert future_dates(text, today) == [f"{year}-03-04", f"datetime({year}, 3, 4"]
    past = 'a = "2020-01-01"\nb = datetime(2020, 1, 1)\napi = "/2010-04-01/Accounts"\n'
    assert future_dates(past, today) == []


def test_no_test_file_holds_a_date_to_come() -> None:
    today = datetime.now(UTC).date()
    offenders = {
        str(path.relative_to(TESTS)): dates
        for path in sorted(TESTS.rglob("*.py"))
        if (dates := future_dates(path.read_text(encoding="utf-8"), today))
    }
    assert offenders == {}, "use tests/support/dates.py (relative to now) or a past fixed clock"
