"""The send queue: Redis Streams, one per hash-slot group, read by workers in
one consumer group (`workers` on each).

`/challenge` and `/resend` add an entry {c: challenge id, n: send number,
ch: channel} to the stream of the challenge's group (`keys.stream_of`), in the
same script that creates the state, so a send is never queued for a
challenge that does not exist, nor lost for one that does. Every worker reads
all the streams; an entry is acknowledged, and dead-lettered, in its own
stream's group (same hash slot).

A worker's job path is decode -> load -> dispatch -> ack | retry | dead-letter:

- a job whose challenge is no longer live (verified, burnt, expired,
  replaced, or whose account changed number) is dropped unsent;
- the send number is an idempotency key: `sent.lua` records the highest send
  done on the challenge *before* acknowledging, so a job redelivered after a
  crash finds its send done and is skipped (a crash between the provider's
  acceptance and that record can still send twice: providers get the
  `Idempotency-Key` to close that gap);
- a job whose worker died stays in the group's pending list and is claimed
  by another worker after `claim_idle_seconds` (XAUTOCLAIM; the reading is
  gateway/streams.py's `StreamConsumer`, which the mail outbox runs too);
- a job that failed in any way (every provider failed, a garbled entry, an
  unreadable challenge record, a bug of ours: `Failure`) is retried the same
  way, and after `max_deliveries` deliveries goes to the dead-letter stream
  with that reason (`drop.lua`, which also records and acknowledges it);
- each turn of the loop also queues the calls that are due again
  (`Deliveries.promote_due`, see gateway/otp/delivery.py).

A send refused for good (ProviderRejected: the number), dropped or
dead-lettered is recorded as `failed`, with its reason, so GET /challenge/{id}
never shows `queued` for a send that will not come; an SMS that no provider
took or that one refused may fall back to a call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import StrEnum

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway import keys
from gateway.config import Config
from gateway.crypto import Keyring, destination_aad, open_code
from gateway.errors import ProviderRejected, ProviderUnavailable
from gateway.metrics import Metrics
from gateway.otp import render
from gateway.otp.delivery import Deliveries, DeliveryEvent
from gateway.otp.dispatch import Dispatcher, Sent
from gateway.otp.scripts import Scripts
from gateway.otp.webhooks import Webhooks
from gateway.streams import Stream, StreamConsumer, Verdict, create_group

log = logging.getLogger("otp_gateway.worker")

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
    """Create the streams and their group (the app does at start-up, before any read)."""
    for key in keys.STREAMS:
        await create_group(redis, key, keys.GROUP)


class Worker:
    """Delivers queued sends; any number of them may run, on any hosts.

    The reading (XREADGROUP, XAUTOCLAIM, concurrency, drain on stop, burst
    mode, the delivery count) is the `StreamConsumer`'s (gateway/streams.py);
    this is one job's path."""

    def __init__(
        self,
        redis: aioredis.Redis,
        scripts: Scripts,
        keyring: Keyring,
        dispatcher: Dispatcher,
        metrics: Metrics,
        config: Config,
        name: str | None = None,
        hooks: Webhooks | None = None,
    ) -> None:
        self.redis = redis
        self.scripts = scripts
        self.keyring = keyring
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.config = config
        self.hooks = hooks
        self.deliveries = Deliveries(redis, scripts, keyring, metrics, hooks)
        queue = Stream(
            keys.STREAMS, keys.GROUP, config.worker.claim_idle_seconds,
            config.worker.max_deliveries, config.worker.concurrency, READ_BLOCK_MS,
        )  # fmt: skip
        self.consumer = StreamConsumer(
            redis, queue, self.handle, name=name,
            tick=self.deliveries.promote_due,  # calls due again, once a block period
            logger=log, role="worker",
        )  # fmt: skip
        self.name = self.consumer.name

    async def run(self, stop: asyncio.Event) -> None:
        """Read and deliver until `stop` is set, then finish the jobs in hand."""
        await self.consumer.run(stop)

    async def drain(self) -> int:
        """Burst mode for tests and one-shot runs: deliver what is queued now, then
        return how many jobs were handled (a retried job counts each time)."""
        return len(await self.consumer.drain())

    # --- one job ------------------------------------------------------------------

    async def handle(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        """Deliver one job of `stream`; returns what happened (for tests and logs).

        Whatever goes wrong with the job itself (a garbled entry, an unreadable
        challenge, every provider failing, a bug of ours) is counted toward
        `max_deliveries`, then dead-lettered: a poison job never blocks the
        queue nor stops the loop. Only a Redis out of reach raises: that says
        nothing about the job, which stays pending.
        """
        try:
            return await self._deliver(stream, entry_id, fields)
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except JobFailed as exc:
            failure = exc.failure
        except ProviderUnavailable:
            failure = Failure.PROVIDERS
        except Exception:
            log.exception("send job failed", extra={"entry": entry_id.decode()})
            failure = Failure.ERROR
        return await self._retry_or_dead_letter(stream, entry_id, fields, failure)

    async def _deliver(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        job = _decode(fields, stream)
        challenge_id, attempt, channel = job.challenge_id, job.send, job.channel
        loaded = await self._load(challenge_id, attempt, channel)
        if isinstance(loaded, str):
            return await self._drop(stream, entry_id, challenge_id, attempt, loaded)
        rendered, created_ms = loaded
        try:
            sent = await self.dispatcher.send(
                rendered.message, created_ms, address=rendered.for_provider
            )
        except ProviderRejected as exc:
            log.info("send refused", extra={"challenge_id": challenge_id, "reason": str(exc)})
            await self._failed(stream, challenge_id, attempt, channel, entry_id, str(exc))
            return "rejected"
        await self._record(stream, challenge_id, attempt, channel, entry_id, sent)
        if self.hooks is not None:
            await self.hooks.emit("sent", challenge_id, send=attempt, channel=channel)
        return "sent"

    async def _load(
        self, challenge_id: str, attempt: int, channel: str
    ) -> tuple[render.Rendered, int] | str:
        """The message to send, or the reason to drop the job (job.lua decides)."""
        try:
            reply = await self.scripts.job(
                keys=[keys.challenge(challenge_id), keys.account(challenge_id[16:])],
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
            send = render.Send(
                challenge_id, attempt, channel, purpose.decode(), code, to,
                extension.decode() or None, int(expires),
            )  # fmt: skip
        except ValueError as exc:
            raise JobFailed(Failure.UNREADABLE) from exc
        rendered = render.message(self.config, self.keyring, send)
        return rendered, send.expires_ms - self.config.otp.ttl_seconds * 1000

    async def _record(
        self,
        stream: str,
        challenge_id: str,
        attempt: int,
        channel: str,
        entry_id: bytes,
        sent: Sent | None,
        reason: str = "",
    ) -> None:
        outcome, provider, ref = ("sent", sent.provider, sent.ref) if sent else ("failed", "", "")
        await self.scripts.sent(
            keys=[keys.challenge(challenge_id), stream],
            args=[attempt, outcome, provider, keys.GROUP, entry_id, channel, ref, reason[:200]],
        )

    async def _failed(
        self,
        stream: str,
        challenge_id: str,
        attempt: int,
        channel: str,
        entry_id: bytes,
        reason: str,
    ) -> None:
        """A send that will never go through: failed, and an SMS may become a call."""
        if channel == "sms":
            event = DeliveryEvent("message", "failed")
            await self.deliveries.record(challenge_id, attempt, event)
        await self._record(stream, challenge_id, attempt, channel, entry_id, None, reason)

    async def _drop(
        self, stream: str, entry_id: bytes, challenge_id: str, attempt: int, reason: str
    ) -> str:
        """A job that will never be sent: its send is `failed` with `reason`
        (but for a duplicate, whose send was done), and one line says so."""
        record = [] if reason == "duplicate" else [keys.challenge(challenge_id)]
        await self.scripts.drop(
            keys=[stream, keys.dead_letters_of(stream), *record],
            args=[keys.GROUP, entry_id, attempt, reason, 0, 0],
        )
        self.metrics.sends_dropped.labels(reason).inc()
        log.log(
            logging.WARNING if reason in _ALARMING_DROPS else logging.INFO,
            "send dropped",
            extra={"challenge_id": challenge_id, "send": attempt, "reason": reason},
        )
        return f"dropped:{reason}"

    async def _retry_or_dead_letter(
        self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], failure: Failure
    ) -> str:
        # The stream's own delivery counter (see gateway/streams.py, `verdict`).
        verdict, deliveries = await self.consumer.verdict(stream, entry_id)
        if verdict is Verdict.GONE:
            return "gone"  # acknowledged meanwhile (claimed and finished by another worker)
        context = {"entry": entry_id.decode(), "reason": failure.value, "deliveries": deliveries}
        if verdict is Verdict.RETRY:
            log.warning("send job will be retried", extra=context)
            return "retry"  # stays pending; claimed again after claim_idle_seconds
        await self._dead_letter(stream, entry_id, fields, failure)
        log.error("send dead-lettered", extra=context)
        return "dead_letter"

    async def _dead_letter(
        self, stream: str, entry_id: bytes, fields: dict[bytes, bytes], failure: Failure
    ) -> None:
        """Into the group's dead letters with its reason, recorded `failed`,
        acknowledged: at once."""
        job = _try_decode(fields, stream)
        if job is not None and failure is Failure.PROVIDERS and job.channel == "sms":
            # An SMS no provider took may still become a call (status.lua decides).
            event = DeliveryEvent("message", "failed")
            await self.deliveries.record(job.challenge_id, job.send, event)
        kept = [item for k, v in fields.items() if k != b"reason" for item in (k, v)]
        challenge = [keys.challenge(job.challenge_id)] if job else []
        await self.scripts.drop(
            keys=[stream, keys.dead_letters_of(stream), *challenge],
            args=[
                keys.GROUP, entry_id, job.send if job else "", failure.value,
                # Capped (exactly: dead letters are rare, the trim is cheap) so that
                # a long provider outage cannot grow the stream without bound.
                self.config.worker.dead_letters_max, keys.group_of_stream(stream), *kept,
            ],
        )  # fmt: skip
        self.metrics.dead_lettered.labels(failure.value).inc()


def _decode(fields: dict[bytes, bytes], stream: str) -> Job:
    try:
        job = Job(fields[b"c"].decode(), int(fields[b"n"]), fields[b"ch"].decode())
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise JobFailed(Failure.MALFORMED) from exc
    if keys.stream_of(job.challenge_id) != stream:
        # Not written by our scripts: its challenge is in another slot than the
        # stream, so no script could touch both.
        raise JobFailed(Failure.MALFORMED)
    return job


def _try_decode(fields: dict[bytes, bytes], stream: str) -> Job | None:
    try:
        return _decode(fields, stream)
    except JobFailed:
        return None
