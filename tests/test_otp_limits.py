"""Rate limits (429 + Retry-After) and the atomicity of /challenge and /verify under load."""

from __future__ import annotations

import asyncio
from collections import Counter

from gateway import keys
from tests.support.config import OPERATOR_KEY
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.otp import (
    NO_COOLDOWN,
    OTHER_MOBILE,
    REUNION_MOBILE,
    THIRD_MOBILE,
    Reply,
    assert_error,
    assert_rate_limited,
    call,
    challenge,
    challenge_and_code,
    status_of,
    verify,
    wrong,
)


async def post_challenge(gw: Gateway, account_id: str = "alice", **fields: str) -> Reply:
    return await call(gw, "POST", "/challenge", {"account_id": account_id, **fields})


async def assert_nothing_sent(gw: Gateway, before: int) -> None:
    await gw.drain()
    assert len(gw.sink.received) == before


# --- one limit at a time -----------------------------------------------------


async def test_cooldown_for_the_same_purpose(gw: Gateway) -> None:
    await add_account(gw)
    first = await challenge(gw)
    retry_after = assert_rate_limited(await post_challenge(gw), "cooldown")
    assert retry_after <= 30
    await gw.drain()
    assert len(gw.sink.received) == 1
    # The refused request did not replace the live challenge.
    assert (await status_of(gw, first["challenge_id"]))["status"] == "pending"
    assert (await post_challenge(gw, purpose="contact.update")).status == 202


async def test_account_limit(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"account": "2/1h"})
    await add_account(gw)
    await add_account(gw, account_id="bob", phone=OTHER_MOBILE)
    await challenge(gw)
    await challenge(gw, purpose="rncps")
    assert assert_rate_limited(await post_challenge(gw), "account") > 1000
    assert_rate_limited(await post_challenge(gw, purpose="contact.update"), "account")
    assert (await post_challenge(gw, "bob")).status == 202


async def test_account_limit_counts_resends(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"account": "2/1h"})
    await add_account(gw)
    created = await challenge(gw)
    resent = await call(gw, "POST", f"/challenge/{created['challenge_id']}/resend", {})
    assert resent.status == 202
    resent = await call(gw, "POST", f"/challenge/{created['challenge_id']}/resend", {})
    assert_rate_limited(resent, "account")


async def test_number_limit_is_shared_by_accounts(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"number": "2/1h"})
    await add_account(gw)
    await add_account(gw, account_id="bob")  # the same number as alice
    await add_account(gw, account_id="carol", phone=OTHER_MOBILE)
    await challenge(gw)
    await challenge(gw, "bob")
    sent = len(gw.sink.received)
    assert_rate_limited(await post_challenge(gw), "number")
    assert_rate_limited(await post_challenge(gw, "bob", purpose="rncps"), "number")
    await assert_nothing_sent(gw, sent + 2)
    assert (await post_challenge(gw, "carol")).status == 202


async def test_numbers_sharing_a_bucket_keep_their_own_state(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"number": "1/1h"})
    keyring = gw.services.keyring
    # Two mobiles whose tags fall in the same bucket hash (4096 buckets).
    seen: dict[str, str] = {}
    for i in range(100_000):
        e164 = f"+3361234{i:04d}"
        bucket = keys.number_rate(keyring.tag("number", e164))
        if bucket in seen:
            first, second = seen[bucket], e164
            break
        seen[bucket] = e164
    redis = gw.services.redis
    # A stale state in the bucket (at or before now) is dropped by the next write.
    await redis.hset(bucket, "stale-field", 1)
    await add_account(gw, phone=first)
    await add_account(gw, account_id="bob", phone=second)
    await challenge(gw)
    assert await redis.hexists(bucket, "stale-field") is False
    assert assert_rate_limited(await post_challenge(gw, purpose="rncps"), "number") > 1000
    assert (await post_challenge(gw, "bob")).status == 202
    assert_rate_limited(await post_challenge(gw, "bob", purpose="rncps"), "number")
    assert 0 < await redis.pttl(bucket) <= 3_600_000
    assert await redis.hlen(bucket) == 2


async def test_ip_limit(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"ip": "2/1m"})
    await add_account(gw)
    await challenge(gw, client_ip="203.0.113.7")
    await challenge(gw, client_ip="203.0.113.7")
    assert_rate_limited(await post_challenge(gw, client_ip="203.0.113.7"), "ip")
    assert (await post_challenge(gw, client_ip="203.0.113.8")).status == 202
    assert (await post_challenge(gw)).status == 202  # no client_ip: no ip limit


async def test_ipv6_is_limited_per_64(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"ip": "2/1m"})
    await add_account(gw)
    await challenge(gw, client_ip="2001:db8::1")
    await challenge(gw, client_ip="2001:db8::ffff:2")
    assert_rate_limited(await post_challenge(gw, client_ip="2001:db8:0:0:1::3"), "ip")
    assert (await post_challenge(gw, client_ip="2001:db8:0:1::1")).status == 202


async def test_ipv4_mapped_addresses_count_as_their_ipv4(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"ip": "2/1m"})
    await add_account(gw)
    await challenge(gw, client_ip="::ffff:198.51.100.1")
    await challenge(gw, client_ip="198.51.100.1")
    assert_rate_limited(await post_challenge(gw, client_ip="::ffff:198.51.100.1"), "ip")
    # Another IPv4 client behind a dual-stack front end has its own budget.
    assert (await post_challenge(gw, client_ip="::ffff:198.51.100.2")).status == 202
    assert (await post_challenge(gw, client_ip="::ffff:203.0.113.9")).status == 202


async def test_country_limit(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(rate_limits={"country": "2/1h"})
    await add_account(gw)
    await add_account(gw, account_id="bob", phone=OTHER_MOBILE)
    await add_account(gw, account_id="carol", phone=THIRD_MOBILE)
    await add_account(gw, account_id="dave", phone=REUNION_MOBILE)
    await challenge(gw)
    await challenge(gw, "bob")
    assert_rate_limited(await post_challenge(gw, "carol"), "country")
    assert (await post_challenge(gw, "dave")).status == 202  # Réunion counts apart


async def test_global_limit(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(rate_limits={"global": "2/1m"})
    await add_account(gw)
    await add_account(gw, account_id="bob", phone=OTHER_MOBILE)
    await add_account(gw, account_id="dave", phone=REUNION_MOBILE)
    await challenge(gw)
    await challenge(gw, "bob")
    assert_rate_limited(await post_challenge(gw, "dave"), "global")
    await gw.drain()
    assert len(gw.sink.received) == 2


async def test_establishment_budget(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"establishment": "2/1h"})
    await add_account(gw)
    await add_account(gw, account_id="bob", phone=OTHER_MOBILE)
    await add_account(gw, account_id="carol", phone=THIRD_MOBILE, establishment="Clinique")
    first = await challenge(gw)
    await challenge(gw, "bob")
    sent = len(gw.sink.received)
    # One employer's front end has spent its budget: its accounts wait, for
    # about the half hour a 2/1h budget takes to give one send back.
    retry_after = assert_rate_limited(await post_challenge(gw, purpose="rncps"), "establishment")
    assert 1700 < retry_after <= 1800
    assert_rate_limited(await post_challenge(gw, "bob", purpose="rncps"), "establishment")
    resent = await call(gw, "POST", f"/challenge/{first['challenge_id']}/resend", {})
    assert_rate_limited(resent, "establishment")
    await assert_nothing_sent(gw, sent + 2)
    # Another employer still gets codes.
    assert (await post_challenge(gw, "carol")).status == 202
    metrics = (await (await gw.client.get("/metrics")).text()).splitlines()
    assert 'otp_rate_limited_total{scope="establishment"} 3.0' in metrics


async def test_refused_challenge_consumes_no_budget(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"account": "2/1h", "number": "1/1h"})
    await add_account(gw)
    await add_account(gw, account_id="bob", phone=OTHER_MOBILE)
    await challenge(gw)
    for _ in range(3):
        assert_rate_limited(await post_challenge(gw, purpose="rncps"), "number")
    # The number refusals did not eat alice's account budget: one left.
    moved = await call(
        gw, "PUT", "/accounts/alice/phone", {"phone": THIRD_MOBILE}, key=OPERATOR_KEY
    )
    assert moved.status == 200
    assert (await post_challenge(gw, purpose="rncps")).status == 202
    assert_rate_limited(await post_challenge(gw, purpose="contact.update"), "account")


async def test_failures_limit_survives_new_challenges(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(
        otp={"max_attempts": 3, "resend_cooldown_seconds": 0}, rate_limits={"failures": "4/1h"}
    )
    await add_account(gw)
    await add_account(gw, account_id="bob", phone=OTHER_MOBILE)
    first, code = await challenge_and_code(gw)
    for _ in range(3):
        await verify(gw, first, wrong(code))
    assert (await status_of(gw, first))["status"] == "burnt"

    second, code = await challenge_and_code(gw)  # a new challenge does not reset failures
    assert_error(await verify(gw, second, wrong(code)), 422, "invalid_code")
    body = assert_error(await verify(gw, second, wrong(code)), 429, "rate_limited")
    assert body["verified"] is False and body["scope"] == "failures"
    # Locked out: the right code is refused the same way (no oracle).
    assert_rate_limited(await verify(gw, second, code), "failures")
    assert_rate_limited(await post_challenge(gw, purpose="rncps"), "failures")
    assert (await status_of(gw, second))["attempts"] == 1
    bob_id, bob_code = await challenge_and_code(gw, "bob")
    assert (await verify(gw, bob_id, bob_code)).status == 200


# --- concurrency -------------------------------------------------------------


async def test_concurrent_right_codes_verify_once(gw: Gateway) -> None:
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    replies = await asyncio.gather(*(verify(gw, challenge_id, code) for _ in range(20)))
    statuses = Counter(r.status for r in replies)
    assert statuses == {200: 1, 410: 19}, statuses
    assert {r.body["error"] for r in replies if r.status == 410} == {"already_used"}


async def test_concurrent_wrong_guesses_never_overshoot(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp={"max_attempts": 5})
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    replies = await asyncio.gather(*(verify(gw, challenge_id, wrong(code)) for _ in range(30)))
    errors = Counter(r.body["error"] for r in replies)
    assert errors == {"invalid_code": 4, "too_many_attempts": 26}, errors
    assert sorted(r.body["attempts_left"] for r in replies if r.status == 422) == [1, 2, 3, 4]
    assert (await status_of(gw, challenge_id))["attempts"] == 5
    assert_error(await verify(gw, challenge_id, code), 410, "too_many_attempts")


async def test_concurrent_mixed_guesses(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(otp={"max_attempts": 5})
    await add_account(gw)
    challenge_id, code = await challenge_and_code(gw)
    guesses = [code if i % 3 == 0 else wrong(code) for i in range(30)]
    replies = await asyncio.gather(*(verify(gw, challenge_id, g) for g in guesses))
    assert sum(r.status == 200 for r in replies) <= 1
    assert sum(r.body["error"] == "invalid_code" for r in replies if r.status != 200) <= 4
    assert (await status_of(gw, challenge_id))["attempts"] <= 5


async def test_concurrent_challenges_one_live_code(gw: Gateway) -> None:
    count = 20
    await add_account(gw)
    replies = await asyncio.gather(*(post_challenge(gw) for _ in range(count)))
    statuses = Counter(r.status for r in replies)
    assert statuses == {202: 1, 429: count - 1}, statuses
    for reply in replies:
        if reply.status == 429:
            assert_rate_limited(reply, "cooldown")
    await gw.drain()
    assert len(gw.sink.received) == 1
