"""Faults only raw sockets can make: bytes that are not UTF-8 in headers, bodies cut
short or never finished, callback bodies in odd media types, stream ids Redis refuses.

Each answered 500 (or 503) before; each must be a 4xx (or, for a client that
left, a 499 in the access line and the metrics), write nothing, and log no 5xx.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.app import create_app
from gateway.embedded import RedisServer
from tests.support.config import ADMIN_KEY, OPERATOR_KEY, OTP_KEY, make_config
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.httpfake import Stub
from tests.support.logs import gateway_logs, json_lines
from tests.support.metrics import sample
from tests.support.otp import redis_fingerprint
from tests.support.poll import poll
from tests.support.rawhttp import RawReply, exchange, read_reply, request, served
from tests.support.twilio import unreachable_twilio

JSON = {"Content-Type": "application/json"}


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    # Day-long rate-limit intervals: no key expires between two fingerprints.
    still = {name: "100/100d" for name in ("account", "number", "ip", "country", "global")}
    return await make_gateway(rate_limits=still)


def assert_error(reply: RawReply, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"].startswith("application/json")
    body = reply.json()
    assert body["error"] == code and isinstance(body["message"], str), body


async def refused(
    gw: Gateway, redis: aioredis.Redis, data: bytes, status: int, code: str
) -> RawReply:
    """Send `data` to the gateway: it must fail as said and leave Redis as it was."""
    await gw.drain()
    before = await redis_fingerprint(redis)
    reply = await exchange(gw.client.port, data)
    assert_error(reply, status, code)
    assert await redis_fingerprint(redis) == before
    return reply


# --- header bytes that are not UTF-8 (aiohttp keeps them as lone surrogates) ----------


@pytest.mark.parametrize(
    "authorization",
    [b"Bearer \xff\xfe", b"Bearer " + OTP_KEY.encode() + b"\xff", b"Bearer \xc3(", b"\xffearer x"],
)
async def test_an_authorization_that_is_not_utf8_is_401(
    gw: Gateway, redis: aioredis.Redis, authorization: bytes
) -> None:
    await add_account(gw)
    body = b'{"account_id": "alice"}'
    data = request("POST", "/challenge", {**JSON, "Authorization": authorization}, body)
    await refused(gw, redis, data, 401, "unauthorized")


async def test_a_step_up_token_that_is_not_utf8_is_step_up_required(
    gw: Gateway, redis: aioredis.Redis
) -> None:
    await add_account(gw, account_id="boss", role="admin", email="boss@example.org")
    headers = {
        **JSON,
        "Authorization": f"Bearer {ADMIN_KEY}",
        "X-Acting-Account": "boss",
        "X-Step-Up-Token": b"su_\xff\xfe\x80token",
    }
    account = {
        "account_id": "bob", "establishment": "Mairie de Luisant", "last_name": "Durand",
        "first_name": "Bob", "email": "bob@example.org", "role": "user",
    }  # fmt: skip
    data = request("POST", "/accounts", headers, json.dumps(account).encode())
    await refused(gw, redis, data, 401, "step_up_required")


async def test_an_acting_account_that_is_not_utf8_is_400(
    gw: Gateway, redis: aioredis.Redis
) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Acting-Account": b"bo\xffss"}
    await refused(gw, redis, request("GET", "/accounts/alice", headers), 400, "invalid_request")


# --- provider callbacks: parsed before the signature is checked ----------------------

TWILIO = unreachable_twilio()


@pytest.fixture
async def callbacks(make_gateway: GatewayFactory, sink: Stub) -> Gateway:
    return await make_gateway(providers=[sink.provider(channels=("sms",)), TWILIO])


CALLBACK_PATHS = ["/callbacks/twilio/status?c=" + "A" * 28 + "&n=1", "/callbacks/twilio/twiml?t=x"]


@pytest.mark.parametrize("path", CALLBACK_PATHS)
@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",  # no boundary: aiohttp's parser raised ValueError
        "multipart/form-data; boundary=xx",
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded; charset=nope",  # LookupError before
        "application/x-www-form-urlencoded; charset=utf-16",
    ],
)
async def test_a_callback_that_is_not_a_utf8_form_is_415(
    callbacks: Gateway, redis: aioredis.Redis, path: str, content_type: str
) -> None:
    body = b'--xx\r\nContent-Disposition: form-data; name="a"\r\n\r\nb\r\n--xx--\r\n'
    data = request("POST", path, {"Content-Type": content_type}, body)
    await refused(callbacks, redis, data, 415, "unsupported_media_type")


@pytest.mark.parametrize("path", CALLBACK_PATHS)
@pytest.mark.parametrize("body", [b"MessageStatus=\xff", b"a=1&" * 101, b"\xc3(=x"])
async def test_a_malformed_callback_form_is_400(
    callbacks: Gateway, redis: aioredis.Redis, path: str, body: bytes
) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    await refused(callbacks, redis, request("POST", path, headers, body), 400, "invalid_request")


@pytest.mark.parametrize("path", CALLBACK_PATHS)
async def test_a_signature_that_is_not_utf8_is_403(
    callbacks: Gateway, redis: aioredis.Redis, path: str
) -> None:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": b"\xff\xfe==",
    }
    data = request("POST", path, headers, b"MessageStatus=delivered")
    await refused(callbacks, redis, data, 403, "forbidden")


# --- dead letters: a stream id Redis would refuse is the caller's fault ------------------


@pytest.mark.parametrize("before", ["x", "1-", "-1", "1-2-3", "1", "1" * 21 + "-0", "1-0 "])
async def test_a_dead_letter_id_that_is_no_stream_id_is_400(
    gw: Gateway, redis: aioredis.Redis, before: str
) -> None:
    headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    data = request("GET", f"/dead-letters?before={quote(before)}", headers)
    await refused(gw, redis, data, 400, "invalid_request")


@pytest.mark.parametrize(
    ("before", "listed"),
    [
        ("0-0", False),  # nothing comes before it (Redis refuses the exclusive range)
        ("00-000", False),
        ("0-1", False),
        ("007-0", False),
        ("18446744073709551615-18446744073709551615", True),  # the largest id Redis allows
        ("18446744073709551616-0", True),  # past it: everything is before
        ("0-18446744073709551616", False),
        ("99999999999999999999-1", True),
    ],
)
async def test_extreme_dead_letter_ids_page_as_their_order_says(
    gw: Gateway, redis: aioredis.Redis, before: str, listed: bool
) -> None:
    await redis.xadd(
        keys.DEAD_LETTERS[0], {"c": "x" * 28, "n": "1", "ch": "sms", "reason": "error"}
    )
    headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    reply = await exchange(
        gw.client.port, request("GET", f"/dead-letters?before={before}", headers)
    )
    assert reply.status == 200, reply.body
    assert reply.json()["total"] == 1
    assert len(reply.json()["dead_letters"]) == (1 if listed else 0)


# --- bodies cut short or never finished, against the gateway as `serve` runs it -----------


@pytest.fixture
def gateway_lines() -> Iterator[io.StringIO]:
    """What the gateway's own loggers write during the test, as JSON lines."""
    with gateway_logs() as stream:
        yield stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return json_lines(stream.getvalue())


@pytest.fixture
async def port(redis_server: RedisServer, redis: aioredis.Redis) -> AsyncIterator[int]:
    config = make_config(
        redis_server.url, server={"mode": "development", "body_timeout_seconds": 0.3}
    )
    async with served(create_app(config, run_worker=False)) as bound:
        yield bound


async def metrics(port: int) -> str:
    return (await exchange(port, request("GET", "/metrics"))).body.decode()


async def test_a_client_gone_mid_body_is_a_499_not_a_500(
    port: int, redis: aioredis.Redis, gateway_lines: io.StringIO
) -> None:
    before = await redis_fingerprint(redis)
    headers = {**JSON, "Authorization": f"Bearer {OTP_KEY}"}
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request("POST", "/challenge", headers, b'{"account_', length=100))
    await writer.drain()

    def logged() -> bool:
        return any(e["event"] == "request" for e in lines(gateway_lines))

    writer.close()
    await poll(logged, what="the access line")
    [access] = [e for e in lines(gateway_lines) if e["event"] == "request"]
    assert (access["route"], access["status"]) == ("/challenge", 499)
    assert [e["event"] for e in lines(gateway_lines) if e["level"] != "info"] == []
    assert [e["level"] for e in lines(gateway_lines) if e["event"] == "client disconnected"] == [
        "info"
    ]
    text = await metrics(port)
    count = "otp_http_request_duration_seconds_count"
    assert sample(text, count, route="/challenge", status="499") == 1
    assert sample(text, count, route="/challenge", status="500") == 0
    assert await redis_fingerprint(redis) == before


async def test_a_stalled_body_is_cut_with_408(port: int, redis: aioredis.Redis) -> None:
    before = await redis_fingerprint(redis)
    headers = {**JSON, "Authorization": f"Bearer {OTP_KEY}"}
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # Headers and part of the body, then nothing: the connection stays open.
        writer.write(request("POST", "/challenge", headers, b'{"account_id"', length=100))
        await writer.drain()
        async with asyncio.timeout(5):  # the body timeout is 0.3 s
            reply = await read_reply(reader)
    finally:
        writer.close()
    assert_error(reply, 408, "request_timeout")
    assert reply.headers.get("connection", "").lower() == "close"
    assert await redis_fingerprint(redis) == before
    count = "otp_http_request_duration_seconds_count"
    assert sample(await metrics(port), count, route="/challenge", status="408") == 1
