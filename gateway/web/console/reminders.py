"""An account's expiry and its reminders, as the account page shows them.

The expiry sweep (`gateway.accounts.sweep`) mails the establishment's admins
when an account crosses a threshold of `[accounts] reminder_days` (30 and 7
days before its expiry), and claims each threshold once per expiry in the
account's reminders hash (`keys.reminders`: field `<days>:<expiry ms>`, value
the time it was sent). This reads those claims, nothing else: a reminder of an
earlier expiry (before a renewal) is not this expiry's. The sweep owns the
hash; TODO(coordinator): a `Sweeper`-side reader would keep its layout in one
module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway import keys
from gateway.accounts.records import Account
from gateway.clock import from_ms, to_ms
from gateway.runtime import Services


@dataclass(frozen=True, slots=True)
class Reminder:
    """One threshold: when it falls due, and when its mail went (None: not yet)."""

    days: int
    due: datetime
    sent: datetime | None


async def reminders(services: Services, account: Account) -> list[Reminder]:
    """The thresholds of this expiry, earliest first, with the mails already sent."""
    expiry_ms = to_ms(account.expires_at)
    key = keys.reminders(services.accounts.account_tag(account.account_id))
    thresholds = sorted(services.config.accounts.reminder_days, reverse=True)
    fields = [f"{days}:{expiry_ms}" for days in thresholds]
    sent = await services.redis.hmget(key, fields) if fields else []
    return [
        Reminder(days, account.expires_at - timedelta(days=days), _when(raw))
        for days, raw in zip(thresholds, sent, strict=True)
    ]


def _when(raw: bytes | str | None) -> datetime | None:
    return None if raw is None else from_ms(int(raw))


def days_left(account: Account, now: datetime) -> int:
    """Whole days until the expiry (negative once past)."""
    return (account.expires_at - now).days
