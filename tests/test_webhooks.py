"""Status webhooks (gateway/otp/webhooks.py): signed POSTs to a real receiver on
loopback, retries backing off through the outbox stream, dead letters, no secret."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import keys
from gateway.config import ConfigError
from gateway.config.model import WEBHOOK_EVENTS
from gateway.otp.delivery import DeliveryEvent
from tests.support.config import SECRET, make_config
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.logs import gateway_logs
from tests.support.otp import MOBILE_DIGITS, MOBILE_E164, challenge, code_for, verify
from tests.support.poll import poll

HOOK_SECRET = "hook-secret-0123456789abcdef"
OPENAPI = Path(__file__).resolve().parent.parent / "gateway" / "openapi.json"
BODY_KEYS = {"id", "event", "challenge_id", "purpose", "channel", "delivery", "at"}


@dataclass
class Post:
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic, on arrival

    def json(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.body)
        return decoded

    def signed(self, secret: str = HOOK_SECRET) -> bool:
        timestamp = self.headers["X-Signature-Timestamp"]
        mac = hmac.new(secret.encode(), timestamp.encode() + b"." + self.body, hashlib.sha256)
        return hmac.compare_digest(mac.hexdigest(), self.headers["X-Signature-SHA256"])


@dataclass
class Receiver:
    """The application's end: records every POST, answers the scripted statuses
    (then 200), and refuses a bad signature with 401 as a real one would."""

    statuses: list[int] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        post = Post(dict(request.headers), await request.read(), time.monotonic())
        self.posts.append(post)
        if not post.signed():
            return web.Response(status=401)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    def events(self) -> list[str]:
        return [p.json()["event"] for p in self.posts]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    box = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", box.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    box.url = str(server.make_url("/hooks"))
    yield box
    await server.close()


def hook(receiver: Receiver, **extra: Any) -> dict[str, Any]:
    return {"name": "app", "url": receiver.url, "secret": HOOK_SECRET, **extra}


async def hooked(make_gateway: GatewayFactory, receiver: Receiver, **sections: Any) -> Gateway:
    gw = await make_gateway(webhooks=[hook(receiver, **sections.pop("hook", {}))], **sections)
    await add_account(gw)
    return gw


async def test_events_are_signed_and_carry_no_code_number_or_secret(
    make_gateway: GatewayFactory, receiver: Receiver
) -> None:
    gw = await hooked(make_gateway, receiver)
    with gateway_logs() as logged:
        created = await challenge(gw)
        code = await code_for(gw, created["challenge_id"])  # the send: `sent`
        assert (await verify(gw, created["challenge_id"], code)).status == 200
        assert await gw.services.webhooks.drain() == ["delivered", "delivered"]
    assert receiver.events() == ["sent", "verified"]
    sent, verified = (p.json() for p in receiver.posts)
    assert set(sent) == BODY_KEYS | {"send"} and set(verified) == BODY_KEYS
    assert sent["challenge_id"] == verified["challenge_id"] == created["challenge_id"]
    assert (sent["purpose"], sent["channel"], sent["delivery"], sent["send"]) == (
        "login", "sms", "sent", 1,
    )  # fmt: skip
    assert sent["id"] != verified["id"]
    for post in receiver.posts:
        assert post.signed()
        assert abs(int(post.headers["X-Signature-Timestamp"]) - time.time()) < 60
        assert post.headers["Idempotency-Key"] == post.json()["id"]
        assert post.headers["Content-Type"] == "application/json"
    everything = b"".join(p.body for p in receiver.posts) + logged.getvalue().encode()
    for secret in (code, MOBILE_DIGITS, MOBILE_E164, HOOK_SECRET, SECRET):
        assert secret.encode() not in everything


def test_the_openapi_document_describes_the_posted_body() -> None:
    document = json.loads(OPENAPI.read_text())
    schema = document["components"]["schemas"]["WebhookEvent"]
    assert set(schema["required"]) == BODY_KEYS
    assert set(schema["properties"]) == BODY_KEYS | {"send"}
    assert set(schema["properties"]["event"]["enum"]) == set(WEBHOOK_EVENTS)
    post = document["webhooks"]["challengeEvent"]["post"]
    headers = {p["name"] for p in post["parameters"]}
    assert headers == {"X-Signature-Timestamp", "X-Signature-SHA256", "Idempotency-Key"}


async def test_only_the_events_a_webhook_wants(
    make_gateway: GatewayFactory, receiver: Receiver
) -> None:
    gw = await hooked(make_gateway, receiver, hook={"events": ["verified"]})
    created = await challenge(gw)
    code = await code_for(gw, created["challenge_id"])
    await verify(gw, created["challenge_id"], code)
    await gw.services.webhooks.drain()
    assert receiver.events() == ["verified"]


async def test_a_delivery_receipt_is_told(make_gateway: GatewayFactory, receiver: Receiver) -> None:
    gw = await hooked(make_gateway, receiver, hook={"events": ["delivered"]})
    created = await challenge(gw)
    await gw.drain()
    deliveries = gw.services.deliveries
    changed = await deliveries.record(
        created["challenge_id"], 1, DeliveryEvent("message", "delivered")
    )
    assert changed != "unknown"
    # A duplicate receipt changes nothing, so it tells nothing either.
    await deliveries.record(created["challenge_id"], 1, DeliveryEvent("message", "delivered"))
    await gw.services.webhooks.drain()
    (post,) = receiver.posts
    assert post.json()["event"] == "delivered"
    assert (post.json()["delivery"], post.json()["send"]) == ("delivered", 1)


async def test_unreachable_is_told_once_the_gateway_gives_up(
    make_gateway: GatewayFactory, receiver: Receiver
) -> None:
    # An SMS the network could not deliver, with no call to fall back to: nothing
    # more will be tried (status.lua's `unreachable`), and the application hears so.
    gw = await hooked(
        make_gateway, receiver, hook={"events": ["unreachable"]}, sms={"fallback_to_voice": False}
    )
    created = await challenge(gw)
    await gw.drain()
    deliveries = gw.services.deliveries
    action = await deliveries.record(created["challenge_id"], 1, DeliveryEvent("message", "failed"))
    assert action == "unreachable"
    # A duplicate receipt changes nothing, so it tells nothing either.
    await deliveries.record(created["challenge_id"], 1, DeliveryEvent("message", "failed"))
    await gw.services.webhooks.drain()
    (post,) = receiver.posts
    assert post.signed()
    assert post.json()["event"] == "unreachable"
    assert (post.json()["challenge_id"], post.json()["delivery"]) == (
        created["challenge_id"], "unreachable",
    )  # fmt: skip


async def test_a_refused_post_is_retried_with_the_same_body(
    make_gateway: GatewayFactory, receiver: Receiver
) -> None:
    gw = await hooked(make_gateway, receiver, hook={"events": ["sent"]})
    receiver.statuses = [500, 503]
    await challenge(gw)
    await gw.drain()
    hooks = gw.services.webhooks
    assert await hooks.drain() == ["retry"]
    assert await hooks.drain() == ["retry"]
    assert await hooks.drain() == ["delivered"]
    assert await hooks.drain() == []  # acknowledged and deleted
    first, *rest = receiver.posts
    assert len(rest) == 2 and all(p.body == first.body for p in rest)
    assert await gw.services.redis.xlen(keys.HOOK_STREAM) == 0
    posts = gw.services.metrics.webhook_posts
    assert posts.labels("app", "failed")._value.get() == 2
    assert posts.labels("app", "delivered")._value.get() == 1


async def test_dead_lettered_after_max_deliveries(
    make_gateway: GatewayFactory, receiver: Receiver
) -> None:
    gw = await hooked(
        make_gateway, receiver, hook={"events": ["sent"]}, worker={"webhook_max_deliveries": 3}
    )
    receiver.statuses = [500] * 10
    await challenge(gw)
    await gw.drain()
    hooks = gw.services.webhooks
    outcomes = [*await hooks.drain(), *await hooks.drain(), *await hooks.drain()]
    assert outcomes == ["retry", "retry", "dead_letter"]
    assert await hooks.drain() == []
    assert len(receiver.posts) == 3
    redis = gw.services.redis
    assert await redis.xlen(keys.HOOK_STREAM) == 0
    ((_, dead),) = await redis.xrange(keys.HOOK_DEAD)
    assert dead[b"reason"] == b"http_500" and dead[b"w"] == b"app"
    assert gw.services.metrics.webhook_posts.labels("app", "dead_lettered")._value.get() == 1


async def test_a_bad_signature_counts_as_a_failure(
    make_gateway: GatewayFactory, receiver: Receiver
) -> None:
    """The receiver knows another secret: it refuses (401), the gateway retries."""
    gw = await hooked(make_gateway, receiver, hook={"events": ["sent"], "secret": "w" * 32})
    await challenge(gw)
    await gw.drain()
    assert await gw.services.webhooks.drain() == ["retry"]


async def test_the_running_loop_backs_off(make_gateway: GatewayFactory, receiver: Receiver) -> None:
    """Each retry waits twice the one before (webhook_retry_seconds, then doubled),
    read from the outbox's own pending counters."""
    gw = await hooked(
        make_gateway, receiver, hook={"events": ["sent"]}, worker={"webhook_retry_seconds": 0.2}
    )
    receiver.statuses = [500, 500, 500]
    await challenge(gw)
    await gw.drain()
    stop = asyncio.Event()
    task = asyncio.create_task(gw.services.webhooks.run(stop))
    try:
        await poll(lambda: len(receiver.posts) == 4, within=10, what="four posts")
    finally:
        stop.set()
        await task
    gaps = [b.at - a.at for a, b in zip(receiver.posts, receiver.posts[1:], strict=False)]
    for gap, wait in zip(gaps, (0.2, 0.4, 0.8), strict=True):
        assert gap >= wait - 0.05, gaps
    assert await gw.services.redis.xlen(keys.HOOK_STREAM) == 0


async def test_expired_is_told_once_and_not_for_a_verified_code(
    make_gateway: GatewayFactory, receiver: Receiver
) -> None:
    gw = await hooked(
        make_gateway, receiver, hook={"events": ["expired"]},
        otp={"ttl_seconds": 1, "resend_cooldown_seconds": 0},
    )  # fmt: skip
    verified = await challenge(gw, purpose="rncps")
    code = await code_for(gw, verified["challenge_id"])
    assert (await verify(gw, verified["challenge_id"], code)).status == 200
    lapsed = await challenge(gw)
    hooks = gw.services.webhooks

    async def told() -> bool:
        await hooks.drain()
        return bool(receiver.posts)

    await poll(told, within=5, every=0.1, what="the expired event")
    assert await hooks.drain() == []  # once
    (post,) = receiver.posts
    assert (post.json()["event"], post.json()["challenge_id"]) == (
        "expired", lapsed["challenge_id"],
    )  # fmt: skip
    for watched in keys.EXPIRING:
        assert await gw.services.redis.zcard(watched) == 0


async def test_no_webhook_no_writes(gw: Gateway) -> None:
    await add_account(gw)
    created = await challenge(gw)
    code = await code_for(gw, created["challenge_id"])
    await verify(gw, created["challenge_id"], code)
    redis = gw.services.redis
    assert not await redis.exists(keys.HOOK_STREAM, *keys.EXPIRING)


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"url": "ftp://example.org", "secret": HOOK_SECRET}, "webhooks[0].url"),
        ({"url": "https://example.org/h"}, "webhooks[0].secret"),
        ({"url": "https://example.org/h", "secret": "short"}, "webhooks[0].secret"),
        (
            {"url": "https://e.org/h", "secret": HOOK_SECRET, "events": ["code"]},
            "webhooks[0].events",
        ),
        ({"url": "https://e.org/h", "secret": HOOK_SECRET, "colour": "red"}, "webhooks[0].colour"),
    ],
)
def test_bad_webhook_config_names_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config("redis://127.0.0.1:1/0", webhooks=[table])
    assert key in str(caught.value)
    assert HOOK_SECRET not in str(caught.value)
