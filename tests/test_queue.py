"""The send queue: a real Redis Stream, real workers, real HTTP providers."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.otp.queue import ensure_group
from tests.support.config import OPERATOR_KEY
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.httpfake import Hit, StubFactory, closed_url
from tests.support.metrics import sample
from tests.support.poll import poll
from tests.support.queues import dead_count, dead_letters, pending, queue_entries, queued, record

NO_COOLDOWN = {"resend_cooldown_seconds": 0}


async def challenge(gw: Gateway, account_id: str = "alice", **body: Any) -> str:
    resp = await gw.post("/challenge", {"account_id": account_id, **body})
    assert resp.status == 202, await resp.text()
    challenge_id: str = (await resp.json())["challenge_id"]
    return challenge_id


async def delivery(gw: Gateway, challenge_id: str) -> str:
    resp = await gw.get(f"/challenge/{challenge_id}")
    assert resp.status == 200, await resp.text()
    state: str = (await resp.json())["delivery"]
    return state


async def status(gw: Gateway, challenge_id: str) -> tuple[str, str | None]:
    """(delivery, reason) of GET /challenge/{id}; the reason only comes with `failed`
    or `unreachable`."""
    resp = await gw.get(f"/challenge/{challenge_id}")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return body["delivery"], body.get("reason")


def dropped(gw: Gateway, reason: str) -> float:
    return sample(gw.services.metrics.render(), "otp_sends_dropped_total", reason=reason)


async def read_as_worker(gw: Gateway, redis: aioredis.Redis) -> list[tuple[str, bytes, Any]]:
    """What XREADGROUP hands the gateway's worker (its consumer name) now: (stream, id, fields)."""
    await ensure_group(redis)
    found = []
    for stream in keys.STREAMS:  # one stream per read: a cluster refuses several slots at once
        reply: Any = await redis.xreadgroup(
            keys.GROUP, gw.services.worker.name, {stream: ">"}, count=10
        )
        found += [(key.decode(), eid, f) for key, entries in reply or [] for eid, f in entries]
    return found


# --- the happy path ---------------------------------------------------------


async def test_challenge_is_on_the_stream_then_delivered_once_signed(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")])
    await add_account(gw)
    challenge_id = await challenge(gw)

    # /challenge answered once the send was queued, and nothing was sent yet.
    entries = await queue_entries(redis)
    assert [fields for _, fields in entries] == [
        {b"c": challenge_id.encode(), b"n": b"1", b"ch": b"sms"}
    ]
    assert stub.hits == []
    assert await delivery(gw, challenge_id) == "queued"

    assert await gw.drain() == 1

    assert len(stub.hits) == 1
    hit: Hit = stub.hits[0]
    body = hit.json
    assert set(body) == {"challenge_id", "channel", "to", "code", "message", "attempt"}
    assert body["challenge_id"] == challenge_id
    assert body["channel"] == "sms"
    assert body["to"] == "+33612345678"
    assert re.fullmatch(r"[0-9]{6}", body["code"])
    assert body["code"] in body["message"]
    assert body["attempt"] == 1
    assert hit.headers["Content-Type"].startswith("application/json")
    assert re.fullmatch(r"[0-9a-f]{64}", hit.headers["X-Signature-SHA256"])
    assert hit.signature_ok()
    assert hit.headers["Idempotency-Key"] == f"{challenge_id}:1"

    assert await delivery(gw, challenge_id) == "sent"
    assert await queued(redis) == 0
    assert await pending(redis) == 0
    text = gw.services.metrics.render()
    assert sample(text, "otp_deliveries_total", provider="hook", outcome="accepted") == 1

    # The delivered code is the challenge's code.
    resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": body["code"]})
    assert resp.status == 200, await resp.text()


async def test_resend_is_send_number_two_with_the_same_code(
    make_gateway: GatewayFactory, stubs: StubFactory
) -> None:
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")], otp=NO_COOLDOWN)
    await add_account(gw)
    challenge_id = await challenge(gw)
    await gw.drain()
    resp = await gw.post(f"/challenge/{challenge_id}/resend", {})
    assert resp.status == 202, await resp.text()
    assert await gw.drain() == 1
    assert [h.json["attempt"] for h in stub.hits] == [1, 2]
    assert [h.headers["Idempotency-Key"] for h in stub.hits] == [
        f"{challenge_id}:1",
        f"{challenge_id}:2",
    ]
    assert len(set(stub.codes(challenge_id))) == 1


async def test_running_worker_delivers_and_stops_when_asked(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")])
    await add_account(gw)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.services.worker.run(stop))
    try:
        challenge_id = await challenge(gw)
        await asyncio.wait_for(stub.arrived.wait(), 5)
        await poll(lambda: _is(delivery(gw, challenge_id), "sent"), what="delivery: sent")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert stub.codes(challenge_id) and len(stub.hits) == 1
    assert await queued(redis) == 0


async def _is(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


# --- stale jobs are dropped unsent -----------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "change", "reason"),
    [
        ("PUT", "/accounts/alice/phone", {"phone": "07 98 76 54 32"}, "number_changed"),
        ("PATCH", "/accounts/alice", {"status": "suspended"}, "account_inactive"),
    ],
)
async def test_job_of_an_account_changed_since_is_dropped(
    make_gateway: GatewayFactory,
    stubs: StubFactory,
    redis: aioredis.Redis,
    method: str,
    path: str,
    change: dict[str, str],
    reason: str,
) -> None:
    """A new number or a suspension between the request and the send: nothing goes out."""
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")])
    await add_account(gw)
    await challenge(gw)
    resp = await gw.client.request(method, path, json=change, headers=gw.headers(OPERATOR_KEY))
    assert resp.status == 200, await resp.text()
    assert await gw.drain() == 1
    assert stub.hits == []
    assert dropped(gw, reason) == 1
    assert await queued(redis) == 0
    assert await pending(redis) == 0


@pytest.mark.parametrize(
    ("key", "field", "value", "reason"),
    [
        # The account lost its number (no phone field): nowhere to send.
        ("account", "phone", None, "no_number"),
        # Sealed under another secret (or tampered with): never sent, never retried.
        ("account", "phone", b"\x00" * 40, "undecryptable"),
        ("challenge", "e", b"\x00" * 22, "undecryptable"),
        # Verified before its send: nothing left to send.
        ("challenge", "v", b"verified", "not_live"),
    ],
)
async def test_job_whose_state_is_unusable_is_dropped(
    make_gateway: GatewayFactory,
    stubs: StubFactory,
    redis: aioredis.Redis,
    key: str,
    field: str,
    value: bytes | None,
    reason: str,
) -> None:
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")])
    await add_account(gw)
    challenge_id = await challenge(gw)
    name = record("alice") if key == "account" else keys.challenge(challenge_id)
    if value is None:
        assert await redis.hdel(name, field) == 1
    else:
        await redis.hset(name, field, value)
    assert await gw.drain() == 1
    assert stub.hits == []
    assert dropped(gw, reason) == 1
    assert await queued(redis) == 0
    assert await pending(redis) == 0


async def test_job_of_an_expired_challenge_is_dropped(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    stub = await stubs()
    gw = await make_gateway(
        providers=[stub.provider("hook")], otp={"ttl_seconds": 1, "resend_cooldown_seconds": 0}
    )
    await add_account(gw)
    challenge_id = await challenge(gw)

    async def expired() -> bool:
        resp = await gw.get(f"/challenge/{challenge_id}")
        return bool((await resp.json())["status"] == "expired")

    await poll(expired, within=3, every=0.05, what="challenge expiry")
    assert await gw.drain() == 1
    assert stub.hits == []
    assert dropped(gw, "expired") == 1
    assert await status(gw, challenge_id) == ("failed", "expired")
    assert await queued(redis) == 0


async def test_job_of_a_replaced_challenge_is_dropped(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")], otp=NO_COOLDOWN)
    await add_account(gw)
    first = await challenge(gw)
    second = await challenge(gw)
    assert await queued(redis) == 2
    assert await gw.drain() == 2
    assert [h.json["challenge_id"] for h in stub.hits] == [second]
    assert dropped(gw, "replaced") == 1
    assert await queued(redis) == 0
    # Another purpose is another live challenge: both are sent.
    login = await challenge(gw)
    rncps = await challenge(gw, purpose="rncps")
    await gw.drain()
    assert [h.json["challenge_id"] for h in stub.hits[1:]] == [login, rncps]
    assert first != second


async def test_queued_resend_of_a_verified_challenge_is_dropped(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")], otp=NO_COOLDOWN)
    await add_account(gw)
    challenge_id = await challenge(gw)
    await gw.drain()
    resp = await gw.post(f"/challenge/{challenge_id}/resend", {})
    assert resp.status == 202
    [code] = stub.codes(challenge_id)
    resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": code})
    assert resp.status == 200
    assert await gw.drain() == 1
    assert len(stub.hits) == 1
    assert dropped(gw, "not_live") == 1
    assert await queued(redis) == 0


async def test_job_of_an_unknown_challenge_is_dropped(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")])
    await redis.xadd(keys.stream_of("A" * 28), {"c": "A" * 28, "n": 1, "ch": "sms"})
    assert await gw.drain() == 1
    assert stub.hits == []
    assert dropped(gw, "not_live") == 1
    assert await queued(redis) == 0


# --- a dropped send says so, once ----------------------------------------------


async def _change_number(gw: Gateway, redis: aioredis.Redis) -> None:
    await _operator(gw, "PUT", "/accounts/alice/phone", {"phone": "07 98 76 54 32"})


async def _delete_account(gw: Gateway, redis: aioredis.Redis) -> None:
    await _operator(gw, "DELETE", "/accounts/alice", None)


async def _suspend(gw: Gateway, redis: aioredis.Redis) -> None:
    await _operator(gw, "PATCH", "/accounts/alice", {"status": "suspended"})


async def _seal_number_elsewhere(gw: Gateway, redis: aioredis.Redis) -> None:
    await redis.hset(record("alice"), "phone", b"\x00" * 40)  # another secret's


async def _replace(gw: Gateway, redis: aioredis.Redis) -> None:
    await challenge(gw)


async def _operator(gw: Gateway, method: str, path: str, body: Any) -> None:
    resp = await gw.client.request(method, path, json=body, headers=gw.headers(OPERATOR_KEY))
    assert resp.status in (200, 204), await resp.text()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (_seal_number_elsewhere, "undecryptable"),
        (_delete_account, "account_inactive"),
        (_suspend, "account_inactive"),
        (_change_number, "number_changed"),
        (_replace, "replaced"),
    ],
)
async def test_dropped_send_shows_failed_with_its_reason_and_logs_one_line(
    make_gateway: GatewayFactory,
    stubs: StubFactory,
    redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    change: Any,
    reason: str,
) -> None:
    """Before: `delivery` stayed `queued` for good, and nothing was logged."""
    caplog.set_level(logging.INFO, logger="otp_gateway.worker")
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")], otp=NO_COOLDOWN)
    await add_account(gw)
    challenge_id = await challenge(gw)
    await change(gw, redis)
    caplog.clear()
    await gw.drain()
    assert challenge_id not in [h.json["challenge_id"] for h in stub.hits]
    assert await status(gw, challenge_id) == ("failed", reason)
    assert dropped(gw, reason) == 1
    lines = [r for r in caplog.records if getattr(r, "challenge_id", None) == challenge_id]
    assert [(r.msg, r.reason, r.send) for r in lines] == [("send dropped", reason, 1)]
    assert "612345678" not in caplog.text and "798765432" not in caplog.text
    assert await dead_count(redis) == 0  # a drop is final, no dead letter
    assert await pending(redis) == 0


async def test_a_resend_after_a_dropped_send_clears_the_reason(
    make_gateway: GatewayFactory, stubs: StubFactory
) -> None:
    """The reason belongs to the latest send: a suspended account's send was
    dropped; reactivated, the same challenge is sent again, and says so."""
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")], otp=NO_COOLDOWN)
    await add_account(gw)
    challenge_id = await challenge(gw)
    await _suspend(gw, gw.services.redis)
    await gw.drain()
    assert await status(gw, challenge_id) == ("failed", "account_inactive")
    await _operator(gw, "PATCH", "/accounts/alice", {"status": "active"})
    resp = await gw.post(f"/challenge/{challenge_id}/resend", {})
    assert resp.status == 202, await resp.text()
    assert await status(gw, challenge_id) == ("queued", None)
    await gw.drain()
    assert await status(gw, challenge_id) == ("sent", None)
    assert [h.json["attempt"] for h in stub.hits] == [2]


async def test_a_refused_send_shows_failed_rejected(
    make_gateway: GatewayFactory, stubs: StubFactory
) -> None:
    refusing = await stubs(status=400)
    gw = await make_gateway(providers=[refusing.provider("hook")])
    await add_account(gw)
    challenge_id = await challenge(gw)
    await gw.drain()
    assert await status(gw, challenge_id) == ("failed", "rejected")


# --- redelivery never sends twice -------------------------------------------


async def test_same_entry_handled_twice_sends_once(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")])
    await add_account(gw)
    challenge_id = await challenge(gw)
    [(stream, entry_id, fields)] = await read_as_worker(gw, redis)
    worker = gw.services.worker
    assert await worker.handle(stream, entry_id, fields) == "sent"
    assert await worker.handle(stream, entry_id, fields) == "dropped:duplicate"
    assert await status(gw, challenge_id) == ("sent", None)  # a duplicate is no failure
    assert len(stub.hits) == 1
    assert stub.codes(challenge_id)
    assert await queued(redis) == 0
    assert await pending(redis) == 0


async def test_identical_entry_added_again_sends_once(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")])
    await add_account(gw)
    challenge_id = await challenge(gw)
    [(_, fields)] = await queue_entries(redis)
    await redis.xadd(keys.stream_of(challenge_id), fields)
    assert await gw.drain() == 2
    assert len(stub.hits) == 1
    assert dropped(gw, "duplicate") == 1
    await gw.drain()
    await redis.xadd(keys.stream_of(challenge_id), fields)  # after the send, too
    assert await gw.drain() == 1
    assert len(stub.codes(challenge_id)) == 1
    assert await queued(redis) == 0


async def test_two_workers_share_the_queue_and_send_each_code_once(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    stub = await stubs(delay=0.01)
    one = await make_gateway(providers=[stub.provider("hook")])
    two = await make_gateway(providers=[stub.provider("hook")])
    assert one.services.worker.name != two.services.worker.name
    ids = []
    for i in range(12):
        await add_account(one, account_id=f"user{i}", phone=f"06 12 34 56 {i:02d}")
        ids.append(await challenge(one, f"user{i}"))
    done = await asyncio.gather(one.drain(), two.drain())
    assert sum(done) == 12
    assert sorted(h.json["challenge_id"] for h in stub.hits) == sorted(ids)
    assert await queued(redis) == 0
    assert await pending(redis) == 0


# --- failing providers: retry, then dead letters ---------------------------


async def test_job_stays_pending_when_every_provider_is_unavailable(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    down = await stubs(status=503)
    gw = await make_gateway(
        providers=[down.provider("down"), {**down.provider("gone"), "url": closed_url()}]
    )
    await add_account(gw)
    challenge_id = await challenge(gw)
    [(stream, entry_id, fields)] = await read_as_worker(gw, redis)
    assert await gw.services.worker.handle(stream, entry_id, fields) == "retry"
    assert len(down.hits) == 1 and down.accepted == []
    assert await queued(redis) == 1
    assert await pending(redis) == 1
    assert await dead_count(redis) == 0
    assert await delivery(gw, challenge_id) == "queued"
    text = gw.services.metrics.render()
    assert sample(text, "otp_deliveries_total", provider="down", outcome="unavailable") == 1
    assert sample(text, "otp_deliveries_total", provider="gone", outcome="unavailable") == 1


async def test_job_goes_to_dead_letters_after_max_deliveries(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    down = await stubs(status=500)
    gw = await make_gateway(
        providers=[down.provider("down")],
        worker={"claim_idle_seconds": 0.1, "max_deliveries": 2},
        sms={"fallback_to_voice": False},
    )
    await add_account(gw)
    challenge_id = await challenge(gw)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.services.worker.run(stop))
    try:
        await poll(lambda: _is(dead_count(redis), 1), what="a dead letter", within=5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    [(_, dead)] = await dead_letters(redis)
    assert dead == {
        b"c": challenge_id.encode(),
        b"n": b"1",
        b"ch": b"sms",
        b"reason": b"all_providers_failed",
    }
    assert len(down.hits) == 2  # delivered twice, then given up
    assert await status(gw, challenge_id) == ("unreachable", "all_providers_failed")
    assert dead_lettered(gw, "all_providers_failed") == 1
    assert await queued(redis) == 0
    assert await pending(redis) == 0


# --- poison entries: every failure counts, then dead letters ----------------


def dead_lettered(gw: Gateway, reason: str) -> float:
    text = gw.services.metrics.render()
    return sample(text, "otp_sends_dead_lettered_total", reason=reason)


def worker_lines(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "otp_gateway.worker" and r.msg == message]


async def corrupt_challenge_type(redis: aioredis.Redis, challenge_id: str) -> None:
    await redis.delete(keys.challenge(challenge_id))
    await redis.set(keys.challenge(challenge_id), "garbage")


async def corrupt_challenge_field(redis: aioredis.Redis, challenge_id: str) -> None:
    await redis.hset(keys.challenge(challenge_id), "q", "garbage")  # job.lua cannot compare it


@pytest.mark.parametrize("corrupt", [corrupt_challenge_type, corrupt_challenge_field])
async def test_unreadable_challenge_is_dead_lettered_after_max_deliveries(
    make_gateway: GatewayFactory,
    stubs: StubFactory,
    redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
    corrupt: Any,
) -> None:
    """Before: job.lua's error left the entry pending, claimed again forever."""
    caplog.set_level(logging.INFO, logger="otp_gateway.worker")
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")], worker={"max_deliveries": 3})
    await add_account(gw)
    await add_account(gw, account_id="bob", phone="06 98 76 54 32")
    poisoned = await challenge(gw)
    await corrupt(redis, poisoned)
    fine = await challenge(gw, "bob")

    assert await gw.drain() == 1 + 3  # the good send once, the poison max_deliveries times

    assert [h.json["challenge_id"] for h in stub.hits] == [fine]
    [(_, dead)] = await dead_letters(redis)
    assert dead == {b"c": poisoned.encode(), b"n": b"1", b"ch": b"sms", b"reason": b"unreadable"}
    assert dead_lettered(gw, "unreadable") == 1
    retried = worker_lines(caplog, "send job will be retried")
    assert [(r.reason, r.deliveries) for r in retried] == [("unreadable", 1), ("unreadable", 2)]
    [last] = worker_lines(caplog, "send dead-lettered")
    assert (last.reason, last.deliveries) == ("unreadable", 3)
    assert await queued(redis) == 0
    assert await pending(redis) == 0
    if corrupt is corrupt_challenge_field:  # still a hash: its send says what became of it
        assert await status(gw, poisoned) == ("failed", "unreadable")


@pytest.mark.parametrize(
    "fields",
    [
        {"c": "x"},  # fields missing
        {"c": "x", "n": "one", "ch": "sms"},
        {"c": b"\xff\xfe", "n": 1, "ch": "sms"},
    ],
)
async def test_malformed_entry_is_dead_lettered_after_max_deliveries(
    make_gateway: GatewayFactory,
    stubs: StubFactory,
    redis: aioredis.Redis,
    fields: dict[str, Any],
) -> None:
    """Before: dropped at once, leaving no trace but a counter. Retried now, as
    another worker (a newer version, mid-upgrade) may read it; then kept."""
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")], worker={"max_deliveries": 2})
    await add_account(gw)
    entry_id = await redis.xadd(keys.STREAMS[0], fields)
    challenge_id = await challenge(gw)
    assert await gw.drain() == 1 + 2
    assert [h.json["challenge_id"] for h in stub.hits] == [challenge_id]
    [(dead_id, dead)] = await dead_letters(redis)
    assert dead.pop(b"reason") == b"malformed"
    assert dead == {k.encode(): v if isinstance(v, bytes) else str(v).encode()
                    for k, v in fields.items()}  # fmt: skip
    assert dead_id != entry_id
    assert dead_lettered(gw, "malformed") == 1
    assert await queued(redis) == 0
    assert await pending(redis) == 0
    resp = await gw.get("/dead-letters", key=OPERATOR_KEY)
    assert [d["reason"] for d in (await resp.json())["dead_letters"]] == ["malformed"]


async def test_an_exception_in_our_code_counts_and_is_dead_lettered_as_error(
    make_gateway: GatewayFactory,
    stubs: StubFactory,
    redis: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The challenge turns into a string while its send is at the provider:
    recording the send raises in our own path (not job.lua's read)."""
    stub = await stubs(delay=30)  # answers once released
    gw = await make_gateway(providers=[stub.provider("hook")], worker={"max_deliveries": 1})
    await add_account(gw)
    challenge_id = await challenge(gw)
    [(stream, entry_id, fields)] = await read_as_worker(gw, redis)
    handled = asyncio.create_task(gw.services.worker.handle(stream, entry_id, fields))
    await asyncio.wait_for(stub.arrived.wait(), 5)
    await corrupt_challenge_type(redis, challenge_id)
    stub.release.set()
    assert await asyncio.wait_for(handled, 5) == "dead_letter"
    [(_, dead)] = await dead_letters(redis)
    assert dead[b"reason"] == b"error"
    assert dead_lettered(gw, "error") == 1
    [failed] = worker_lines(caplog, "send job failed")
    assert failed.exc_info is not None and failed.entry == entry_id.decode()
    assert await pending(redis) == 0


async def test_running_worker_dead_letters_a_poison_entry_and_keeps_sending(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    """The real loop: reads, claims the poison again after claim_idle_seconds, gives up."""
    stub = await stubs()
    gw = await make_gateway(
        providers=[stub.provider("hook")],
        worker={"claim_idle_seconds": 0.1, "max_deliveries": 3},
    )
    await add_account(gw)
    await add_account(gw, account_id="bob", phone="06 98 76 54 32")
    poisoned = await challenge(gw)
    await corrupt_challenge_type(redis, poisoned)
    stop = asyncio.Event()
    task = asyncio.create_task(gw.services.worker.run(stop))
    try:
        await poll(lambda: _is(dead_count(redis), 1), what="a dead letter", within=5)
        fine = await challenge(gw, "bob")
        await poll(lambda: _is(delivery(gw, fine), "sent"), what="the next send")
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert not task.cancelled() and task.exception() is None
    assert [h.json["challenge_id"] for h in stub.hits] == [fine]
    assert await queued(redis) == 0
    assert await pending(redis) == 0


async def test_a_challenge_to_a_new_number_goes_there_and_proves_it(
    make_gateway: GatewayFactory, stubs: StubFactory, redis: aioredis.Redis
) -> None:
    """The hook the accounts issue builds on: a code sent to a number that is
    not (yet) the account's, returned by a successful verification."""
    stub = await stubs()
    gw = await make_gateway(providers=[stub.provider("hook")])
    await add_account(gw)
    svc = gw.services
    account = await svc.accounts.require("alice")
    new_number = svc.accounts.parse_phone("07 98 76 54 32")
    created = await svc.challenges.create(
        account, "contact.update", None, None, destination=new_number
    )
    assert created.destination == "+33 * ** ** ** 32"
    assert await gw.drain() == 1
    assert [hit.json["to"] for hit in stub.hits] == ["+33798765432"]
    # The new number is sealed in Redis, never in clear.
    raw = await redis.hgetall(keys.challenge(created.challenge_id))
    assert all(b"798765432" not in value for value in raw.values())
    code = stub.hits[0].json["code"]
    verified = await svc.challenges.verify(created.challenge_id, code, False, "")
    assert verified.destination == "+33798765432"
    assert verified.token_kind == "step_up"
    # A challenge to the account's own number proves nothing new.
    own = await svc.challenges.create(account, "login", None, None)
    await gw.drain()
    own_code = stub.hits[-1].json["code"]
    assert (await svc.challenges.verify(own.challenge_id, own_code, False, "")).destination is None


async def test_dead_letters_of_every_group_have_distinct_ids_and_list_newest_first(
    gw: Gateway, redis: aioredis.Redis
) -> None:
    """Before: one dead-letter stream. Now one per slot group, written in the same
    millisecond too: ids never repeat across groups, and the listing merges them."""
    await ensure_group(redis)
    for group in (3, 3, 5, 0, 5):
        stream = keys.STREAMS[group]
        entry_id = await redis.xadd(stream, {"c": "x", "n": "1", "ch": "sms"})
        await gw.services.worker.scripts.drop(
            keys=[stream, keys.DEAD_LETTERS[group]],
            args=[keys.GROUP, entry_id, "", "malformed", 10, group, "c", "x"],
        )
    found = await dead_letters(redis)
    ids = [eid.decode() for eid, _ in found]
    assert len(set(ids)) == 5
    groups = sorted(int(eid.split("-")[1]) % 16 for eid in ids)
    assert groups == [0, 3, 3, 5, 5]

    newest_first = sorted(ids, key=lambda i: tuple(map(int, i.split("-"))), reverse=True)
    resp = await gw.get("/dead-letters?limit=3", key=OPERATOR_KEY)
    page = await resp.json()
    assert [d["id"] for d in page["dead_letters"]] == newest_first[:3]
    assert page["total"] == 5
    resp = await gw.get(f"/dead-letters?limit=3&before={page['next_before']}", key=OPERATOR_KEY)
    rest = await resp.json()
    assert [d["id"] for d in rest["dead_letters"]] == newest_first[3:]
    assert rest["next_before"] is None
