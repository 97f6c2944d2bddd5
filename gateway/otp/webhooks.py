"""Status webhooks: what became of a challenge, posted to the application, signed.

    sent.lua, status.lua, verify.lua done ─► emit ─► XADD otp:hooks:{hooks} (one per webhook)
    create.lua done ─► watch_expiry ─► ZADD otp:expiring:{<group>} (a webhook wants `expired`)
    webhook loop (worker) ─► StreamConsumer ─► POST ─► ack | pending, backing off | dead letter
                    tick ─► due expiries: ZREM claims one, `expired` unless verified or burnt

Events (`[[webhooks]] events`): `sent` (a provider accepted send `n`),
`delivered` (the provider confirmed it), `unreachable` (the gateway gave up
reaching the person), `verified`, `expired` (the code's lifetime ended and it
was neither verified nor burnt; a replaced challenge expires too, at its own
expiry). The body is `{"id", "event", "challenge_id", "purpose", "channel",
"delivery", "at"}` plus `"send"` for send events: never a code, a number or
anything of the account. Each POST carries `X-Signature-Timestamp` (unix
seconds, taken for that POST) and `X-Signature-SHA256`, the hex HMAC-SHA256
with the webhook's secret of `<timestamp>.` followed by the raw body, and the
event id as `Idempotency-Key`.

Guarantees (docs/webhooks.md): an event is queued from Python once the script
that made it succeeded, so a process that dies in between, or a Redis out of
reach then (`otp_webhook_events_total{outcome="lost"}`), loses that event; a
queued one is posted at least once (the receiver drops repeats by `id`), in no
promised order. A POST that fails (no 2xx within `timeout_seconds`, a
redirect included) stays pending; it is claimed again after
`[worker] webhook_retry_seconds`, doubling per delivery up to an hour
(`Stream.wait_before`, from the stream's own XPENDING counters), and after
`[worker] webhook_max_deliveries` it moves to `otp:hooks:{hooks}dead` with why.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any, Final

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import keys
from gateway.clock import iso_ms, now_ms
from gateway.config import WebhookConfig, WorkerConfig
from gateway.metrics import Metrics
from gateway.streams import Stream, StreamConsumer, Verdict

log = logging.getLogger("otp_gateway.webhooks")

OUTBOX_MAXLEN: Final = 100_000
DEAD_MAXLEN: Final = 10_000
BACKOFF_CAP_SECONDS: Final = 3600.0
EXPIRIES_PER_TICK: Final = 64  # per group: a backlog is worked off over the next ticks


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Signature-SHA256` of a POST: hex HMAC-SHA256 of `<timestamp>.<body>`."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def outbox(worker: WorkerConfig) -> Stream:
    """The outbox stream's reading settings, from `[worker]`."""
    return Stream(
        keys.HOOK_STREAM, keys.HOOK_GROUP, claim_idle_seconds=worker.webhook_retry_seconds,
        max_deliveries=worker.webhook_max_deliveries, concurrency=8, block_ms=1000, batch=32,
        backoff_cap_seconds=BACKOFF_CAP_SECONDS,
    )  # fmt: skip


class Webhooks:
    """`emit` and `watch_expiry` where events happen; `run` (or `drain`) in the worker."""

    def __init__(
        self,
        redis: aioredis.Redis,
        hooks: tuple[WebhookConfig, ...],
        metrics: Metrics,
        worker: WorkerConfig,
        *,
        name: str | None = None,
    ) -> None:
        self.redis = redis
        self.metrics = metrics
        self._hooks = {hook.name: hook for hook in hooks}
        self._wanted: dict[str, tuple[WebhookConfig, ...]] = {}
        for hook in hooks:
            for event in hook.events:
                self._wanted[event] = (*self._wanted.get(event, ()), hook)
        self.consumer = StreamConsumer(
            redis, outbox(worker), self.handle, name=name, tick=self.expire_due,
            logger=log, role="webhook loop",
        )  # fmt: skip
        self._session: aiohttp.ClientSession | None = None

    def wants(self, event: str) -> bool:
        return event in self._wanted

    # --- where events happen ------------------------------------------------------------

    async def emit(
        self, event: str, challenge_id: str, *, send: int | None = None, channel: str = ""
    ) -> None:
        """Queue `event` for every webhook that wants it; never raises (a Redis
        out of reach loses the event: counted and logged)."""
        hooks = self._wanted.get(event, ())
        if not hooks:
            return
        try:
            fields: list[Any] = await self.redis.hmget(keys.challenge(challenge_id), "p", "c", "d")
            entry = self._entry(event, challenge_id, fields, send, channel)
            async with self.redis.pipeline(transaction=False) as pipe:
                for hook in hooks:
                    pipe.xadd(
                        keys.HOOK_STREAM, {**entry, "w": hook.name},
                        maxlen=OUTBOX_MAXLEN, approximate=True,
                    )  # fmt: skip
                await pipe.execute()
        except RedisError as exc:
            self.metrics.webhook_events.labels(event, "lost").inc(len(hooks))
            context = {"event": event, "challenge_id": challenge_id, "error": type(exc).__name__}
            log.warning("webhook event lost: redis out of reach", extra=context)
            return
        self.metrics.webhook_events.labels(event, "queued").inc(len(hooks))

    def _entry(
        self, event: str, challenge_id: str, fields: list[Any], send: int | None, channel: str
    ) -> dict[Any, Any]:
        purpose, current, delivery = (v.decode() if v is not None else None for v in fields)
        event_id = uuid.uuid4().hex
        body: dict[str, Any] = {
            "id": event_id,
            "event": event,
            "challenge_id": challenge_id,
            "purpose": purpose,
            "channel": channel or current or "sms",
            "delivery": delivery or "queued",
            "at": iso_ms(now_ms()),
        }
        if send is not None:
            body["send"] = send
        return {"i": event_id, "e": event, "b": json.dumps(body, separators=(",", ":"))}

    async def watch_expiry(self, challenge_id: str, expires_at_ms: int) -> None:
        """Remember a new challenge's expiry, when a webhook wants `expired`."""
        if not self.wants("expired"):
            return
        try:
            await self.redis.zadd(keys.expiring_of(challenge_id), {challenge_id: expires_at_ms})
        except RedisError as exc:
            self.metrics.webhook_events.labels("expired", "lost").inc()
            context = {"challenge_id": challenge_id, "error": type(exc).__name__}
            log.warning("webhook expiry not watched: redis out of reach", extra=context)

    async def expire_due(self) -> int:
        """Emit `expired` for the watched challenges whose time has come; how many."""
        if not self.wants("expired"):
            return 0
        now = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for watched in keys.EXPIRING:  # one per slot group
                pipe.zrangebyscore(watched, "-inf", now, start=0, num=EXPIRIES_PER_TICK)
            due: list[list[bytes]] = await pipe.execute()
        emitted = 0
        for watched, members in zip(keys.EXPIRING, due, strict=True):
            for member in members:
                # ZREM answers 1 to one caller only: each expiry is emitted once.
                if await self.redis.zrem(watched, member) == 1:
                    emitted += await self._expired(member.decode())
        return emitted

    async def _expired(self, challenge_id: str) -> int:
        state, purpose = await self.redis.hmget(keys.challenge(challenge_id), "v", "p")
        if purpose is None or state in (b"verified", b"burnt"):
            return 0  # its tombstone is gone too (no worker ran for that long), or it ended well
        await self.emit("expired", challenge_id)
        return 1

    # --- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Post until `stop` is set, then finish the posts in hand."""
        if not self._hooks:
            await stop.wait()  # nothing to post to; the supervisor would restart a return
            return
        await self.consumer.run(stop)

    async def drain(self) -> list[str]:
        """Burst mode (tests, one-shot runs): due expiries, then one try of each queued post."""
        return await self.consumer.drain(retry=False)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, key: str, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        """Post one outbox entry; what became of it: delivered, retry, dead_letter,
        gone, or at once dead-lettered as malformed or unknown_webhook."""
        try:
            name, event, event_id = (fields[k].decode() for k in (b"w", b"e", b"i"))
            body = fields[b"b"]
        except (KeyError, UnicodeDecodeError):
            return await self._dead_letter(entry_id, fields, "malformed")
        hook = self._hooks.get(name)
        if hook is None:  # removed from the configuration since
            return await self._dead_letter(entry_id, fields, "unknown_webhook")
        failure = await self._post(hook, event_id, body)
        if failure is None:
            await self.consumer.ack(key, entry_id)
            self.metrics.webhook_posts.labels(name, "delivered").inc()
            return "delivered"
        self.metrics.webhook_posts.labels(name, "failed").inc()
        verdict, deliveries = await self.consumer.verdict(key, entry_id)
        context = {"webhook": name, "event": event, "error": failure, "deliveries": deliveries}
        if verdict is not Verdict.DEAD_LETTER:
            log.warning("webhook not delivered, will retry", extra=context)
            return verdict.value
        log.error("webhook dead-lettered", extra=context)
        self.metrics.webhook_posts.labels(name, "dead_lettered").inc()
        return await self._dead_letter(entry_id, fields, failure)

    async def _post(self, hook: WebhookConfig, event_id: str, body: bytes) -> str | None:
        """POST the body signed; None when the receiver took it, else why not."""
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Signature-Timestamp": timestamp,
            "X-Signature-SHA256": signature(hook.secret.reveal(), timestamp, body),
            "Idempotency-Key": event_id,
        }
        timeout = aiohttp.ClientTimeout(total=hook.timeout_seconds)
        try:
            async with self._client().post(
                hook.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                await resp.read()
                status = resp.status
        except TimeoutError:
            return "timeout"
        except aiohttp.ClientError:
            return "unreachable"
        return None if 200 <= status < 300 else f"http_{status}"

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a session must be made inside the running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def _dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> str:
        await self.consumer.dead_letter(
            keys.HOOK_STREAM, entry_id, fields, keys.HOOK_DEAD, reason, DEAD_MAXLEN
        )
        return "dead_letter" if reason not in ("malformed", "unknown_webhook") else reason
