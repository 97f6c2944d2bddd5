"""The core services wired together: shared by the HTTP app and the worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.utils import HIREDIS_AVAILABLE

from gateway import account_services
from gateway.account_services import AccountServices
from gateway.accounts import AccountStore
from gateway.challenges import ChallengeService
from gateway.config import Config
from gateway.crypto import Keyring
from gateway.delivery import Deliveries
from gateway.dispatch import Dispatcher
from gateway.metrics import Metrics
from gateway.phones import PhonePolicy
from gateway.provider import Provider, ProviderContext
from gateway.queue import Worker
from gateway.scripts import Scripts
from gateway.tokens import StepUps, TrustedDevices
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


def redis_client(config: Config) -> aioredis.Redis:
    assert config.redis.url is not None, "the CLI starts the embedded Redis first"
    # A pooled connection that outlived a Redis restart fails once: retry it
    # on a fresh one rather than answer 503 to a request Redis could serve.
    client = aioredis.Redis.from_url(
        config.redis.url,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.25), retries=2),
        retry_on_error=[RedisConnectionError],
        socket_timeout=config.redis.timeout_seconds,
        socket_connect_timeout=config.redis.timeout_seconds,
        health_check_interval=30,
        max_connections=512,
    )
    pool = client.connection_pool
    pool.connection_class = with_hiredis_packing(pool.connection_class)
    return client


def with_hiredis_packing(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """`cls` (plain, TLS or Unix socket) packing commands with hiredis.

    redis-py's synchronous connections pack commands with hiredis's C packer
    when hiredis is installed; its asyncio ones still encode and join each
    argument in Python, which was ~8% of the gateway's CPU per /challenge
    (an EVALSHA of 21 arguments). Same bytes on the wire.
    """
    if not HIREDIS_AVAILABLE:
        return cls
    # Typed by hand: redis-py 8.2 dropped the annotations of its constructor.
    make_packer: Callable[[], Any] = HiredisRespSerializer
    packer = make_packer()

    def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
        packed: list[bytes] = packer.pack(*args)
        return packed

    return type(f"Hiredis{cls.__name__}", (cls,), {"pack_command": pack_command})


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
