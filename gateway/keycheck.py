"""Start-up refuses a `[security] secret` other than the one the data was written with.

With another secret a gateway would answer 202 and never send (the worker cannot
open the sealed code or number) and fail on every account read. So each gateway
and worker, at start, records the fingerprint of its secret in Redis
(`keys.KEY_FINGERPRINT`) when none is there, with SET NX so that processes
starting together agree on one, and refuses to start when the recorded one is
another's. Data written before fingerprints existed is checked once on one
sealed phone number before the first fingerprint is recorded.

The same spot checks the key layout: data in the round-1 layout (before hash
slots: `otp:accounts`, `otp:sends`...) without the `otp:layout` marker stops
start-up, naming `otp-gateway migrate`; an empty Redis gets the marker.

The fingerprint is `crypto.key_fingerprint`: a keyed hash under its own HKDF
label, never the secret or a plain hash of it. `gateway.rotate` records the
new secret's fingerprint when it moves the data to it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from redis.exceptions import RedisError

from gateway import keys
from gateway.config import Config
from gateway.crypto import Keyring, constant_time_equal, key_fingerprint
from gateway.datastore import redis_client
from gateway.errors import ConfigError, GatewayError

log = logging.getLogger("otp_gateway")
# Redis down or slow: the check cannot be made yet (GatewayError: a timeout
# mapped to `unavailable` by the Redis client).
UNREACHABLE = (RedisError, OSError, TimeoutError, GatewayError)


class KeyMismatch(ConfigError):
    """The secret is not the one this Redis's data was written with."""

    def __init__(self) -> None:
        super().__init__(
            "security.secret",
            "is not the secret this Redis's data was written with "
            f"({keys.KEY_FINGERPRINT} differs); to change the secret, stop every gateway "
            "and worker and run OTPGW_OLD_SECRET='<old secret>' python -m gateway.rotate "
            "--config <new config> (docs/security.md)",
        )


class LayoutOutdated(ConfigError):
    """The data is in the round-1 key layout: `otp-gateway migrate` must move it first."""

    def __init__(self) -> None:
        super().__init__(
            "redis",
            "holds data in the old key layout (no hash slots); stop every gateway and worker "
            "and run otp-gateway migrate --config <config> first (docs/operations.md)",
        )


# Keys only the round-1 layout has: one of them without the marker means data
# `otp-gateway migrate` has not moved yet.
ROUND1_KEYS = (
    keys.PREFIX + "accounts", keys.PREFIX + "sends", keys.PREFIX + "dead",
    keys.PREFIX + "retries", keys.PREFIX + "logins",
)  # fmt: skip


async def check_layout(redis: aioredis.Redis) -> None:
    """Raise LayoutOutdated on round-1 data; mark an empty Redis as the new layout."""
    if await redis.get(keys.LAYOUT) == keys.LAYOUT_VERSION.encode():
        return
    if await redis.exists(*ROUND1_KEYS):
        raise LayoutOutdated()
    await redis.set(keys.LAYOUT, keys.LAYOUT_VERSION)


async def check_key(redis: aioredis.Redis, secret: str) -> None:
    """Record this secret's fingerprint, or raise KeyMismatch if another's is recorded
    (LayoutOutdated first, when the data needs `otp-gateway migrate`)."""
    await check_layout(redis)
    mine = key_fingerprint(secret)
    recorded: Any = await redis.get(keys.KEY_FINGERPRINT)
    if recorded is None:
        await _check_older_data(redis, secret)
        if await redis.set(keys.KEY_FINGERPRINT, mine, nx=True):
            return
        recorded = await redis.get(keys.KEY_FINGERPRINT)  # another process was first
    if recorded is not None and not constant_time_equal(recorded, mine):
        raise KeyMismatch()


async def record_key(redis: aioredis.Redis, secret: str) -> None:
    """The data is now written with `secret` (after a rotation)."""
    await redis.set(keys.KEY_FINGERPRINT, key_fingerprint(secret))


async def _check_older_data(redis: aioredis.Redis, secret: str) -> None:
    """Data from before fingerprints: one sealed number must open with this secret.

    The record is named from the account's tag under this secret: an indexed
    account whose record is not there was written with another secret."""
    keyring = Keyring.from_secret(secret)
    for index in keys.ACCOUNT_INDEXES:
        account_id: Any = await redis.srandmember(index)
        if account_id is None:
            continue
        record = keys.account(keyring.tag("account", account_id.decode()))
        if not await redis.exists(record):
            raise KeyMismatch()
        sealed: Any = await redis.hget(record, "phone")
        if not sealed:
            return
        try:
            keyring.phones.open(sealed, account_id)
        except InvalidTag:
            raise KeyMismatch() from None
        return


async def check_at_start(config: Config) -> None:
    """The gateway's check: refuse a wrong secret; a Redis that does not answer
    yet is not a reason to stay down (the worker waits and checks before sending)."""
    if config.security_secret is None:
        return
    redis = redis_client(config)
    try:
        await check_key(redis, config.security_secret.reveal())
    except UNREACHABLE:
        log.warning("secret not checked against redis at start: redis unreachable")
    finally:
        await redis.aclose()


async def check_when_reachable(redis: aioredis.Redis, config: Config, stop: asyncio.Event) -> None:
    """The worker's check: waits for Redis (or `stop`), then refuses a wrong secret
    before the first send."""
    if config.security_secret is None:
        return
    pause = 0.05
    while not stop.is_set():
        try:
            await check_key(redis, config.security_secret.reveal())
            return
        except UNREACHABLE:
            pause = min(pause * 2, 1.0)
            try:
                await asyncio.wait_for(stop.wait(), pause)
            except TimeoutError:
                continue
