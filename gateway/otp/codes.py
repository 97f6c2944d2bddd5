"""One-time codes: drawn uniformly from a CSPRNG, kept as strings end to end."""

from __future__ import annotations

import re
import secrets


def generate(length: int) -> str:
    """A code uniform over all `length`-digit strings, leading zeros kept."""
    return str(secrets.randbelow(10**length)).zfill(length)


def is_well_formed(code: str, length: int) -> bool:
    """ASCII digits only, exactly `length` of them.

    `str.isdigit()`, `int()` and `\\d` accept Arabic-Indic and full-width
    digits, and `re.match("^...$")` lets a trailing newline through: fullmatch
    on an explicit ASCII class avoids all three.
    """
    return re.fullmatch(f"[0-9]{{{length}}}", code) is not None
