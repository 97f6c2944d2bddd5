"""`Idempotency-Key` on POST /challenge: the first answer again, one send, conflicts refused."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway import keys
from tests.support.config import ADMIN_KEY, METRICS_KEY, OPERATOR_KEY, OTP_KEY, SECRET
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.otp import (
    NO_COOLDOWN,
    OTHER_MOBILE,
    Reply,
    assert_error,
    call,
    code_for,
    status_of,
    verify,
)

OTHER_OTP_KEY = "second-otp-key-0123456789abcdef"


async def post(gw: Gateway, key: str | None, *, token: str = OTP_KEY, **fields: Any) -> Reply:
    body = {"account_id": "alice", **fields}
    headers = {} if key is None else {"Idempotency-Key": key}
    return await call(gw, "POST", "/challenge", body, key=token, headers=headers)


async def sends(gw: Gateway) -> int:
    await gw.drain()
    return len(gw.sink.received)


async def test_the_same_key_twice_gets_the_first_answer_and_one_send(gw: Gateway) -> None:
    await add_account(gw)
    first = await post(gw, "order-1")
    assert first.status == 202, first.body
    again = await post(gw, "order-1")
    assert again.status == 202
    assert again.body == first.body  # the same status and body, to the field
    assert await sends(gw) == 1
    # ... and the code it sent verifies on the challenge both answers named.
    code = await code_for(gw, first.body["challenge_id"])
    assert (await verify(gw, first.body["challenge_id"], code)).status == 200


async def test_a_replay_is_not_refused_by_the_cooldown(gw: Gateway) -> None:
    """Without the key the second request would be 429 (cooldown): the key
    makes it the same request, answered as the first was."""
    await add_account(gw)
    first = await post(gw, "k")
    assert (await post(gw, None)).status == 429
    assert (await post(gw, "k")).body == first.body


async def test_another_request_under_the_key_is_a_conflict_and_writes_nothing(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN)
    await add_account(gw)
    first = await post(gw, "k")
    for changed in ({"purpose": "rncps"}, {"channel": "voice"}, {"client_ip": "192.0.2.7"}):
        reply = await post(gw, "k", **changed)
        assert_error(reply, 422, "idempotency_conflict")
    assert await sends(gw) == 1
    assert (await status_of(gw, first.body["challenge_id"]))["status"] == "pending"


async def test_keys_are_per_api_key_and_per_account(make_gateway: GatewayFactory) -> None:
    api_keys = [
        {"name": "front", "key": OTP_KEY, "scopes": ["otp"]},
        {"name": "front2", "key": OTHER_OTP_KEY, "scopes": ["otp"]},
        {"name": "ops", "key": OPERATOR_KEY, "scopes": ["operator"]},
        {"name": "admin", "key": ADMIN_KEY, "scopes": ["admin"]},
        {"name": "prom", "key": METRICS_KEY, "scopes": ["metrics"]},
    ]
    gw = await make_gateway(otp=NO_COOLDOWN, api_keys=api_keys)
    await add_account(gw)
    await add_account(gw, account_id="bob", phone=OTHER_MOBILE)
    ids = set()
    for token, account in ((OTP_KEY, "alice"), (OTHER_OTP_KEY, "alice"), (OTP_KEY, "bob")):
        reply = await post(gw, "k", token=token, account_id=account)
        ids.add(reply.body["challenge_id"])
        await gw.drain()  # before the next one replaces it: each is sent
    assert len(ids) == 3
    assert await sends(gw) == 3


async def test_concurrent_duplicates_send_once(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN)
    await add_account(gw)
    replies = await asyncio.gather(*(post(gw, "burst") for _ in range(12)))
    assert {r.status for r in replies} == {202}
    assert len({r.body["challenge_id"] for r in replies}) == 1
    assert await sends(gw) == 1


async def test_a_refusal_is_not_kept(gw: Gateway) -> None:
    """An error wrote nothing, so the same key may be tried again once it is fixed."""
    assert_error(await post(gw, "k"), 404, "unknown_account")
    await add_account(gw)
    assert (await post(gw, "k")).status == 202


async def test_a_trusted_device_answer_is_kept_too(gw: Gateway) -> None:
    await add_account(gw)
    first = await post(gw, None)
    code = await code_for(gw, first.body["challenge_id"])
    token = (await verify(gw, first.body["challenge_id"], code, trust_device=True)).body[
        "trusted_device_token"
    ]
    spared = await post(gw, "k2", trusted_device_token=token)
    assert spared.status == 200 and spared.body == {"required": False, "reason": "trusted_device"}
    await call(gw, "DELETE", "/accounts/alice/trusted-devices")
    assert (await post(gw, "k2", trusted_device_token=token)).body == spared.body


async def test_a_bad_key_is_refused_before_anything(gw: Gateway) -> None:
    await add_account(gw)
    for bad in ("", "x" * 256, "with space", "caf\u00e9"):
        headers = {"Idempotency-Key": bad.encode("utf-8").decode("latin-1")}
        reply = await call(gw, "POST", "/challenge", {"account_id": "alice"}, headers=headers)
        assert_error(reply, 400, "invalid_request")
    assert await sends(gw) == 0


async def test_the_answer_is_kept_in_the_accounts_slot_for_a_codes_lifetime(
    gw: Gateway,
) -> None:
    await add_account(gw)
    await post(gw, "k")
    tag = gw.services.challenges.account_tag("alice")
    found = [k async for k in gw.services.redis.scan_iter(match="otp:idem:*")]
    assert len(found) == 1
    assert found[0].decode().startswith(keys.idempotency(tag, ""))
    ttl = await gw.services.redis.pttl(found[0])
    assert 0 < ttl <= gw.services.config.otp.ttl_seconds * 1000
    # Neither the key nor the request shows in Redis: digests only.
    stored = await gw.services.redis.hgetall(found[0])
    assert b"k" not in stored.values()
    assert SECRET.encode() not in b"".join(stored.values())
