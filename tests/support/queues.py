"""Keys as the tests see them: the send queue's 16 streams (summed or merged),
and the test accounts' keys, named from their tags under the test secret."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from gateway import keys
from gateway.crypto import Keyring
from tests.support.config import SECRET

Entries = list[tuple[bytes, dict[bytes, bytes]]]


async def _sum(redis: aioredis.Redis, command: str, names: tuple[str, ...]) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            getattr(pipe, command)(name)
        counts: list[Any] = await pipe.execute()
    return sum(int(c) for c in counts)


async def queued(redis: aioredis.Redis) -> int:
    """Entries in every group's send stream."""
    return await _sum(redis, "xlen", keys.STREAMS)


async def dead_count(redis: aioredis.Redis) -> int:
    """Dead letters of every group."""
    return await _sum(redis, "xlen", keys.DEAD_LETTERS)


async def scheduled(redis: aioredis.Redis) -> int:
    """Calls scheduled again, in every group."""
    return await _sum(redis, "zcard", keys.RETRIES)


async def _merged(redis: aioredis.Redis, names: tuple[str, ...]) -> Entries:
    found: Entries = []
    for name in names:
        found += await redis.xrange(name)
    return sorted(found, key=lambda e: tuple(int(p) for p in e[0].split(b"-")))


async def queue_entries(redis: aioredis.Redis) -> Entries:
    """Every queued send, oldest first."""
    return await _merged(redis, keys.STREAMS)


async def dead_letters(redis: aioredis.Redis) -> Entries:
    """Every dead letter, oldest first."""
    return await _merged(redis, keys.DEAD_LETTERS)


async def schedule(redis: aioredis.Redis) -> list[tuple[bytes, float]]:
    """Every call scheduled again (member, due ms)."""
    found: list[tuple[bytes, float]] = []
    for name in keys.RETRIES:
        found += await redis.zrange(name, 0, -1, withscores=True)
    return found


async def pending(redis: aioredis.Redis) -> int:
    """Entries delivered to a worker and not acknowledged, in every group."""
    total = 0
    for name in keys.STREAMS:
        if await redis.exists(name):
            summary: Any = await redis.xpending(name, keys.GROUP)
            total += int(summary["pending"])
    return total


# --- the test accounts' own keys (named from their tag under the test secret) -------

_KEYRING = Keyring.from_secret(SECRET)


def tag(account_id: str) -> str:
    return _KEYRING.tag("account", account_id)


def record(account_id: str) -> str:
    """The key of an account's record under the test secret."""
    return keys.account(tag(account_id))


def history(account_id: str) -> str:
    return keys.history(tag(account_id))


async def indexed(redis: aioredis.Redis) -> set[bytes]:
    """Every account id of every group's index."""
    found: set[bytes] = set()
    for index in keys.ACCOUNT_INDEXES:
        found |= set(await redis.smembers(index))
    return found
