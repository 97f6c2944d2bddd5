"""A user's own number: proven by a code to the new number; enrolment at first login."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway import keys
from gateway.accounts import Who
from tests.support.admin import (
    BOSS,
    ESTABLISHMENT,
    as_operator,
    mails_after_drain,
    step_up,
)
from tests.support.config import ADMIN_KEY
from tests.support.gateway import Gateway
from tests.support.otp import (
    MOBILE_E164,
    OTHER_DIGITS,
    OTHER_MOBILE,
    Reply,
    assert_error,
    call,
    challenge_and_code,
    code_for,
    verify,
    wrong,
)
from tests.support.smtp import Inbox, parts

NEW_E164 = "+33798765432"


async def start(
    gw: Gateway, body: dict[str, Any], account_id: str = "alice", token: str | None = None
) -> Reply:
    headers = {} if token is None else {"X-Step-Up-Token": token}
    return await call(gw, "POST", f"/accounts/{account_id}/phone-change", body, headers=headers)


async def finish(gw: Gateway, challenge_id: str, code: str, account_id: str = "alice") -> Reply:
    body = {"challenge_id": challenge_id, "code": code}
    return await call(gw, "POST", f"/accounts/{account_id}/phone-change/verify", body)


async def phone_of(gw: Gateway, account_id: str) -> str | None:
    account = await gw.services.accounts.require(account_id)
    return None if account.phone is None else account.phone.e164


async def test_the_full_change_flow(agw: Gateway, inbox: Inbox) -> None:
    laptop_challenge, laptop_code = await challenge_and_code(agw, "alice")
    trusted = await verify(agw, laptop_challenge, laptop_code, trust_device=True)
    assert trusted.status == 200

    body = assert_error(await start(agw, {"phone": OTHER_MOBILE}), 401, "step_up_required")
    assert body["purpose"] == "contact.update"
    token = await step_up(agw, "alice", "contact.update")  # a code to the current number
    reply = await start(agw, {"phone": OTHER_MOBILE, "phone_extension": "12"}, token=token)
    assert reply.status == 202, reply.body
    assert reply.body["enrolment"] is False
    assert reply.body["destination"] == "+33 * ** ** ** **"  # alice's number is hidden
    challenge_id = reply.body["challenge_id"]
    code = await code_for(agw, challenge_id)
    assert [m["to"] for m in agw.sink.received if m["challenge_id"] == challenge_id] == [NEW_E164]
    assert await phone_of(agw, "alice") == MOBILE_E164  # not yet

    failed = await finish(agw, challenge_id, wrong(code))
    body = assert_error(failed, 422, "invalid_code")
    assert body["verified"] is False
    assert await phone_of(agw, "alice") == MOBILE_E164

    done = await finish(agw, challenge_id, code)
    assert done.status == 200, done.body
    assert done.body["phone"] is None and done.body["phone_hidden"] is True
    assert done.body["phone_extension"] == "12"
    assert await phone_of(agw, "alice") == NEW_E164
    replay = await finish(agw, challenge_id, code)
    assert_error(replay, 404, "challenge_not_found")

    # Trusted devices went with the old number; nothing proven is left lying around.
    again = await call(
        agw,
        "POST",
        "/challenge",
        {
            "account_id": "alice",
            "trusted_device_token": trusted.body["trusted_device_token"],
        },
    )
    assert again.status == 202
    assert [k async for k in agw.services.redis.scan_iter(f"{keys.PREFIX}su:*")] == []
    assert [k async for k in agw.services.redis.scan_iter(f"{keys.PREFIX}pc:*")] == []

    history = (await as_operator(agw, "GET", "/accounts/alice/history")).body["entries"]
    assert [e["action"] for e in history[:2]] == ["phone.change", "phone.change.start"]
    assert history[0]["after"]["phone"] == "+33 * ** ** ** **"
    assert history[0]["acting_for"] == "alice" and history[0]["actor"] == "otp:front"
    assert OTHER_DIGITS not in str(history)

    assert await mails_after_drain(agw) == 1
    text, _ = parts(inbox.messages[0])
    assert inbox.recipients[0] == ["alice@example.org"] and "vous-même" in text


async def test_the_new_number_may_be_shared(agw: Gateway) -> None:
    token = await step_up(agw, "alice", "contact.update")
    reply = await start(agw, {"phone": BOSS, "phone_hidden": False}, token=token)
    done = await finish(
        agw, reply.body["challenge_id"], await code_for(agw, reply.body["challenge_id"])
    )
    assert done.status == 200 and done.body["phone"] == "+33698765431"
    assert await phone_of(agw, "boss") == "+33698765431"


async def test_other_codes_do_not_switch_numbers(agw: Gateway) -> None:
    login_id, login_code = await challenge_and_code(agw, "alice")
    assert_error(await finish(agw, login_id, login_code), 404, "challenge_not_found")
    assert (await verify(agw, login_id, login_code)).status == 200  # the code was not spent
    token = await step_up(agw, "boss", "contact.update")
    boss_change = await start(agw, {"phone": OTHER_MOBILE}, account_id="boss", token=token)
    boss_id = boss_change.body["challenge_id"]
    code = await code_for(agw, boss_id)
    assert_error(await finish(agw, boss_id, code), 404, "challenge_not_found")  # not alice's
    assert_error(await finish(agw, "A" * 28, "123456"), 404, "challenge_not_found")


async def test_refusals_keep_the_step_up_token(agw: Gateway) -> None:
    token = await step_up(agw, "alice", "contact.update")
    assert_error(await start(agw, {"phone": "0891 12 34 56"}, token=token), 422, "invalid_phone")
    assert_error(
        await start(agw, {"phone": OTHER_MOBILE, "channel": "fax"}, token=token),
        400,
        "invalid_request",
    )
    fixed = {"phone": "01 42 68 53 00", "channel": "sms"}
    assert_error(await start(agw, fixed, token=token), 422, "channel_unavailable")
    assert (await start(agw, {"phone": OTHER_MOBILE}, token=token)).status == 202
    assert_error(await start(agw, {"phone": OTHER_MOBILE}, token=token), 401, "step_up_required")


async def test_who_may_call(agw: Gateway) -> None:
    reply = await call(agw, "POST", "/accounts/ghost/phone-change", {"phone": OTHER_MOBILE})
    assert_error(reply, 404, "unknown_account")
    reply = await call(
        agw,
        "POST",
        "/accounts/alice/phone-change",
        {"phone": OTHER_MOBILE},
        key=ADMIN_KEY,
        headers={"X-Acting-Account": "boss"},
    )
    assert_error(reply, 403, "forbidden")
    await as_operator(agw, "PATCH", "/accounts/alice", {"status": "suspended"})
    assert_error(await start(agw, {"phone": OTHER_MOBILE}), 403, "account_suspended")


async def test_enrolment_after_the_deployment_day_reset(agw: Gateway) -> None:
    await as_operator(agw, "POST", "/phones/blank", {"establishment": ESTABLISHMENT})
    assert_error(
        await call(agw, "POST", "/challenge", {"account_id": "alice"}), 409, "phone_required"
    )
    reply = await start(agw, {"phone": OTHER_MOBILE})  # no step-up: no factor to prove
    assert reply.status == 202 and reply.body["enrolment"] is True
    challenge_id = reply.body["challenge_id"]
    done = await finish(agw, challenge_id, await code_for(agw, challenge_id))
    assert done.status == 200 and done.body["phone_set"] is True
    assert (await call(agw, "POST", "/challenge", {"account_id": "alice"})).status == 202
    entries = (await as_operator(agw, "GET", "/accounts/alice/history")).body["entries"]
    assert [e["action"] for e in entries[:2]] == ["phone.enrol", "phone.enrol.start"]


async def test_an_enrolment_cannot_replace_a_number_set_meanwhile(agw: Gateway) -> None:
    await as_operator(agw, "POST", "/phones/blank", {"all": True})
    reply = await start(agw, {"phone": OTHER_MOBILE})
    challenge_id = reply.body["challenge_id"]
    code = await code_for(agw, challenge_id)
    await as_operator(agw, "PUT", "/accounts/alice/phone", {"phone": BOSS})
    # The operator's switch cancelled the pending challenge, and the pending change
    # would not apply anyway: it was an enrolment, and the account has a number now.
    reply = await finish(agw, challenge_id, code)
    assert reply.status in (409, 410), reply.body
    assert reply.body["error"] in ("phone_already_set", "expired")
    assert await phone_of(agw, "alice") == "+33698765431"


async def test_phone_already_set(agw: Gateway) -> None:
    await as_operator(agw, "POST", "/phones/blank", {"all": True})
    reply = await start(agw, {"phone": OTHER_MOBILE})
    challenge_id = reply.body["challenge_id"]
    code = await code_for(agw, challenge_id)
    # A number set without cancelling the pending challenge (straight in the store,
    # as a concurrent enrolment finishing first would).
    store = agw.services.accounts
    boss = store.parse_phone(BOSS)
    await store._mutate("alice", "test", lambda a, _: replace(a, phone=boss), who=Who("t", "t"))
    assert_error(await finish(agw, challenge_id, code), 409, "phone_already_set")
    assert await phone_of(agw, "alice") == "+33698765431"
    assert await agw.services.redis.exists(keys.phone_change(challenge_id)) == 0


async def test_own_email_change(agw: Gateway, inbox: Inbox) -> None:
    body = {"email": "alice.new@example.org"}
    assert_error(await call(agw, "PUT", "/accounts/alice/email", body), 401, "step_up_required")
    token = await step_up(agw, "alice", "contact.update")
    reply = await call(
        agw, "PUT", "/accounts/alice/email", body, headers={"X-Step-Up-Token": token}
    )
    assert reply.status == 200 and reply.body["email"] == "alice.new@example.org"
    assert await mails_after_drain(agw) == 1
    assert set(inbox.recipients[0]) == {"alice@example.org", "alice.new@example.org"}
    assert_error(
        await call(agw, "PUT", "/accounts/alice/email", {"email": "x"}), 400, "invalid_request"
    )
