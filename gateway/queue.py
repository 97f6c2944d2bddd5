"""The send queue: a Redis Stream read by workers in one consumer group.

`/challenge` and `/resend` add an entry {c: challenge id, n: send number,
ch: channel} in the same script that creates the state, so a send is never
queued for a challenge that does not exist, nor lost for one that does.

A worker's job path is decode -> load -> dispatch -> ack | retry | dead-letter:

- a job whose challenge is no longer live (verified, burnt, expired,
  replaced, or whose account changed number) is dropped unsent;
- the send number is an idempotency key: `sent.lua` records the highest send
  done on the challenge *before* acknowledging, so a job redelivered after a
  crash finds its send done and is skipped (a crash between the provider's
  acceptance and that record can still send twice: providers get the
  `Idempotency-Key` to close that gap);
- a job whose worker died stays in the group's pending list and is claimed
  by another worker after `claim_idle_seconds` (XAUTOCLAIM);
- a job that every provider failed is retried the same way, and after
  `max_deliveries` goes to the dead-letter stream;
- each turn of the loop also queues the calls that are due again
  (`Deliveries.promote_due`, see gateway/delivery.py).

A send refused for good (ProviderRejected: the number) or dead-lettered is
recorded as `failed`; an SMS that failed so may fall back to a call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from redis.exceptions import RedisError, ResponseError

from gateway import keys, messages, voice
from gateway.config import Config
from gateway.crypto import Keyring, destination_aad, open_code
from gateway.delivery import Deliveries, DeliveryEvent
from gateway.dispatch import Dispatcher, Sent
from gateway.errors import ProviderRejected, ProviderUnavailable
from gateway.metrics import Metrics
from gateway.provider import OutboundMessage
from gateway.scripts import Scripts

log = logging.getLogger("otp_gateway.worker")

Entry = tuple[bytes, dict[bytes, bytes]]
READ_BLOCK_MS = 250  # also how often an idle worker looks for calls due again


async def ensure_group(redis: aioredis.Redis) -> None:
    """Create the stream and its group; "0" so entries queued before are read too."""
    try:
        await redis.xgroup_create(keys.STREAM, keys.GROUP, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Worker:
    """Delivers queued sends; any number of them may run, on any hosts."""

    def __init__(
        self,
        redis: aioredis.Redis,
        scripts: Scripts,
        keyring: Keyring,
        dispatcher: Dispatcher,
        metrics: Metrics,
        config: Config,
        name: str | None = None,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.keyring = keyring
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.config = config
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.deliveries = Deliveries(redis, scripts, keyring, metrics, config, dispatcher.channels)
        self._slots = asyncio.Semaphore(config.worker.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    # --- loops ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Read and deliver until `stop` is set, then finish the jobs in hand."""
        claim_every = self.config.worker.claim_idle_seconds / 2
        next_claim = next_promote = 0.0
        while not stop.is_set():
            try:
                await ensure_group(self.redis)
                if time.monotonic() >= next_claim:
                    await self._spawn_all(await self._claim_idle())
                    next_claim = time.monotonic() + claim_every
                if time.monotonic() >= next_promote:
                    # At most once a block period: a busy worker loops far more often.
                    await self.deliveries.promote_due()
                    next_promote = time.monotonic() + READ_BLOCK_MS / 1000
                await self._spawn_all(await self._read(block_ms=READ_BLOCK_MS))
            except RedisError as exc:
                log.warning("worker cannot reach redis", extra={"error": type(exc).__name__})
                await _wait(stop, 1.0)
                # Idle pooled connections opened before a Redis restart are dead and
                # would fail the next jobs, leaving them for claim_idle_seconds.
                await self.redis.connection_pool.disconnect(inuse_connections=False)
        await self.drain_tasks()

    async def drain(self) -> int:
        """Burst mode for tests and one-shot runs: deliver what is queued now, then return."""
        await ensure_group(self.redis)
        done = 0
        while True:
            await self.deliveries.promote_due()
            batch = await self._read(block_ms=None, start="0") + await self._read(block_ms=None)
            if not batch:
                return done
            for entry_id, fields in batch:
                await self.handle(entry_id, fields)
            done += len(batch)

    async def drain_tasks(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read(self, block_ms: int | None, start: str = ">") -> list[Entry]:
        reply: Any = await self.redis.xreadgroup(
            keys.GROUP, self.name, {keys.STREAM: start}, count=64, block=block_ms
        )
        # An entry deleted while pending comes back with no fields: skip it.
        return [(eid, fields) for _, entries in reply or [] for eid, fields in entries if fields]

    async def _claim_idle(self) -> list[Entry]:
        idle_ms = int(self.config.worker.claim_idle_seconds * 1000)
        claimed: list[Entry] = []
        cursor = "0-0"
        while True:
            reply = await self.redis.xautoclaim(
                keys.STREAM, keys.GROUP, self.name, idle_ms, start_id=cursor, count=64
            )
            cursor, entries = reply[0], reply[1]
            claimed.extend((eid, f) for eid, f in entries if f)
            if cursor in (b"0-0", "0-0") or not entries:
                return claimed

    async def _spawn_all(self, entries: list[Entry]) -> None:
        for entry_id, fields in entries:
            await self._slots.acquire()
            task = asyncio.create_task(self._guarded(entry_id, fields))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _guarded(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        try:
            await self.handle(entry_id, fields)
        except Exception:
            # The job stays pending and is claimed again later: nothing is lost.
            log.exception("send job failed", extra={"entry": entry_id.decode()})
        finally:
            self._slots.release()

    # --- one job ------------------------------------------------------------------

    async def handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        """Deliver one job; returns what happened (for tests and logs)."""
        try:
            challenge_id = fields[b"c"].decode()
            attempt = int(fields[b"n"])
            channel = fields[b"ch"].decode()
        except (KeyError, ValueError, UnicodeDecodeError):
            return await self._drop(entry_id, "malformed")
        loaded = await self._load(challenge_id, attempt, channel)
        if isinstance(loaded, str):
            return await self._drop(entry_id, loaded)
        message, created_ms = loaded
        try:
            sent = await self.dispatcher.send(message, created_ms)
        except ProviderRejected as exc:
            log.info("send refused", extra={"challenge_id": challenge_id, "reason": str(exc)})
            await self._failed(challenge_id, attempt, channel, entry_id, str(exc))
            return "rejected"
        except ProviderUnavailable:
            return await self._retry_or_dead_letter(entry_id, fields)
        await self._record(challenge_id, attempt, channel, entry_id, sent)
        return "sent"

    async def _load(
        self, challenge_id: str, attempt: int, channel: str
    ) -> tuple[OutboundMessage, int] | str:
        """The message to send, or the reason to drop the job (job.lua decides)."""
        reply = await self.scripts.job(
            keys=[keys.challenge(challenge_id)],
            args=[challenge_id, attempt],
        )
        if reply[0] == b"drop":
            return str(reply[1].decode())
        purpose, expires, sealed, number, owner, extension = reply[1:]
        aad = destination_aad(challenge_id) if owner == b"to" else owner
        try:
            to = self.keyring.phones.open(number, aad).decode()
            code = open_code(self.keyring, challenge_id, sealed)
        except InvalidTag:
            return "undecryptable"
        recipient = to, extension.decode() or None
        message = self._message(
            challenge_id, attempt, channel, code, purpose.decode(), recipient, int(expires)
        )
        return message, int(expires) - self.config.otp.ttl_seconds * 1000

    def _message(
        self,
        challenge_id: str,
        attempt: int,
        channel: str,
        code: str,
        purpose: str,
        recipient: tuple[str, str | None],
        expires_ms: int,
    ) -> OutboundMessage:
        config = self.config
        templates = config.templates[config.voice.language]
        if channel != "voice":
            text = messages.sms_text(
                templates, code, purpose, config.otp.ttl_seconds, config.sms.webotp_host
            )
            return OutboundMessage(
                challenge_id, channel, recipient[0], code, text, attempt, purpose,
                templates.language, recipient[1],
            )  # fmt: skip
        script = voice.script_for(config, code, purpose)
        # The TwiML URL dies with the code.
        until = expires_ms
        return voice.VoiceMessage(
            challenge_id, channel, recipient[0], code, voice.plain_text(script), attempt,
            purpose, templates.language, recipient[1], script=script,
            session=voice.session_token(self.keyring, challenge_id, attempt, until),
        )  # fmt: skip

    async def _record(
        self,
        challenge_id: str,
        attempt: int,
        channel: str,
        entry_id: bytes,
        sent: Sent | None,
        reason: str = "",
    ) -> None:
        outcome, provider, ref = ("sent", sent.provider, sent.ref) if sent else ("failed", "", "")
        await self.scripts.sent(
            keys=[keys.challenge(challenge_id), keys.STREAM],
            args=[attempt, outcome, provider, keys.GROUP, entry_id, channel, ref, reason[:200]],
        )

    async def _failed(
        self, challenge_id: str, attempt: int, channel: str, entry_id: bytes, reason: str
    ) -> None:
        """A send that will never go through: failed, and an SMS may become a call."""
        if channel == "sms":
            event = DeliveryEvent("message", "failed")
            await self.deliveries.record(challenge_id, attempt, event)
        await self._record(challenge_id, attempt, channel, entry_id, None, reason)

    async def _drop(self, entry_id: bytes, reason: str) -> str:
        self.metrics.sends_dropped.labels(reason).inc()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(keys.STREAM, keys.GROUP, entry_id)
            pipe.xdel(keys.STREAM, entry_id)
            await pipe.execute()
        return f"dropped:{reason}"

    async def _retry_or_dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        pending: Any = await self.redis.xpending_range(
            keys.STREAM, keys.GROUP, min=entry_id, max=entry_id, count=1
        )
        deliveries = pending[0]["times_delivered"] if pending else 1
        if deliveries < self.config.worker.max_deliveries:
            return "retry"  # stays pending; claimed again after claim_idle_seconds
        dead: dict[Any, Any] = {**fields, b"reason": b"all_providers_failed"}
        # Capped (exactly: dead letters are rare, the trim is cheap) so that a
        # long provider outage cannot grow the stream without bound.
        await self.redis.xadd(
            keys.DEAD_LETTERS, dead, maxlen=self.config.worker.dead_letters_max, approximate=False
        )
        challenge_id, channel = fields[b"c"].decode(), fields[b"ch"].decode()
        await self._failed(
            challenge_id, int(fields[b"n"]), channel, entry_id, "all providers failed"
        )
        return "dead_letter"


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


def queue_fields(entry: dict[Any, Any]) -> dict[str, str]:
    """Decoded fields of a queue entry (for the dead-letter listing)."""
    return {k.decode(): v.decode() for k, v in entry.items()}
