"""The core services wired together: shared by the HTTP app and the worker."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from gateway import account_services
from gateway.account_services import AccountServices
from gateway.accounts.store import AccountStore
from gateway.config import Config
from gateway.crypto import Keyring
from gateway.datastore import redis_client as redis_client  # app.py and the worker open it here
from gateway.metrics import Metrics
from gateway.otp.challenges import ChallengeService
from gateway.otp.delivery import Deliveries
from gateway.otp.dispatch import Dispatcher
from gateway.otp.queue import Worker
from gateway.otp.scripts import Scripts
from gateway.otp.tokens import StepUps, TrustedDevices
from gateway.phones import PhonePolicy
from gateway.provider import Provider, ProviderContext
from gateway.web.auth import ApiKeys


@dataclass(frozen=True, slots=True)
class Services:
    """What handlers reach through `request.app[SERVICES]`."""

    config: Config
    redis: aioredis.Redis
    keyring: Keyring
    accounts: AccountStore
    challenges: ChallengeService
    trusted: TrustedDevices
    step_ups: StepUps
    dispatcher: Dispatcher
    metrics: Metrics
    api_keys: ApiKeys
    worker: Worker
    deliveries: Deliveries  # provider callbacks, calling again (gateway/delivery.py)
    account_services: AccountServices  # admins, sweep, mail, TOTP (gateway/account_services.py)


SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", Metrics)


def phone_policy(config: Config) -> PhonePolicy:
    p = config.phones
    return PhonePolicy(p.default_region, frozenset(p.allowed_regions), p.allow_voip)


def build_services(
    config: Config, redis: aioredis.Redis, providers: list[Provider], metrics: Metrics
) -> Services:
    """Wire the core services; used by the HTTP app and the standalone worker."""
    if config.security_secret is None:
        raise RuntimeError(
            "[security] secret is required (the CLI sets it on the embedded default)"
        )
    keyring = Keyring.from_secret(config.security_secret.reveal())
    accounts = AccountStore(redis, keyring, phone_policy(config), config.accounts)
    dispatcher = Dispatcher(
        providers, config.worker.send_timeout_seconds, metrics,
        breaker_threshold=config.worker.breaker_threshold,
        breaker_open_seconds=config.worker.breaker_open_seconds,
    )  # fmt: skip
    scripts = Scripts.load(redis, config, dispatcher.channels)
    challenges = ChallengeService(redis, scripts, keyring, accounts, config, dispatcher.channels)
    worker = Worker(redis, scripts, keyring, dispatcher, metrics, config)
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
        api_keys=ApiKeys(config.api_keys),
        worker=worker,
        deliveries=worker.deliveries,
        account_services=account_services.build(config, redis, keyring, accounts, challenges),
    )


def provider_context(config: Config) -> ProviderContext:
    return ProviderContext(
        development=config.server.development, public_url=config.server.public_url
    )
