"""The one composition root: config in, the wired services out.

The HTTP app (`gateway.app`) and the standalone worker (`gateway.worker_main`)
both open it the same way, `async with runtime.open(config, providers, metrics)
as services`: the Redis client, the OTP engine (challenges, queue worker,
dispatcher, delivery) and the accounts wing (admin rules, mail, sweep, TOTP,
phone changes). Leaving the block closes the providers and Redis.

Nothing here imports `gateway.web`: the API-key checker is the web layer's
own (`gateway.web.auth.ApiKeys`, kept by the app in `gateway.web.request`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio as aioredis

from gateway.accounts.mail import MailQueue, SmtpTransport, Transport
from gateway.accounts.notices import Notifier
from gateway.accounts.phone_change import PhoneChanges
from gateway.accounts.policy import AccountAdmin
from gateway.accounts.store import AccountStore
from gateway.accounts.sweep import Sweeper
from gateway.accounts.totp import TotpService, totp_sealer
from gateway.config import Config
from gateway.crypto import Keyring
from gateway.datastore import redis_client
from gateway.luascripts import Lua
from gateway.metrics import Metrics
from gateway.otp.challenges import ChallengeService
from gateway.otp.delivery import Deliveries
from gateway.otp.dispatch import Dispatcher
from gateway.otp.queue import Worker
from gateway.otp.scripts import Scripts
from gateway.otp.tokens import StepUps, TrustedDevices
from gateway.otp.webhooks import Webhooks
from gateway.phones import PhonePolicy
from gateway.provider import Provider, ProviderContext, ProviderServices, ReportingProvider
from gateway.streams import wait

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


@dataclass(frozen=True, slots=True)
class Services:
    """Everything wired: what handlers reach through `gateway.web.request.SERVICES`."""

    config: Config
    redis: aioredis.Redis
    keyring: Keyring
    accounts: AccountStore
    challenges: ChallengeService
    trusted: TrustedDevices
    step_ups: StepUps
    dispatcher: Dispatcher
    metrics: Metrics
    worker: Worker
    deliveries: Deliveries  # provider callbacks, calling again (gateway/otp/delivery.py)
    account_services: AccountServices  # admins, sweep, mail, TOTP (the accounts wing)
    lua: Lua  # every Lua script both wings run, with the deployment's settings
    webhooks: Webhooks  # challenge events to the application (gateway/otp/webhooks.py)


@contextlib.asynccontextmanager
async def open(
    config: Config, providers: list[Provider], metrics: Metrics
) -> AsyncIterator[Services]:
    """Open Redis, wire everything; on the way out close the providers, then Redis."""
    redis = redis_client(config)
    try:
        services = build(config, redis, providers, metrics)
        try:
            yield services
        finally:
            await services.webhooks.aclose()
            await services.dispatcher.aclose()
    finally:
        await redis.aclose()


def phone_policy(config: Config) -> PhonePolicy:
    p = config.phones
    return PhonePolicy(p.default_region, frozenset(p.allowed_regions), p.allow_voip)


def build(
    config: Config, redis: aioredis.Redis, providers: list[Provider], metrics: Metrics
) -> Services:
    """Wire the OTP engine and the accounts wing over one Redis client."""
    if config.security_secret is None:
        raise RuntimeError(
            "[security] secret is required (the CLI sets it on the embedded default)"
        )
    keyring = Keyring.from_secret(config.security_secret.reveal())
    dispatcher = Dispatcher(
        providers, config.worker.send_timeout_seconds, metrics,
        breaker_threshold=config.worker.breaker_threshold,
        breaker_open_seconds=config.worker.breaker_open_seconds,
    )  # fmt: skip
    # One loader, one CFG: every script of both wings sees the same settings.
    lua = Lua.for_config(redis, config, dispatcher.channels)
    accounts = AccountStore(redis, keyring, phone_policy(config), config.accounts, lua=lua)
    scripts = Scripts.load(lua)
    hooks = Webhooks(redis, config.webhooks, metrics, config.worker)
    challenges = ChallengeService(
        redis, scripts, keyring, accounts, config, dispatcher.channels, hooks=hooks
    )
    worker = Worker(redis, scripts, keyring, dispatcher, metrics, config, hooks=hooks)
    reports = ProviderServices(redis, worker.deliveries.record, config.otp.ttl_seconds)
    for provider in providers:
        if isinstance(provider, ReportingProvider):  # e.g. SMPP: receipts on its own link
            provider.attach(reports)
    return Services(
        config=config,
        redis=redis,
        keyring=keyring,
        accounts=accounts,
        challenges=challenges,
        trusted=TrustedDevices(redis, keyring),
        step_ups=StepUps(redis),
        dispatcher=dispatcher,
        metrics=metrics,
        worker=worker,
        deliveries=worker.deliveries,
        account_services=build_accounts(config, redis, lua, keyring, accounts, challenges),
        lua=lua,
        webhooks=hooks,
    )


def build_accounts(
    config: Config,
    redis: aioredis.Redis,
    lua: Lua,
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
        redis, keyring, totp_sealer(config.security_secret.reveal()), store, config.accounts, lua
    )
    return AccountServices(
        admin=admin,
        mail=mail,
        notifier=notifier,
        sweeper=Sweeper(redis, store, notifier, config.accounts, lua=lua),
        totp=totp,
        phone_changes=PhoneChanges(
            redis, store, challenges, step_ups, admin, config.otp.ttl_seconds
        ),
    )


def provider_context(config: Config) -> ProviderContext:
    return ProviderContext(
        development=config.server.development, public_url=config.server.public_url
    )


async def run_background(
    services: AccountServices, stop: asyncio.Event, hooks: Webhooks | None = None
) -> None:
    """The mail loop, the expiry sweep and the webhook loop, until `stop` is set.

    They run next to the send worker: in `otp-gateway worker`, and in `serve`
    unless `--no-worker`."""
    async with asyncio.TaskGroup() as group:
        group.create_task(_supervised("mail", services.mail.run, stop))
        group.create_task(_supervised("sweep", services.sweeper.run, stop))
        if hooks is not None:
            group.create_task(_supervised("webhooks", hooks.run, stop))


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
