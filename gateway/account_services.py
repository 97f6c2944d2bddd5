"""The accounts features wired together: admin rules, mail, sweep, TOTP, phone changes.

`build` is called from `gateway.services.build_services`; `run_background`
runs the mail loop and the expiry sweep next to the send worker (in
`otp-gateway worker`, and in `serve` unless `--no-worker`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.accounts.mail import MailQueue, SmtpTransport, Transport, wait
from gateway.accounts.notices import Notifier
from gateway.accounts.phone_change import PhoneChanges
from gateway.accounts.policy import AccountAdmin
from gateway.accounts.store import AccountStore
from gateway.accounts.sweep import Sweeper
from gateway.accounts.totp import TotpService, totp_sealer
from gateway.config import Config
from gateway.crypto import Keyring
from gateway.otp.challenges import ChallengeService
from gateway.otp.tokens import StepUps, TrustedDevices

log = logging.getLogger("otp_gateway.accounts")


@dataclass(frozen=True, slots=True)
class AccountServices:
    """What the account, TOTP and self-service routes and the sweep share."""

    admin: AccountAdmin
    mail: MailQueue
    notifier: Notifier
    sweeper: Sweeper
    totp: TotpService
    phone_changes: PhoneChanges


def build(
    config: Config,
    redis: aioredis.Redis,
    keyring: Keyring,
    store: AccountStore,
    challenges: ChallengeService,
    transport: Transport | None = None,
) -> AccountServices:
    """Wire the accounts features (`transport`: SMTP from `[smtp]` unless given)."""
    assert config.security_secret is not None
    step_ups = StepUps(redis)
    mail = MailQueue(redis, transport or SmtpTransport(config.smtp))
    notifier = Notifier(mail, config.accounts.language)
    admin = AccountAdmin(store, step_ups, TrustedDevices(redis, keyring), notifier)
    totp = TotpService(
        redis, keyring, totp_sealer(config.security_secret.reveal()), store, config.otp,
        config.rate_limits.failures, config.accounts,
    )  # fmt: skip
    return AccountServices(
        admin=admin,
        mail=mail,
        notifier=notifier,
        sweeper=Sweeper(redis, store, notifier, config.accounts),
        totp=totp,
        phone_changes=PhoneChanges(
            redis, store, challenges, step_ups, admin, config.otp.ttl_seconds
        ),
    )


async def run_background(services: AccountServices, stop: asyncio.Event) -> None:
    """The mail loop and the sweep, until `stop` is set."""
    async with asyncio.TaskGroup() as group:
        group.create_task(_supervised("mail", services.mail.run, stop))
        group.create_task(_supervised("sweep", services.sweeper.run, stop))


async def _supervised(
    name: str, loop: Callable[[asyncio.Event], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Run `loop` until `stop`; a crash is logged and the loop restarted."""
    while not stop.is_set():
        try:
            await loop(stop)
        except Exception:
            log.exception("background loop failed, restarting", extra={"loop": name})
            await wait(stop, 1.0)
