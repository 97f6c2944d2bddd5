"""The expiry sweep: expiries recorded, last admins kept, reminders e-mailed.

It runs in every worker process (and `serve` with its in-process worker),
every `[accounts] sweep_interval_seconds`, but one at a time across all of
them: a sweeper takes a Redis lock (`SET NX PX`, released only by its holder)
and skips the round when the last sweep finished less than an interval ago.

Per establishment, a sweep:

1. **keeps its last active admin from lapsing**: when the only active admin
   would expire before the next sweep, its expiry is pushed to now +
   `last_admin_grace_days` (history: `last_admin.reprieve`), so it keeps
   getting reminders instead of locking the establishment out (the invariant
   `last_admin`). An admin already expired is not revived: an operator renews it;
2. **records expiries**: an account whose `expires_at` passed gets one
   `expire` history entry per expiry, and loses its trusted devices
   (`AccountStore.mark_expired`; status itself follows `expires_at`, so an
   expired account gets 403 `account_expired` even before the sweep);
3. **sends reminders** to the establishment's active admins, one mail each,
   listing every account that crossed a threshold of `reminder_days` (30 and
   7 days by default). A threshold is claimed per account *and expiry* with
   HSETNX before the mail is queued: each is mailed once however often, and by
   however many workers, the sweep runs; a renewal (a new expiry) re-arms them.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import keys
from gateway.accounts.audit import SWEEP
from gateway.accounts.notices import Due, Notifier
from gateway.accounts.records import Account, Status
from gateway.accounts.store import AccountStore
from gateway.clock import to_ms
from gateway.config import AccountsConfig
from gateway.errors import GatewayError
from gateway.luascripts import Lua
from gateway.streams import wait

log = logging.getLogger("otp_gateway.sweep")

LOCK_MS: Final = 300_000
# On a Redis Cluster, a creation's id waits this long in its establishment's set
# without a record before the sweep takes it out (a creation takes milliseconds).
ORPHAN_GRACE_MS: Final = 3_600_000


@dataclass
class SweepReport:
    """What one sweep did."""

    accounts: int = 0
    expired: int = 0
    reprieved: int = 0
    reminded: int = 0
    mails: int = 0
    orphans: int = 0  # a cluster's ids without a record taken out of their establishment


class Sweeper:
    """Runs the sweep on schedule, one sweeper at a time across workers."""

    def __init__(
        self,
        redis: aioredis.Redis,
        store: AccountStore,
        notifier: Notifier,
        config: AccountsConfig,
        *,
        lua: Lua | None = None,
    ) -> None:
        self.redis = redis
        self.store = store
        self.notifier = notifier
        self.interval_ms = config.sweep_interval_seconds * 1000
        self.thresholds = config.reminder_days
        self.grace = timedelta(days=config.last_admin_grace_days)
        self._release = (lua or Lua(redis)).script("release")

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep when due until `stop` is set; rides out Redis outages."""
        while not stop.is_set():
            try:
                await self.sweep_once()
            except (RedisError, GatewayError) as exc:
                log.warning("sweep failed", extra={"error": type(exc).__name__})
            await wait(stop, min(self.interval_ms / 1000, 60.0))

    async def sweep_once(self, *, force: bool = False) -> SweepReport | None:
        """Sweep if this worker gets the lock and a sweep is due (or `force`)."""
        token = secrets.token_hex(16)
        if not await self.redis.set(keys.SWEEP_LOCK, token, nx=True, px=LOCK_MS):
            return None
        try:
            last = await self.redis.get(keys.SWEEP_LAST)
            now_ms = to_ms(self.store.now())
            if not force and last is not None and now_ms - int(last) < self.interval_ms:
                return None
            report = await self._sweep()
            await self.redis.set(keys.SWEEP_LAST, to_ms(self.store.now()))
            log.info("sweep done", extra=vars(report))
            return report
        finally:
            await self._release(keys=[keys.SWEEP_LOCK], args=[token])

    async def _sweep(self) -> SweepReport:
        report = SweepReport()
        report.orphans = await self.store.sweep_establishments(ORPHAN_GRACE_MS)
        by_establishment: dict[str, dict[str, Account]] = {}
        async for batch in self.store.scan():
            for account in batch:
                by_establishment.setdefault(account.establishment, {})[account.account_id] = account
        for establishment, accounts in by_establishment.items():
            report.accounts += len(accounts)
            await self._establishment(establishment, list(accounts.values()), report)
        return report

    async def _establishment(
        self, establishment: str, accounts: list[Account], report: SweepReport
    ) -> None:
        now = self.store.now()
        accounts = await self._keep_last_admin(accounts, now, report)
        for account in accounts:
            if account.expires_at <= now and await self.store.mark_expired(account, who=SWEEP):
                report.expired += 1
        admins = [a for a in accounts if a.is_active_admin(now)]
        if not admins:
            return  # nobody to remind; the claims stay free for when there is
        due = await self._claim(accounts, now)
        if due:
            for admin in admins:
                mail = self.notifier.reminder(admin, establishment, due, len(admins) == 1)
                await self.notifier.mail.enqueue(mail)
            report.reminded += len(due)
            report.mails += len(admins)

    async def _keep_last_admin(
        self, accounts: list[Account], now: datetime, report: SweepReport
    ) -> list[Account]:
        admins = [a for a in accounts if a.is_active_admin(now)]
        horizon = now + timedelta(milliseconds=2 * self.interval_ms)
        if len(admins) != 1 or admins[0].expires_at > horizon:
            return accounts
        last = admins[0]
        kept = await self.store.extend(
            last.account_id, now + self.grace, who=SWEEP, action="last_admin.reprieve"
        )
        report.reprieved += 1
        log.info("last admin reprieved", extra={"account_id": last.account_id})
        return [kept if a.account_id == last.account_id else a for a in accounts]

    async def _claim(self, accounts: list[Account], now: datetime) -> list[Due]:
        """Accounts with a reminder threshold crossed for the first time."""
        due: list[Due] = []
        if not self.thresholds:
            return due
        for account in accounts:
            left = account.expires_at - now
            if account.status(now) is not Status.ACTIVE:
                continue
            crossed = [t for t in self.thresholds if left <= timedelta(days=t)]
            if crossed and await self._claim_thresholds(account, crossed, now):
                due.append(Due(account, left.days))
        return due

    async def _claim_thresholds(self, account: Account, crossed: list[int], now: datetime) -> bool:
        key = keys.reminders(self.store.account_tag(account.account_id))
        expiry = to_ms(account.expires_at)
        async with self.redis.pipeline(transaction=True) as pipe:
            for days in crossed:
                pipe.hsetnx(key, f"{days}:{expiry}", to_ms(now))
            pipe.pexpireat(key, expiry + 86_400_000)
            results = await pipe.execute()
        return any(results[:-1])
