"""Delivery states and calling again (gateway/otp/delivery.py, status.lua, retry.lua,
sent.lua) against real Redis, driven directly and through the queue."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from gateway import keys
from gateway.otp.delivery import DeliveryEvent
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.httpfake import StubFactory
from tests.support.metrics import sample
from tests.support.queues import (
    dead_count,
    dead_letters,
    queue_entries,
    queued,
    schedule,
    scheduled,
    tag,
)

LANDLINE = "01 42 68 53 00"
NOW = {"retry_delay_seconds": 0, "max_calls": 3}
CALL_NO_ANSWER = DeliveryEvent("call", "no_answer")


async def challenge(gw: Gateway, **body: Any) -> str:
    resp = await gw.post("/challenge", {"account_id": "alice", **body})
    assert resp.status == 202, await resp.text()
    challenge_id: str = (await resp.json())["challenge_id"]
    return challenge_id


async def fields(redis: aioredis.Redis, challenge_id: str, *names: str) -> list[Any]:
    values: list[Any] = await redis.hmget(keys.challenge(challenge_id), *names)
    return [v.decode() if v is not None else None for v in values]


async def test_a_send_state_only_moves_forward(gw: Gateway, redis: aioredis.Redis) -> None:
    await add_account(gw)
    challenge_id = await challenge(gw)
    record = gw.services.deliveries.record
    message = "message"
    assert await record(challenge_id, 1, DeliveryEvent(message, "sent")) == "none"
    assert await record(challenge_id, 1, DeliveryEvent(message, "delivered")) == "none"
    for late in ("sent", "failed", "delivered", "queued"):
        assert await record(challenge_id, 1, DeliveryEvent(message, late)) == "unchanged"
    assert await fields(redis, challenge_id, "d", "d:1") == ["delivered", "delivered"]
    # A send that does not exist, or a challenge that does not.
    assert await record(challenge_id, 2, DeliveryEvent(message, "delivered")) == "unknown"
    assert await record("X" * 28, 1, DeliveryEvent(message, "delivered")) == "unknown"


async def test_a_fast_callback_is_not_overwritten_by_the_worker(
    gw: Gateway, redis: aioredis.Redis
) -> None:
    await add_account(gw)
    challenge_id = await challenge(gw)
    # The provider's "delivered" comes in before the worker records "sent".
    await gw.services.deliveries.record(challenge_id, 1, DeliveryEvent("message", "delivered"))
    assert await gw.drain() == 1
    assert await fields(redis, challenge_id, "d", "d:1", "q") == ["delivered", "delivered", "1"]


async def test_a_late_callback_of_an_older_send_leaves_the_latest_alone(
    make_gateway: GatewayFactory, redis: aioredis.Redis
) -> None:
    gw = await make_gateway(otp={"resend_cooldown_seconds": 0})
    await add_account(gw)
    challenge_id = await challenge(gw)
    await gw.drain()
    assert (await gw.post(f"/challenge/{challenge_id}/resend", {})).status == 202
    await gw.services.deliveries.record(challenge_id, 1, DeliveryEvent("message", "delivered"))
    assert await fields(redis, challenge_id, "d", "d:1") == ["queued", "delivered"]


async def test_a_call_again_is_claimed_once_by_competing_workers(
    make_gateway: GatewayFactory, redis: aioredis.Redis
) -> None:
    one = await make_gateway(voice=NOW)
    two = await make_gateway(voice=NOW)
    await add_account(one, phone=LANDLINE)
    challenge_id = await challenge(one)
    await one.drain()
    assert await one.services.deliveries.record(challenge_id, 1, CALL_NO_ANSWER) == "retry"
    assert await scheduled(redis) == 1
    queued = await asyncio.gather(
        *(gw.services.deliveries.promote_due() for gw in (one, two, one, two))
    )
    assert sum(queued) == 1
    assert await scheduled(redis) == 0
    [(_, job)] = await queue_entries(redis)
    assert job == {b"c": challenge_id.encode(), b"n": b"2", b"ch": b"voice"}
    assert await fields(redis, challenge_id, "s", "d", "c") == ["2", "queued", "voice"]


async def test_a_call_again_waits_for_its_time(
    make_gateway: GatewayFactory, redis: aioredis.Redis
) -> None:
    gw = await make_gateway(voice={"retry_delay_seconds": 60})
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await gw.drain()
    assert await gw.services.deliveries.record(challenge_id, 1, CALL_NO_ANSWER) == "retry"
    assert await gw.services.deliveries.promote_due() == 0
    [(member, due)] = await schedule(redis)
    assert member == challenge_id.encode()
    [expires] = await fields(redis, challenge_id, "x")
    assert abs(int(expires) - due - 240_000) < 2_000  # scored at now + 60 s (TTL 300 s)


async def test_a_resend_supersedes_the_call_again(
    make_gateway: GatewayFactory, redis: aioredis.Redis
) -> None:
    gw = await make_gateway(voice=NOW, otp={"resend_cooldown_seconds": 0})
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await gw.drain()
    await gw.services.deliveries.record(challenge_id, 1, CALL_NO_ANSWER)
    assert (await gw.post(f"/challenge/{challenge_id}/resend", {})).status == 202
    assert await gw.services.deliveries.promote_due() == 0
    text = gw.services.metrics.render()
    assert sample(text, "otp_sends_dropped_total", reason="retry_superseded") == 1
    assert await queued(redis) == 1  # only the resend


async def test_no_call_again_after_max_sends(
    make_gateway: GatewayFactory, redis: aioredis.Redis
) -> None:
    gw = await make_gateway(voice={**NOW, "max_calls": 10}, otp={"max_sends": 1})
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await gw.drain()
    assert await gw.services.deliveries.record(challenge_id, 1, CALL_NO_ANSWER) == "unreachable"
    assert await scheduled(redis) == 0


async def test_a_failed_sms_with_fallback_is_called_at_once(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")], sms={"fallback_to_voice": True})
    await add_account(gw)
    challenge_id = await challenge(gw)
    await gw.drain()
    event = DeliveryEvent("message", "failed")
    assert await gw.services.deliveries.record(challenge_id, 1, event) == "fallback"
    assert await gw.services.deliveries.record(challenge_id, 1, event) == "unchanged"
    assert await gw.drain() == 1
    sms, call = (hit.json for hit in stub.hits)
    assert (sms["channel"], call["channel"]) == ("sms", "voice")
    assert sms["code"] == call["code"] and call["attempt"] == 2
    # The plain text for providers with their own speech: digits one by one.
    assert ", ".join(call["code"]) in call["message"]


async def test_sms_refused_for_good_falls_back_to_voice(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    refusing = await stubs(status=400)
    caller = await stubs()
    gw = await make_gateway(
        providers=[refusing.provider("sms", ("sms",)), caller.provider("voice", ("voice",))],
        sms={"fallback_to_voice": True},
    )
    await add_account(gw)
    challenge_id = await challenge(gw)
    assert await gw.drain() == 2  # the SMS, then the call it became
    assert [h.json["channel"] for h in caller.hits] == ["voice"]
    assert await fields(redis, challenge_id, "d:1", "d:2", "dr") == [
        "failed", "sent", "sms: HTTP 400",
    ]  # fmt: skip


async def test_the_dead_letter_stream_keeps_the_newest_entries(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    down = await stubs(status=503)
    gw = await make_gateway(
        providers=[down.provider("sms", ("sms", "voice"))],
        worker={"max_deliveries": 1, "dead_letters_max": 2},
        sms={"fallback_to_voice": False},
    )
    # The cap holds per slot group's stream: three accounts of one group.
    group = keys.group_of_tag(tag("alice"))
    same = [n for n in (f"user{i}" for i in range(400)) if keys.group_of_tag(tag(n)) == group]
    names = ["alice", *same[:2]]
    challenge_ids = []
    phones = ("06 12 34 56 78", "06 12 34 56 79", "06 12 34 56 80")
    for name, phone in zip(names, phones, strict=True):
        await add_account(gw, account_id=name, phone=phone)
        challenge_ids.append(await challenge(gw, account_id=name))
        await gw.drain()
    entries = await dead_letters(redis)
    assert [fields[b"c"].decode() for _, fields in entries] == challenge_ids[1:]


async def test_a_dead_lettered_sms_falls_back_to_voice(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    down = await stubs(status=503)
    caller = await stubs()
    gw = await make_gateway(
        providers=[down.provider("sms", ("sms",)), caller.provider("voice", ("voice",))],
        sms={"fallback_to_voice": True},
        worker={"max_deliveries": 1},
    )
    await add_account(gw)
    await challenge(gw)
    await gw.drain()
    assert await dead_count(redis) == 1
    assert [h.json["channel"] for h in caller.hits] == ["voice"]
