"""E-mail: an outbox stream in Redis, delivered over SMTP with aiosmtplib.

Request handlers and the sweep never talk SMTP: they `enqueue` a `Mail` (one
XADD) and carry on, so a slow or down mail server delays no API call. The mail
loop, run next to the send worker (`account_services.run_background`), reads the outbox in
a consumer group: a mail is acknowledged once the SMTP server accepted it; a
failure leaves it pending, to be claimed again after `CLAIM_IDLE_MS`, and
after `MAX_DELIVERIES` it moves to the dead-letter stream. Delivery is at
least once (a crash between the server's acceptance and the XACK sends again).

A mail has a text part and an HTML part (multipart/alternative). Mails never
carry a code, a phone number or a secret; logs carry no address either.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Final, Protocol

import aiosmtplib
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from gateway import keys
from gateway.config import SmtpConfig

log = logging.getLogger("otp_gateway.mail")

MAX_DELIVERIES: Final = 5
CLAIM_IDLE_MS: Final = 60_000
OUTBOX_MAXLEN: Final = 100_000
SMTP_TIMEOUT_SECONDS: Final = 10.0

Entry = tuple[bytes, dict[bytes, bytes]]


class MailError(Exception):
    """The SMTP server could not take a mail (the text names no address)."""


@dataclass(frozen=True, slots=True)
class Mail:
    """One message to one or more addresses."""

    to: tuple[str, ...]
    subject: str
    text: str
    html: str
    kind: str = "notice"  # notice | reminder: for logs

    def fields(self) -> dict[Any, Any]:
        return {
            "to": json.dumps(list(self.to)),
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "kind": self.kind,
        }

    @classmethod
    def from_fields(cls, raw: Mapping[bytes, bytes]) -> Mail:
        f = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(tuple(json.loads(f["to"])), f["subject"], f["text"], f["html"], f["kind"])


class Transport(Protocol):
    """Where mails go: SMTP in production."""

    async def send(self, mail: Mail) -> None:
        """Hand one mail over; raise MailError when it was not accepted."""
        ...


class SmtpTransport:
    """Sends through the `[smtp]` server: none, STARTTLS or implicit TLS."""

    def __init__(self, config: SmtpConfig, timeout: float = SMTP_TIMEOUT_SECONDS) -> None:
        self._config = config
        self._timeout = timeout

    def message(self, mail: Mail) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self._config.sender
        msg["To"] = ", ".join(mail.to)
        msg["Subject"] = mail.subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = make_msgid(domain=self._config.sender.rpartition("@")[2] or None)
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
        msg.set_content(mail.text)
        msg.add_alternative(mail.html, subtype="html")
        return msg

    async def send(self, mail: Mail) -> None:
        cfg = self._config
        try:
            await aiosmtplib.send(
                self.message(mail),
                hostname=cfg.host,
                port=cfg.port,
                username=cfg.username or None,
                password=cfg.password.reveal() if cfg.password else None,
                use_tls=cfg.security == "tls",
                start_tls=cfg.security == "starttls",
                timeout=self._timeout,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise MailError(f"smtp server refused or unreachable ({type(exc).__name__})") from exc


class MailQueue:
    """The outbox: `enqueue` anywhere, `run` (or `drain`) in the worker."""

    def __init__(
        self, redis: aioredis.Redis, transport: Transport, *, name: str | None = None
    ) -> None:
        self.redis = redis
        self.transport = transport
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"

    async def enqueue(self, mail: Mail) -> None:
        if mail.to:
            await self.redis.xadd(
                keys.MAIL_STREAM, mail.fields(), maxlen=OUTBOX_MAXLEN, approximate=True
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; rides out a Redis outage."""
        next_claim = 0.0
        while not stop.is_set():
            try:
                await self._ensure_group()
                if time.monotonic() >= next_claim:
                    await self._handle_all(await self._claim_idle())
                    next_claim = time.monotonic() + CLAIM_IDLE_MS / 2000
                await self._handle_all(await self._read(">", block_ms=500))
            except RedisError as exc:
                log.warning("mail loop cannot reach redis", extra={"error": type(exc).__name__})
                await wait(stop, 1.0)

    async def drain(self) -> int:
        """Burst mode (tests, one-shot runs): deliver what is queued now; mails sent."""
        await self._ensure_group()
        sent = await self._handle_all(await self._read("0", block_ms=None))
        while batch := await self._read(">", block_ms=None):
            sent += await self._handle_all(batch)
        return sent

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(
                keys.MAIL_STREAM, keys.MAIL_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, start: str, block_ms: int | None) -> list[Entry]:
        reply: Any = await self.redis.xreadgroup(
            keys.MAIL_GROUP,
            self.name,
            {keys.MAIL_STREAM: start},
            count=32,
            block=block_ms,
        )
        return [(eid, f) for _, entries in reply or [] for eid, f in entries if f]

    async def _claim_idle(self) -> list[Entry]:
        reply = await self.redis.xautoclaim(
            keys.MAIL_STREAM, keys.MAIL_GROUP, self.name, CLAIM_IDLE_MS, count=32
        )
        return [(eid, f) for eid, f in reply[1] if f]

    async def _handle_all(self, entries: list[Entry]) -> int:
        outcomes = [await self.handle(entry_id, fields) for entry_id, fields in entries]
        return outcomes.count("sent")

    async def handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        """Deliver one outbox entry: sent | retry | dead_letter | malformed."""
        try:
            mail = Mail.from_fields(fields)
        except (KeyError, ValueError, UnicodeDecodeError):
            await self._done(entry_id)
            return "malformed"
        try:
            await self.transport.send(mail)
        except MailError as exc:
            log.warning("mail not delivered", extra={"kind": mail.kind, "error": str(exc)})
            return await self._retry_or_dead_letter(entry_id, fields)
        await self._done(entry_id)
        return "sent"

    async def _done(self, entry_id: bytes) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(keys.MAIL_STREAM, keys.MAIL_GROUP, entry_id)
            pipe.xdel(keys.MAIL_STREAM, entry_id)
            await pipe.execute()

    async def _retry_or_dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        pending: Any = await self.redis.xpending_range(
            keys.MAIL_STREAM, keys.MAIL_GROUP, min=entry_id, max=entry_id, count=1
        )
        if pending and pending[0]["times_delivered"] < MAX_DELIVERIES:
            return "retry"
        dead: dict[Any, Any] = {**fields}
        await self.redis.xadd(keys.MAIL_DEAD, dead, maxlen=10_000, approximate=True)
        await self._done(entry_id)
        return "dead_letter"


async def wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        pass
