"""E-mail: an outbox stream in Redis, delivered over SMTP with aiosmtplib.

Request handlers and the sweep never talk SMTP: they `enqueue` a `Mail` (one
XADD) and carry on, so a slow or down mail server delays no API call. The mail
loop, run next to the send worker (`runtime.run_background`), reads the outbox
in a consumer group with gateway/streams.py's `StreamConsumer`, as the send
worker does: a mail is acknowledged once the SMTP server accepted it; a
refusal, or a bug of ours, leaves it pending, to be claimed again after a
minute (`OUTBOX`), and after `MAX_DELIVERIES` deliveries it moves to the
dead-letter stream with its reason (`refused`, `error`; `malformed` at once).
Delivery is at least once (a crash between the server's acceptance and the
XACK sends again).

A mail has a text part and an HTML part (multipart/alternative). Mails never
carry a code, a phone number or a secret; logs carry no address either.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Final, Protocol

import aiosmtplib
import redis.asyncio as aioredis

from gateway import keys
from gateway.config import SmtpConfig
from gateway.streams import Stream, StreamConsumer, Verdict

log = logging.getLogger("otp_gateway.mail")

MAX_DELIVERIES: Final = 5
OUTBOX_MAXLEN: Final = 100_000
DEAD_MAXLEN: Final = 10_000
SMTP_TIMEOUT_SECONDS: Final = 10.0

OUTBOX: Final = Stream(
    keys.MAIL_STREAM, keys.MAIL_GROUP, claim_idle_seconds=60.0, max_deliveries=MAX_DELIVERIES,
    # A few SMTP sessions at once: a burst of reminders is not one slow server's
    # timeout after another, and a mail server is not flooded.
    concurrency=4, block_ms=500, batch=32,
)  # fmt: skip


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
    """The outbox: `enqueue` anywhere, `run` (or `drain`) in the worker.

    The reading is the `StreamConsumer`'s (gateway/streams.py), as for the
    send queue; this is what one outbox entry means."""

    def __init__(
        self, redis: aioredis.Redis, transport: Transport, *, name: str | None = None
    ) -> None:
        self.redis = redis
        self.transport = transport
        self.consumer = StreamConsumer(
            redis, OUTBOX, self.handle, name=name, logger=log, role="mail loop"
        )
        self.name = self.consumer.name

    async def enqueue(self, mail: Mail) -> None:
        if mail.to:
            await self.redis.xadd(
                keys.MAIL_STREAM, mail.fields(), maxlen=OUTBOX_MAXLEN, approximate=True
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set, then finish the mails in hand; rides out a Redis outage."""
        await self.consumer.run(stop)

    async def drain(self) -> int:
        """Burst mode (tests, one-shot runs): one delivery of each mail queued now; mails sent."""
        return (await self.consumer.drain(retry=False)).count("sent")

    async def handle(self, key: str, entry_id: bytes, fields: dict[bytes, bytes]) -> str:
        """Deliver one outbox entry: sent | retry | dead_letter | malformed | gone.

        A refusal (`MailError`) or a bug of ours counts toward `MAX_DELIVERIES`,
        then the mail is dead-lettered with that reason: a poison mail never
        stops the loop. An entry that is not a mail (we write them all) is
        dead-lettered at once."""
        try:
            mail = Mail.from_fields(fields)
        except (KeyError, ValueError, TypeError):  # UnicodeDecodeError is a ValueError
            await self._dead_letter(entry_id, fields, "malformed")
            return "malformed"
        try:
            await self.transport.send(mail)
        except MailError as exc:
            log.warning("mail not delivered", extra={"kind": mail.kind, "error": str(exc)})
            return await self._retry_or_dead_letter(entry_id, fields, mail, "refused")
        except Exception:
            log.exception("mail failed", extra={"kind": mail.kind, "entry": entry_id.decode()})
            return await self._retry_or_dead_letter(entry_id, fields, mail, "error")
        await self.consumer.ack(keys.MAIL_STREAM, entry_id)
        return "sent"

    async def _retry_or_dead_letter(
        self, entry_id: bytes, fields: dict[bytes, bytes], mail: Mail, reason: str
    ) -> str:
        verdict, deliveries = await self.consumer.verdict(keys.MAIL_STREAM, entry_id)
        if verdict is Verdict.DEAD_LETTER:
            await self._dead_letter(entry_id, fields, reason)
            context = {"kind": mail.kind, "reason": reason, "deliveries": deliveries}
            log.error("mail dead-lettered", extra=context)
        return verdict.value

    async def _dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        await self.consumer.dead_letter(
            keys.MAIL_STREAM, entry_id, fields, keys.MAIL_DEAD, reason, DEAD_MAXLEN
        )
