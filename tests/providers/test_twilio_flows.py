"""End to end: real Redis, the gateway over HTTP, the Twilio simulator as the peer.

Each test runs a gateway whose `public_url` is its own loopback address, so
the simulator's signed status callbacks and TwiML fetches really come back to
it. Retry delays are short; nothing sleeps for a fixed time: tests poll
with a deadline.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.embedded import RedisServer
from providers.twilio import twilio_signature
from tests.support.gateway import Gateway, add_account
from tests.support.metrics import sample
from tests.support.poll import poll
from tests.support.queues import scheduled
from tests.support.twilio import World, status, twilio_world, wait_calls, wait_delivery

MOBILE, MOBILE_E164 = "06 12 34 56 78", "+33612345678"
LANDLINE, LANDLINE_E164 = "01 42 68 53 00", "+33142685300"
FAST = {"retry_delay_seconds": 0.05, "busy_retry_delay_seconds": 0.05, "max_calls": 3}


@pytest.fixture
async def world(redis_server: RedisServer, redis: aioredis.Redis) -> AsyncIterator[World]:
    async with twilio_world(redis_server.url) as w:
        yield w


async def challenge(gw: Gateway, account_id: str = "alice", **body: Any) -> str:
    resp = await gw.post("/challenge", {"account_id": account_id, **body})
    assert resp.status == 202, await resp.text()
    challenge_id: str = (await resp.json())["challenge_id"]
    return challenge_id


async def verify(gw: Gateway, challenge_id: str, code: str) -> int:
    resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": code})
    status_code: int = resp.status
    return status_code


def sms_code(body: str) -> str:
    match = re.match(r"Code ([0-9]{6}) ", body)
    assert match, "the SMS starts with the code"
    return match[1]


def voice_calls(gw: Gateway, outcome: str) -> float:
    return sample(gw.services.metrics.render(), "otp_voice_calls_total", outcome=outcome)


def said(twiml: str) -> list[str]:
    return [el.text or "" for el in ET.fromstring(twiml).iter("Say")]


# --- SMS ----------------------------------------------------------------------------------


async def test_sms_is_sent_then_delivered_and_its_code_verifies(world: World) -> None:
    sim = await world.simulator()
    gw = await world.gateway(providers=[sim.provider()])
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "delivered")

    [message] = sim.messages_to(MOBILE_E164)
    form = dict(message.form)
    assert form["From"] == "+33159000000"
    public = gw.services.config.server.public_url
    assert form["StatusCallback"] == f"{public}/callbacks/twilio/status?c={challenge_id}&n=1"
    assert "Ne le communiquez jamais" in message.body
    assert message.callbacks == 2  # sent, then delivered
    assert await verify(gw, challenge_id, sms_code(message.body)) == 200
    # The provider's message SID is kept against the send.
    raw = await gw.services.redis.hmget(keys.challenge(challenge_id), "pr", "pv", "d:1")
    assert raw == [message.sid.encode(), b"twilio", b"delivered"]


async def test_reordered_sms_callbacks_end_delivered(world: World) -> None:
    sim = await world.simulator()
    sim.twilio.reorder_callbacks = True  # "delivered" arrives before "sent"
    gw = await world.gateway(providers=[sim.provider()])
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    await poll(lambda: bool(sim.twilio.messages) and sim.twilio.messages[0].callbacks == 2)
    assert (await status(gw, challenge_id))["delivery"] == "delivered"


async def test_undelivered_sms_falls_back_to_a_call_with_the_same_code(world: World) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(MOBILE_E164, [], ["undelivered"])
    gw = await world.gateway(providers=[sim.provider()], sms={"fallback_to_voice": True})
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    [call] = await wait_calls(sim, MOBILE_E164, 1)
    await wait_delivery(gw, challenge_id, "delivered")
    [message] = sim.messages_to(MOBILE_E164)
    assert call.heard.code == sms_code(message.body)
    body = await status(gw, challenge_id)
    assert body["channel"] == "voice"
    assert await verify(gw, challenge_id, call.heard.code) == 200


async def test_undelivered_sms_without_fallback_is_unreachable(world: World) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(MOBILE_E164, [], ["failed"])
    gw = await world.gateway(providers=[sim.provider()], sms={"fallback_to_voice": False})
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "unreachable")
    await poll(lambda: sim.twilio.messages[0].callbacks == 2)
    assert sim.twilio.calls == []


# --- voice: calling again -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "state", "metric"),
    [
        ("no_answer", "no_answer", "no_answer"),
        ("busy", "busy", "busy"),
        ("machine", "machine", "machine"),
        ("fail", "failed", "failed"),
    ],
)
async def test_unanswered_call_is_placed_again_with_the_same_code(
    world: World, outcome: str, state: str, metric: str
) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, [outcome, "answer"], [])
    # A long enough delay to see the first outcome in GET /challenge.
    delays = {"retry_delay_seconds": 0.4, "busy_retry_delay_seconds": 0.4}
    gw = await world.gateway(providers=[sim.provider()], voice=delays)
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    assert (await status(gw, challenge_id))["channel"] == "voice"
    await wait_delivery(gw, challenge_id, state)
    await wait_delivery(gw, challenge_id, "delivered")

    first, second = await wait_calls(sim, LANDLINE_E164, 2)
    assert second.answered_by == "human" and second.heard.code is not None
    if outcome == "machine":
        assert first.answered_by == "machine_start"
    assert first.heard.code is None  # a key press comes before the code (the default)
    assert await verify(gw, challenge_id, second.heard.code) == 200
    sends = await gw.services.redis.hmget(keys.challenge(challenge_id), "d:1", "d:2", "vc", "s")
    assert sends == [state.encode(), b"delivered", b"2", b"2"]
    assert voice_calls(gw, metric) == 1
    assert voice_calls(gw, "answered") == 1


async def test_calls_stop_at_max_calls(world: World, redis: aioredis.Redis) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["no_answer"] * 6, [])
    gw = await world.gateway(providers=[sim.provider()], voice=FAST)
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await wait_calls(sim, LANDLINE_E164, 3)
    await wait_delivery(gw, challenge_id, "unreachable")
    assert await scheduled(redis) == 0  # nothing more is scheduled
    assert len(sim.calls_to(LANDLINE_E164)) == 3
    assert voice_calls(gw, "no_answer") == 3
    assert await redis.hget(keys.challenge(challenge_id), "vc") == b"3"


async def test_calls_stop_once_the_code_is_verified(world: World, redis: aioredis.Redis) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["machine", "answer"], [])
    voice = {"retry_delay_seconds": 0.3, "require_keypress": False}  # the voicemail hears it
    gw = await world.gateway(providers=[sim.provider()], voice=voice)
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    [call] = await wait_calls(sim, LANDLINE_E164, 1)
    await wait_delivery(gw, challenge_id, "machine")
    assert await scheduled(redis) == 1
    # The person listened to the voicemail and typed the code before the call again.
    assert call.heard.code is not None
    assert await verify(gw, challenge_id, call.heard.code) == 200

    def dropped() -> float:
        return sample(
            gw.services.metrics.render(), "otp_sends_dropped_total", reason="retry_not_live"
        )

    await poll(lambda: dropped() == 1, what="the due call to be dropped")
    assert len(sim.calls_to(LANDLINE_E164)) == 1
    assert await scheduled(redis) == 0


async def test_no_call_again_past_the_expiry(world: World, redis: aioredis.Redis) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["no_answer", "answer"], [])
    gw = await world.gateway(
        providers=[sim.provider()],
        voice={"retry_delay_seconds": 30},
        otp={"ttl_seconds": 20, "resend_cooldown_seconds": 0},
    )
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "unreachable")
    assert await scheduled(redis) == 0


async def test_a_gateway_restarted_between_two_calls_places_the_second(world: World) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["no_answer", "answer"], [])
    config: dict[str, Any] = {"providers": [sim.provider()], "voice": {"retry_delay_seconds": 0.2}}
    first = await world.gateway(run_worker=False, **config)
    await add_account(first, phone=LANDLINE)
    challenge_id = await challenge(first)
    assert await first.drain() == 1
    await wait_delivery(first, challenge_id, "no_answer")
    await world.stop(first)  # the call again is only in Redis now

    second = await world.gateway(**config)
    await wait_delivery(second, challenge_id, "delivered")
    one, two = await wait_calls(sim, LANDLINE_E164, 2)
    assert one.heard.code is None and two.heard.code is not None
    assert await verify(second, challenge_id, two.heard.code) == 200
    # The second call's callbacks went to the gateway that placed it.
    assert dict(two.form)["StatusCallback"].startswith(second.services.config.server.public_url)


async def test_two_gateways_place_each_call_again_once(world: World) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["busy", "busy", "answer"], [])
    config: dict[str, Any] = {"providers": [sim.provider()], "voice": FAST}
    one = await world.gateway(**config)
    await world.gateway(**config)
    await add_account(one, phone=LANDLINE)
    challenge_id = await challenge(one)
    await wait_delivery(one, challenge_id, "delivered")
    calls = await wait_calls(sim, LANDLINE_E164, 3)
    assert len(calls) == 3
    assert [c.outcome for c in calls] == ["busy", "busy", "answer"]


async def test_an_accounts_extension_is_dialled_after_pick_up(world: World) -> None:
    sim = await world.simulator()
    gw = await world.gateway(providers=[sim.provider()])
    await add_account(gw, phone=LANDLINE, phone_extension="4021")
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "delivered")
    [call] = sim.calls_to(LANDLINE_E164)
    assert call.send_digits == "ww4021" and not call.machine_detection


# --- callbacks: signatures, duplicates ----------------------------------------------------------


async def test_forged_callbacks_are_refused_and_change_nothing(
    world: World, redis: aioredis.Redis
) -> None:
    sim = await world.simulator()
    gw = await world.gateway(providers=[sim.provider()], run_worker=False)
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    before = await redis.hgetall(keys.challenge(challenge_id))
    path = f"/callbacks/twilio/status?c={challenge_id}&n=1"
    url = gw.services.config.server.public_url + path
    params = [("CallSid", "CA" + "0" * 32), ("CallStatus", "no-answer")]
    forged = {
        "no signature": {},
        "wrong token": {"X-Twilio-Signature": twilio_signature("x" * 32, url, params)},
        "another URL": {"X-Twilio-Signature": twilio_signature(
            sim.twilio.auth_token, url.replace("n=1", "n=2"), params)},
        "other params": {"X-Twilio-Signature": twilio_signature(
            sim.twilio.auth_token, url, [("CallStatus", "busy")])},
    }  # fmt: skip
    for name, headers in forged.items():
        resp = await gw.client.post(path, data=params, headers=headers)
        assert resp.status == 403, name
        assert (await resp.json())["error"] == "forbidden"
    good = {"X-Twilio-Signature": twilio_signature(sim.twilio.auth_token, url, params)}
    unknown = await gw.client.post(path.replace("/twilio/", "/nope/"), data=params, headers=good)
    assert unknown.status == 403
    assert await redis.hgetall(keys.challenge(challenge_id)) == before
    assert await scheduled(redis) == 0
    assert voice_calls(gw, "no_answer") == 0

    # The same request, signed right, is applied.
    resp = await gw.client.post(path, data=params, headers=good)
    assert resp.status == 204
    assert (await status(gw, challenge_id))["delivery"] == "no_answer"


async def test_duplicate_callbacks_change_nothing_twice(
    world: World, redis: aioredis.Redis
) -> None:
    sim = await world.simulator()
    sim.twilio.duplicate_callbacks = True
    sim.twilio.numbers.script(LANDLINE_E164, ["no_answer", "answer"], [])
    gw = await world.gateway(providers=[sim.provider()], voice=FAST)
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "delivered")
    await wait_calls(sim, LANDLINE_E164, 2)
    statuses = [p for _, p, code in sim.twilio.webhooks.sent if code == 204]
    assert len(statuses) == 4  # two calls, each status callback sent twice
    assert len(sim.calls_to(LANDLINE_E164)) == 2  # not a third call for the duplicate
    assert voice_calls(gw, "no_answer") == 1
    assert voice_calls(gw, "answered") == 1
    # A late replay of the first call's callback does not move the state back.
    url, params, _ = sim.twilio.webhooks.sent[0]
    assert (await sim.twilio.webhooks.post(url, params))[0] == 204
    assert (await status(gw, challenge_id))["delivery"] == "delivered"
    assert await scheduled(redis) == 0


async def test_a_malformed_callback_url_is_a_400_once_signed(world: World) -> None:
    sim = await world.simulator()
    gw = await world.gateway(providers=[sim.provider()], run_worker=False)
    path = "/callbacks/twilio/status?c=short&n=1"
    url = gw.services.config.server.public_url + path
    headers = {"X-Twilio-Signature": twilio_signature(sim.twilio.auth_token, url, [])}
    resp = await gw.client.post(path, headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_request"


# --- require_keypress ---------------------------------------------------------------------------


async def test_keypress_reads_the_code_only_to_a_person_who_pressed_a_key(
    world: World, redis: aioredis.Redis
) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["machine", "replay"], [])
    gw = await world.gateway(providers=[sim.provider()], voice={**FAST, "require_keypress": True})
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "delivered")
    machine, person = await wait_calls(sim, LANDLINE_E164, 2)

    # The voicemail heard the prompt, never the code; nothing was fetched for it.
    assert machine.heard.readings == [] and machine.heard.fetched == []
    assert any("appuyez sur une touche" in text for text in machine.heard.texts)
    for call in (machine, person):
        twiml = dict(call.form)["Twiml"]
        assert not any(text.isdigit() for text in said(twiml)), "no digit in the call itself"
    # The person pressed 1, heard the code twice, pressed 1 again, heard it twice more.
    code = person.heard.code
    assert code is not None and person.heard.readings == [code] * 4
    assert person.heard.pressed == ["1", "1"]
    assert await verify(gw, challenge_id, code) == 200
    for url in person.heard.fetched:  # the URL names the send, never the code
        assert "/callbacks/twilio/twiml?t=" in url
        parts = url.split("t=")[1].split(".")
        assert len(parts) == 4 and parts[:2] == [challenge_id, "2"] and code not in parts
    assert voice_calls(gw, "machine") == 1 and voice_calls(gw, "answered") == 1


async def test_twiml_url_is_refused_forged_or_for_a_dead_challenge(world: World) -> None:
    sim = await world.simulator()
    sim.twilio.numbers.script(LANDLINE_E164, ["machine"], [])
    gw = await world.gateway(
        providers=[sim.provider()], voice={"require_keypress": True, "max_calls": 1}
    )
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    [call] = await wait_calls(sim, LANDLINE_E164, 1)
    action = ET.fromstring(dict(call.form)["Twiml"]).find("Gather")
    assert action is not None
    url = action.get("action", "")
    public = gw.services.config.server.public_url
    path = url.removeprefix(public)
    token = path.split("t=")[1]
    params = [("CallSid", call.sid), ("Digits", "1")]

    async def fetch(target: str, token_: str = sim.twilio.auth_token) -> Any:
        headers = {"X-Twilio-Signature": twilio_signature(token_, public + target, params)}
        return await gw.client.post(target, data=params, headers=headers)

    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (await fetch(path.replace(token, tampered))).status == 403
    assert (await fetch(path, "y" * 32)).status == 403  # not signed by the provider
    resp = await fetch(path)
    assert resp.status == 200 and resp.content_type == "application/xml"
    readings = [t for t in said(await resp.text()) if t.isdigit()]
    assert len(readings) == 12
    code = "".join(readings[:6])
    assert await verify(gw, challenge_id, code) == 200
    # Once verified, the URL reads nothing any more.
    resp = await fetch(path)
    assert resp.status == 200
    assert not any(t.isdigit() for t in said(await resp.text()))


# --- numbers refused, failover, breakers, dead letters ------------------------------------


async def test_a_number_refused_by_the_provider_fails_without_failover(world: World) -> None:
    first, second = await world.simulator(0), await world.simulator(1)
    first.twilio.numbers.script(LANDLINE_E164, ["reject"], [])
    gw = await world.gateway(
        providers=[first.provider("first"), second.provider("second")], run_worker=False
    )
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    assert await gw.drain() == 1
    assert (await status(gw, challenge_id))["delivery"] == "failed"
    assert second.twilio.requests == 0
    reason = await gw.services.redis.hget(keys.challenge(challenge_id), "dr")
    assert reason == b"first: twilio error 21217 (invalid_number)"
    assert await scheduled(gw.services.redis) == 0


async def test_a_provider_answering_503_fails_over_to_the_next(world: World) -> None:
    down, up = await world.simulator(0), await world.simulator(1)
    down.twilio.outage = 503
    gw = await world.gateway(providers=[down.provider("down"), up.provider("up")])
    await add_account(gw, phone=MOBILE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "delivered")
    assert down.twilio.requests == 1 and down.twilio.messages == []
    [message] = up.messages_to(MOBILE_E164)
    assert await verify(gw, challenge_id, sms_code(message.body)) == 200
    text = gw.services.metrics.render()
    assert sample(text, "otp_deliveries_total", provider="down", outcome="unavailable") == 1
    assert sample(text, "otp_deliveries_total", provider="up", outcome="accepted") == 1


async def test_a_call_that_fails_over_links_back_to_the_provider_that_placed_it(
    world: World,
) -> None:
    """The worker renders the call once per provider it tries: the key-press URL of
    the call `up` placed names `up`, whose signature the gateway then checks."""
    down, up = await world.simulator(0), await world.simulator(1)
    down.twilio.outage = 503
    up.twilio.numbers.script(LANDLINE_E164, ["answer"], [])
    gw = await world.gateway(
        providers=[down.provider("down"), up.provider("up")], voice={"require_keypress": True}
    )
    await add_account(gw, phone=LANDLINE)
    challenge_id = await challenge(gw)
    await wait_delivery(gw, challenge_id, "delivered")
    [call] = await wait_calls(up, LANDLINE_E164, 1)
    assert down.twilio.calls == []
    [url] = call.heard.fetched
    assert url.startswith(gw.services.config.server.public_url + "/callbacks/up/twiml?t=")
    assert call.heard.code is not None
    assert await verify(gw, challenge_id, call.heard.code) == 200


async def test_breaker_opens_then_a_probe_closes_it(world: World) -> None:
    down, up = await world.simulator(0), await world.simulator(1)
    down.twilio.outage = 503
    gw = await world.gateway(
        providers=[down.provider("a"), up.provider("b")],
        worker={"breaker_threshold": 2, "breaker_open_seconds": 1.0},
    )
    breaker = gw.services.dispatcher.breakers["a"]

    def up_gauge() -> float:
        return sample(gw.services.metrics.render(), "otp_provider_up", provider="a")

    for i in range(3):
        await add_account(gw, account_id=f"user{i}", phone=f"06 12 34 56 {i:02d}")
        challenge_id = await challenge(gw, f"user{i}")
        await wait_delivery(gw, challenge_id, "delivered")
    assert down.twilio.requests == 2  # the third send skipped it
    assert up_gauge() == 0
    assert str(breaker.state) == "open"
    skipped = sample(gw.services.metrics.render(), "otp_deliveries_total", provider="a",
                     outcome="circuit_open")  # fmt: skip
    assert skipped == 1

    down.twilio.outage = None
    await poll(lambda: breaker.retry_in() == 0, what="the breaker's open time")
    await add_account(gw, account_id="user9", phone="06 12 34 56 99")
    challenge_id = await challenge(gw, "user9")
    await wait_delivery(gw, challenge_id, "delivered")
    assert [m.to for m in down.twilio.messages] == ["+33612345699"]  # the probe
    assert up_gauge() == 1 and str(breaker.state) == "closed"


async def test_dead_letters_are_listed_for_operators(world: World) -> None:
    from tests.support.config import OPERATOR_KEY, OTP_KEY

    down = await world.simulator()
    down.twilio.outage = 500
    gw = await world.gateway(
        providers=[down.provider()], worker={"max_deliveries": 1}, sms={"fallback_to_voice": False}
    )
    ids = []
    for i in range(3):
        await add_account(gw, account_id=f"user{i}", phone=f"06 12 34 56 {i:02d}")
        ids.append(await challenge(gw, f"user{i}"))
        await wait_delivery(gw, ids[-1], "unreachable")
    resp = await gw.get("/dead-letters?limit=2", key=OPERATOR_KEY)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["total"] == 3
    assert [d["challenge_id"] for d in body["dead_letters"]] == [ids[2], ids[1]]
    first = body["dead_letters"][0]
    assert first["channel"] == "sms" and first["send"] == 1
    assert first["reason"] == "all_providers_failed"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first["failed_at"])
    resp = await gw.get(f"/dead-letters?before={body['next_before']}", key=OPERATOR_KEY)
    rest = await resp.json()
    assert [d["challenge_id"] for d in rest["dead_letters"]] == [ids[0]]
    assert rest["next_before"] is None
    assert (await gw.get("/dead-letters", key=OTP_KEY)).status == 403
    for query in ("limit=0", "limit=501", "limit=x", "before=nope"):
        resp = await gw.get(f"/dead-letters?{query}", key=OPERATOR_KEY)
        assert resp.status == 400, query
