"""POST /challenge, POST /verify, GET /challenge/{id}, resend and trusted devices.

Real Redis, real HTTP (the `http` provider posts to a real sink); rate limits
and concurrency are in test_otp_limits.py, input validation in test_http_input.py.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.accounts.audit import Who
from gateway.crypto import token_digest
from tests.support.config import OPERATOR_KEY, OTP_KEY
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.httpfake import Stub
from tests.support.otp import (
    CHALLENGE_ID,
    FIXED,
    MOBILE_DIGITS,
    MOBILE_E164,
    NO_COOLDOWN,
    OTHER_DIGITS,
    OTHER_MOBILE,
    assert_error,
    assert_rate_limited,
    call,
    challenge,
    challenge_and_code,
    code_for,
    digit_runs,
    everything_in_redis,
    parse_iso,
    seconds_from_now,
    status_of,
    verify,
    wait_for_status,
    wrong,
)
from tests.support.queues import record

SENSITIVE = ["account.create", "contact.update", "rncps"]


@pytest.fixture
async def gw0(make_gateway: GatewayFactory) -> Gateway:
    """A gateway without resend cooldown, with alice (a mobile) in it."""
    gw = await make_gateway(otp=NO_COOLDOWN)
    await add_account(gw)
    return gw


# --- POST /challenge ---------------------------------------------------------


async def test_challenge_body_and_first_send(gw: Gateway) -> None:
    await add_account(gw)
    reply = await call(gw, "POST", "/challenge", {"account_id": "alice"})
    assert reply.status == 202, reply.body
    body = reply.body
    assert set(body) == {
        "challenge_id",
        "channel",
        "destination",
        "expires_at",
        "expires_in",
        "resend_after",
    }
    assert CHALLENGE_ID.fullmatch(body["challenge_id"])
    assert body["channel"] == "sms"
    assert body["destination"] == "+33 * ** ** ** 78"
    assert 298 <= body["expires_in"] <= 300
    assert abs(seconds_from_now(body["expires_at"]) - 300) <= 2
    assert 29 <= body["resend_after"] <= 30

    assert await gw.drain() == 1
    [sent] = gw.sink.received
    assert sent["challenge_id"] == body["challenge_id"]
    assert sent["channel"] == "sms"
    assert sent["to"] == MOBILE_E164
    assert sent["attempt"] == 1
    assert re.fullmatch(r"[0-9]{6}", sent["code"])
    assert sent["code"] in sent["message"]


async def test_fixed_line_defaults_to_voice_and_refuses_sms(gw: Gateway) -> None:
    await add_account(gw, phone=FIXED)
    reply = await call(gw, "POST", "/challenge", {"account_id": "alice", "channel": "sms"})
    assert_error(reply, 422, "channel_unavailable")
    assert await gw.drain() == 0

    body = await challenge(gw)
    assert body["channel"] == "voice"
    assert body["destination"] == "+33 * ** ** ** 00"
    await code_for(gw, body["challenge_id"])
    assert [m["channel"] for m in gw.sink.received] == ["voice"]


async def test_a_channel_no_provider_serves_is_refused(
    make_gateway: GatewayFactory, sink: Stub
) -> None:
    """create.lua checks the channel against the providers configured (its CFG),
    before any limit is consumed."""
    gw = await make_gateway(providers=[sink.provider("sms-only", ("sms",))])
    await add_account(gw)
    await add_account(gw, account_id="bob", phone=FIXED)  # defaults to voice
    assert_error(await challenge_reply(gw, "alice", channel="voice"), 422, "channel_unavailable")
    assert_error(await challenge_reply(gw, "bob"), 422, "channel_unavailable")
    assert (await challenge_reply(gw, "alice")).status == 202
    assert await gw.drain() == 1


async def challenge_reply(gw: Gateway, account_id: str, **body: Any) -> Any:
    return await call(gw, "POST", "/challenge", {"account_id": account_id, **body})


async def test_mobile_may_ask_for_voice(gw: Gateway) -> None:
    await add_account(gw)
    body = await challenge(gw, channel="voice")
    assert body["channel"] == "voice"
    await code_for(gw, body["challenge_id"])
    assert gw.sink.received[0]["channel"] == "voice"


async def test_hidden_phone_is_fully_masked(gw: Gateway) -> None:
    await add_account(gw, phone_hidden=True)
    assert (await challenge(gw))["destination"] == "+33 * ** ** ** **"


async def test_destination_follows_the_hidden_flag_of_the_record(gw: Gateway) -> None:
    """create.lua answers with the masked number the record keeps: hiding the
    number (or showing it again) must rewrite that field too."""
    await add_account(gw)
    store = gw.services.accounts
    phone = store.parse_phone(MOBILE_DIGITS)
    await store.set_phone("alice", phone, hidden=True, who=Who("operator:test", "r1"))
    assert (await challenge(gw))["destination"] == "+33 * ** ** ** **"
    await store.set_phone("alice", phone, hidden=False, who=Who("operator:test", "r2"))
    assert (await challenge(gw, purpose="rncps"))["destination"] == "+33 * ** ** ** 78"


async def test_a_record_written_before_the_masked_field_still_answers_it(
    gw: Gateway, redis: aioredis.Redis
) -> None:
    """Records from before `masked` existed: the gateway decodes the record once
    more rather than answer without a destination."""
    await add_account(gw)
    assert await redis.hdel(record("alice"), "masked") == 1
    body = await challenge(gw)
    assert body["destination"] == "+33 * ** ** ** 78"
    await code_for(gw, body["challenge_id"])


async def test_unknown_account(gw: Gateway) -> None:
    reply = await call(gw, "POST", "/challenge", {"account_id": "nobody"})
    assert_error(reply, 404, "unknown_account")


async def test_expired_account(gw: Gateway) -> None:
    await add_account(gw, expires_at="2020-01-01T00:00:00Z")
    reply = await call(gw, "POST", "/challenge", {"account_id": "alice"})
    assert_error(reply, 403, "account_expired")
    assert await gw.drain() == 0


async def test_suspended_account(gw: Gateway) -> None:
    await add_account(gw)
    patched = await call(gw, "PATCH", "/accounts/alice", {"status": "suspended"}, key=OPERATOR_KEY)
    assert patched.status == 200, patched.body
    reply = await call(gw, "POST", "/challenge", {"account_id": "alice"})
    assert_error(reply, 403, "account_suspended")
    assert await gw.drain() == 0


async def test_account_without_phone(gw: Gateway) -> None:
    await add_account(gw, phone=None)
    reply = await call(gw, "POST", "/challenge", {"account_id": "alice"})
    assert_error(reply, 409, "phone_required")


async def test_new_challenge_replaces_the_old_one(gw0: Gateway) -> None:
    old_id, old_code = await challenge_and_code(gw0)
    new_id, new_code = await challenge_and_code(gw0)
    assert new_id != old_id
    assert (await status_of(gw0, old_id))["status"] == "expired"
    body = assert_error(await verify(gw0, old_id, old_code), 410, "expired")
    assert body["verified"] is False
    assert (await verify(gw0, new_id, new_code)).status == 200


async def test_each_purpose_has_its_own_live_code(gw: Gateway) -> None:
    await add_account(gw)
    login_id, login_code = await challenge_and_code(gw)
    update_id, update_code = await challenge_and_code(gw, purpose="contact.update")
    assert (await verify(gw, login_id, login_code)).body["purpose"] == "login"
    assert (await verify(gw, update_id, update_code)).body["purpose"] == "contact.update"


async def test_phone_change_kills_the_pending_challenge(gw: Gateway) -> None:
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    moved = await call(
        gw, "PUT", "/accounts/alice/phone", {"phone": OTHER_MOBILE}, key=OPERATOR_KEY
    )
    assert moved.status == 200, moved.body
    assert_error(await verify(gw, challenge_id, code), 410, "expired")


async def test_configured_purpose(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp={"purposes": ["export"]})
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw, purpose="export")
    reply = await verify(gw, challenge_id, code)
    assert reply.body["purpose"] == "export"
    assert reply.body["step_up_token"].startswith("su_")


# --- POST /verify: success ---------------------------------------------------


async def test_verify_login(gw: Gateway) -> None:
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    reply = await verify(gw, challenge_id, code)
    assert reply.status == 200
    assert reply.body == {"verified": True, "account_id": "alice", "purpose": "login"}


async def test_verify_login_trusting_the_device(gw: Gateway) -> None:
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    reply = await verify(gw, challenge_id, code, trust_device=True, device_label="Firefox")
    assert reply.status == 200
    body = reply.body
    assert set(body) == {
        "verified",
        "account_id",
        "purpose",
        "trusted_device_token",
        "trusted_until",
    }
    assert body["verified"] is True and body["purpose"] == "login"
    assert body["trusted_device_token"].startswith("td_")
    assert abs(seconds_from_now(body["trusted_until"]) - 7 * 86400) <= 5
    devices = await call(gw, "GET", "/accounts/alice/trusted-devices")
    assert [d["label"] for d in devices.body["devices"]] == ["Firefox"]


@pytest.mark.parametrize("purpose", SENSITIVE)
async def test_verify_sensitive_purpose_gives_a_step_up_token(gw: Gateway, purpose: str) -> None:
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw, purpose=purpose)
    reply = await verify(gw, challenge_id, code, trust_device=True)
    assert reply.status == 200
    body = reply.body
    assert set(body) == {"verified", "account_id", "purpose", "step_up_token", "step_up_expires_at"}
    assert body["purpose"] == purpose and body["account_id"] == "alice"
    assert body["step_up_token"].startswith("su_")
    assert abs(seconds_from_now(body["step_up_expires_at"]) - 300) <= 2


async def test_step_up_token_is_single_use_and_bound(gw: Gateway) -> None:
    await add_account(gw)
    await add_account(gw, account_id="bob")
    step_ups = gw.services.step_ups

    async def token(purpose: str) -> str:
        challenge_id, code = await challenge_and_code(gw, purpose=purpose)
        reply = await verify(gw, challenge_id, code)
        assert reply.status == 200, reply.body
        value: str = reply.body["step_up_token"]
        return value

    assert not await step_ups.consume(await token("contact.update"), "alice", "account.create")
    assert not await step_ups.consume(await token("rncps"), "bob", "rncps")
    good = await token("account.create")
    assert not await step_ups.consume("su_" + "A" * 43, "alice", "account.create")
    assert await step_ups.consume(good, "alice", "account.create")
    assert not await step_ups.consume(good, "alice", "account.create")


# --- POST /verify: failures ----------------------------------------------------


async def test_wrong_codes_count_down_then_burn(gw: Gateway) -> None:
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    for left in (4, 3, 2, 1):
        body = assert_error(await verify(gw, challenge_id, wrong(code)), 422, "invalid_code")
        assert body["verified"] is False
        assert body["attempts_left"] == left
    body = assert_error(await verify(gw, challenge_id, wrong(code)), 410, "too_many_attempts")
    assert body["verified"] is False
    body = assert_error(await verify(gw, challenge_id, code), 410, "too_many_attempts")
    assert body["verified"] is False
    status = await status_of(gw, challenge_id)
    assert (status["status"], status["attempts"]) == ("burnt", 5)


async def test_code_expires_with_its_ttl(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp={"ttl_seconds": 1, "resend_cooldown_seconds": 0})
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    await wait_for_status(gw, challenge_id, "expired")
    body = assert_error(await verify(gw, challenge_id, code), 410, "expired")
    assert body["verified"] is False
    assert_error(await call(gw, "POST", f"/challenge/{challenge_id}/resend", {}), 410, "expired")
    assert (await status_of(gw, challenge_id))["status"] == "expired"


async def test_code_verifies_only_once(gw: Gateway) -> None:
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    assert (await verify(gw, challenge_id, code)).status == 200
    body = assert_error(await verify(gw, challenge_id, code), 410, "already_used")
    assert body["verified"] is False
    assert (await status_of(gw, challenge_id))["status"] == "verified"


@pytest.mark.parametrize(
    "challenge_id",
    ["A" * 28, "A" * 16 + "B" * 12, "short", "A" * 29, "A" * 27 + "!", "../../../etc/passwd"],
)
async def test_unknown_challenge(gw: Gateway, challenge_id: str) -> None:
    await add_account(gw)
    await challenge_and_code(gw)  # a live challenge elsewhere changes nothing
    body = assert_error(await verify(gw, challenge_id, "123456"), 404, "challenge_not_found")
    assert body["verified"] is False


async def test_garbled_real_challenge_id_is_not_found(gw: Gateway) -> None:
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    garbled = ("B" if challenge_id[0] == "A" else "A") + challenge_id[1:]
    assert_error(await verify(gw, garbled, code), 404, "challenge_not_found")
    assert_error(await call(gw, "GET", f"/challenge/{garbled}"), 404, "challenge_not_found")
    assert (await verify(gw, challenge_id, code)).status == 200


# --- codes -------------------------------------------------------------------


async def test_codes_are_six_ascii_digit_strings(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"account": "100/1h", "number": "100/1h"})
    await add_account(gw)
    seen = []
    for _ in range(25):
        challenge_id, code = await challenge_and_code(gw)
        seen.append(code)
        assert isinstance(code, str) and re.fullmatch(r"[0-9]{6}", code), code
    assert (await verify(gw, challenge_id, code)).status == 200
    assert len(set(seen)) > 1


async def test_code_length_eight(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp={"code_length": 8})
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    assert re.fullmatch(r"[0-9]{8}", code), code
    assert_error(await verify(gw, challenge_id, code[:6]), 400, "invalid_request")
    assert (await status_of(gw, challenge_id))["attempts"] == 0
    assert (await verify(gw, challenge_id, code)).status == 200


async def test_leading_zeros_are_kept_end_to_end(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CSPRNG is the one thing faked: it draws 42, which must travel as "000042".
    monkeypatch.setattr("gateway.otp.codes.secrets.randbelow", lambda bound: 42)
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    assert code == "000042"
    assert_error(await verify(gw, challenge_id, "42"), 400, "invalid_request")
    assert_error(await verify(gw, challenge_id, 42), 400, "invalid_request")
    assert (await verify(gw, challenge_id, "000042")).status == 200


# --- GET /challenge/{id} -------------------------------------------------------


async def test_status_follows_the_challenge(gw: Gateway) -> None:
    await add_account(gw)
    created = await challenge(gw)
    challenge_id = created["challenge_id"]
    body = await status_of(gw, challenge_id)
    assert {k: body[k] for k in ("challenge_id", "status", "channel", "delivery", "attempts")} == {
        "challenge_id": challenge_id,
        "status": "pending",
        "channel": "sms",
        "delivery": "queued",
        "attempts": 0,
    }
    code = await code_for(gw, challenge_id)
    assert (await status_of(gw, challenge_id))["delivery"] == "sent"
    await verify(gw, challenge_id, wrong(code))
    await verify(gw, challenge_id, wrong(code))
    assert (await status_of(gw, challenge_id))["attempts"] == 2
    await verify(gw, challenge_id, code)
    body = await status_of(gw, challenge_id)
    assert (body["status"], body["attempts"], body["delivery"]) == ("verified", 2, "sent")


async def test_status_of_unknown_challenge(gw: Gateway) -> None:
    assert_error(await call(gw, "GET", "/challenge/" + "A" * 28), 404, "challenge_not_found")
    assert_error(await call(gw, "GET", "/challenge/nope"), 404, "challenge_not_found")


# --- POST /challenge/{id}/resend ---------------------------------------------


async def test_resend_sends_the_same_code_again(gw0: Gateway) -> None:
    challenge_id, code = await challenge_and_code(gw0)
    reply = await call(gw0, "POST", f"/challenge/{challenge_id}/resend", {})
    assert reply.status == 202, reply.body
    assert reply.body["challenge_id"] == challenge_id
    assert reply.body["channel"] == "sms"
    assert reply.body["destination"] == "+33 * ** ** ** 78"
    await gw0.drain()
    assert gw0.sink.codes(challenge_id) == [code, code]
    assert [m["attempt"] for m in gw0.sink.received] == [1, 2]
    assert (await verify(gw0, challenge_id, code)).status == 200


async def test_resend_may_switch_a_mobile_to_voice(gw0: Gateway) -> None:
    challenge_id, code = await challenge_and_code(gw0)
    reply = await call(gw0, "POST", f"/challenge/{challenge_id}/resend", {"channel": "voice"})
    assert reply.status == 202, reply.body
    assert reply.body["channel"] == "voice"
    await gw0.drain()
    assert [(m["channel"], m["code"]) for m in gw0.sink.received] == [
        ("sms", code),
        ("voice", code),
    ]
    assert (await status_of(gw0, challenge_id))["channel"] == "voice"


async def test_resend_to_a_fixed_line_by_sms_is_refused(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN)
    await add_account(gw, phone=FIXED)
    challenge_id, _ = await challenge_and_code(gw)
    reply = await call(gw, "POST", f"/challenge/{challenge_id}/resend", {"channel": "sms"})
    assert_error(reply, 422, "channel_unavailable")
    assert await gw.drain() == 0


async def test_resend_inside_the_cooldown(gw: Gateway) -> None:
    await add_account(gw)
    challenge_id, _ = await challenge_and_code(gw)
    reply = await call(gw, "POST", f"/challenge/{challenge_id}/resend", {})
    assert assert_rate_limited(reply, "cooldown") <= 30
    assert await gw.drain() == 0


async def test_resend_at_most_max_sends(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"account": "50/1h"})
    await add_account(gw)
    challenge_id, _ = await challenge_and_code(gw)
    for _ in range(4):
        reply = await call(gw, "POST", f"/challenge/{challenge_id}/resend", {})
        assert reply.status == 202, reply.body
    reply = await call(gw, "POST", f"/challenge/{challenge_id}/resend", {})
    assert_rate_limited(reply, "sends")
    await gw.drain()
    assert len(gw.sink.codes(challenge_id)) == 5


async def test_resend_keeps_expiry_and_attempts(gw0: Gateway) -> None:
    created = await challenge(gw0)
    challenge_id = created["challenge_id"]
    code = await code_for(gw0, challenge_id)
    assert (await verify(gw0, challenge_id, wrong(code))).body["attempts_left"] == 4
    before = await status_of(gw0, challenge_id)
    reply = await call(gw0, "POST", f"/challenge/{challenge_id}/resend", {})
    assert reply.status == 202
    assert reply.body["expires_at"] == created["expires_at"]
    after = await status_of(gw0, challenge_id)
    assert (after["attempts"], after["expires_at"]) == (1, before["expires_at"])
    assert (await verify(gw0, challenge_id, wrong(code))).body["attempts_left"] == 3


async def test_resend_of_a_used_or_burnt_challenge(gw0: Gateway) -> None:
    challenge_id, code = await challenge_and_code(gw0)
    await verify(gw0, challenge_id, code)
    reply = await call(gw0, "POST", f"/challenge/{challenge_id}/resend", {})
    assert_error(reply, 410, "already_used")

    challenge_id, code = await challenge_and_code(gw0)
    for _ in range(5):
        await verify(gw0, challenge_id, wrong(code))
    reply = await call(gw0, "POST", f"/challenge/{challenge_id}/resend", {})
    assert_error(reply, 410, "too_many_attempts")
    reply = await call(gw0, "POST", f"/challenge/{'A' * 28}/resend", {})
    assert_error(reply, 404, "challenge_not_found")
    sent = len(gw0.sink.received)
    await gw0.drain()
    assert len(gw0.sink.received) == sent


# --- trusted devices ---------------------------------------------------------


async def trusted_token(gw: Gateway, account_id: str = "alice", label: str = "") -> str:
    challenge_id, code = await challenge_and_code(gw, account_id)
    reply = await verify(gw, challenge_id, code, trust_device=True, device_label=label)
    assert reply.status == 200, reply.body
    token: str = reply.body["trusted_device_token"]
    return token


async def ask(gw: Gateway, token: str, account_id: str = "alice", **fields: Any) -> Any:
    body = {"account_id": account_id, "trusted_device_token": token, **fields}
    return await call(gw, "POST", "/challenge", body)


async def test_trusted_device_spares_the_code(gw0: Gateway) -> None:
    token = await trusted_token(gw0)
    sent = len(gw0.sink.received)
    reply = await ask(gw0, token)
    assert reply.status == 200
    assert reply.body == {"required": False, "reason": "trusted_device"}
    await gw0.drain()
    assert len(gw0.sink.received) == sent


async def test_trusted_device_is_bound_to_its_account(gw0: Gateway) -> None:
    await add_account(gw0, account_id="bob", phone=OTHER_MOBILE)
    token = await trusted_token(gw0)
    assert (await ask(gw0, token, "bob")).status == 202


async def test_trusted_device_never_spares_a_sensitive_purpose(gw0: Gateway) -> None:
    token = await trusted_token(gw0)
    for purpose in SENSITIVE:
        assert (await ask(gw0, token, purpose=purpose)).status == 202


async def test_forged_trusted_device_tokens(gw0: Gateway) -> None:
    token = await trusted_token(gw0)
    for forged in ("td_" + "A" * 43, token[:-1], token + "A", "su_" + token[3:]):
        assert (await ask(gw0, forged)).status == 202


@pytest.mark.parametrize("record", [b"1|1|old laptop", b"not a device record"])
async def test_an_expired_or_unreadable_device_record_spares_nothing(
    gw0: Gateway, redis: aioredis.Redis, record: bytes
) -> None:
    """create.lua reads the record itself: past its end, or unreadable, it
    trusts nothing (and never fails the request)."""
    token = await trusted_token(gw0)
    key = keys.trusted_devices(gw0.services.keyring.tag("account", "alice"))
    assert await redis.hset(key, token_digest(token), record) == 0  # replaced, not added
    assert (await ask(gw0, token)).status == 202


async def test_trusted_device_of_a_suspended_account(gw0: Gateway) -> None:
    token = await trusted_token(gw0)
    await call(gw0, "PATCH", "/accounts/alice", {"status": "suspended"}, key=OPERATOR_KEY)
    assert_error(await ask(gw0, token), 403, "account_suspended")


async def test_revoking_all_trusted_devices(gw0: Gateway) -> None:
    token = await trusted_token(gw0)
    reply = await call(gw0, "DELETE", "/accounts/alice/trusted-devices")
    assert reply.status == 200 and reply.body == {"revoked": 1}
    assert (await ask(gw0, token)).status == 202


async def test_revoking_one_trusted_device(gw0: Gateway) -> None:
    laptop = await trusted_token(gw0, label="laptop")
    phone = await trusted_token(gw0, label="phone")
    devices = (await call(gw0, "GET", "/accounts/alice/trusted-devices")).body["devices"]
    assert sorted(d["label"] for d in devices) == ["laptop", "phone"]
    [laptop_id] = [d["device_id"] for d in devices if d["label"] == "laptop"]
    reply = await call(gw0, "DELETE", f"/accounts/alice/trusted-devices/{laptop_id}")
    assert reply.status == 204
    assert (await ask(gw0, laptop)).status == 202
    assert (await ask(gw0, phone)).status == 200
    reply = await call(gw0, "DELETE", f"/accounts/alice/trusted-devices/{laptop_id}")
    assert_error(reply, 404, "not_found")


async def test_phone_change_revokes_trusted_devices(gw0: Gateway) -> None:
    token = await trusted_token(gw0)
    reply = await call(
        gw0, "PUT", "/accounts/alice/phone", {"phone": OTHER_MOBILE}, key=OPERATOR_KEY
    )
    assert reply.status == 200, reply.body
    assert (await ask(gw0, token)).status == 202


# --- nothing secret in Redis -------------------------------------------------


async def test_redis_holds_no_code_and_no_number(
    make_gateway: GatewayFactory, redis: aioredis.Redis
) -> None:
    gw0 = await make_gateway(otp=NO_COOLDOWN, rate_limits={"account": "50/1h"})
    await add_account(gw0)
    await add_account(gw0, account_id="bob", phone=OTHER_MOBILE)
    await trusted_token(gw0, label="laptop")
    for purpose in ("login", "contact.update"):
        challenge_id, code = await challenge_and_code(gw0, "bob", purpose=purpose)
        await verify(gw0, challenge_id, wrong(code))
        await call(gw0, "POST", f"/challenge/{challenge_id}/resend", {"channel": "voice"})
        await verify(gw0, challenge_id, code)
    for _ in range(3):  # pending ones too: queued, sent, resent, left alive
        challenge_id, _ = await challenge_and_code(gw0, purpose="rncps")
        await call(gw0, "POST", f"/challenge/{challenge_id}/resend", {})
    await call(gw0, "POST", "/challenge", {"account_id": "alice"})  # queued, not drained

    await gw0.drain()
    codes = {m["code"].encode() for m in gw0.sink.received}
    assert len(codes) >= 5
    blobs = await everything_in_redis(redis)
    assert await redis.exists(*keys.STREAMS)
    for blob in blobs:
        assert not digit_runs(blob) & codes, blob
        for digits in (MOBILE_DIGITS, OTHER_DIGITS):
            assert digits.encode() not in blob, blob
    for name in [k async for k in redis.scan_iter()]:
        assert b"alice" not in name or name.startswith((b"otp:a:", b"otp:h:")), name


async def test_tokens_are_not_kept_in_clear(gw0: Gateway, redis: aioredis.Redis) -> None:
    trusted = await trusted_token(gw0)
    challenge_id, code = await challenge_and_code(gw0, purpose="contact.update")
    step_up = (await verify(gw0, challenge_id, code)).body["step_up_token"]
    blobs = b"\x00".join(await everything_in_redis(redis))
    for token in (trusted, step_up):
        assert token.encode() not in blobs
        assert token[3:].encode() not in blobs


async def test_times_are_iso_utc(gw: Gateway) -> None:
    await add_account(gw)
    created = await challenge(gw)
    assert parse_iso(created["expires_at"]) > datetime.now(UTC)
    status = await status_of(gw, created["challenge_id"])
    assert status["expires_at"] == created["expires_at"]


async def test_other_keys_cannot_use_otp_routes(gw: Gateway) -> None:
    await add_account(gw)
    challenge_id, _ = await challenge_and_code(gw)
    reply = await call(gw, "GET", f"/challenge/{challenge_id}", key=OPERATOR_KEY)
    assert_error(reply, 403, "forbidden")
    reply = await call(gw, "GET", f"/challenge/{challenge_id}", key=OTP_KEY)
    assert reply.status == 200


# --- an account that stops being active -------------------------------------


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"status": "suspended"}, "account_suspended"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "account_expired"),
    ],
)
async def test_pending_code_dies_with_the_account(
    gw0: Gateway, change: dict[str, str], error: str
) -> None:
    challenge_id, code = await challenge_and_code(gw0)
    reply = await call(gw0, "PATCH", "/accounts/alice", change, key=OPERATOR_KEY)
    assert reply.status == 200, reply.body
    assert_error(await call(gw0, "POST", f"/challenge/{challenge_id}/resend", {}), 403, error)
    body = assert_error(await verify(gw0, challenge_id, code, trust_device=True), 403, error)
    assert body["verified"] is False
    await gw0.drain()
    assert len(gw0.sink.received) == 1
    devices = await call(gw0, "GET", "/accounts/alice/trusted-devices")
    assert devices.body == {"devices": []}
    account = await call(gw0, "GET", "/accounts/alice", key=OPERATOR_KEY)
    assert account.body["last_login_at"] is None


async def test_reactivated_account_can_use_its_pending_code(gw0: Gateway) -> None:
    challenge_id, code = await challenge_and_code(gw0)
    await call(gw0, "PATCH", "/accounts/alice", {"status": "suspended"}, key=OPERATOR_KEY)
    assert_error(await verify(gw0, challenge_id, code), 403, "account_suspended")
    await call(gw0, "PATCH", "/accounts/alice", {"status": "active"}, key=OPERATOR_KEY)
    assert (await verify(gw0, challenge_id, code)).status == 200


async def test_pointer_and_code_written_by_the_previous_layout_still_verify(
    gw: Gateway, redis: aioredis.Redis
) -> None:
    """Live challenges written before the short pointer and the id-derived
    nonce (whole id in `c:<purpose>`, nonce in front of the sealed code)."""
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    keyring = gw.services.keyring
    account_id = (await redis.hget(keys.challenge(challenge_id), "a")).decode()
    await redis.hset(record(account_id), "c:login", challenge_id)
    await redis.hset(
        keys.challenge(challenge_id), "e", keyring.codes.seal(code.encode(), challenge_id.encode())
    )
    assert (await status_of(gw, challenge_id))["status"] == "pending"
    assert await gw.services.deliveries.live_code(challenge_id) == (code, "login")
    reply = await verify(gw, challenge_id, code)
    assert reply.status == 200, reply.body
    assert (await status_of(gw, challenge_id))["status"] == "verified"
