"""The Redis Cluster client (`[redis] cluster_nodes`), under the rules of `gateway.datastore`.

redis-py's asyncio `RedisCluster` routes each command to the primary that
owns its key's slot and follows the cluster's redirects. It also sends a
command again after a `ConnectionError` or `TimeoutError`, which may come
after the command ran: that would verify a code twice or queue a second
send. `ClusterClient` keeps redis-py's routing and its slot-map refresh after
such an error, but sends a command again only when the failure proves it did
not run:

- `CommandNotSent`: the connection to the node failed before the command's
  first byte (connect, AUTH, the idle health check); tried again on the
  refreshed slot map, `RETRIES` times at most;
- MOVED, ASK (the slot moved or is moving: the node refused the command) and
  TRYAGAIN (keys of a slot being migrated): followed by redis-py itself, and
  when its 16 redirects run out (`ClusterError`, "TTL exhausted": a slot
  still moving) the command is sent again, while the budget lasts;
- CLUSTERDOWN / MASTERDOWN and a slot no node covers (`SlotNotCoveredError`):
  the node refused the command; tried again after a refresh.

Any other failure once the command may have left is raised as it is (503
upstream). redis-py's own "cluster unreachable" errors (`RedisClusterException`,
not `RedisError`s) are raised as `ConnectionError`, so that callers see one
kind of Redis outage. Each command and pipeline answers within
`Client.budget` seconds (a blocking read gets its BLOCK on top), its
connections pack commands with hiredis, as for a single instance.

Pipelines: a plain one is split per node by redis-py, and sent again only
when no command of it can have run (`SendsOncePipeline`); a transaction
(MULTI) must keep to one slot, as redis-py checks, and is sent again under
the same rule.

`drop_idle_connections`: after an outage, the idle connections of either kind of
client closed (a cluster client has a pool per node, no `connection_pool`).

`reachable`: a cluster is ready when each primary of the slot map answers and
says `cluster_state:ok`.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, PipelineStrategy, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    MovedError,
    RedisClusterException,
    RedisClusterUnreachableError,
    ResponseError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config import RedisConfig
from gateway.datastore import (
    RETRIES,
    CommandNotSent,
    blocking_seconds,
    sending_once,
    with_hiredis_packing,
    within,
)

# Failures that prove a command did not run. redis-py compares exact types.
NOT_RUN: tuple[type[Exception], ...] = (
    CommandNotSent,
    ClusterDownError,
    MasterDownError,
    SlotNotCoveredError,
)


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(base=0.01, cap=0.25)


class ClusterClient(RedisCluster):
    """redis-py's cluster client that sends a command again only when it did not run,
    each command within `budget` seconds; see the module docstring."""

    ERRORS_ALLOW_RETRY = NOT_RUN  # type: ignore[assignment]  # redis-py types its own tuple

    def __init__(self, redis: RedisConfig) -> None:
        super().__init__(
            startup_nodes=[ClusterNode(host, port) for host, port in redis.cluster_nodes],
            retry=Retry(_backoff(), retries=RETRIES, supported_errors=NOT_RUN),
            **_options(redis),
        )
        self.budget = redis.timeout_seconds
        # The nodes redis-py builds from here on (every node it discovers) and the
        # seeds it built already open our connections.
        connection_class = _connection_class(redis.tls)
        self.connection_kwargs["connection_class"] = connection_class
        for node in self.startup_nodes:
            node.connection_class = connection_class

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        seconds = self.budget + blocking_seconds(args)
        try:
            async with asyncio.timeout(seconds):
                return await self._redirected(*args, **kwargs)
        except TimeoutError as exc:
            if isinstance(exc, RedisTimeoutError):
                raise
            raise RedisTimeoutError(f"no answer from Redis within {seconds:g}s") from exc
        except RedisClusterException as exc:
            raise _unreachable(exc) from exc

    async def _redirected(self, *args: Any, **kwargs: Any) -> Any:
        """redis-py's call, made again while it ends in "TTL exhausted" (`ClusterError`):
        16 MOVED / ASK / TRYAGAIN in a row, each a refusal, so nothing ran. TRYAGAIN
        lasts as long as a slot's keys move (a script over keys on both sides of a
        MIGRATE): redis-py's 16 take about 0.1 s, moving a slot of many keys
        longer. The budget bounds it."""
        backoff = _backoff()
        for failures in itertools.count(1):
            try:
                return await super().execute_command(*args, **kwargs)
            except ClusterError:
                await asyncio.sleep(backoff.compute(failures))
        raise AssertionError("unreachable")  # pragma: no cover

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return SendsOncePipeline(self, bool(transaction), self.budget)  # type: ignore[abstract]


class SendsOncePipeline(ClusterPipeline):
    """A cluster pipeline within `budget` seconds, sent again only when nothing ran."""

    def __init__(self, client: RedisCluster, transaction: bool, budget: float) -> None:
        super().__init__(client, transaction)
        self.budget = budget
        if transaction:
            # redis-py retries a transaction on any connection error, and after a
            # redirect (MOVED / ASK refuse the queued commands: EXEC then aborts).
            self._execution_strategy._retry = Retry(  # type: ignore[attr-defined]
                _backoff(), retries=RETRIES, supported_errors=(*NOT_RUN, MovedError, AskError)
            )
        else:
            self._execution_strategy = OnceStrategy(self)

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        try:
            async with within(self.budget):
                result: list[Any] = await super().execute(raise_on_error, allow_redirections)
                return result
        except RedisClusterException as exc:
            raise _unreachable(exc) from exc


class OnceStrategy(PipelineStrategy):
    """redis-py's plain pipeline, whose retry resends every command that failed, even
    one whose reply was lost after it ran: here only when no command may have run.
    Its redirects (MOVED / ASK / TRYAGAIN, each command again on its own) stay."""

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        if not self._command_queue:
            return []
        client = self._pipe.cluster_client
        backoff = _backoff()
        try:
            for failures in range(RETRIES + 1):
                if client._initialize_due():
                    await client.initialize()
                try:
                    result: list[Any] = await self._execute(
                        client, self._command_queue, raise_on_error, allow_redirections
                    )
                    return result
                except NOT_RUN:
                    if failures == RETRIES or self._some_may_have_run():
                        raise
                    client._request_refresh()
                await asyncio.sleep(backoff.compute(failures + 1))
            raise AssertionError("unreachable")  # pragma: no cover
        finally:
            await self.reset()  # type: ignore[no-untyped-call]

    def _some_may_have_run(self) -> bool:
        """A command failed in a way that does not prove it never ran."""
        return any(
            isinstance(cmd.result, Exception) and not isinstance(cmd.result, NOT_RUN)
            for cmd in self._command_queue
        )


# What redis-py says when no slot map can be had: no node answers, or the nodes
# that do disagree or leave slots uncovered (mid-failover). Not RedisErrors.
OUTAGES = ("Redis Cluster cannot be connected", "All slots are not covered", "startup_nodes")


def _unreachable(exc: RedisClusterException) -> Exception:
    """redis-py's cluster-wide failures as the `ConnectionError` of an outage (503);
    a misuse (keys of several slots in one command or script) as it is."""
    if isinstance(exc, (RedisClusterUnreachableError, SlotNotCoveredError)) or str(exc).startswith(
        OUTAGES
    ):
        return RedisConnectionError(f"Redis Cluster unavailable: {type(exc).__name__}")
    return exc


def cross_slot(exc: BaseException) -> bool:
    """A command or transaction over several hash slots: refused by redis-py
    before it left (`RedisClusterException`: what `_unreachable` leaves of it is
    a misuse), or by the server (`CROSSSLOT`). Always a bug of ours: no script
    or transaction may span two slots (docs/architecture.md, "Hash slots")."""
    if isinstance(exc, (RedisClusterException, ClusterCrossSlotError)):
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith("CROSSSLOT")


async def reachable(redis: aioredis.Redis | RedisCluster) -> bool:
    """Ready to serve: a single Redis answers PING; in a cluster, every primary of the
    slot map answers and says `cluster_state:ok`."""
    if not isinstance(redis, RedisCluster):
        return bool(await redis.ping())
    # The first call also learns the slot map, when the client has none yet.
    if _state(await redis.cluster_info()) != "ok":
        return False
    primaries = redis.get_primaries()
    infos = await asyncio.gather(*(redis.cluster_info(target_nodes=n) for n in primaries))
    return all(_state(info) == "ok" for info in infos)


async def drop_idle_connections(redis: aioredis.Redis | RedisCluster) -> None:
    """Closes the idle pooled connections (of every node of a cluster), which a Redis
    restart or failover left dead: the next command opens a fresh one. Connections
    in use are left to their commands."""
    if not isinstance(redis, RedisCluster):
        await redis.connection_pool.disconnect(inuse_connections=False)
        return
    for node in redis.get_nodes():
        await node.disconnect_free_connections()


def _state(info: Any) -> Any:
    return info.get("cluster_state") if isinstance(info, dict) else None


def _connection_class(tls: bool) -> type[Connection]:
    base: type[Connection] = SSLConnection if tls else Connection
    made: type[Connection] = with_hiredis_packing(sending_once(base))  # type: ignore[assignment]
    return made


def _options(redis: RedisConfig) -> dict[str, Any]:
    timeout = redis.timeout_seconds
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        "max_connections": 512,  # per node
    }
    if redis.username:
        options["username"] = redis.username
    if redis.password is not None:
        options["password"] = redis.password.reveal()
    if redis.tls:
        options["ssl"] = True
        if redis.tls_ca_file:
            options["ssl_ca_certs"] = redis.tls_ca_file
    return options
