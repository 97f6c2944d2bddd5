"""`otp-gateway migrate` (gateway/migrate.py) on a dataset the round-1 gateway wrote.

tests/data/round1_dataset.json was written once by tests/data/make_round1_dataset.py
against commit 7a5959d: every key with its type, value and remaining PTTL.
It is loaded here with its TTLs and the times it holds moved to now, so it
reads as written a moment ago whenever the test runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.crypto import token_digest
from gateway.embedded import RedisServer
from tests.support.config import OPERATOR_KEY, SECRET
from tests.support.gateway import GatewayFactory
from tests.support.ops import write_config
from tests.support.otp import call, redis_fingerprint, verify
from tests.support.queues import record

DATASET = Path(__file__).parent / "data" / "round1_dataset.json"
# Names the new layout keeps as they were (single-key users).
UNCHANGED = {b"otp:key-fingerprint", b"otp:layout"}


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def _shift_hash(name: bytes, fields: dict[bytes, bytes], delta: int) -> dict[bytes, bytes]:
    """Absolute times inside values move with the dataset."""

    def moved(value: bytes) -> bytes:
        return str(int(value) + delta).encode()

    if name.startswith(b"otp:c:") and b"x" in fields:
        fields[b"x"] = moved(fields[b"x"])
    if name.startswith(b"otp:a:"):
        for field in (b"expires_at", b"created_at"):
            if field in fields:
                fields[field] = moved(fields[field])
    if name.startswith(b"otp:td:"):
        for device, value in fields.items():
            until, created, label = value.split(b"|", 2)
            fields[device] = moved(until) + b"|" + moved(created) + b"|" + label
    return fields


async def load(redis: aioredis.Redis, dataset: dict[str, Any]) -> None:
    delta = int(time.time() * 1000) - dataset["facts"]["generated_ms"]
    for item in dataset["keys"]:
        name, kind, value = _b(item["key"]), item["type"], item["value"]
        if kind == "string":
            await redis.set(name, _b(value))
        elif kind == "hash":
            fields = {_b(k): _b(v) for k, v in value.items()}
            await redis.hset(name, mapping=_shift_hash(name, fields, delta))  # type: ignore[arg-type]
        elif kind == "set":
            await redis.sadd(name, *[_b(m) for m in value])
        elif kind == "zset":
            await redis.zadd(name, {_b(m): s + delta for m, s in value})
        else:
            await _load_stream(redis, name, value)
        if item["pttl"] > 0:
            await redis.pexpire(name, item["pttl"])


async def _load_stream(redis: aioredis.Redis, name: bytes, value: dict[str, Any]) -> None:
    for entry_id, fields in value["entries"]:
        await redis.xadd(name, {_b(k): _b(v) for k, v in fields.items()}, id=entry_id)
    for group in value["groups"]:
        await redis.xgroup_create(name, group["name"], id="0", mkstream=True)
        for _, consumer in group["pending"]:  # delivered to a worker that then died
            await redis.xreadgroup(group["name"], consumer, {name: ">"}, count=1)
        await redis.xgroup_setid(name, group["name"], group["last_delivered"])


def run_migrate(tmp_path: Path, redis_url: str) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path / "gw.toml", redis_url, [])
    return subprocess.run(
        [sys.executable, "-m", "gateway", "migrate", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.single_only(reason="round 1 never ran on a cluster: migrate runs on one instance")
async def test_a_round_one_dataset_migrates_and_serves(
    tmp_path: Path,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    make_gateway: GatewayFactory,
) -> None:
    dataset = json.loads(DATASET.read_text())
    assert dataset["secret"] == SECRET
    facts = dataset["facts"]
    await load(redis, dataset)
    records = {name: await redis.hgetall(f"otp:a:{name}") for name in ("alice", "bob", "carol")}
    live_ttl = await redis.pttl(f"otp:c:{facts['live_challenge'][0]}")
    # The outbox as round 1 named it: a mail handed to a mailer that died, a dead letter.
    await redis.xadd("otp:mail", {"to": "a@example.org"})
    await redis.xgroup_create("otp:mail", keys.MAIL_GROUP, id="0")
    await redis.xreadgroup(keys.MAIL_GROUP, "gone", {"otp:mail": ">"}, count=1)
    await redis.xadd("otp:mail:dead", {"to": "b@example.org", "reason": "refused"})

    first = await asyncio.to_thread(run_migrate, tmp_path, redis_server.url)
    assert first.returncode == 0, first.stderr
    assert "moved 3 accounts" in first.stdout
    assert "moved 1 queued sends" in first.stdout and "moved 1 dead letters" in first.stdout
    assert "moved 1 mail outboxes" in first.stdout
    assert await redis.xlen(keys.MAIL_DEAD) == 1
    outbox: Any = await redis.xpending(keys.MAIL_STREAM, keys.MAIL_GROUP)
    assert outbox["pending"] == 1  # still the dead mailer's: claimed again, not lost

    # Nothing of the old layout is left; the records moved as they were, with their TTLs.
    names = [name async for name in redis.scan_iter(count=1000)]
    assert [n for n in names if b"{" not in n and n not in UNCHANGED] == []
    for name, fields in records.items():
        assert await redis.hgetall(record(name)) == fields
    moved_ttl = await redis.pttl(keys.challenge(facts["live_challenge"][0]))
    assert live_ttl - 5000 < moved_ttl <= live_ttl

    before = await redis_fingerprint(redis)
    again = await asyncio.to_thread(run_migrate, tmp_path, redis_server.url)
    assert again.returncode == 0, again.stderr
    assert "nothing to migrate" in again.stdout
    assert await redis_fingerprint(redis) == before

    gw = await make_gateway(accounts={"totp": True})
    alice = await call(gw, "GET", "/accounts/alice", key=OPERATOR_KEY)
    assert alice.status == 200 and alice.body["last_name"] == "Martin-Durand", alice.body
    assert alice.body["status"] == "active" and alice.body["last_login_at"] is not None

    challenge_id, code = facts["live_challenge"]
    verified = await verify(gw, challenge_id, code)
    assert verified.status == 200 and verified.body["purpose"] == "rncps", verified.body

    spared = await call(gw, "POST", "/challenge", {
        "account_id": "alice", "trusted_device_token": facts["trusted_device_token"],
    })  # fmt: skip
    assert spared.body == {"required": False, "reason": "trusted_device"}

    totp = await call(gw, "POST", "/accounts/alice/totp/verify",
                      {"code": pyotp.TOTP(facts["totp_secret"]).now()})  # fmt: skip
    assert totp.status == 200, totp.body

    await gw.drain()  # the send a dead worker held
    assert gw.sink.codes(facts["queued_challenge"])

    change_id, change_code = facts["phone_change"]
    changed = await call(gw, "POST", "/accounts/carol/phone-change/verify",
                         {"challenge_id": change_id, "code": change_code})  # fmt: skip
    assert changed.status == 200, changed.body
    carol = await gw.services.accounts.require("carol")
    assert carol.phone is not None and carol.phone.e164 == "+33798765432"

    grant = keys.step_up(token_digest(facts["step_up_token"]))
    assert await redis.get(grant) == b"bob|account.create"
    dead = await call(gw, "GET", "/dead-letters", key=OPERATOR_KEY)
    assert dead.body["total"] == 1 and dead.body["dead_letters"][0]["reason"] == "malformed"
    history = await call(gw, "GET", "/accounts/alice/history", key=OPERATOR_KEY)
    assert history.status == 200 and history.body["total"] >= 2
