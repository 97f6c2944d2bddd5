"""Helpers for the accounts-issue tests: a real SMTP server, admin calls, step-up tokens."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.conftest import ADMIN_KEY, OPERATOR_KEY, Gateway, GatewayFactory, add_account
from tests.otp_helpers import Reply, call, challenge_and_code, verify

ESTABLISHMENT = "Mairie de Luisant"
OTHER_ESTABLISHMENT = "Clinique du Parc"
BOSS = "06 98 76 54 31"
MANAGE = "account.manage"  # the step-up of destructive admin actions
FAST = {
    "otp": {"resend_cooldown_seconds": 0},
    "rate_limits": {"account": "1000/1m", "number": "1000/1m", "failures": "1000/1m"},
}


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


async def admin_gateway(make_gateway: GatewayFactory, inbox: Inbox, **sections: Any) -> Gateway:
    """A gateway wired to `inbox`, without cooldowns or tight limits, plus accounts:

    Mairie de Luisant: `boss` (admin, on `BOSS`), `alice` (user, hidden number);
    Clinique du Parc: `other` (admin), `carol` (user).
    """
    merged = {**FAST, "smtp": inbox.config(), **sections}
    gw = await make_gateway(**merged)
    await add_account(gw, account_id="boss", role="admin", email="boss@example.org", phone=BOSS)
    await add_account(gw, account_id="alice", phone_hidden=True)
    other = {"establishment": OTHER_ESTABLISHMENT}
    await add_account(gw, account_id="other", role="admin", email="other@example.org", **other)
    await add_account(gw, account_id="carol", email="carol@example.org", **other)
    return gw


async def step_up(gw: Gateway, account_id: str, purpose: str) -> str:
    """A step-up token: a code to the account's phone for `purpose`, verified."""
    challenge_id, code = await challenge_and_code(gw, account_id, purpose=purpose)
    reply = await verify(gw, challenge_id, code)
    assert reply.status == 200, reply.body
    token: str = reply.body["step_up_token"]
    return token


async def as_admin(
    gw: Gateway,
    method: str,
    path: str,
    body: Any = None,
    *,
    acting: str | None = "boss",
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """A call with the admin key, acting for `acting`, maybe with a step-up token."""
    sent = dict(headers or {})
    if acting is not None:
        sent["X-Acting-Account"] = acting
    if token is not None:
        sent["X-Step-Up-Token"] = token
    return await call(gw, method, path, body, key=ADMIN_KEY, headers=sent)


async def managing(
    gw: Gateway,
    method: str,
    path: str,
    body: Any = None,
    *,
    acting: str = "boss",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """A destructive admin call, with a fresh `account.manage` step-up of `acting`."""
    token = await step_up(gw, acting, MANAGE)
    return await as_admin(gw, method, path, body, acting=acting, token=token, headers=headers)


async def as_operator(gw: Gateway, method: str, path: str, body: Any = None) -> Reply:
    return await call(gw, method, path, body, key=OPERATOR_KEY)


async def mails_after_drain(gw: Gateway) -> int:
    """Deliver the outbox now; how many mails the SMTP server accepted."""
    return await gw.services.account_services.mail.drain()


async def poll(check: Any, within: float = 5.0, what: str = "condition") -> None:
    """Await `check()` until true, within a deadline."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"{what} not met within {within}s"
        await asyncio.sleep(0.02)
