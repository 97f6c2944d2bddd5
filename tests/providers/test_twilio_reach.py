"""Reaching every person inside the TTL, end to end: real Redis, the gateway over
HTTP, the Twilio simulator as the peer (its callbacks and TwiML fetches come
back to the gateway on real sockets).

What the gateway does when a send ends badly (status.lua): a busy line is
called again sooner than an unanswered one; calls go on while a ring plus the
time to type the code fit before the expiry; an undelivered SMS, or one every
SMS provider failed, becomes a call by default; with the default key press, a
voicemail, a switchboard or a person who presses nothing never hears the code;
and once nothing more will be tried, the challenge says `unreachable` and lists
its delivery attempts, never the number.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.config.model import SmsConfig, VoiceConfig
from gateway.embedded import RedisServer
from tests.support.gateway import Gateway, add_account
from tests.support.metrics import sample
from tests.support.queues import scheduled
from tests.support.twilio import World, status, twilio_world, wait_calls, wait_delivery

MOBILE, MOBILE_E164 = "06 12 34 56 78", "+33612345678"
LANDLINE, LANDLINE_E164 = "01 42 68 53 00", "+33142685300"


@pytest.fixture
async def world(redis_server: RedisServer, redis: aioredis.Redis) -> AsyncIterator[World]:
    async with twilio_world(redis_server.url) as w:
        yield w


async def challenge(gw: Gateway, account_id: str = "alice") -> str:
    resp = await gw.post("/challenge", {"account_id": account_id})
    assert resp.status == 202, await resp.text()
    challenge_id: str = (await resp.json())["challenge_id"]
    return challenge_id


async def verify(gw: Gateway, challenge_id: str, code: str) -> int:
    resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": code})
    status_code: int = resp.status
    return status_code


def unreachable(gw: Gateway, channel: str) -> float:
    return sample(gw.services.metrics.render(), "otp_unreachable_total", channel=channel)


async def due_in(redis: aioredis.Redis, challenge_id: str) -> float:
    """Seconds until the challenge's scheduled call again."""
    score = await redis.zscore(keys.retries_of(challenge_id), challenge_id)
    assert score is not None, "a call again is scheduled"
    return float(score) / 1000 - time.time()


# --- calling again -------------------------------------------------------------------------


async def test_a_busy_line_is_called_again_sooner_than_an_unanswered_one(
    world: World, redis: aioredis.Redis
) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["busy", "no_answer", "answer"], [])
    voice = {"retry_delay_seconds": 120, "busy_retry_delay_seconds": 0.05}
    gw = await world.gateway(providers=[sim.provider()], voice=voice)
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    # Busy: called again at once (the no-answer delay is two minutes).
    busy, silent = await wait_calls(sim, LANDLINE_E164, 2)
    assert (busy.outcome, silent.outcome) == ("busy", "no_answer")
    await wait_delivery(gw, challenge_id, "no_answer")
    # No answer: the next call waits the whole retry delay.
    assert 100 < await due_in(redis, challenge_id) <= 120
    assert len(sim.calls_to(LANDLINE_E164)) == 2


async def test_calls_go_on_while_a_ring_and_typing_fit_then_stop_unreachable(
    world: World, redis: aioredis.Redis
) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["no_answer"] * 10, [])
    # TTL 10 s, answer window 6 s: calls are placed during the first 4 s only (a
    # window wide enough for more than three calls on a cluster too, whose worker
    # may pick each one up a block period later).
    voice = {"retry_delay_seconds": 0.5, "answer_window_seconds": 6}
    otp = {"ttl_seconds": 10, "max_sends": 10, "resend_cooldown_seconds": 0}
    gw = await world.gateway(providers=[sim.provider()], voice=voice, otp=otp)
    await add_account(gw, phone=LANDLINE)
    created = time.time()
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "unreachable")
    calls = sim.calls_to(LANDLINE_E164)
    # More than the old three calls, fewer than the sends allowed: time decided.
    assert 3 < len(calls) < 10
    assert all(c.received_at - created < 4.5 for c in calls)
    assert await scheduled(redis) == 0
    assert unreachable(gw, "voice") == 1 and unreachable(gw, "sms") == 0

    body = await status(gw, challenge_id)
    assert body["status"] == "pending" and body["attempts"] == 0  # wrong codes: none
    attempts = body["delivery_attempts"]
    assert [(a["channel"], a["outcome"]) for a in attempts] == [("voice", "no_answer")] * len(calls)
    times = [datetime.fromisoformat(a["at"]).timestamp() for a in attempts]
    assert times == sorted(times) and created - 1 < times[0] < created + 3
    text = json.dumps(body)
    assert "42685300" not in text and "+33" not in text  # never the number


async def test_attempts_are_bounded_by_the_sends_allowed(world: World) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["busy"] * 10, [])
    voice = {"busy_retry_delay_seconds": 0.02}
    gw = await world.gateway(providers=[sim.provider()], voice=voice, otp={"max_sends": 3})
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "unreachable")
    body = await status(gw, challenge_id)
    assert [a["outcome"] for a in body["delivery_attempts"]] == ["busy"] * 3
    assert len(sim.calls_to(LANDLINE_E164)) == 3


# --- SMS to voice ----------------------------------------------------------------------------


async def test_an_undelivered_sms_becomes_a_call_by_default(world: World) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(MOBILE_E164, [], ["undelivered"])
    gw = await world.gateway(providers=[sim.provider()])  # [sms] and [voice]: the defaults
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    [call] = await wait_calls(sim, MOBILE_E164, 1)
    await wait_delivery(gw, challenge_id, "delivered")
    assert call.heard.pressed[:1] == ["1"] and call.heard.code is not None
    assert await verify(gw, challenge_id, call.heard.code) == 200
    attempts = (await status(gw, challenge_id))["delivery_attempts"]
    assert [(a["channel"], a["outcome"]) for a in attempts] == [
        ("sms", "failed"), ("voice", "delivered"),
    ]  # fmt: skip


async def test_an_sms_every_sms_provider_failed_becomes_a_call_by_default(world: World) -> None:
    down, sim = await world.simulator(0), await world.simulator(1)
    down.twilio.outage = 503
    gw = await world.gateway(
        providers=[
            down.provider("down", channels=["sms"]),
            sim.provider("voice", channels=["voice"]),
        ],
        worker={"max_deliveries": 1},
    )
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    [call] = await wait_calls(sim, MOBILE_E164, 1)
    await wait_delivery(gw, challenge_id, "delivered")
    assert call.heard.code is not None
    assert await verify(gw, challenge_id, call.heard.code) == 200


async def test_an_sms_without_fallback_is_unreachable_with_its_reason(world: World) -> None:
    down = await world.simulator()
    down.twilio.outage = 503
    gw = await world.gateway(
        providers=[down.provider()], worker={"max_deliveries": 1}, sms={"fallback_to_voice": False}
    )
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "unreachable")
    body = await status(gw, challenge_id)
    assert body["reason"] == "all_providers_failed"
    assert body["delivery_attempts"][0]["channel"] == "sms"
    assert unreachable(gw, "sms") == 1
    assert down.twilio.calls == []


# --- the key press ------------------------------------------------------------------------------


async def test_a_machine_or_a_person_who_presses_nothing_never_hears_the_code(
    world: World,
) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["machine", "no_press", "answer"], [])
    voice = {"retry_delay_seconds": 0.05}  # require_keypress: the default
    gw = await world.gateway(providers=[sim.provider()], voice=voice)
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "delivered")
    machine, silent, person = await wait_calls(sim, LANDLINE_E164, 3)
    for call in (machine, silent):
        assert call.heard.readings == [] and call.heard.fetched == []
    assert silent.answered_by == "human"  # answered, yet no key: called again
    assert person.heard.code is not None
    assert await verify(gw, challenge_id, person.heard.code) == 200
    outcomes = [a["outcome"] for a in (await status(gw, challenge_id))["delivery_attempts"]]
    assert outcomes == ["machine", "machine", "delivered"]


async def test_without_a_key_press_the_code_is_read_to_whoever_answers(world: World) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["no_press"], [])
    gw = await world.gateway(providers=[sim.provider()], voice={"require_keypress": False})
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "delivered")
    [call] = await wait_calls(sim, LANDLINE_E164, 1)
    assert call.heard.code is not None and call.heard.pressed == []


def test_the_defaults_are_the_ones_the_bench_chose() -> None:
    """bench/README.md, "Reach": the defaults that reached >= 99.5% inside the TTL."""
    voice, sms = VoiceConfig(), SmsConfig()
    assert voice.require_keypress and sms.fallback_to_voice
    assert voice.busy_retry_delay_seconds < voice.retry_delay_seconds
    assert voice.answer_window_seconds == 60 and voice.max_calls == 10
