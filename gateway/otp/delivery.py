"""What became of each send: delivery states, provider callbacks, calling again.

    provider callback ─► web/callbacks.py ─► Deliveries.record ─► status.lua
                                                  (state, retry or SMS fallback)
    worker loop ───────► Deliveries.promote_due ─► retry.lua ─► otp:sends:{<group>}

States, per send and for the challenge (`delivery` in `GET /challenge/{id}`):
`queued` < `sent` < one final state among `delivered`, `no_answer`, `busy`,
`machine` and `failed`. A send's state only moves forward, so duplicated and
reordered callbacks are harmless, and only the latest send sets the
challenge's state.

Calling again: the schedule is a Redis sorted set per slot group
(`otp:retries:{<group>}`, challenge id scored by due time; the challenge's
group, so `status.lua` and `retry.lua` stay in one hash slot), so it
outlives any process and every worker shares it;
a worker claims a due entry with ZREM inside `retry.lua`, so each call is
placed once. A call is placed again with the same code, never for a verified,
burnt, expired or replaced challenge: after `[voice] busy_retry_delay_seconds`
for a busy line, else `retry_delay_seconds`, while a ring plus the time to type
the code (`answer_window_seconds`) fits before the expiry, within `[voice]
max_calls` calls and `[otp] max_sends` sends. When nothing more will be tried
the challenge's delivery becomes `unreachable` (`otp_unreachable_total`).
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag

from gateway import keys
from gateway.clock import now_ms
from gateway.crypto import Keyring, open_code
from gateway.metrics import Metrics
from gateway.otp.challenges import ended
from gateway.otp.scripts import Scripts
from gateway.otp.webhooks import Webhooks
from gateway.provider import DeliveryEvent  # the providers' word too, so defined there

__all__ = ["Deliveries", "DeliveryEvent"]

log = logging.getLogger("otp_gateway.delivery")

_CALL_OUTCOME = {"delivered": "answered"}  # otp_voice_calls_total{outcome}


class Deliveries:
    """Records delivery events and places the calls that are due again."""

    def __init__(
        self,
        redis: aioredis.Redis,
        scripts: Scripts,
        keyring: Keyring,
        metrics: Metrics,
        hooks: Webhooks | None = None,
    ) -> None:
        self.redis = redis
        self.hooks = hooks
        self.keyring = keyring
        self.metrics = metrics
        # The retry delay, call and send caps and the SMS fallback are baked
        # into the scripts' CFG (gateway/luascripts.py).
        self._status = scripts.status
        self._retry = scripts.retry

    async def record(
        self, challenge_id: str, send: int, event: DeliveryEvent, *, follow_up: bool = True
    ) -> str:
        """Apply one event; returns "unknown", "unchanged" or the follow-up taken."""
        result: list[Any] = await self._status(
            keys=[
                keys.challenge(challenge_id),
                keys.retries_of(challenge_id),
                keys.stream_of(challenge_id),
                keys.account(challenge_id[16:]),
            ],
            args=[challenge_id, send, event.state, event.kind, "1" if follow_up else "0"],
        )
        outcome: str = result[0].decode()
        if outcome != "changed":
            return outcome
        if event.kind == "call" and event.final:
            self.metrics.voice_calls.labels(_CALL_OUTCOME.get(event.state, event.state)).inc()
        action: str = result[1].decode()
        if action == "unreachable":
            self.metrics.unreachable.labels(result[2].decode()).inc()
            log.info("challenge unreachable", extra={"challenge_id": challenge_id, "send": send})
        await self._tell(challenge_id, send, event, action)
        return action

    async def _tell(self, challenge_id: str, send: int, event: DeliveryEvent, action: str) -> None:
        """The webhooks' `delivered`, and `unreachable` when status.lua gave up."""
        if self.hooks is None:
            return
        if event.state == "delivered":
            channel = "voice" if event.kind == "call" else "sms"
            await self.hooks.emit("delivered", challenge_id, send=send, channel=channel)
        if action == "unreachable":
            await self.hooks.emit("unreachable", challenge_id, send=send)

    async def promote_due(self, limit: int = 64) -> int:
        """Queue the calls whose retry time has come; returns how many were queued."""
        now = now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for schedule in keys.RETRIES:  # one per slot group
                pipe.zrangebyscore(schedule, "-inf", now, start=0, num=limit)
            due: list[list[Any]] = await pipe.execute()
        queued = 0
        for schedule, members in zip(keys.RETRIES, due, strict=True):
            for member in members:
                queued += await self._promote(schedule, member.decode())
        return queued

    async def _promote(self, schedule: str, challenge_id: str) -> int:
        """retry.lua on one due member of `schedule`; 1 when a call was queued."""
        if keys.retries_of(challenge_id) != schedule:  # not written by us: cannot be due
            await self.redis.zrem(schedule, challenge_id)
            return 0
        result: list[Any] = await self._retry(
            keys=[
                schedule,
                keys.challenge(challenge_id),
                keys.stream_of(challenge_id),
                keys.account(challenge_id[16:]),
            ],
            args=[challenge_id],
        )
        if result[0] == b"queued":
            return 1
        if result[0] != b"not_due":
            self.metrics.sends_dropped.labels(f"retry_{result[0].decode()}").inc()
        return 0

    async def live_code(self, challenge_id: str) -> tuple[str, str] | None:
        """(code, purpose) of a challenge that can still be verified; else None."""
        fields: list[Any] = await self.redis.hmget(
            keys.challenge(challenge_id), "p", "v", "x", "e", "a"
        )
        purpose, state, expires, sealed, account_id = fields
        if purpose is None or sealed is None or expires is None or account_id is None:
            return None
        now = now_ms()
        # State and expiry first: the account is read only for a code that may be live.
        if ended(state, int(expires), now):
            return None
        record: list[Any] = await self.redis.hmget(
            keys.account(challenge_id[16:]), f"c:{purpose.decode()}", "suspended", "expires_at"
        )
        pointer, suspended, account_expiry = record
        if ended(state, int(expires), now, lambda: pointer, challenge_id):
            return None  # replaced
        if suspended == b"1" or now >= int(account_expiry or 0):
            return None  # the account was suspended since, or has expired
        try:
            code = open_code(self.keyring, challenge_id, sealed)
        except InvalidTag:
            return None
        return code, purpose.decode()
