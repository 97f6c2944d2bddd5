"""Audit entries: who did what to which account, for whom, before and after.

An entry is appended, in the same Lua script as the change it records, to two
streams: the account's (`keys.history`, kept after deletion) and its
establishment's (`keys.establishment_history`). Both are capped and read
newest first. Entries show phone numbers only masked (fully when hidden) and
never hold a code, a token or a secret.

Fields: `id`, `at`, `account_id`, `establishment`, `actor` (the credential:
`operator:<key>`, `admin:<key>`, `otp:<key>` or `system:sweep`), `acting_for`
(the account the credential acted for: the admin of `X-Acting-Account`, or the
user in self-service), `action`, `request_id`, `step_up` (`verified`, `exempt`
for operators, or null), `before`, `after`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from gateway.accounts.records import compact_json
from gateway.clock import iso

HISTORY_MAXLEN: Final = 1000
ESTABLISHMENT_HISTORY_MAXLEN: Final = 20000


@dataclass(frozen=True, slots=True)
class Who:
    """Who makes a change, for the audit entry."""

    actor: str
    request_id: str
    acting_for: str | None = None
    step_up: str | None = None  # "verified" | "exempt" | None


SWEEP: Final = Who("system:sweep", "sweep")


@dataclass(frozen=True, slots=True)
class Entry:
    """One history entry to append (the streams give it its id)."""

    account_id: str
    establishment: str
    action: str
    who: Who
    before: Mapping[str, Any]
    after: Mapping[str, Any]

    def items(self, at: datetime) -> list[str]:
        """Field/value pairs, flat, as the scripts pass them to XADD."""
        return [
            "at", iso(at),
            "account_id", self.account_id,
            "establishment", self.establishment,
            "actor", self.who.actor,
            "acting_for", self.who.acting_for or "",
            "action", self.action,
            "request_id", self.who.request_id,
            "step_up", self.who.step_up or "",
            "before", compact_json(self.before),
            "after", compact_json(self.after),
        ]  # fmt: skip


def decode_entry(entry_id: Any, fields: Mapping[Any, Any]) -> dict[str, Any]:
    """A stream entry as the history routes return it."""

    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    f = {text(k): text(v) for k, v in fields.items()}
    return {
        "id": text(entry_id),
        "at": f.get("at"),
        "account_id": f.get("account_id"),
        "establishment": f.get("establishment"),
        "actor": f.get("actor"),
        "acting_for": f.get("acting_for") or None,
        "action": f.get("action"),
        "request_id": f.get("request_id"),
        "step_up": f.get("step_up") or None,
        "before": json.loads(f.get("before") or "{}"),
        "after": json.loads(f.get("after") or "{}"),
    }
