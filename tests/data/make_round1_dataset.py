"""Writes tests/data/round1_dataset.json: a Redis dataset in the round-1 key layout.

Run ONCE against a checkout of the round-1 gateway (commit 7a5959d), with
that checkout first on the path, e.g.:

    git worktree add /tmp/old-main 7a5959d
    PYTHONPATH=/tmp/old-main .venv/bin/python tests/data/make_round1_dataset.py \
        tests/data/round1_dataset.json

It drives that gateway through its HTTP API (test secret and keys of
tests/support/config.py) and dumps every key: type, value, remaining PTTL.
tests/test_migrate.py loads it into a fresh Redis and runs `otp-gateway migrate`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyotp
import redis.asyncio as aioredis

import gateway
from gateway.embedded import RedisServer
from tests.support.admin import step_up
from tests.support.config import OPERATOR_KEY, SECRET, make_config
from tests.support.gateway import add_account, start_gateway
from tests.support.httpfake import stub_servers
from tests.support.otp import call, challenge_and_code, code_for, verify


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


async def dump(redis: aioredis.Redis) -> list[dict[str, Any]]:
    out = []
    for name in sorted([k async for k in redis.scan_iter(count=1000)]):
        kind = (await redis.type(name)).decode()
        value: Any
        if kind == "string":
            value = b64(await redis.get(name))
        elif kind == "hash":
            value = {b64(k): b64(v) for k, v in (await redis.hgetall(name)).items()}
        elif kind == "set":
            value = sorted(b64(m) for m in await redis.smembers(name))
        elif kind == "zset":
            value = [[b64(m), s] for m, s in await redis.zrange(name, 0, -1, withscores=True)]
        elif kind == "stream":
            entries = await redis.xrange(name)
            groups = []
            for g in await redis.xinfo_groups(name):
                pending = await redis.xpending_range(name, g["name"], "-", "+", 1000)
                held = [[p["message_id"].decode(), p["consumer"].decode()] for p in pending]
                last = g["last-delivered-id"].decode()
                groups.append({"name": g["name"].decode(), "last_delivered": last, "pending": held})
            rows = [[e.decode(), {b64(k): b64(v) for k, v in f.items()}] for e, f in entries]
            value = {"entries": rows, "groups": groups}
        else:
            raise SystemExit(f"unexpected type {kind} of {name!r}")
        out.append({"key": b64(name), "type": kind, "pttl": await redis.pttl(name), "value": value})
    return out


async def make() -> dict[str, Any]:
    print("gateway from", gateway.__file__, file=sys.stderr)
    server = RedisServer(Path(tempfile.mkdtemp(prefix="round1-")))
    server.start()
    facts: dict[str, Any] = {}
    try:
        async with stub_servers() as make:
            sink = await make(check_signature=True)
            config = make_config(
                server.url, providers=[sink.provider()], accounts={"totp": True},
                worker={"max_deliveries": 1},
            )  # fmt: skip
            gw = await start_gateway(config, sink)
            try:
                await populate(gw, facts)
            finally:
                await gw.client.close()
        redis = aioredis.Redis.from_url(server.url)
        facts["generated_ms"] = int(time.time() * 1000)
        keys = await dump(redis)
        await redis.aclose()
    finally:
        server.stop()
    return {"secret": SECRET, "made_with": "7a5959d", "facts": facts, "keys": keys}


async def populate(gw: Any, facts: dict[str, Any]) -> None:
    await add_account(gw)  # alice, a user of "Mairie de Luisant"
    await add_account(gw, account_id="bob", role="admin", phone="06 12 34 56 79",
                      email="bob@example.org", first_name="Bob")  # fmt: skip
    await add_account(gw, account_id="carol", phone="06 12 34 56 80", email="carol@example.org")
    # alice: a trusted device, an authenticator app, a history of changes.
    cid, code = await challenge_and_code(gw, "alice")
    trusted = await verify(gw, cid, code, trust_device=True, device_label="laptop")
    facts["trusted_device_token"] = trusted.body["trusted_device_token"]
    token = await step_up(gw, "alice", "contact.update")
    enrol = await call(gw, "POST", "/accounts/alice/totp", headers={"X-Step-Up-Token": token})
    secret = parse_qs(urlparse(enrol.body["otpauth_uri"]).query)["secret"][0]
    confirmed = await call(gw, "POST", "/accounts/alice/totp/confirm",
                           {"code": pyotp.TOTP(secret).now()})  # fmt: skip
    assert confirmed.status == 200, confirmed.body
    facts["totp_secret"] = secret
    patched = await call(gw, "PATCH", "/accounts/alice", {"last_name": "Martin-Durand"},
                         key=OPERATOR_KEY)  # fmt: skip
    assert patched.status == 200, patched.body
    # bob: an unspent step-up grant.
    facts["step_up_token"] = await step_up(gw, "bob", "account.create")
    # carol: a pending phone change, its code captured.
    token = await step_up(gw, "carol", "contact.update")
    change = await call(gw, "POST", "/accounts/carol/phone-change", {"phone": "07 98 76 54 32"},
                        headers={"X-Step-Up-Token": token})  # fmt: skip
    assert change.status == 202, change.body
    facts["phone_change"] = [
        change.body["challenge_id"],
        await code_for(gw, change.body["challenge_id"]),
    ]
    # A dead letter (an entry no worker can read, max_deliveries 1).
    await gw.services.redis.xadd("otp:sends", {"c": cid, "n": "garbled", "ch": "sms"})
    await gw.drain()
    # alice: a live challenge whose code the sink got.
    live, live_code = await challenge_and_code(gw, "alice", purpose="rncps")
    facts["live_challenge"] = [live, live_code]
    # bob: a send queued, taken by a worker that then died (pending, not acknowledged).
    queued = await call(gw, "POST", "/challenge", {"account_id": "bob"})
    assert queued.status == 202, queued.body
    facts["queued_challenge"] = queued.body["challenge_id"]
    redis = gw.services.redis
    await redis.xreadgroup("workers", "dead-worker", {"otp:sends": ">"}, count=10)


if __name__ == "__main__":
    dataset = asyncio.run(make())
    Path(sys.argv[1]).write_text(json.dumps(dataset, indent=1, sort_keys=True) + "\n")
