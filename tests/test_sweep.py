"""The expiry sweep: reminders exactly once, expiries recorded, the last admin kept."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway import keys
from gateway.accounts import AccountStore, Status
from gateway.accounts.sweep import Sweeper
from gateway.runtime import run_background
from tests.support.admin import (
    ESTABLISHMENT,
    admin_gateway,
    as_admin,
    as_operator,
    mails_after_drain,
)
from tests.support.gateway import ACCOUNT, Gateway, GatewayFactory
from tests.support.otp import assert_error, call, challenge_and_code, verify
from tests.support.poll import poll
from tests.support.smtp import Inbox, parts


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Sweep:
    """A gateway, and sweepers (as in separate workers) on a clock the test moves."""

    gw: Gateway
    clock: Clock
    store: AccountStore

    def sweeper(self) -> Sweeper:
        svc = self.gw.services
        return Sweeper(svc.redis, self.store, svc.account_services.notifier, svc.config.accounts)

    async def run(self) -> Any:
        return await self.sweeper().sweep_once(force=True)


def in_days(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def add(gw: Gateway, account_id: str, days: float, **fields: Any) -> None:
    body = {
        **ACCOUNT,
        "account_id": account_id,
        "expires_at": in_days(days),
        "email": f"{account_id}@example.org",
        **fields,
    }
    assert (await as_operator(gw, "POST", "/accounts", body)).status == 201


async def sweep_setup(make_gateway: GatewayFactory, inbox: Inbox, **sections: Any) -> Sweep:
    gw = await admin_gateway(make_gateway, inbox, **sections)
    clock = Clock(datetime.now(UTC))
    svc = gw.services
    store = AccountStore(
        svc.redis, svc.keyring, svc.accounts._policy, svc.config.accounts, clock=clock
    )
    return Sweep(gw, clock, store)


@pytest.fixture
async def sw(make_gateway: GatewayFactory, inbox: Inbox) -> Sweep:
    s = await sweep_setup(make_gateway, inbox)
    await add(s.gw, "boss2", 300, role="admin")
    await add(s.gw, "soon", 20.5, last_name="Bientôt")
    await add(s.gw, "sooner", 5.5)
    await add(s.gw, "later", 50)
    await add(s.gw, "paused", 5.5)
    await as_operator(s.gw, "PATCH", "/accounts/paused", {"status": "suspended"})
    await add(s.gw, "gone", -1)
    await add(s.gw, "far", 5.5, establishment="Ailleurs")  # no admin there
    return s


def listed(inbox: Inbox, address: str) -> list[str]:
    """The account ids each reminder to `address` lists, mail by mail."""
    found = []
    for message in inbox.to(address):
        text, _ = parts(message)
        found.append(
            ",".join(
                sorted(
                    line.split("(")[1].split(")")[0]
                    for line in text.splitlines()
                    if line.startswith("- ")
                )
            )
        )
    return found


async def test_reminders_once_per_account_and_threshold(sw: Sweep, inbox: Inbox) -> None:
    report = await sw.run()
    assert report.reminded == 2 and report.mails == 2 and report.expired == 1
    assert await mails_after_drain(sw.gw) == 2
    assert listed(inbox, "boss@example.org") == ["soon,sooner"]
    assert listed(inbox, "boss2@example.org") == ["soon,sooner"]
    message = inbox.to("boss@example.org")[0]
    assert message["Subject"] == f"Comptes à renouveler : {ESTABLISHMENT}"
    text, html = parts(message)
    assert "Bientôt" in text and "dans 5 jour(s)" in text and "<li>" in html
    assert "un administrateur actif" not in text  # two admins: no warning

    assert (await sw.run()).reminded == 0  # again: nothing new
    sw.clock.now += timedelta(days=14)  # soon crosses 7 days; sooner expired
    report = await sw.run()
    assert report.reminded == 1 and report.expired == 3  # sooner, paused, far
    assert (await sw.run()).reminded == 0
    await mails_after_drain(sw.gw)
    assert listed(inbox, "boss@example.org") == ["soon,sooner", "soon"]
    assert len(inbox.messages) == 4


async def test_two_workers_sweeping_at_once_remind_once(sw: Sweep, inbox: Inbox) -> None:
    first, second = sw.sweeper(), sw.sweeper()
    reports = await asyncio.gather(first.sweep_once(force=True), second.sweep_once(force=True))
    assert sum(r.reminded for r in reports if r is not None) == 2
    reports = await asyncio.gather(first.sweep_once(force=True), second.sweep_once(force=True))
    assert sum(r.reminded for r in reports if r is not None) == 0
    assert await mails_after_drain(sw.gw) == 2
    assert listed(inbox, "boss@example.org") == ["soon,sooner"]


async def test_one_sweeper_at_a_time_and_once_an_interval(sw: Sweep) -> None:
    redis = sw.gw.services.redis
    await redis.set(keys.SWEEP_LOCK, "another-worker", px=60_000)
    assert await sw.sweeper().sweep_once(force=True) is None  # someone else is sweeping
    assert await redis.get(keys.SWEEP_LOCK) == b"another-worker"  # not ours to free
    await redis.delete(keys.SWEEP_LOCK)
    assert await sw.sweeper().sweep_once() is not None
    assert await sw.sweeper().sweep_once() is None  # not due for an interval
    assert await redis.exists(keys.SWEEP_LOCK) == 0


async def test_a_renewal_rearms_the_reminders(sw: Sweep, inbox: Inbox) -> None:
    await sw.run()
    await as_admin(sw.gw, "PATCH", "/accounts/sooner", {"expires_at": in_days(6.5)})
    assert (await sw.run()).reminded == 1  # a new expiry: its thresholds count again
    await mails_after_drain(sw.gw)
    assert listed(inbox, "boss@example.org") == ["soon,sooner", "sooner"]


async def test_expiry_is_recorded_once_and_revokes_devices(sw: Sweep) -> None:
    challenge_id, code = await challenge_and_code(sw.gw, "alice")
    assert (await verify(sw.gw, challenge_id, code, trust_device=True)).status == 200
    assert len(await sw.gw.services.trusted.list("alice")) == 1
    await sw.run()
    sw.clock.now += timedelta(days=400)
    await sw.run()
    await sw.run()
    entries = (await as_operator(sw.gw, "GET", "/accounts/alice/history")).body["entries"]
    assert [e["action"] for e in entries].count("expire") == 1
    assert entries[0]["actor"] == "system:sweep"
    assert await sw.gw.services.trusted.list("alice") == []
    gone = (await as_operator(sw.gw, "GET", "/accounts/gone/history")).body["entries"]
    assert [e["action"] for e in gone] == ["expire", "create"]
    assert_error(
        await call(sw.gw, "POST", "/challenge", {"account_id": "gone"}), 403, "account_expired"
    )


async def test_the_last_admin_is_not_let_expire(make_gateway: GatewayFactory, inbox: Inbox) -> None:
    s = await sweep_setup(make_gateway, inbox)
    await as_operator(s.gw, "PATCH", "/accounts/boss", {"expires_at": in_days(0.01)})
    report = await s.run()
    assert report.reprieved == 1
    boss = await s.store.require("boss")
    assert boss.status(s.store.now()) is Status.ACTIVE
    assert boss.expires_at >= s.store.now() + timedelta(days=7, seconds=-5)
    entry = (await as_operator(s.gw, "GET", "/accounts/boss/history")).body["entries"][0]
    assert entry["action"] == "last_admin.reprieve" and entry["actor"] == "system:sweep"
    await mails_after_drain(s.gw)
    [reminder] = inbox.to("boss@example.org")
    text, _ = parts(reminder)
    assert "(boss)" in text and "n'a qu'un administrateur actif" in text
    # Two sweeps later, still there; with a second admin, it may lapse.
    s.clock.now += timedelta(days=6, hours=23, minutes=59)
    assert (await s.run()).reprieved == 1
    await add(s.gw, "boss2", 300, role="admin")
    s.clock.now += timedelta(days=8)
    report = await s.run()
    assert report.reprieved == 0 and report.expired >= 1
    assert (await s.store.require("boss")).status(s.store.now()) is Status.EXPIRED


async def test_an_expired_only_admin_is_not_revived(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    s = await sweep_setup(make_gateway, inbox)
    await add(s.gw, "head", -2, role="admin", establishment="École")
    report = await s.run()
    assert report.reprieved == 0
    head = await s.store.require("head")
    assert head.status(s.store.now()) is Status.EXPIRED


async def test_reminders_in_english(make_gateway: GatewayFactory, inbox: Inbox) -> None:
    s = await sweep_setup(make_gateway, inbox, accounts={"language": "en", "reminder_days": [10]})
    await add(s.gw, "soon", 20)
    await add(s.gw, "sooner", 3)
    await s.run()
    await mails_after_drain(s.gw)
    [message] = inbox.to("boss@example.org")
    text, _ = parts(message)
    assert message["Subject"] == f"Accounts to renew: {ESTABLISHMENT}"
    assert "(sooner): expires on" in text and "(soon)" not in text
    assert "single active administrator" in text


async def test_the_worker_runs_the_sweep_and_the_mail_loop(sw: Sweep, inbox: Inbox) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run_background(sw.gw.services.account_services, stop))

    async def reminded() -> bool:
        return len(inbox.messages) == 2

    await poll(reminded, what="the reminders")
    stop.set()
    async with asyncio.timeout(5):
        await task
    assert listed(inbox, "boss2@example.org") == ["soon,sooner"]
