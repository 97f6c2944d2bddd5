"""Redis streams read by a consumer group: the loop the send queue and the mail outbox share.

A consumer reads one stream (the outbox) or several that share a group name
(the send queue: one stream per hash-slot group); the handler is told which
stream each entry came from, to acknowledge it there.

Entries are added elsewhere (one XADD, or inside the Lua script that writes
the state they belong to). A `StreamConsumer` reads them and hands each one to
its handler; the handler decides what an entry means and acknowledges it
when it is done with it, in its own script or with `ack`. What it leaves
pending is delivered again. The consumer takes care of the rest:

- `run(stop)` reads with XREADGROUP ... BLOCK (the Redis client gives a
  blocking read its BLOCK time on top of its budget: gateway/datastore.py)
  and handles up to `concurrency` entries at once. Every half
  `claim_idle_seconds` an XAUTOCLAIM pass takes over the entries that stayed
  pending that long (their consumer died, or the handler left them for
  another try). An optional `tick` runs once per block period. On `stop` it
  reads no more and finishes the entries in hand. Redis out of reach is
  logged, tried again each second, and the idle pooled connections dropped.
- `drain()` is burst mode for tests and one-shot runs: what is there now,
  one entry at a time, then it returns the outcomes.
- `verdict(entry_id)` says, after a failure, whether the entry gets another
  delivery or must go: the stream's own delivery counter (XPENDING's
  `times_delivered`, raised by every XREADGROUP and XAUTOCLAIM) against
  `max_deliveries`. It moves atomically with each delivery, so it also counts
  the deliveries whose consumer died before it could count anything, and it
  dies with the entry (no key of ours to clean up).
- With `backoff_cap_seconds`, an entry's wait before it is claimed again
  doubles with each delivery (`Stream.wait_before`): the claim pass reads the
  pending entries' own counters (XPENDING: idle time, deliveries) and XCLAIMs
  only those whose wait is over (the webhook outbox: a receiver that is down
  is not hammered).
- A missing group (NOGROUP: a FLUSHALL, a failover to a replica that lacked
  it) is created again from "0" (MKSTREAM) and the read goes on. Entries are
  deleted once acknowledged, so "0" means exactly the ones not done yet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError, ResponseError

from gateway.cluster import drop_idle_connections

Entry = tuple[str, bytes, dict[bytes, bytes]]  # stream key, entry id, fields
Handler = Callable[[str, bytes, dict[bytes, bytes]], Awaitable[str]]
Tick = Callable[[], Awaitable[object]]

log = logging.getLogger("otp_gateway.streams")


class Verdict(StrEnum):
    """What becomes of an entry whose handling failed."""

    RETRY = "retry"  # stays pending: claimed again after claim_idle_seconds
    DEAD_LETTER = "dead_letter"  # delivered max_deliveries times: give up on it
    GONE = "gone"  # acknowledged meanwhile (another consumer finished it), or group lost


@dataclass(frozen=True, slots=True)
class Stream:
    """Streams, their consumer group, and how its consumers read them."""

    key: str | tuple[str, ...]  # one stream, or several read together
    group: str
    claim_idle_seconds: float
    max_deliveries: int
    concurrency: int = 1
    block_ms: int = 250  # also how often `tick` runs on an idle consumer
    batch: int = 64
    backoff_cap_seconds: float = 0.0  # > 0: the wait doubles per delivery, up to this

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key,) if isinstance(self.key, str) else self.key

    def wait_before(self, deliveries: int) -> float:
        """How long an entry delivered `deliveries` times stays pending before
        it is claimed again: `claim_idle_seconds`, doubled per delivery after
        the first when the stream backs off."""
        if self.backoff_cap_seconds <= 0:
            return self.claim_idle_seconds
        doubled = self.claim_idle_seconds * float(2 ** min(max(deliveries - 1, 0), 30))
        return min(doubled, max(self.backoff_cap_seconds, self.claim_idle_seconds))


async def create_group(redis: aioredis.Redis, key: str, group: str) -> None:
    """Create the stream and its group; from "0", so entries added before are read too."""
    try:
        await redis.xgroup_create(key, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def consumer_name(owner: object) -> str:
    """A name no other consumer of the group has: host, process, object."""
    return f"{socket.gethostname()}-{os.getpid()}-{id(owner):x}"


async def wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


def _nogroup(exc: ResponseError) -> bool:
    # Redis 7 unblocks a read whose stream was deleted with UNBLOCKED, not NOGROUP.
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))


class StreamConsumer:
    """One consumer of a group: reads, claims, hands entries over, judges failures."""

    def __init__(
        self,
        redis: aioredis.Redis,
        stream: Stream,
        handler: Handler,
        *,
        name: str | None = None,
        tick: Tick | None = None,
        logger: logging.Logger = log,
        role: str = "stream consumer",
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.handler = handler
        self.name = name or consumer_name(self)
        self.tick = tick
        self._log = logger
        self._role = role  # names the loop in its log lines ("worker", "mail loop")
        self._slots = asyncio.Semaphore(stream.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def ensure_group(self) -> None:
        for key in self.stream.keys:
            await create_group(self.redis, key, self.stream.group)

    # --- the loops ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Read and handle until `stop` is set, then finish the entries in hand."""
        claim_every = self.stream.claim_idle_seconds / 2
        period = self.stream.block_ms / 1000
        next_claim = next_tick = 0.0
        grouped = False
        while not stop.is_set():
            try:
                if not grouped:
                    await self.ensure_group()
                    grouped = True
                if time.monotonic() >= next_claim:
                    await self._spawn_all(await self._claim_idle())
                    next_claim = time.monotonic() + claim_every
                if self.tick is not None and time.monotonic() >= next_tick:
                    # At most once a block period: a busy consumer loops far more often.
                    await self.tick()
                    next_tick = time.monotonic() + period
                await self._spawn_all(await self._read(">", self.stream.block_ms))
            except RedisError as exc:
                error = type(exc).__name__
                self._log.warning(f"{self._role} cannot reach redis", extra={"error": error})
                await wait(stop, 1.0)
                # Idle pooled connections opened before a Redis restart are dead and
                # would fail the next entries, leaving them for claim_idle_seconds.
                await drop_idle_connections(self.redis)
        await self.finish()

    async def drain(self, *, retry: bool = True) -> list[str]:
        """Burst mode: hand over what is there now, one entry at a time; the outcomes.

        With `retry`, an entry left pending is handed over again in the next
        round, until every entry is acknowledged or given up (the send queue);
        without, each pending entry once per call (the outbox: its tests step
        through the deliveries one call at a time)."""
        await self.ensure_group()
        outcomes: list[str] = []
        pending = True
        while True:
            if self.tick is not None:
                await self.tick()
            batch = await self._read("0", None) if pending else []
            batch += await self._read(">", None)
            if not batch:
                return outcomes
            for key, entry_id, fields in batch:
                outcomes.append(await self.handler(key, entry_id, fields))
            pending = retry

    async def finish(self) -> None:
        """Wait for the entries in hand (their handlers log their own failures)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- after a handler -----------------------------------------------------------

    async def verdict(self, key: str, entry_id: bytes) -> tuple[Verdict, int]:
        """Retry or give up on a failed entry of stream `key`, and how many deliveries it had."""
        try:
            pending: Any = await self.redis.xpending_range(
                key, self.stream.group, min=entry_id, max=entry_id, count=1
            )
        except ResponseError as exc:
            if not _nogroup(exc):
                raise
            pending = []  # the group was lost: the entry comes again through the new one
        if not pending:
            return Verdict.GONE, 0
        deliveries = int(pending[0]["times_delivered"])
        if deliveries < self.stream.max_deliveries:
            return Verdict.RETRY, deliveries
        return Verdict.DEAD_LETTER, deliveries

    async def ack(self, key: str, entry_id: bytes) -> None:
        """Done with the entry of stream `key`: acknowledged and deleted, at once."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(key, self.stream.group, entry_id)
            pipe.xdel(key, entry_id)
            await pipe.execute()

    async def dead_letter(
        self, key: str, entry_id: bytes, fields: dict[bytes, bytes], to: str, reason: str, cap: int
    ) -> None:
        """Copied to the stream `to` with its `reason`, then acknowledged and deleted:
        all at once (MULTI), so it is never kept twice nor lost between the two.
        `to` must share `key`'s hash slot (a transaction spans one slot)."""
        kept: dict[Any, Any] = {k: v for k, v in fields.items() if k != b"reason"}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(to, {**kept, b"reason": reason}, maxlen=cap, approximate=True)
            pipe.xack(key, self.stream.group, entry_id)
            pipe.xdel(key, entry_id)
            await pipe.execute()

    # --- reading ------------------------------------------------------------------

    async def _read(self, start: str, block_ms: int | None) -> list[Entry]:
        """The next batch: one XREADGROUP naming every stream; on a Redis Cluster,
        which refuses a command over several slots (CROSSSLOT), one per stream,
        all at once (each blocks on its own node: an idle consumer answers
        within one block period, one with entries at once)."""
        keys = self.stream.keys
        if not isinstance(self.redis, RedisCluster) or len(keys) == 1:
            return await self._read_of(keys, start, block_ms)
        batches = await asyncio.gather(*(self._read_of((k,), start, block_ms) for k in keys))
        return [entry for batch in batches for entry in batch]

    async def _read_of(self, keys: tuple[str, ...], start: str, block: int | None) -> list[Entry]:
        stream = self.stream
        reply: Any = await self._grouped(
            self.redis.xreadgroup, stream.group, self.name, dict.fromkeys(keys, start),
            count=stream.batch, block=block,
        )  # fmt: skip
        # An entry deleted while pending comes back with no fields: skip it.
        return [
            (_text(key), eid, fields)
            for key, entries in reply or []
            for eid, fields in entries
            if fields
        ]

    async def _claim_idle(self) -> list[Entry]:
        claimed: list[Entry] = []
        for key in self.stream.keys:
            claimed += await self._claim_idle_of(key)
        return claimed

    async def _claim_idle_of(self, key: str) -> list[Entry]:
        if self.stream.backoff_cap_seconds > 0:
            return await self._claim_due_of(key)
        idle_ms = int(self.stream.claim_idle_seconds * 1000)
        claimed: list[Entry] = []
        cursor: Any = "0-0"
        while True:
            reply: Any = await self._grouped(
                self.redis.xautoclaim, key, self.stream.group, self.name, idle_ms,
                start_id=cursor, count=self.stream.batch,
            )  # fmt: skip
            cursor, entries = reply[0], reply[1]
            claimed.extend((key, eid, f) for eid, f in entries if f)
            if cursor in (b"0-0", "0-0") or not entries:
                return claimed

    async def _claim_due_of(self, key: str) -> list[Entry]:
        """The backing-off claim: every pending entry idle for at least its own
        `wait_before`, read from XPENDING page by page; XCLAIM's own minimum
        idle time keeps two consumers from both taking one entry."""
        stream = self.stream
        claimed: list[Entry] = []
        start = "-"
        while True:
            pending: Any = await self._grouped(
                self.redis.xpending_range, key, stream.group, min=start, max="+",
                count=stream.batch, idle=int(stream.claim_idle_seconds * 1000),
            )  # fmt: skip
            for entry in pending:
                wait_ms = int(stream.wait_before(int(entry["times_delivered"])) * 1000)
                if int(entry["time_since_delivered"]) >= wait_ms:
                    reply: Any = await self.redis.xclaim(
                        key, stream.group, self.name, wait_ms, [entry["message_id"]]
                    )
                    claimed.extend((key, eid, f) for eid, f in reply if f)
            if len(pending) < stream.batch:
                return claimed
            start = "(" + _text(pending[-1]["message_id"])

    async def _grouped(self, command: Callable[..., Awaitable[Any]], *args: Any, **kw: Any) -> Any:
        """`command`, sent once more after creating the group again if it is missing."""
        try:
            return await command(*args, **kw)
        except ResponseError as exc:
            if not _nogroup(exc):
                raise
        self._log.warning(
            f"{self._role}: consumer group missing, created again",
            extra={"stream": ",".join(self.stream.keys), "group": self.stream.group},
        )
        await self.ensure_group()
        return await command(*args, **kw)

    async def _spawn_all(self, entries: list[Entry]) -> None:
        for key, entry_id, fields in entries:
            await self._slots.acquire()
            task = asyncio.create_task(self._guarded(key, entry_id, fields))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _guarded(self, key: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            await self.handler(key, entry_id, fields)
        except Exception:
            # The entry stays pending and is claimed again later: nothing is lost.
            self._log.exception(
                f"{self._role}: an entry failed, left pending", extra={"entry": entry_id.decode()}
            )
        finally:
            self._slots.release()


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key
