"""A real SMTP server (aiosmtpd) in the test's loop, and reading the mails it got."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Inbox:
    """An aiosmtpd server in the test's loop; keeps every message it accepts."""

    messages: list[EmailMessage] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    port: int = 0
    refuse: bool = False

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse:
            return "451 try again later"
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.recipients.append([str(r) for r in envelope.rcpt_tos])
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        pairs = zip(self.messages, self.recipients, strict=True)
        return [m for m, rcpt in pairs if address in rcpt]

    def config(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "from": "pep@example.org"}


@contextlib.asynccontextmanager
async def smtp_server() -> AsyncIterator[Inbox]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 and a free port, in this loop."""
    box = Inbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(box, hostname="mx.test", loop=loop), "127.0.0.1", 0
    )
    box.port = server.sockets[0].getsockname()[1]
    try:
        yield box
    finally:
        server.close()
        await server.wait_closed()


def parts(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML parts of a multipart/alternative mail."""
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())
