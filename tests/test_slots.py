"""Every script touches keys of one hash slot (what Redis Cluster requires).

A real flow runs against the tests' redis-server while a MONITOR connection
records each EVALSHA; every call's KEYS must hash to one slot
(`redis.crc.key_slot`). Only the operations docs/architecture.md ("Hash
slots") lists may span two, by name, and only on one instance: on a Redis
Cluster they run as single-slot steps, which the whole suite under
`OTP_TESTS_REDIS=cluster` exercises (a node or redis-py refuses any call over
two slots).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from gateway import keys
from gateway.embedded import RedisServer
from gateway.luascripts import script_names, script_source
from gateway.otp.delivery import DeliveryEvent
from tests.support.admin import step_up
from tests.support.config import OPERATOR_KEY
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.otp import call, challenge_and_code, verify

# On one instance: the account's slot and the rate limits' (`{rl}`); account
# changes that touch the establishment's set and history, or another admin's
# record (the last-admin guard). Split into single-slot steps on a cluster.
CROSS_SLOT = frozenset({
    "create", "resend", "account_create", "account_apply", "account_audit", "account_expire",
})  # fmt: skip


async def _record(server: RedisServer, calls: list[list[str]], started: asyncio.Event) -> None:
    monitor_client = aioredis.Redis.from_url(server.url)
    try:
        async with monitor_client.monitor() as monitor:
            started.set()
            while True:
                command = (await monitor.next_command())["command"].split(" ")
                if command[0].lower() == "evalsha":
                    calls.append(command)
    finally:
        await monitor_client.aclose()


async def flow(gw: Gateway) -> None:
    """Challenge, resend, verify, worker send, status callback, call again, dead
    letter, totp, account create / change / delete."""
    await add_account(gw)
    await add_account(gw, account_id="bob", role="admin", phone="06 12 34 56 79")
    challenge_id, code = await challenge_and_code(gw, "alice")  # create.lua, job.lua, sent.lua
    assert (await call(gw, "POST", f"/challenge/{challenge_id}/resend", {})).status == 202
    await gw.drain()
    assert (await verify(gw, challenge_id, code, trust_device=True)).status == 200
    voice = await call(gw, "POST", "/challenge", {"account_id": "bob", "channel": "voice"})
    await gw.drain()
    deliveries = gw.services.worker.deliveries
    await deliveries.record(voice.body["challenge_id"], 1, DeliveryEvent("call", "no_answer"))
    assert await deliveries.promote_due() == 1  # retry.lua
    await gw.services.redis.xadd(keys.STREAMS[3], {"c": "x" * 28, "n": "x", "ch": "sms"})
    await gw.drain()  # drop.lua (a duplicate), the garbled entry dead-lettered
    token = await step_up(gw, "alice", "contact.update")
    enrol = await call(gw, "POST", "/accounts/alice/totp", headers={"X-Step-Up-Token": token})
    secret = parse_qs(urlparse(enrol.body["otpauth_uri"]).query)["secret"][0]
    now = pyotp.TOTP(secret).now()
    assert (await call(gw, "POST", "/accounts/alice/totp/confirm", {"code": now})).status == 200
    later = {"code": pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30))}
    assert (await call(gw, "POST", "/accounts/alice/totp/verify", later)).status == 200
    patched = await call(gw, "PATCH", "/accounts/alice", {"last_name": "X"}, key=OPERATOR_KEY)
    assert patched.status == 200
    assert (await call(gw, "DELETE", "/accounts/alice", key=OPERATOR_KEY)).status == 204


@pytest.mark.single_only(reason="MONITOR of one instance; a cluster's nodes refuse two slots")
async def test_every_script_call_stays_in_one_slot_but_the_listed_families(
    redis_server: RedisServer, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(
        accounts={"totp": True},
        otp={"resend_cooldown_seconds": 0},
        voice={"retry_delay_seconds": 0, "max_calls": 3},
        worker={"max_deliveries": 1},
    )
    names = {
        hashlib.sha1(script_source(n, gw.services.lua.settings).encode()).hexdigest(): n
        for n in script_names()
    }
    calls: list[list[str]] = []
    started = asyncio.Event()
    recorder = asyncio.create_task(_record(redis_server, calls, started))
    await asyncio.wait_for(started.wait(), 5)
    try:
        await flow(gw)
        await gw.services.redis.ping()
    finally:
        recorder.cancel()
        with suppress(asyncio.CancelledError):
            await recorder
    slots: dict[str, set[int]] = defaultdict(set)
    crossing: dict[str, list[list[str]]] = defaultdict(list)
    for command in calls:
        name, count = names.get(command[1], command[1]), int(command[2])
        call_slots = {key_slot(k.encode()) for k in command[3 : 3 + count]}
        slots[name] |= {len(call_slots)}
        if len(call_slots) > 1:
            crossing[name].append(command[3 : 3 + count])
    ran = set(slots)
    # The flow ran every script the wings call on this path.
    assert {"create", "resend", "verify", "job", "sent", "drop", "status", "retry", "totp",
            "totp_confirm", "account_create", "account_apply"} <= ran, ran  # fmt: skip
    assert set(crossing) <= CROSS_SLOT, {n: crossing[n][:1] for n in set(crossing) - CROSS_SLOT}
