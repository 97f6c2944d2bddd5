"""A Redis blip never runs a write twice (gateway/datastore.py).

A proxy of our own (tests/support/tcpproxy.py) sits between a gateway and the real
redis-server. It forwards a chosen script call, so Redis runs it, then loses
its reply (the client's connection is reset) or holds it (a stall). The
gateway must answer 503 `unavailable` with `Retry-After` within `[redis]
timeout_seconds`, and must not have sent the script again: the proxy counts
how many times the script's SHA1 went towards Redis, and the state in Redis
shows it ran once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway import keys
from gateway.datastore import redis_client
from gateway.embedded import RedisServer
from gateway.luascripts import Script
from tests.support.config import OPERATOR_KEY, make_config
from tests.support.gateway import Gateway, add_account, start_gateway
from tests.support.httpfake import Stub
from tests.support.poll import poll
from tests.support.queues import pending, queued
from tests.support.tcpproxy import TcpProxy

# The proxy sits in front of the one redis-server, and DEBUG SLEEP stalls "the"
# server: the cluster's own lost-reply and stall tests are in tests/test_cluster.py.
pytestmark = pytest.mark.single_only(reason="a TcpProxy in front of the one redis-server")

SMALL_TIMEOUT = 0.3  # seconds: [redis] timeout_seconds of a gateway under test
# A faulty call sets up its connection and runs one script: generous on a busy
# machine, far below Redis's stall in the tests.
FAULTY_TIMEOUT = 0.5
# How much later than its timeout a 503 may come (scheduling on a shared machine).
SLACK = 0.4

ProxiedFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[TcpProxy]:
    started = await TcpProxy("127.0.0.1", redis_server.port, redis_server.password).start()
    yield started
    await started.close()


@pytest.fixture
async def make_faulty(sink: Stub) -> AsyncIterator[ProxiedFactory]:
    """Gateways (no background worker) on a given Redis URL with a given timeout."""
    opened: list[Gateway] = []

    async def build(url: str, timeout: float = FAULTY_TIMEOUT) -> Gateway:  # noqa: ASYNC109
        config = make_config(
            url,
            redis={"url": url, "timeout_seconds": timeout},
            providers=[sink.provider()],
        )
        opened.append(await start_gateway(config, sink))
        return opened[-1]

    yield build
    for gw in opened:
        await gw.client.close()


async def _challenge(gw: Gateway) -> str:
    """A challenge for alice, sent (the sink has its code)."""
    resp = await gw.post("/challenge", {"account_id": "alice"})
    assert resp.status == 202, await resp.text()
    challenge_id: str = (await resp.json())["challenge_id"]
    assert await gw.drain() == 1
    return challenge_id


async def _assert_unavailable(resp: Any) -> None:
    assert resp.status == 503, await resp.text()
    assert (await resp.json())["error"] == "unavailable"
    assert int(resp.headers["Retry-After"]) >= 1


async def _loaded(gw: Gateway, redis: aioredis.Redis, name: str) -> bytes:
    """The script's SHA1, once Redis has it: the reply to lose is the script's
    own, not a NOSCRIPT (after which sending it again is right)."""
    script: Script = getattr(gw.services.challenges.scripts, name)
    await redis.script_load(script.source)
    return script.sha.encode()


async def _field(redis: aioredis.Redis, challenge_id: str, name: str) -> bytes | None:
    value: bytes | None = await redis.hget(keys.challenge(challenge_id), name)
    return value


def _arm(proxy: TcpProxy, fault: str, marker: bytes) -> None:
    if fault == "lose":
        proxy.lose_reply_to(marker)
    else:
        proxy.hold_reply_to(marker)


FAULTS = pytest.mark.parametrize("fault", ["lose", "hold"])


# --- /verify ------------------------------------------------------------------------


@FAULTS
async def test_right_code_whose_verification_reply_is_lost_verified_once(
    gw: Gateway,
    make_faulty: ProxiedFactory,
    proxy: TcpProxy,
    redis: aioredis.Redis,
    fault: str,
) -> None:
    await add_account(gw)
    challenge_id = await _challenge(gw)
    [code] = gw.sink.codes(challenge_id)
    faulty = await make_faulty(proxy.url)
    verify = await _loaded(faulty, redis, "verify")
    _arm(proxy, fault, verify)

    resp = await faulty.post("/verify", {"challenge_id": challenge_id, "code": code})

    # Not "already_used": the caller was never told it succeeded, and verify.lua
    # was not sent again. It did run, once.
    await _assert_unavailable(resp)
    assert proxy.done.is_set()
    assert proxy.sent(verify) == 1
    assert await _field(redis, challenge_id, "v") == b"verified"
    assert await _field(redis, challenge_id, "n") is None  # no wrong code counted
    # The caller's retry now answers the truth.
    resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": code})
    assert resp.status == 410
    assert (await resp.json())["error"] == "already_used"


@FAULTS
async def test_wrong_code_whose_reply_is_lost_counts_one_attempt(
    gw: Gateway,
    make_faulty: ProxiedFactory,
    proxy: TcpProxy,
    redis: aioredis.Redis,
    fault: str,
) -> None:
    await add_account(gw)
    challenge_id = await _challenge(gw)
    [code] = gw.sink.codes(challenge_id)
    wrong = f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"
    faulty = await make_faulty(proxy.url)
    verify = await _loaded(faulty, redis, "verify")
    _arm(proxy, fault, verify)

    resp = await faulty.post("/verify", {"challenge_id": challenge_id, "code": wrong})

    await _assert_unavailable(resp)
    assert proxy.sent(verify) == 1
    assert await _field(redis, challenge_id, "n") == b"1"
    max_attempts = gw.services.config.otp.max_attempts
    resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": wrong})
    assert resp.status == 422
    assert (await resp.json())["attempts_left"] == max_attempts - 2
    resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": code})
    assert resp.status == 200, await resp.text()


# --- /challenge ------------------------------------------------------------------------


@FAULTS
async def test_challenge_whose_reply_is_lost_is_created_and_queued_once(
    gw: Gateway,
    make_faulty: ProxiedFactory,
    proxy: TcpProxy,
    redis: aioredis.Redis,
    fault: str,
) -> None:
    await add_account(gw)
    faulty = await make_faulty(proxy.url)
    create = await _loaded(faulty, redis, "create")
    _arm(proxy, fault, create)

    resp = await faulty.post("/challenge", {"account_id": "alice"})

    # Never 429 (its own cooldown, from a second run) while its send is queued.
    await _assert_unavailable(resp)
    assert proxy.sent(create) == 1
    assert await queued(redis) == 1
    assert len([k async for k in redis.scan_iter(match=keys.PREFIX + "c:*")]) == 1
    assert await gw.drain() == 1
    assert len(gw.sink.received) == 1


# --- the worker -----------------------------------------------------------------------


async def test_worker_whose_sent_record_reply_is_lost_sends_once(
    gw: Gateway,
    make_faulty: ProxiedFactory,
    proxy: TcpProxy,
    redis: aioredis.Redis,
) -> None:
    """sent.lua records the send and acknowledges the job in one step; when its
    reply is lost, the worker sees an error (the job is not re-recorded), and
    since the job is acknowledged, no worker sends the code again."""
    await add_account(gw)
    resp = await gw.post("/challenge", {"account_id": "alice"})
    challenge_id = (await resp.json())["challenge_id"]
    faulty = await make_faulty(proxy.url)
    sent = await _loaded(faulty, redis, "sent")
    proxy.lose_reply_to(sent)

    with pytest.raises(RedisError):
        await faulty.drain()

    assert proxy.sent(sent) == 1
    assert len(gw.sink.codes(challenge_id)) == 1
    assert await _field(redis, challenge_id, "q") == b"1"
    assert await _field(redis, challenge_id, "d") == b"sent"
    assert await queued(redis) == 0
    assert await pending(redis) == 0
    assert await faulty.drain() == 0
    assert len(gw.sink.received) == 1


# --- what may be sent again ------------------------------------------------------------


async def test_a_failed_connect_is_tried_again_and_the_command_sent_once(
    proxy: TcpProxy, redis: aioredis.Redis
) -> None:
    """A connection reset before the command left (a Redis restarting, a proxy
    failing over) costs nothing: the client connects again and sends it once."""
    client = redis_client(make_config(proxy.url))
    proxy.watch(b"otp:test:once")
    proxy.refuse(2)  # the first connection and its first retry
    try:
        assert await client.incr("otp:test:once") == 1
    finally:
        await client.aclose()
    assert proxy.refusals_left == 0
    assert proxy.sent(b"otp:test:once") == 1


# --- a slow Redis ------------------------------------------------------------------------


async def _asleep(redis_server: RedisServer) -> bool:
    """Redis answers no PING within a quarter of a second: DEBUG SLEEP has begun."""
    probe = aioredis.Redis.from_url(redis_server.url, socket_timeout=5)
    try:
        async with asyncio.timeout(0.25):
            await probe.ping()
        return False
    except TimeoutError:
        return True
    finally:
        await probe.aclose(close_connection_pool=True)


async def test_a_redis_asleep_past_the_timeout_answers_503_in_time_and_runs_nothing_twice(
    gw: Gateway,
    make_faulty: ProxiedFactory,
    proxy: TcpProxy,
    redis_server: RedisServer,
    redis: aioredis.Redis,
) -> None:
    await add_account(gw)
    faulty = await make_faulty(proxy.url, timeout=SMALL_TIMEOUT)
    resp = await faulty.get("/accounts/alice", key=OPERATOR_KEY)
    assert resp.status == 200  # the pool holds a live connection, as in steady traffic
    create = await _loaded(faulty, redis, "create")
    proxy.watch(create)
    sleeper = aioredis.Redis.from_url(redis_server.url, socket_timeout=10)
    sleeping = asyncio.create_task(sleeper.execute_command("DEBUG", "SLEEP", "1.5"))
    try:
        await poll(lambda: _asleep(redis_server), within=5, every=0, what="DEBUG SLEEP")
        started = time.monotonic()
        resp = await faulty.post("/challenge", {"account_id": "alice"})
        elapsed = time.monotonic() - started
        assert not sleeping.done()  # answered while Redis still slept
        await _assert_unavailable(resp)
        assert elapsed < SMALL_TIMEOUT + SLACK, elapsed
        await sleeping
    finally:
        await sleeper.aclose()

    # Awake: what was in Redis's buffers has run; once at most.
    assert await redis.ping()
    assert proxy.sent(create) == 1
    challenges = len([k async for k in redis.scan_iter(match=keys.PREFIX + "c:*")])
    assert challenges <= 1
    assert await queued(redis) == challenges


async def test_a_silent_redis_answers_503_within_the_timeout(
    make_faulty: ProxiedFactory,
) -> None:
    """A Redis that accepts connections and never answers (a hung host): every
    connection attempt and its retries fit in one `timeout_seconds`."""
    accepted: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        faulty = await make_faulty(f"redis://127.0.0.1:{port}/0", timeout=SMALL_TIMEOUT)
        started = time.monotonic()
        resp = await faulty.post("/challenge", {"account_id": "alice"})
        elapsed = time.monotonic() - started
        await _assert_unavailable(resp)
        assert elapsed < SMALL_TIMEOUT + SLACK, elapsed
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
