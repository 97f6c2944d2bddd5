"""The gateway's error codes as French sentences: the drop-in step's one table.

`otp-step.fr.json` is read from the step's folder (the one the browser also
loads it from), so the no-JavaScript pages and `otp-step.js` say the same words.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Any


@lru_cache(maxsize=2)
def table(folder: Path) -> dict[str, dict[str, str]]:
    """The table in `folder/otp-step.fr.json`."""
    loaded: dict[str, dict[str, str]] = json.loads(
        (folder / "otp-step.fr.json").read_text(encoding="utf-8")
    )
    return loaded


def wait_fr(seconds: int) -> str:
    """`30 secondes`, `3 minutes`, `2 heures`: rounded up, as `retry_after` is."""
    if seconds < 60:
        return f"{seconds} seconde{'s' if seconds > 1 else ''}"
    minutes = math.ceil(seconds / 60)
    if minutes < 60:
        return f"{minutes} minute{'s' if minutes > 1 else ''}"
    hours = math.ceil(minutes / 60)
    return f"{hours} heure{'s' if hours > 1 else ''}"


def sentence(folder: Path, body: dict[str, Any]) -> str:
    """A gateway error body (`{"error", ...}`) as a sentence a person understands."""
    words = table(folder)
    errors, limits = words["errors"], words["rate_limited"]
    code = str(body.get("error") or "default")
    text = errors.get(code, errors["default"])
    if code == "rate_limited" and str(body.get("scope")) in limits:
        text = limits[str(body["scope"])]
    if code == "invalid_code" and body.get("attempts_left") == 1:
        text = errors["invalid_code_last"]
    retry = body.get("retry_after")
    wait = wait_fr(max(1, retry if isinstance(retry, int) else 1))
    return text.replace("{attempts_left}", str(body.get("attempts_left"))).replace("{wait}", wait)
