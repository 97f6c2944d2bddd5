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
- a job that failed in any way (every provider failed, a garbled entry, an
  unreadable challenge record, a bug of ours: `Failure`) is retried the same
  way, and after `max_deliveries` deliveries goes to the dead-letter stream
  with that reason (`drop.lua`, which also records and acknowledges it);
- each turn of the loop also queues the calls that are due again
  (`Deliveries.promote_due`, see gateway/delivery.py).

A send refused for good (ProviderRejected: the number), dropped or
dead-lettered is recorded as `failed`, with its reason, so GET /challenge/{id}
never shows `queued` for a send that will not come; an SMS that no provider
took or that one refused may fall back to a call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
# Drops that point at something wrong (another secret, damaged data), not at
# a user or an admin who moved on: logged as warnings.
_ALARMING_DROPS = frozenset({"undecryptable"})


class Failure(StrEnum):
    """Why handling a job failed; each counts toward `[worker] max_deliveries`,
    and the last one is the dead letter's `reason` (and a metric label)."""

    MALFORMED = "malformed"  # the entry lacks or garbles c, n or ch
    UNREADABLE = "unreadable"  # its challenge record cannot be read (corrupt, wrong type)
    PROVIDERS = "all_providers_failed"  # every provider of the channel failed or was skipped
    ERROR = "error"  # anything else: a bug of ours (logged with its traceback)


@dataclass(frozen=True, slots=True)
class Job:
    """A queue entry, decoded: send number `send` of a challenge, on a channel."""

    challenge_id: str
    send: int
    channel: str


class JobFailed(Exception):
    """Handling a job failed in a way another delivery might not (worker-internal)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.value)
        self.failure = failure


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
                if "NOGROUP" in str(exc):
                    # The stream or its group is gone (a primary promoted without
                    # them, a flush): the next turn creates them again, now.
                    log.warning("send queue's consumer group missing: recreating it")
                    continue
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
        """Deliver one job; returns what happened (for tests and logs).

        Whatever goes wrong with the job itself (a garbled entry, an unreadable
        challenge, every provider failing, a bug of ours) is counted toward
        `max_deliveries`, then dead-lettered: a poison job never blocks the
        queue nor stops the loop. Only a Redis out of reach raises: that says
        nothing about the job, which stays pending.
        """
        try:
            return await self._deliver(entry_id, fields)
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except JobFailed as exc:
            failure = exc.failure
        except ProviderUnavailable:
            failure = Failure.PROVIDERS
        except Exception:
            log.exception("send job failed", extra={"entry": entry_id.decode()})
            failure = Failure.ERROR
        return await self._retry_or_dead_letter(entry_id, fields, failure)

    async def _deliver(self, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        job = _decode(fields)
        challenge_id, attempt, channel = job.challenge_id, job.send, job.channel
        loaded = await self._load(challenge_id, attempt, channel)
        if isinstance(loaded, str):
            return await self._drop(entry_id, challenge_id, attempt, loaded)
        message, created_ms = loaded
        try:
            sent = await self.dispatcher.send(message, created_ms)
        except ProviderRejected as exc:
            log.info("send refused", extra={"challenge_id": challenge_id, "reason": str(exc)})
            await self._failed(challenge_id, attempt, channel, entry_id, str(exc))
            return "rejected"
        await self._record(challenge_id, attempt, channel, entry_id, sent)
        return "sent"

    async def _load(
        self, challenge_id: str, attempt: int, channel: str
    ) -> tuple[OutboundMessage, int] | str:
        """The message to send, or the reason to drop the job (job.lua decides)."""
        try:
            reply = await self.scripts.job(
                keys=[keys.challenge(challenge_id)],
                args=[challenge_id, attempt],
            )
        except ResponseError as exc:  # WRONGTYPE, or a field job.lua cannot read
            raise JobFailed(Failure.UNREADABLE) from exc
        if reply[0] == b"drop":
            return str(reply[1].decode())
        purpose, expires, sealed, number, owner, extension = reply[1:]
        aad = destination_aad(challenge_id) if owner == b"to" else owner
        try:
            to = self.keyring.phones.open(number, aad).decode()
            code = open_code(self.keyring, challenge_id, sealed)
        except (InvalidTag, ValueError):  # another key's, or too short to be sealed
            return "undecryptable"
        try:
            recipient = to, extension.decode() or None
            purpose_name, expires_ms = purpose.decode(), int(expires)
        except ValueError as exc:
            raise JobFailed(Failure.UNREADABLE) from exc
        message = self._message(
            challenge_id, attempt, channel, code, purpose_name, recipient, expires_ms
        )
        return message, expires_ms - self.config.otp.ttl_seconds * 1000

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

    async def _drop(self, entry_id: bytes, challenge_id: str, attempt: int, reason: str) -> str:
        """A job that will never be sent: its send is `failed` with `reason`
        (but for a duplicate, whose send was done), and one line says so."""
        record = [] if reason == "duplicate" else [keys.challenge(challenge_id)]
        await self.scripts.drop(
            keys=[keys.STREAM, keys.DEAD_LETTERS, *record],
            args=[keys.GROUP, entry_id, attempt, reason, 0],
        )
        self.metrics.sends_dropped.labels(reason).inc()
        log.log(
            logging.WARNING if reason in _ALARMING_DROPS else logging.INFO,
            "send dropped",
            extra={"challenge_id": challenge_id, "send": attempt, "reason": reason},
        )
        return f"dropped:{reason}"

    async def _retry_or_dead_letter(
        self, entry_id: bytes, fields: dict[bytes, bytes], failure: Failure
    ) -> str:
        # The stream's own delivery counter (XPENDING's times_delivered, raised
        # by every XREADGROUP and XAUTOCLAIM) rather than one of ours: it is
        # moved atomically with each delivery, so it also counts deliveries
        # whose worker died before it could count anything, and it dies with
        # the entry (no key of ours to clean up).
        pending: Any = await self.redis.xpending_range(
            keys.STREAM, keys.GROUP, min=entry_id, max=entry_id, count=1
        )
        if not pending:
            return "gone"  # acknowledged meanwhile (claimed and finished by another worker)
        deliveries = int(pending[0]["times_delivered"])
        context = {"entry": entry_id.decode(), "reason": failure.value, "deliveries": deliveries}
        if deliveries < self.config.worker.max_deliveries:
            log.warning("send job will be retried", extra=context)
            return "retry"  # stays pending; claimed again after claim_idle_seconds
        await self._dead_letter(entry_id, fields, failure)
        log.error("send dead-lettered", extra=context)
        return "dead_letter"

    async def _dead_letter(
        self, entry_id: bytes, fields: dict[bytes, bytes], failure: Failure
    ) -> None:
        """Into otp:dead with its reason, recorded `failed`, acknowledged: at once."""
        job = _try_decode(fields)
        if job is not None and failure is Failure.PROVIDERS and job.channel == "sms":
            # An SMS no provider took may still become a call (status.lua decides).
            event = DeliveryEvent("message", "failed")
            await self.deliveries.record(job.challenge_id, job.send, event)
        kept = [item for k, v in fields.items() if k != b"reason" for item in (k, v)]
        challenge = [keys.challenge(job.challenge_id)] if job else []
        await self.scripts.drop(
            keys=[keys.STREAM, keys.DEAD_LETTERS, *challenge],
            args=[
                keys.GROUP, entry_id, job.send if job else "", failure.value,
                # Capped (exactly: dead letters are rare, the trim is cheap) so that
                # a long provider outage cannot grow the stream without bound.
                self.config.worker.dead_letters_max, *kept,
            ],
        )  # fmt: skip
        self.metrics.dead_lettered.labels(failure.value).inc()


def _decode(fields: dict[bytes, bytes]) -> Job:
    try:
        return Job(fields[b"c"].decode(), int(fields[b"n"]), fields[b"ch"].decode())
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise JobFailed(Failure.MALFORMED) from exc


def _try_decode(fields: dict[bytes, bytes]) -> Job | None:
    try:
        return _decode(fields)
    except JobFailed:
        return None


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass


def queue_fields(entry: dict[Any, Any]) -> dict[str, str]:
    """Decoded fields of a queue entry (for the dead-letter listing)."""
    return {k.decode(): v.decode() for k, v in entry.items()}
