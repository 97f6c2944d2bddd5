"""End to end: real Redis, the gateway over HTTP, the fake OVHcloud API as the SMS peer.

The gateway's `public_url` is its own loopback address, so the receipts the
provider relays really come back through `/callbacks/ovh/status`. Nothing
sleeps for a fixed time: tests poll with a deadline.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.embedded import RedisServer
from tests.support.config import OPERATOR_KEY
from tests.support.gateway import Gateway, add_account
from tests.support.httpfake import Stub, StubFactory, stub_servers
from tests.support.metrics import sample
from tests.support.ovh import FakeOvh, fake_ovh
from tests.support.poll import poll
from tests.support.twilio import World, status, twilio_world, wait_delivery

MOBILE, MOBILE_E164 = "06 12 34 56 78", "+33612345678"


@pytest.fixture
async def world(redis_server: RedisServer, redis: aioredis.Redis) -> AsyncIterator[World]:
    async with twilio_world(redis_server.url) as w:
        yield w


@pytest.fixture
async def ovh() -> AsyncIterator[FakeOvh]:
    async with fake_ovh() as fake:
        yield fake


@pytest.fixture
async def stubs() -> AsyncIterator[StubFactory]:
    async with stub_servers() as make:
        yield make


async def challenge(gw: Gateway) -> str:
    resp = await gw.post("/challenge", {"account_id": "alice", "channel": "sms"})
    assert resp.status == 202, await resp.text()
    challenge_id: str = (await resp.json())["challenge_id"]
    return challenge_id


def sms_code(text: str) -> str:
    match = re.match(r"Code ([0-9]{6}) ", text)
    assert match, "the SMS starts with the code"
    return match[1]


async def test_a_challenge_goes_out_by_ovh_is_delivered_and_verifies(
    world: World, ovh: FakeOvh
) -> None:
    gw = await world.gateway(providers=[ovh.provider()])
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "delivered")

    [job] = ovh.messages_to(MOBILE_E164)
    assert ovh.refused == []  # every request's signature checked out
    assert job.body["sender"] == "MAIRIE"
    resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": sms_code(job.text)})
    assert resp.status == 200
    raw = await gw.services.redis.hmget(keys.challenge(challenge_id), "pr", "pv")
    assert raw == [str(job.id).encode(), b"ovh"]


async def test_an_undelivered_receipt_marks_the_send_failed(world: World, ovh: FakeOvh) -> None:
    ovh.receipts[MOBILE_E164] = 2  # DLR "failed"
    gw = await world.gateway(providers=[ovh.provider()])
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    # No voice provider to fall back to: the gateway gives up, the send says why.
    await wait_delivery(gw, challenge_id, "unreachable")
    body = await status(gw, challenge_id)
    assert [(a["channel"], a["outcome"]) for a in body["delivery_attempts"]] == [("sms", "failed")]


async def test_a_server_error_fails_over_to_the_next_provider(
    world: World, ovh: FakeOvh, stubs: StubFactory
) -> None:
    ovh.outage = 503
    sink: Stub = await stubs()
    gw = await world.gateway(providers=[ovh.provider(), sink.provider(channels=("sms",))])
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    await poll(lambda: bool(sink.accepted), what="the next provider's send")
    assert ovh.jobs == []
    assert sink.codes(challenge_id)


async def test_no_credit_fails_over_and_marks_ovh_down(
    world: World, ovh: FakeOvh, stubs: StubFactory
) -> None:
    ovh.credits = 0
    sink: Stub = await stubs()
    gw = await world.gateway(
        providers=[ovh.provider(), sink.provider(channels=("sms",))],
        worker={"breaker_threshold": 1},
    )
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    await poll(lambda: bool(sink.accepted), what="the next provider's send")
    assert sink.codes(challenge_id)
    metrics = gw.services.metrics.render()
    assert sample(metrics, "otp_provider_up", provider="ovh") == 0
    assert sample(metrics, "otp_provider_up", provider="sink") == 1


async def test_a_job_whose_answer_never_came_is_not_resent(
    world: World, ovh: FakeOvh, stubs: StubFactory
) -> None:
    ovh.slow = 10  # OVHcloud takes the job but answers after our timeout
    sink: Stub = await stubs()
    gw = await world.gateway(
        providers=[ovh.provider(timeout_seconds=0.3), sink.provider(channels=("sms",))]
    )
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "unreachable")  # no voice provider
    assert len(ovh.messages_to(MOBILE_E164)) == 1
    assert sink.hits == []  # not sent again through the next provider either
    dead = await gw.get("/dead-letters", key=OPERATOR_KEY)
    assert (await dead.json())["total"] == 0  # refused for good, not retried
    assert (await status(gw, challenge_id))["status"] == "pending"
