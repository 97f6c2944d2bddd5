"""Helpers shared by the OTP HTTP tests (test_otp_verify, test_otp_limits, test_http_input)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from tests.support.config import OTP_KEY
from tests.support.gateway import Gateway
from tests.support.poll import poll
from tests.support.queues import queued

MOBILE = "06 12 34 56 78"
MOBILE_E164 = "+33612345678"
MOBILE_DIGITS = "612345678"
OTHER_MOBILE = "07 98 76 54 32"
OTHER_DIGITS = "798765432"
THIRD_MOBILE = "06 98 76 54 31"
FIXED = "01 42 68 53 00"
REUNION_MOBILE = "0692 12 34 56"

NO_COOLDOWN = {"resend_cooldown_seconds": 0}
ISO_Z = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
CHALLENGE_ID = re.compile(r"[A-Za-z0-9_-]{28}")


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]


async def call(
    gw: Gateway,
    method: str,
    path: str,
    body: Any = None,
    *,
    key: str | None = OTP_KEY,
    data: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """One request; the reply's body decoded as JSON when it is JSON."""
    sent = {} if key is None else gw.headers(key)
    sent.update(headers or {})
    kwargs: dict[str, Any] = {"headers": sent}
    if data is not None:
        kwargs["data"] = data
    elif body is not None:
        kwargs["json"] = body
    resp = await gw.client.request(method, path, **kwargs)
    text = await resp.text()
    try:
        decoded: Any = json.loads(text)
    except ValueError:
        decoded = text
    return Reply(resp.status, decoded, resp.headers)


def assert_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    """The contract's error shape: {"error", "message"} (plus extras), as JSON."""
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers.get("Content-Type", "").startswith("application/json")
    assert isinstance(reply.body, dict), reply.body
    assert reply.body["error"] == code, reply.body
    assert isinstance(reply.body["message"], str) and reply.body["message"]
    return reply.body


def assert_rate_limited(reply: Reply, scope: str) -> int:
    """A 429 with a Retry-After header of whole seconds; returns it."""
    body = assert_error(reply, 429, "rate_limited")
    assert body.get("scope") == scope, body
    retry_after = reply.headers.get("Retry-After", "")
    assert re.fullmatch(r"[1-9][0-9]*", retry_after), retry_after
    return int(retry_after)


async def challenge(gw: Gateway, account_id: str = "alice", **fields: Any) -> dict[str, Any]:
    """POST /challenge, which must answer 202; its body."""
    reply = await call(gw, "POST", "/challenge", {"account_id": account_id, **fields})
    assert reply.status == 202, (reply.status, reply.body)
    body: dict[str, Any] = reply.body
    return body


async def code_for(gw: Gateway, challenge_id: str) -> str:
    """Deliver what is queued; the last code the sink got for this challenge."""
    await gw.drain()
    codes = gw.sink.codes(challenge_id)
    assert codes, "no code reached the sink"
    return codes[-1]


async def challenge_and_code(
    gw: Gateway, account_id: str = "alice", **fields: Any
) -> tuple[str, str]:
    created = await challenge(gw, account_id, **fields)
    return created["challenge_id"], await code_for(gw, created["challenge_id"])


async def verify(gw: Gateway, challenge_id: str, code: Any, **fields: Any) -> Reply:
    return await call(gw, "POST", "/verify", {"challenge_id": challenge_id, "code": code, **fields})


async def status_of(gw: Gateway, challenge_id: str) -> dict[str, Any]:
    reply = await call(gw, "GET", f"/challenge/{challenge_id}")
    assert reply.status == 200, (reply.status, reply.body)
    body: dict[str, Any] = reply.body
    return body


async def wait_for_status(
    gw: Gateway, challenge_id: str, wanted: str, within: float = 5.0
) -> dict[str, Any]:
    """Poll GET /challenge/{id} until its status is `wanted`, within a deadline."""
    seen: list[dict[str, Any]] = []

    async def reached() -> bool:
        seen.append(await status_of(gw, challenge_id))
        return bool(seen[-1]["status"] == wanted)

    await poll(reached, within=within, every=0.05, what=f"status {wanted!r}")
    return seen[-1]


def wrong(code: str) -> str:
    """A code of the same length that is certainly not `code`."""
    return str((int(code) + 1) % 10 ** len(code)).zfill(len(code))


def parse_iso(text: str) -> datetime:
    assert ISO_Z.fullmatch(text), text
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def seconds_from_now(text: str) -> float:
    return (parse_iso(text) - datetime.now(UTC)).total_seconds()


async def redis_fingerprint(redis: aioredis.Redis) -> tuple[int, int, str]:
    """Key count, send-queue length and a digest of every key's name and value."""
    digest = hashlib.sha256()
    names = sorted([k async for k in redis.scan_iter(count=1000)])
    for name in names:
        digest.update(name + b"\x00" + (await redis.dump(name) or b"") + b"\x00")
    return int(await redis.dbsize()), await queued(redis), digest.hexdigest()


async def everything_in_redis(redis: aioredis.Redis) -> list[bytes]:
    """Every key name and stored value (hash fields, stream entries, members...)."""
    found: list[bytes] = []
    async for key in redis.scan_iter(count=1000):
        found.append(key)
        found += await _values(redis, key)
    assert all(isinstance(blob, bytes) for blob in found)
    return found


async def _values(redis: aioredis.Redis, key: bytes) -> list[bytes]:
    kind = await redis.type(key)
    if kind == b"none":  # gone between SCAN and TYPE (a TTL, the running worker)
        return []
    if kind == b"hash":
        return [b for pair in (await redis.hgetall(key)).items() for b in pair]
    if kind == b"stream":
        return [
            blob
            for entry_id, fields in await redis.xrange(key) or []
            for blob in [entry_id, *(b for pair in (fields or {}).items() for b in pair)]
        ]
    if kind == b"set":
        return list(await redis.smembers(key))
    if kind == b"zset":
        return list(await redis.zrange(key, 0, -1))
    if kind == b"list":
        return list(await redis.lrange(key, 0, -1))
    if kind == b"string":
        return [await redis.get(key)]
    raise AssertionError(f"unexpected key type {kind!r}")


def digit_runs(blob: bytes) -> set[bytes]:
    """Maximal runs of ASCII digits: a code kept in clear shows as one of them.

    Timestamps and counters are runs too, but never of exactly a code's length
    and value by chance the way a substring search would match inside them.
    """
    return set(re.findall(rb"[0-9]+", blob))
