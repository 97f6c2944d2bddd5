"""The console's Redis key names.

TODO(coordinator): move these into `gateway/keys.py` once issue 12's key
layout lands there (this slice may not edit it). Plain `otp:console:` keys, no
hash tag: the console uses single-key commands only, so they work on a
cluster as they are.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "otp:console:"


def session(digest: str) -> str:
    """A console session, by the SHA-256 of its id (the id itself is never stored)."""
    return f"{PREFIX}session:{digest}"
