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

With `[redis] cluster_nodes`, the client is `gateway.cluster.ClusterClient`:
redis-py's cluster client under these same rules (redirects followed, nothing
sent again after it may have run).

With `[redis] sentinels`, the primary is looked up through Sentinel on every
new connection (redis-py's `SentinelConnectionPool`). A primary demoted by a
failover answers writes with READONLY: the connection is dropped and the
failure raised as a `ConnectionError` (503), and the next connection asks the
sentinels again (`FollowsFailover`). With `[redis] wait_replicas = N`, each
script (EVALSHA) is followed on its connection by `WAIT N`: a script answers
only once N replicas hold its writes, else `NotReplicated` (503: written on
the primary, maybe not on a replica; see docs/operations.md).
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
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import ExponentialWithJitterBackoff
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import HIREDIS_AVAILABLE

from gateway.config import Config, RedisConfig

RETRIES = 2  # fresh connections tried after the first, while the budget lasts


class CommandNotSent(RedisConnectionError):
    """Redis could not be reached before the command was written: safe to send again."""


class NotReplicated(RedisConnectionError):
    """A script ran on the primary, but fewer replicas than `wait_replicas` confirmed
    its writes in time: it may not survive a failover. Never sent again."""


class SendsOnce(AbstractConnection):
    """Marks the failures that come before a command's first byte (`CommandNotSent`).

    Mixed into the pool's connection class; the only failures the client's
    `Retry` takes are these."""

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        try:
            async with _not_sent():
                await super().connect_check_health(check_health, retry_socket_connect)
        except BaseException:
            # A connect cut short (our time budget cancels it mid-handshake, after
            # the socket opened) is left "connected" by redis-py: the pool would
            # hand it out with AUTH unanswered, or drop it with its socket open.
            await self.disconnect(nowait=True)
            raise

    async def check_health(self) -> None:
        async with _not_sent():
            await super().check_health()  # type: ignore[no-untyped-call]


class FollowsFailover(SentinelManagedConnection):
    """A Sentinel-managed connection that leaves a primary a failover demoted.

    - A reply READONLY (the node is a replica now) or NOREPLICAS (it lost its
      replicas, as an old primary does when one of them is promoted) drops the
      connection and raises a `ConnectionError`: the command did not run.
      Redis before 7 wraps these inside a script's ERR ("Error running script
      ... -READONLY"), which redis-py does not see: caught here too.
    - Taken from the pool, a connection to another address than the primary
      the pool last learnt of is dropped, then opened to the primary.
    - Asking the sentinels happens before any command is written: a failure
      there (none answers, no primary yet) is `CommandNotSent`.
    """

    async def connect(self) -> None:
        if self.is_connected and self._stale():
            await self.disconnect()
        async with _not_sent():
            await super().connect()  # type: ignore[no-untyped-call]

    def _stale(self) -> bool:
        known = self.connection_pool.master_address
        return bool(self.connection_pool.is_master) and known not in (None, (self.host, self.port))

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as exc:
            if not self.connection_pool.is_master or not _refused_by_primary(exc):
                raise
            await self.disconnect()
            raise RedisConnectionError("the node refuses writes: not the primary now") from exc


def _refused_by_primary(exc: ResponseError) -> bool:
    text = str(exc)
    return text.startswith("NOREPLICAS") or any(
        f"-{code} " in text for code in ("READONLY", "NOREPLICAS")
    )


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
    if args[0] not in BLOCKING_READS:
        return 0.0
    for name, value in itertools.pairwise(args):
        if name in ("BLOCK", b"BLOCK") and value is not None:
            return int(value) / 1000
    return 0.0


class Client(aioredis.Redis):
    """redis.asyncio's client with each command, retries included, within `budget`
    seconds; with `wait_replicas`, each script's writes confirmed by that many replicas."""

    def __init__(
        self,
        pool: ConnectionPool,
        budget: float,
        wait_replicas: int = 0,
        sentinel: Sentinel | None = None,
    ) -> None:
        super().__init__(connection_pool=pool)
        self.auto_close_connection_pool = True  # it owns its pool, as from_url's client does
        self.budget = budget
        self.wait_replicas = wait_replicas
        self.discovery = sentinel  # the sentinels' clients, closed with this one

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        # `within`, spelled out: this runs for every command of every request.
        seconds = self.budget + blocking_seconds(args)
        try:
            async with asyncio.timeout(seconds):
                if self.wait_replicas and args[0] in SCRIPT_CALLS:
                    return await self._replicated(args, options)
                return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except TimeoutError as exc:
            if isinstance(exc, RedisTimeoutError):
                raise
            raise RedisTimeoutError(f"no answer from Redis within {seconds:g}s") from exc

    async def _replicated(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """The script, then WAIT on the same connection (WAIT counts the replicas
        that hold this connection's writes). Half the budget is left for WAIT."""
        pipe = Pipeline(self.connection_pool, self.response_callbacks, False, None)
        pipe.execute_command(*args, **options)
        pipe.execute_command("WAIT", self.wait_replicas, max(1, int(self.budget * 500)))
        # Errors are raised as Redis sent them (NOSCRIPT for `Script` to reload),
        # not annotated by the pipeline with the command's arguments.
        reply, replicas = await pipe.execute(raise_on_error=False)
        if isinstance(reply, Exception):
            raise reply
        if isinstance(replicas, Exception):
            raise replicas
        if replicas < self.wait_replicas:
            if isinstance(self.connection_pool, SentinelConnectionPool):
                # Maybe a failover took our replicas: ask where the primary is, so
                # that connections to another address are dropped when next taken.
                await self.connection_pool.get_master_address()  # type: ignore[no-untyped-call]
            raise NotReplicated(f"{replicas} of {self.wait_replicas} replicas confirmed in time")
        return reply

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return BudgetPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint, self.budget
        )

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.discovery is not None:
            await self.discovery.aclose()


SCRIPT_CALLS = frozenset({"EVALSHA", "EVAL", b"EVALSHA", b"EVAL"})
BLOCKING_READS = frozenset({"XREADGROUP", "XREAD", b"XREADGROUP", b"XREAD"})


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
    redis = config.redis
    if redis.cluster_nodes:
        # Imported here: gateway.cluster builds on this module's connections.
        from gateway.cluster import ClusterClient

        # The same commands and rules; redis-py types the two clients apart.
        return ClusterClient(redis)  # type: ignore[return-value]
    sentinel = None
    if redis.sentinels:
        sentinel = Sentinel(redis.sentinels, sentinel_kwargs=_sentinel_options(redis))
        pool: ConnectionPool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
            redis.sentinel_master,
            sentinel,
            connection_class=_sentinel_connection(redis),
            **_tls_options(redis),
            **_pool_options(redis),
        )
    else:
        assert redis.url is not None, "the CLI starts the embedded Redis first"
        pool = ConnectionPool.from_url(redis.url, **_pool_options(redis))
        pool.connection_class = with_hiredis_packing(sending_once(pool.connection_class))
    return Client(pool, redis.timeout_seconds, redis.wait_replicas, sentinel)


def _pool_options(redis: RedisConfig) -> dict[str, Any]:
    timeout = redis.timeout_seconds
    options: dict[str, Any] = {
        # Only failures before the command left are retried: a pooled connection
        # that outlived a Redis restart, a refused or slow connect. Never a timeout
        # or a lost reply, after which the command may have run.
        "retry": Retry(
            ExponentialWithJitterBackoff(base=0.01, cap=0.25),
            retries=RETRIES,
            supported_errors=(CommandNotSent,),
        ),
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        "max_connections": 512,
    }
    if redis.username:
        options["username"] = redis.username
    if redis.password is not None:
        options["password"] = redis.password.reveal()
    return options


def _sentinel_options(redis: RedisConfig) -> dict[str, Any]:
    """How to talk to the sentinels: the same timeouts and TLS, their own password."""
    options: dict[str, Any] = {
        "socket_timeout": redis.timeout_seconds,
        "socket_connect_timeout": redis.timeout_seconds,
        **_tls_options(redis),
    }
    if redis.sentinel_password is not None:
        options["password"] = redis.sentinel_password.reveal()
    return options


def _tls_options(redis: RedisConfig) -> dict[str, Any]:
    if not redis.tls:
        return {}
    options: dict[str, Any] = {"ssl": True}
    if redis.tls_ca_file:
        options["ssl_ca_certs"] = redis.tls_ca_file
    return options


def _sentinel_connection(redis: RedisConfig) -> type[AbstractConnection]:
    follows: type[AbstractConnection] = FollowsFailover
    if redis.tls:
        follows = type("FollowsFailoverSSL", (FollowsFailover, SentinelManagedSSLConnection), {})
    return with_hiredis_packing(sending_once(follows))


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
