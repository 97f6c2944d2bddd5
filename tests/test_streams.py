"""The stream consumer the send queue and the mail outbox share, on a real Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import ConnectionPool

from gateway import keys
from gateway.datastore import Client
from gateway.embedded import RedisServer
from gateway.streams import Stream, StreamConsumer, Verdict
from tests.support.poll import poll

# One hash tag: a dead letter is one transaction with its stream (one slot on a cluster).
KEY, GROUP, DEAD = "t:{s}stream", "t:group", "t:{s}dead"
STREAM = Stream(KEY, GROUP, claim_idle_seconds=0.1, max_deliveries=3, concurrency=2, block_ms=50)


class Handler:
    """Takes entries as a real one would: acks what it is done with, or leaves it
    for another delivery and dead-letters it when the consumer says so.

    `hold` keeps each entry in hand until `release` is set; `fail` leaves
    entries pending; `crash` raises for the first `crash` deliveries."""

    def __init__(self, *, hold: bool = False, fail: bool = False, crash: int = 0) -> None:
        self.consumer: StreamConsumer | None = None
        self.seen: list[bytes] = []
        self.done: list[bytes] = []
        self.in_hand = self.most_in_hand = 0
        self.fail, self.crash = fail, crash
        self.release = asyncio.Event()
        if not hold:
            self.release.set()
        self.arrived = asyncio.Event()
        self.expected = 0
        self.all_done = asyncio.Event()

    def expect(self, count: int) -> None:
        self.expected = count

    async def __call__(self, key: str, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        assert self.consumer is not None
        self.seen.append(entry_id)
        self.in_hand += 1
        self.most_in_hand = max(self.most_in_hand, self.in_hand)
        self.arrived.set()
        try:
            await self.release.wait()
            if self.crash:
                self.crash -= 1
                raise RuntimeError("a bug of ours")
            if self.fail:
                verdict, _ = await self.consumer.verdict(key, entry_id)
                if verdict is Verdict.DEAD_LETTER:
                    await self.consumer.dead_letter(key, entry_id, fields, DEAD, "failing", 100)
                return verdict.value
            await self.consumer.ack(key, entry_id)
            self.done.append(entry_id)
            if len(self.done) >= self.expected:
                self.all_done.set()
            return "done"
        finally:
            self.in_hand -= 1


def consumer(
    redis: aioredis.Redis, handler: Handler, stream: Stream = STREAM, **kw: Any
) -> StreamConsumer:
    handler.consumer = StreamConsumer(redis, stream, handler, **kw)
    return handler.consumer


async def add(redis: aioredis.Redis, count: int) -> list[bytes]:
    return [await redis.xadd(KEY, {"i": i}) for i in range(count)]


async def pending(redis: aioredis.Redis) -> int:
    summary: Any = await redis.xpending(KEY, GROUP)
    count: int = summary["pending"]
    return count


@pytest.fixture
async def running() -> AsyncIterator[Any]:
    """Starts `consumer.run(stop)`; stops it and checks it ended cleanly."""
    started: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(c: StreamConsumer) -> tuple[asyncio.Event, asyncio.Task[None]]:
        stop = asyncio.Event()
        started.append((stop, asyncio.create_task(c.run(stop))))
        return started[-1]

    yield start
    for stop, task in started:
        stop.set()
        await asyncio.wait_for(task, 5)
        assert task.exception() is None


# --- burst mode ------------------------------------------------------------------


async def test_drain_hands_each_entry_over_once_and_the_handler_acks_it(
    redis: aioredis.Redis,
) -> None:
    handler = Handler()
    ids = await add(redis, 3)
    assert await consumer(redis, handler).drain() == ["done"] * 3
    assert handler.seen == ids
    assert await redis.xlen(KEY) == 0
    assert await pending(redis) == 0


async def test_a_failing_entry_is_retried_until_max_deliveries_then_dead_lettered(
    redis: aioredis.Redis,
) -> None:
    handler = Handler(fail=True)
    [entry_id] = await add(redis, 1)
    assert await consumer(redis, handler).drain() == ["retry", "retry", "dead_letter"]
    [(_, dead)] = await redis.xrange(DEAD)
    assert dead == {b"i": b"0", b"reason": b"failing"}
    assert await redis.xlen(KEY) == 0
    assert await pending(redis) == 0
    assert handler.seen == [entry_id] * 3


async def test_without_retry_each_drain_delivers_a_pending_entry_once(
    redis: aioredis.Redis,
) -> None:
    handler = Handler(fail=True)
    await add(redis, 1)
    c = consumer(redis, handler)
    assert [await c.drain(retry=False) for _ in range(4)] == [
        ["retry"], ["retry"], ["dead_letter"], [],
    ]  # fmt: skip


async def test_the_verdict_on_an_entry_done_meanwhile_is_gone(redis: aioredis.Redis) -> None:
    c = consumer(redis, Handler())
    [entry_id] = await add(redis, 1)
    await c.ensure_group()
    await redis.xreadgroup(GROUP, c.name, {KEY: ">"})
    assert await c.verdict(KEY, entry_id) == (Verdict.RETRY, 1)
    await c.ack(KEY, entry_id)
    assert await c.verdict(KEY, entry_id) == (Verdict.GONE, 0)


# --- the loop ----------------------------------------------------------------------


async def test_run_claims_what_a_dead_consumer_held(redis: aioredis.Redis, running: Any) -> None:
    handler = Handler()
    handler.expect(2)
    c = consumer(redis, handler)
    await c.ensure_group()
    held = await add(redis, 2)
    await redis.xreadgroup(GROUP, "dead", {KEY: ">"})  # read, never acknowledged
    running(c)
    await asyncio.wait_for(handler.all_done.wait(), 5)
    assert sorted(handler.done) == sorted(held)
    assert await pending(redis) == 0


async def test_run_keeps_to_its_concurrency_and_finishes_what_it_holds_on_stop(
    redis: aioredis.Redis,
) -> None:
    handler = Handler(hold=True)
    ids = await add(redis, 5)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer(redis, handler).run(stop))
    await asyncio.wait_for(handler.arrived.wait(), 5)
    stop.set()
    handler.release.set()
    await asyncio.wait_for(task, 5)
    # Read in one batch, so all held: each finished, never more than two at once.
    assert sorted(handler.done) == sorted(ids)
    assert handler.most_in_hand == STREAM.concurrency
    assert await redis.xlen(KEY) == 0


async def test_a_handler_that_raises_leaves_its_entry_for_a_later_delivery(
    redis: aioredis.Redis, running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Handler(crash=1)
    handler.expect(2)
    ids = await add(redis, 2)
    running(consumer(redis, handler, logger=logging.getLogger("t"), role="test loop"))
    await asyncio.wait_for(handler.all_done.wait(), 5)
    assert sorted(handler.done) == sorted(ids)
    assert len(handler.seen) == 3  # the crashed one claimed again after claim_idle_seconds
    [line] = [r for r in caplog.records if r.name == "t" and r.levelno == logging.ERROR]
    assert line.getMessage() == "test loop: an entry failed, left pending"
    assert line.exc_info is not None


@pytest.mark.single_only(reason="Client over one instance's pool; a cluster's: test_cluster.py")
async def test_a_blocking_read_gets_its_block_time_on_top_of_the_budget(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The read blocks 600 ms on a client whose commands must answer in 250 ms.

    (Redis ends a block up to one server tick late, 100 ms at its default hz:
    the budget on top absorbs that.)"""
    client = Client(ConnectionPool.from_url(redis_server.url), budget=0.25)
    ticks = asyncio.Event()
    count = 0

    async def tick() -> None:
        nonlocal count
        count += 1
        if count == 3:
            ticks.set()

    slow = Stream(KEY, GROUP, claim_idle_seconds=60, max_deliveries=3, block_ms=600)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer(client, Handler(), slow, tick=tick).run(stop))
    try:
        await asyncio.wait_for(ticks.wait(), 5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await client.aclose()
    assert "cannot reach redis" not in caplog.text


# --- a lost group ------------------------------------------------------------------


async def _destroy_group(redis: aioredis.Redis) -> None:
    await redis.xgroup_destroy(KEY, GROUP)


async def _flushall(redis: aioredis.Redis) -> None:
    await redis.flushall()


@pytest.mark.parametrize("lose", [_destroy_group, _flushall])
async def test_a_lost_group_is_created_again_and_reading_goes_on(
    redis: aioredis.Redis, running: Any, caplog: pytest.LogCaptureFixture, lose: Any
) -> None:
    """A FLUSHALL, or a failover to a replica that lacked the group: NOGROUP."""
    handler = Handler()
    handler.expect(1)
    c = consumer(redis, handler, logger=logging.getLogger("t"), role="test loop")
    running(c)
    await add(redis, 1)
    await asyncio.wait_for(handler.all_done.wait(), 5)
    await lose(redis)
    handler.all_done.clear()
    handler.expect(2)
    await add(redis, 1)
    await asyncio.wait_for(handler.all_done.wait(), 5)
    assert await pending(redis) == 0
    assert "test loop: consumer group missing, created again" in caplog.text
    assert "cannot reach redis" not in caplog.text


async def test_drain_creates_a_lost_group_again(redis: aioredis.Redis) -> None:
    c = consumer(redis, Handler())
    await c.ensure_group()
    await _destroy_group(redis)
    await add(redis, 1)
    assert await c.drain() == ["done"]


async def test_an_idle_consumer_creates_its_group_once(redis: aioredis.Redis, running: Any) -> None:
    """Before: each turn of the loop (every block period) sent XGROUP CREATE and
    got BUSYGROUP back, which is how a lost group came back."""
    ticks = asyncio.Event()
    count = 0

    async def tick() -> None:
        nonlocal count
        count += 1
        if count == 6:
            ticks.set()

    await redis.config_resetstat()
    running(consumer(redis, Handler(), tick=tick))
    await asyncio.wait_for(ticks.wait(), 5)
    stats: Any = await redis.info("commandstats")
    # Redis 6 counts XGROUP as one command, Redis 7 each subcommand apart.
    assert sum(v["calls"] for k, v in stats.items() if k.startswith("cmdstat_xgroup")) == 1


# --- both of its users --------------------------------------------------------------


async def _calls(redis: aioredis.Redis, command: str) -> int:
    if isinstance(redis, RedisCluster):  # OTP_TESTS_REDIS=cluster: every primary's count
        per_node: Any = await redis.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        nodes = list(per_node.values())
    else:
        nodes = [await redis.info("commandstats")]
    # Redis 6 counts XGROUP as one command, Redis 7 each subcommand apart.
    prefix = f"cmdstat_{command}"
    return sum(v["calls"] for stats in nodes for k, v in stats.items() if k.startswith(prefix))


async def _idle_turns(redis: aioredis.Redis, turns: int) -> None:
    """Until the loop has read `turns` times (each read blocks one period)."""

    async def turned() -> bool:
        return await _calls(redis, "xreadgroup") >= turns

    await poll(turned, within=10, what=f"{turns} turns of the loop")


@pytest.mark.parametrize("loop", ["worker", "mail"])
async def test_the_send_worker_and_the_mail_loop_create_their_group_once(
    make_gateway: Any, redis: aioredis.Redis, loop: str
) -> None:
    """Before: XGROUP CREATE (answered BUSYGROUP) on every turn, 4 a second."""
    gw = await make_gateway()
    services = gw.services
    run = services.worker.run if loop == "worker" else services.account_services.mail.run
    if isinstance(redis, RedisCluster):
        await redis.config_resetstat(target_nodes=RedisCluster.PRIMARIES)
    else:
        await redis.config_resetstat()
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    try:
        await _idle_turns(redis, 4)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    # Once per stream: the send queue is one stream per slot group.
    assert await _calls(redis, "xgroup") == (len(keys.STREAMS) if loop == "worker" else 1)


def test_wait_before_doubles_per_delivery_up_to_the_cap() -> None:
    backing_off = Stream("s", "g", claim_idle_seconds=5, max_deliveries=8, backoff_cap_seconds=30)
    assert [backing_off.wait_before(d) for d in range(1, 6)] == [5, 10, 20, 30, 30]
    plain = Stream("s", "g", claim_idle_seconds=5, max_deliveries=8)
    assert {plain.wait_before(d) for d in range(1, 6)} == {5}
