"""The gateway's Redis client: a command is sent at most once, within one time budget.

A command whose reply does not come back (a reset connection, a timeout) may
have run in Redis: sending it again could verify a code twice, count one
wrong code twice, or queue a second challenge that then answers 429. So the
client sends a command again only when it provably never left: the failure
came while connecting (socket, AUTH, HELLO, SELECT) or in the PING health
check that precedes a command on an idle connection (`CommandNotSent`).
Any failure once the command's first byte may have been written is raised to
the caller as it is; the HTTP layer answers 503 `unavailable` with
`Retry-After`, and the caller's own retry gets the truth from Redis.

Each command (or pipeline), its connection set-up and those retries included,
answers or fails within `[redis] timeout_seconds` (`Client.budget`); past it
the wait is cut and a `redis.exceptions.TimeoutError` raised. A blocking read
(`XREADGROUP ... BLOCK ms`) gets its block time on top.

Commands are packed by hiredis (`with_hiredis_packing`): same bytes, less CPU.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from gateway.config import Config

RETRIES = 2  # fresh connections tried after the first, while the budget lasts


class CommandNotSent(RedisConnectionError):
    """Redis could not be reached before the command was written: safe to send again."""


class SendsOnce(AbstractConnection):
    """Marks the failures that come before a command's first byte (`CommandNotSent`).

    Mixed into the pool's connection class; the only failures the client's
    `Retry` takes are these."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        async with _not_sent():
            await super().connect_check_health(check_health, retry_socket_connect)

    async def check_health(self) -> None:
        async with _not_sent():
            await super().check_health()  # type: ignore[no-untyped-call]


@asynccontextmanager
async def _not_sent() -> AsyncIterator[None]:
    try:
        yield
    except CommandNotSent:
        raise
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise CommandNotSent(str(exc)) from exc


@asynccontextmanager
async def within(seconds: float) -> AsyncIterator[None]:
    """Cut the wait after `seconds`; raised as Redis's TimeoutError (a RedisError)."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        if isinstance(exc, RedisTimeoutError):
            raise
        raise RedisTimeoutError(f"no answer from Redis within {seconds:g}s") from exc


def blocking_seconds(args: Sequence[Any]) -> float:
    """How long a blocking read may wait by design (its BLOCK argument), else 0."""
    for name, value in itertools.pairwise(args):
        if name in ("BLOCK", b"BLOCK") and value is not None:
            return int(value) / 1000
    return 0.0


class Client(aioredis.Redis):
    """redis.asyncio's client with each command, retries included, within `budget` seconds."""

    def __init__(self, pool: ConnectionPool, budget: float) -> None:
        super().__init__(connection_pool=pool)
        self.auto_close_connection_pool = True  # it owns its pool, as from_url's client does
        self.budget = budget

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        async with within(self.budget + blocking_seconds(args)):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return BudgetPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint, self.budget
        )


class BudgetPipeline(Pipeline):
    """A pipeline whose `execute` answers or fails within `budget` seconds."""

    def __init__(
        self,
        pool: ConnectionPool,
        callbacks: Any,
        transaction: bool,
        shard_hint: str | None,
        budget: float,
    ) -> None:
        super().__init__(pool, callbacks, transaction, shard_hint)
        self.budget = budget

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        async with within(self.budget):
            result: list[Any] = await super().execute(raise_on_error)
            return result


def redis_client(config: Config) -> aioredis.Redis:
    """The client every process uses (HTTP app, workers); see the module docstring."""
    assert config.redis.url is not None, "the CLI starts the embedded Redis first"
    timeout = config.redis.timeout_seconds
    pool = ConnectionPool.from_url(
        config.redis.url,
        # Only failures before the command left are retried: a pooled connection
        # that outlived a Redis restart, a refused or slow connect. Never a timeout
        # or a lost reply, after which the command may have run.
        retry=Retry(
            ExponentialWithJitterBackoff(base=0.01, cap=0.25),
            retries=RETRIES,
            supported_errors=(CommandNotSent,),
        ),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        max_connections=512,
    )
    pool.connection_class = with_hiredis_packing(sending_once(pool.connection_class))
    return Client(pool, budget=timeout)


def sending_once(cls: type[AbstractConnection]) -> type[AbstractConnection]:
    """`cls` (plain, TLS or Unix socket) marking its not-sent failures (`SendsOnce`)."""
    return type(f"Once{cls.__name__}", (SendsOnce, cls), {})


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
