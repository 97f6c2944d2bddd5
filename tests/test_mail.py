"""The e-mail outbox and its SMTP transport, against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.accounts.mail import MAX_DELIVERIES, Mail, MailError, MailQueue, SmtpTransport
from gateway.config import SmtpConfig
from gateway.embedded import free_port
from tests.support.poll import poll
from tests.support.smtp import Inbox, parts

MAIL = Mail(
    to=("a@example.org", "b@example.org"),
    subject="Comptes à renouveler : Mairie",
    text="Bonjour,\n\nligne é\n",
    html="<p>Bonjour <b>é</b></p>",
    kind="reminder",
)


def transport(port: int) -> SmtpTransport:
    return SmtpTransport(SmtpConfig(port=port, sender="pep@example.org"), timeout=2.0)


async def test_a_mail_has_text_and_html_parts(inbox: Inbox) -> None:
    await transport(inbox.port).send(MAIL)
    [message] = inbox.messages
    assert inbox.recipients == [["a@example.org", "b@example.org"]]
    assert message["From"] == "pep@example.org"
    assert message["Subject"] == MAIL.subject
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@example.org>")
    assert message.get_content_type() == "multipart/alternative"
    text, html = (part.replace("\r\n", "\n") for part in parts(message))
    assert (text, html) == (MAIL.text, MAIL.html + "\n")


async def test_an_unreachable_server_is_a_mail_error() -> None:
    with pytest.raises(MailError) as caught:
        await transport(free_port()).send(MAIL)
    assert "a@example.org" not in str(caught.value)


async def test_outbox_delivers_once(redis: aioredis.Redis, inbox: Inbox) -> None:
    queue = MailQueue(redis, transport(inbox.port))
    await queue.enqueue(MAIL)
    await queue.enqueue(Mail((), "nobody", "x", "y"))  # no recipient: nothing queued
    assert await queue.drain() == 1
    assert await queue.drain() == 0
    assert len(inbox.messages) == 1
    assert await redis.xlen(keys.MAIL_STREAM) == 0


async def test_refused_mail_is_retried_then_dead_lettered(
    redis: aioredis.Redis, inbox: Inbox
) -> None:
    queue = MailQueue(redis, transport(inbox.port))
    await queue.enqueue(MAIL)
    inbox.refuse = True
    assert await queue.drain() == 0
    inbox.refuse = False
    assert await queue.drain() == 1  # the pending mail, delivered on the next round
    assert len(inbox.messages) == 1

    await queue.enqueue(MAIL)
    inbox.refuse = True
    for _ in range(MAX_DELIVERIES):
        assert await queue.drain() == 0
    assert await redis.xlen(keys.MAIL_DEAD) == 1
    assert await redis.xlen(keys.MAIL_STREAM) == 0
    inbox.refuse = False
    assert await queue.drain() == 0


async def test_malformed_entries_are_dropped(redis: aioredis.Redis, inbox: Inbox) -> None:
    queue = MailQueue(redis, transport(inbox.port))
    await redis.xadd(keys.MAIL_STREAM, {"to": "not json"})
    await queue.enqueue(MAIL)
    assert await queue.drain() == 1
    assert await redis.xlen(keys.MAIL_STREAM) == 0


async def test_the_loop_delivers_in_the_background(redis: aioredis.Redis, inbox: Inbox) -> None:
    queue = MailQueue(redis, transport(inbox.port), name="loop")
    stop = asyncio.Event()
    task = asyncio.create_task(queue.run(stop))
    await queue.enqueue(MAIL)

    async def arrived() -> bool:
        return len(inbox.messages) == 1

    await poll(arrived, what="the mail")
    stop.set()
    async with asyncio.timeout(5):
        await task


# A header injection: the mail cannot even be built (a ValueError, not a MailError).
POISON = {
    "to": '["a@example.org\\r\\nBcc: c@example.org"]',
    "subject": "s", "text": "t", "html": "<p>h</p>", "kind": "notice",
}  # fmt: skip


async def test_a_poison_mail_is_dead_lettered_after_max_deliveries(
    redis: aioredis.Redis, inbox: Inbox
) -> None:
    """Before: its error escaped the handler: each drain, and the running loop,
    stopped at it, and the mails behind it waited, forever."""
    queue = MailQueue(redis, transport(inbox.port))
    await redis.xadd(keys.MAIL_STREAM, POISON)
    await queue.enqueue(MAIL)
    assert await queue.drain() == 1
    for _ in range(MAX_DELIVERIES - 1):
        assert await queue.drain() == 0
    [(_, dead)] = await redis.xrange(keys.MAIL_DEAD)
    assert dead == {k.encode(): v.encode() for k, v in POISON.items()} | {b"reason": b"error"}
    assert await redis.xlen(keys.MAIL_STREAM) == 0
    assert inbox.recipients == [["a@example.org", "b@example.org"]]


async def test_the_loop_delivers_past_a_poison_mail(redis: aioredis.Redis, inbox: Inbox) -> None:
    queue = MailQueue(redis, transport(inbox.port), name="loop")
    await redis.xadd(keys.MAIL_STREAM, POISON)
    await queue.enqueue(MAIL)
    stop = asyncio.Event()
    task = asyncio.create_task(queue.run(stop))

    async def arrived() -> bool:
        return len(inbox.messages) == 1

    try:
        await poll(arrived, what="the mail behind the poison")
        assert not task.done()
    finally:
        stop.set()
        async with asyncio.timeout(5):
            await task


async def test_dead_letters_say_why(redis: aioredis.Redis, inbox: Inbox) -> None:
    """Before: a malformed entry left no trace, a refused mail no reason."""
    queue = MailQueue(redis, transport(inbox.port))
    await redis.xadd(keys.MAIL_STREAM, {"to": "not json"})
    await queue.enqueue(MAIL)
    inbox.refuse = True
    for _ in range(MAX_DELIVERIES):
        await queue.drain()
    reasons = [fields[b"reason"] for _, fields in await redis.xrange(keys.MAIL_DEAD)]
    assert reasons == [b"malformed", b"refused"]
    assert await redis.xlen(keys.MAIL_STREAM) == 0
