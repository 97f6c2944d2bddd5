"""Helpers shared by the benchmark's processes (no gateway imports here).

The bench scripts run as plain files (`python bench/run.py`), so this module
is imported as a top-level `common` by each of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
# 06 10 00 00 00 .. 06 19 99 99 99: metropolitan mobile numbers, 10 million of them.
_FIRST_MOBILE = 610_000_000
_MOBILES = 10_000_000
ACCOUNTS_PER_ESTABLISHMENT = 20


def account_id(prefix: str, index: int) -> str:
    return f"{prefix}{index:06d}"


def phone_for(index: int) -> str:
    """A distinct, valid French mobile number per index: "+33 6 1X XX XX XX"."""
    if not 0 <= index < _MOBILES:
        raise ValueError(f"phone index out of range: {index}")
    digits = str(_FIRST_MOBILE + index)  # 9 digits: 6 1X XX XX XX
    pairs = " ".join(digits[i : i + 2] for i in range(1, 9, 2))
    return f"+33 {digits[0]} {pairs}"


def establishment_for(prefix: str, index: int) -> str:
    """Accounts come in establishments of ACCOUNTS_PER_ESTABLISHMENT, as in real life
    (the gateway reads a whole establishment on some writes and in its sweep)."""
    return f"Bench {prefix}{index // ACCOUNTS_PER_ESTABLISHMENT:05d}"


def account_body(prefix: str, index: int, phone: str) -> dict[str, Any]:
    """The POST /accounts body of one benchmark account."""
    account = account_id(prefix, index)
    return {
        "account_id": account,
        "establishment": establishment_for(prefix, index),
        "last_name": "Bench",
        "first_name": "User",
        "email": f"{account}@bench.example.org",
        "role": "user",
        "phone": phone,
    }


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, separators=(",", ":")), encoding="utf-8")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc (0 when unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
