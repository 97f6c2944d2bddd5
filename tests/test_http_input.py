"""Strict input on the OTP routes: validation, hostile bodies, auth, methods, request ids.

After every refused request, Redis must be byte for byte as before (no key, no
rate-limit state, no queued send) and nothing may reach the sink.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.errors import InvalidRequest
from gateway.web.body import MAX_BODY, parse_json
from tests.support.config import ADMIN_KEY, METRICS_KEY, OPERATOR_KEY, OTP_KEY
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.otp import (
    NO_COOLDOWN,
    Reply,
    assert_error,
    call,
    challenge_and_code,
    redis_fingerprint,
    status_of,
)


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    """No resend cooldown: a refused request can be followed by a good one.

    Rate-limit keys live one emission interval (period/count); with the default
    global "600/1m" that is 100 ms, so a key could expire between the two
    snapshots of `refused_without_trace`. Day-long intervals keep them still."""
    still = {name: "100/100d" for name in ("account", "number", "ip", "country", "global")}
    return await make_gateway(otp=NO_COOLDOWN, rate_limits=still)


@pytest.fixture
async def live(gw: Gateway) -> tuple[str, str]:
    """alice with a live challenge, its code already delivered."""
    await add_account(gw)
    return await challenge_and_code(gw)


Probe = Callable[[], Awaitable[Reply]]


async def refused_without_trace(
    gw: Gateway, redis: aioredis.Redis, probe: Probe, status: int, code: str
) -> Reply:
    """Run `probe`: it must fail as said and leave Redis and the sink untouched."""
    await gw.drain()  # the queue's group exists before the first snapshot
    before = await redis_fingerprint(redis)
    sent = len(gw.sink.received)
    reply = await probe()
    assert_error(reply, status, code)
    assert await redis_fingerprint(redis) == before
    await gw.drain()
    assert len(gw.sink.received) == sent
    return reply


def raw_post(gw: Gateway, path: str, data: Any, key: str | None = OTP_KEY) -> Probe:
    headers = {"Content-Type": "application/json"}
    return lambda: call(gw, "POST", path, key=key, data=data, headers=headers)


# --- field validation: POST /challenge ----------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"purpose": "login"},
        {"account_id": None},
        {"account_id": 42},
        {"account_id": ["alice"]},
        {"account_id": ""},
        {"account_id": "alice bob"},
        {"account_id": "alice/../bob"},
        {"account_id": "alicé"},
        {"account_id": "alice\n"},
        {"account_id": "a" * 129},
        {"account_id": "alice", "purpose": "admin"},
        {"account_id": "alice", "purpose": "LOGIN"},
        {"account_id": "alice", "purpose": 1},
        {"account_id": "alice", "channel": "email"},
        {"account_id": "alice", "channel": "SMS"},
        {"account_id": "alice", "channel": True},
        {"account_id": "alice", "client_ip": "999.1.1.1"},
        {"account_id": "alice", "client_ip": "1.2.3"},
        {"account_id": "alice", "client_ip": "localhost"},
        {"account_id": "alice", "client_ip": "010.1.1.1"},
        {"account_id": "alice", "client_ip": "10.0.0.0/8"},
        {"account_id": "alice", "client_ip": 167772161},
        {"account_id": "alice", "trusted_device_token": 5},
        {"account_id": "alice", "unknown": 1},
        {"account_id": "alice", "Account_id": "alice"},
    ],
)
async def test_challenge_rejects_bad_fields(
    gw: Gateway, redis: aioredis.Redis, body: dict[str, Any]
) -> None:
    await add_account(gw)
    probe = lambda: call(gw, "POST", "/challenge", body)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 400, "invalid_request")


# --- field validation: POST /verify --------------------------------------------


def _shift(code: str, zero: str) -> str:
    """The same digits in another Unicode digit block."""
    return "".join(chr(ord(zero) + int(d)) for d in code)


# Each malformed code is built from the right one: the refusal must come from
# its shape, never from its value.
MALFORMED: dict[str, Callable[[str], Any]] = {
    "five_digits": lambda c: c[:5],
    "seven_digits": lambda c: c + "7",
    "empty": lambda c: "",
    "full_width": lambda c: _shift(c, "\uff10"),
    "arabic_indic": lambda c: _shift(c, "\u0660"),
    "extended_arabic_indic": lambda c: _shift(c, "\u06f0"),
    "devanagari": lambda c: _shift(c, "\u0966"),
    "trailing_newline": lambda c: c + "\n",
    "leading_space": lambda c: " " + c,
    "trailing_space": lambda c: c + " ",
    "inner_space": lambda c: c[:3] + " " + c[3:],
    "plus_sign": lambda c: "+" + c[1:],
    "nul": lambda c: c[:5] + "\x00",
    "zero_width_space": lambda c: c + "\u200b",
    "number": lambda c: int(c),
    "float": lambda c: float(c),
    "null": lambda c: None,
    "true": lambda c: True,
    "list": lambda c: [c],
    "object": lambda c: {"code": c},
}


@pytest.mark.parametrize("kind", MALFORMED)
async def test_verify_rejects_malformed_codes(
    gw: Gateway, redis: aioredis.Redis, live: tuple[str, str], kind: str
) -> None:
    challenge_id, right = live
    body = {"challenge_id": challenge_id, "code": MALFORMED[kind](right)}
    probe = lambda: call(gw, "POST", "/verify", body)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 400, "invalid_request")
    assert (await status_of(gw, challenge_id))["attempts"] == 0
    assert (
        await call(gw, "POST", "/verify", {"challenge_id": challenge_id, "code": right})
    ).status == 200


@pytest.mark.parametrize(
    "extra",
    [
        {"trust_device": "yes"},
        {"trust_device": 1},
        {"device_label": "a|b"},
        {"device_label": "line\nbreak"},
        {"device_label": "x" * 65},
        {"device_label": 7},
        {"unknown": True},
        {"challenge_id": None},
        {"challenge_id": 12},
    ],
)
async def test_verify_rejects_bad_fields(
    gw: Gateway, redis: aioredis.Redis, live: tuple[str, str], extra: dict[str, Any]
) -> None:
    challenge_id, code = live
    body = {"challenge_id": challenge_id, "code": code, **extra}
    probe = lambda: call(gw, "POST", "/verify", body)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 400, "invalid_request")
    assert (
        await call(gw, "POST", "/verify", {"challenge_id": challenge_id, "code": code})
    ).status == 200


async def test_verify_requires_both_fields(
    gw: Gateway, redis: aioredis.Redis, live: tuple[str, str]
) -> None:
    challenge_id, code = live
    for body in ({"code": code}, {"challenge_id": challenge_id}, {}):
        probe = lambda body=body: call(gw, "POST", "/verify", body)  # noqa: E731
        await refused_without_trace(gw, redis, probe, 400, "invalid_request")


async def test_resend_rejects_bad_fields(
    gw: Gateway, redis: aioredis.Redis, live: tuple[str, str]
) -> None:
    challenge_id, _ = live
    for body in ({"channel": "fax"}, {"client_ip": "nope"}, {"code": "123456"}):
        probe = lambda body=body: call(gw, "POST", f"/challenge/{challenge_id}/resend", body)  # noqa: E731
        await refused_without_trace(gw, redis, probe, 400, "invalid_request")


# --- hostile bodies ----------------------------------------------------------


def _good(path: str, live: tuple[str, str]) -> dict[str, Any]:
    if path == "/verify":
        return {"challenge_id": live[0], "code": live[1]}
    return {"account_id": "alice"}


def _append(good: dict[str, Any], member: str) -> bytes:
    """The good body with one more member: `"key": value` as raw JSON text."""
    return (json.dumps(good)[:-1] + ", " + member + "}").encode()


def _duplicate(good: dict[str, Any]) -> bytes:
    # Most parsers keep the last of duplicate keys, which here is the valid value.
    key = list(good)[-1]
    decoy = json.dumps({key: "0" * len(good[key])})[:-1]
    return (decoy + ", " + json.dumps(good)[1:]).encode()


def _non_utf8(good: dict[str, Any]) -> bytes:
    first = next(iter(good)).encode()
    return json.dumps(good).encode().replace(b'"' + first, b'"\xff\xfe' + first)


DEEP = 10_000
HOSTILE: dict[str, Callable[[dict[str, Any]], bytes]] = {
    "malformed": lambda g: json.dumps(g)[:-1].encode(),
    "single_quotes": lambda g: json.dumps(g).replace('"', "'").encode(),
    "trailing_comma": lambda g: (json.dumps(g)[:-1] + ",}").encode(),
    "nan": lambda g: _append(g, '"client_ip": NaN'),
    "infinity": lambda g: _append(g, '"client_ip": Infinity'),
    "minus_infinity": lambda g: _append(g, '"client_ip": -Infinity'),
    "duplicate_key": _duplicate,
    "nested_duplicate_key": lambda g: _append(g, '"client_ip": {"a": 1, "a": 2}'),
    "array": lambda g: json.dumps([g]).encode(),
    "string": lambda g: json.dumps(json.dumps(g)).encode(),
    "null": lambda g: b"null",
    "deep_arrays": lambda g: b"[" * DEEP + b"]" * DEEP,
    "deep_in_field": lambda g: _append(g, '"x": ' + "[" * DEEP + "]" * DEEP),
    "deep_objects": lambda g: ('{"a": ' * 9_000 + "1" + "}" * 9_000).encode(),
    "huge_integer": lambda g: _append(g, '"client_ip": ' + "9" * 5000),
    "non_utf8": _non_utf8,
    "latin1": lambda g: (json.dumps(g)[:-1] + ', "device_label": "caf\xe9"}').encode("latin-1"),
    "utf16": lambda g: json.dumps(g).encode("utf-16"),
    "lone_surrogate_key": lambda g: _append(g, '"\\ud800": 1'),
    "nul_byte": lambda g: json.dumps(g).encode() + b"\x00",
    "two_documents": lambda g: (json.dumps(g) * 2).encode(),
}


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("path", ["/challenge", "/verify"])
async def test_hostile_bodies_are_400(
    gw: Gateway, redis: aioredis.Redis, live: tuple[str, str], path: str, kind: str
) -> None:
    data = HOSTILE[kind](_good(path, live))
    assert len(data) <= MAX_BODY
    await refused_without_trace(gw, redis, raw_post(gw, path, data), 400, "invalid_request")
    # The well-formed request still works afterwards: nothing was consumed.
    assert (await call(gw, "POST", path, _good(path, live))).status in (200, 202)


def _padded(good: dict[str, Any], size: int) -> bytes:
    """A valid JSON body of exactly `size` bytes (whitespace padding)."""
    text = json.dumps(good).encode()
    return text[:-1] + b" " * (size - len(text)) + b"}"


@pytest.mark.parametrize("path", ["/challenge", "/verify"])
async def test_body_of_exactly_64_kib_is_accepted(
    gw: Gateway, live: tuple[str, str], path: str
) -> None:
    data = _padded(_good(path, live), MAX_BODY)
    assert len(data) == MAX_BODY
    assert (await raw_post(gw, path, data)()).status in (200, 202)


@pytest.mark.parametrize("size", [MAX_BODY + 1, 1024 * 1024])
@pytest.mark.parametrize("path", ["/challenge", "/verify"])
async def test_body_over_64_kib_with_content_length(
    gw: Gateway, redis: aioredis.Redis, live: tuple[str, str], path: str, size: int
) -> None:
    data = _padded(_good(path, live), size)
    await refused_without_trace(gw, redis, raw_post(gw, path, data), 413, "payload_too_large")


@pytest.mark.parametrize("path", ["/challenge", "/verify"])
async def test_body_over_64_kib_chunked(
    gw: Gateway, redis: aioredis.Redis, live: tuple[str, str], path: str
) -> None:
    data = _padded(_good(path, live), MAX_BODY + 4096)

    def chunks() -> AsyncIterator[bytes]:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(0, len(data), 8192):
                yield data[i : i + 8192]

        return gen()

    async def probe() -> Reply:
        resp = await gw.client.post(
            path, data=chunks(), headers={**gw.headers(), "Content-Type": "application/json"}
        )
        assert "Content-Length" not in resp.request_info.headers
        assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
        return Reply(resp.status, await resp.json(), resp.headers)

    await refused_without_trace(gw, redis, probe, 413, "payload_too_large")


# --- auth --------------------------------------------------------------------


ROUTES = [
    ("POST", "/challenge", {"account_id": "alice"}),
    ("POST", "/verify", {"challenge_id": "A" * 28, "code": "123456"}),
    ("GET", "/challenge/" + "A" * 28, None),
    ("POST", "/challenge/" + "A" * 28 + "/resend", {}),
    ("GET", "/accounts/alice/trusted-devices", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_missing_or_unknown_key_is_401(
    gw: Gateway, redis: aioredis.Redis, method: str, path: str, body: Any
) -> None:
    await add_account(gw)
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic " + OTP_KEY},
        {"Authorization": OTP_KEY},
        {"Authorization": "Bearer " + OTP_KEY[:-1]},
        {"Authorization": "Bearer " + OTP_KEY + "x"},
    ):
        probe = lambda h=headers: call(gw, method, path, body, key=None, headers=h)  # noqa: E731
        await refused_without_trace(gw, redis, probe, 401, "unauthorized")


@pytest.mark.parametrize(("method", "path", "body"), ROUTES[:4])
@pytest.mark.parametrize("key", [METRICS_KEY, ADMIN_KEY, OPERATOR_KEY])
async def test_key_without_otp_scope_is_403(
    gw: Gateway, redis: aioredis.Redis, method: str, path: str, body: Any, key: str
) -> None:
    await add_account(gw)
    probe = lambda: call(gw, method, path, body, key=key)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 403, "forbidden")


async def test_auth_comes_before_the_body(gw: Gateway, redis: aioredis.Redis) -> None:
    probe = raw_post(gw, "/challenge", b"{not json", key=METRICS_KEY)
    await refused_without_trace(gw, redis, probe, 403, "forbidden")
    probe = raw_post(gw, "/challenge", b"x" * (MAX_BODY + 1), key=None)
    await refused_without_trace(gw, redis, probe, 401, "unauthorized")


# --- methods and paths -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/verify"),
        ("PUT", "/verify"),
        ("DELETE", "/verify"),
        ("GET", "/challenge"),
        ("PATCH", "/challenge"),
        ("POST", "/challenge/" + "A" * 28),
        ("GET", "/challenge/" + "A" * 28 + "/resend"),
    ],
)
async def test_wrong_method_is_405_json(
    gw: Gateway, redis: aioredis.Redis, method: str, path: str
) -> None:
    probe = lambda: call(gw, method, path)  # noqa: E731
    reply = await refused_without_trace(gw, redis, probe, 405, "method_not_allowed")
    assert reply.headers.get("Allow")


@pytest.mark.parametrize("key", [OTP_KEY, None])
@pytest.mark.parametrize("path", ["/nope", "/verify/x", "/challenge/a/b/c", "/challenges"])
async def test_unknown_path_is_404_json(
    gw: Gateway, redis: aioredis.Redis, path: str, key: str | None
) -> None:
    probe = lambda: call(gw, "POST", path, {}, key=key)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 404, "not_found")


# --- X-Request-ID --------------------------------------------------------------


async def test_request_id_is_echoed(gw: Gateway) -> None:
    await add_account(gw)
    for method, path, body, key in [
        ("POST", "/challenge", {"account_id": "alice"}, OTP_KEY),
        ("POST", "/verify", {}, OTP_KEY),
        ("GET", "/challenge/x", None, None),
        ("GET", "/nope", None, OTP_KEY),
    ]:
        reply = await call(
            gw, method, path, body, key=key, headers={"X-Request-ID": "front-42.a:b_C"}
        )
        assert reply.headers["X-Request-ID"] == "front-42.a:b_C", (path, reply.status)


@pytest.mark.parametrize("presented", [None, "", "has space", "x" * 65, "é", "a\tb", "<script>"])
async def test_request_id_is_generated_otherwise(gw: Gateway, presented: str | None) -> None:
    headers = {} if presented is None else {"X-Request-ID": presented}
    seen = set()
    for _ in range(2):
        reply = await call(gw, "POST", "/challenge", {"account_id": "x"}, headers=headers)
        request_id = reply.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{16}", request_id), request_id
        seen.add(request_id)
    assert len(seen) == 2


# --- the parser itself ---------------------------------------------------------
# Over HTTP a NaN also fails the field's type check; here the parser alone must refuse.


@pytest.mark.parametrize(
    "text",
    [
        b"NaN",
        b"[1, -Infinity]",
        b'{"a": {"b": [Infinity]}}',
        b'{"a": [{"k": 1, "k": 1}]}',
        b'{"a": 1, "a": 1}',
        b"[" * DEEP + b"]" * DEEP,
        b"1" * 5000,
        b"\xff",
        b"[1,]",
    ],
)
def test_parse_json_refuses(text: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_json(text)


def test_parse_json_accepts_plain_json() -> None:
    assert parse_json('{"a": [1, 2.5, "é", null, true], "b": {"a": 1}}'.encode()) == {
        "a": [1, 2.5, "é", None, True],
        "b": {"a": 1},
    }


# --- strings that are not Unicode: one check in the parser covers every field ----------
# "\ud800" is valid JSON (an escape) but no valid text: json.loads lets it through as
# a string that no .encode() takes. Each of these answered 500 before.

LONE = ["\ud800", "a\udfff", "\udc00b"]


@pytest.mark.parametrize("lone", LONE)
@pytest.mark.parametrize("field", ["device_label", "challenge_id", "code"])
async def test_lone_surrogates_in_verify_are_400(
    gw: Gateway, redis: aioredis.Redis, live: tuple[str, str], field: str, lone: str
) -> None:
    challenge_id, code = live
    body = {"challenge_id": challenge_id, "code": code, "trust_device": True, field: lone}
    probe = lambda: call(gw, "POST", "/verify", body)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 400, "invalid_request")
    assert (await status_of(gw, challenge_id))["attempts"] == 0


@pytest.mark.parametrize("field", ["trusted_device_token", "client_ip", "purpose", "account_id"])
async def test_lone_surrogates_in_challenge_are_400(
    gw: Gateway, redis: aioredis.Redis, field: str
) -> None:
    await add_account(gw)
    body = {"account_id": "alice", field: "x\ud800"}
    probe = lambda: call(gw, "POST", "/challenge", body)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 400, "invalid_request")


@pytest.mark.parametrize(
    "field", ["establishment", "last_name", "first_name", "email", "phone", "expires_at"]
)
async def test_lone_surrogates_in_account_fields_are_400(
    gw: Gateway, redis: aioredis.Redis, field: str
) -> None:
    body = {
        "account_id": "bob", "establishment": "Mairie", "last_name": "Durand",
        "first_name": "Bob", "email": "bob@example.org", "role": "user", field: "B\udfffb",
    }  # fmt: skip
    probe = lambda: call(gw, "POST", "/accounts", body, key=OPERATOR_KEY)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 400, "invalid_request")
    await add_account(gw)
    patch = {"email": "\ud800@example.org"} if field == "establishment" else {field: "\ud800"}
    probe = lambda: call(gw, "PATCH", "/accounts/alice", patch, key=OPERATOR_KEY)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 400, "invalid_request")


@pytest.mark.parametrize(
    "text",
    [b'"\\ud800"', b'{"a": ["ok", {"b": "\\udfff"}]}', b'{"\\udc00": 1}', b'["\\ude00\\ud83d"]'],
)
def test_parse_json_refuses_lone_surrogates_anywhere(text: bytes) -> None:
    with pytest.raises(InvalidRequest, match="surrogate"):
        parse_json(text)


def test_parse_json_accepts_surrogate_pairs() -> None:
    assert parse_json(b'{"label": "\\ud83d\\ude00 caf\\u00e9"}') == {"label": "\U0001f600 café"}


# --- media types: a JSON endpoint takes application/json (UTF-8), or no body ------------


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("text/plain", b'{"account_id": "alice"}'),
        ("text/plain; charset=utf-8", b'{"account_id": "alice"}'),
        ("application/x-www-form-urlencoded", b"account_id=alice"),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="a"'),
        ("application/octet-stream", b'{"account_id": "alice"}'),
        ("application/json; charset=latin-1", b'{"account_id": "alice"}'),
        ("application/json; charset=utf-16", b'{"account_id": "alice"}'),
        ("application/jsonx", b'{"account_id": "alice"}'),
        ("application/problem+json", b'{"account_id": "alice"}'),
        ("", b'{"account_id": "alice"}'),
    ],
)
async def test_a_body_that_is_not_json_is_415_and_sends_nothing(
    gw: Gateway, redis: aioredis.Redis, content_type: str, data: bytes
) -> None:
    await add_account(gw)
    headers = {"Content-Type": content_type}
    probe = lambda: call(gw, "POST", "/challenge", data=data, headers=headers)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON; charset=UTF-8"],
)
async def test_json_with_or_without_a_utf8_charset_is_accepted(
    gw: Gateway, content_type: str
) -> None:
    await add_account(gw)
    data = b'{"account_id": "alice"}'
    reply = await call(gw, "POST", "/challenge", data=data, headers={"Content-Type": content_type})
    assert reply.status == 202, reply.body


async def test_routes_with_optional_bodies_take_none_whatever_the_type(gw: Gateway) -> None:
    await add_account(gw)
    challenge_id = (await call(gw, "POST", "/challenge", {"account_id": "alice"})).body[
        "challenge_id"
    ]
    for headers in ({}, {"Content-Type": "text/plain"}):
        reply = await call(gw, "POST", f"/challenge/{challenge_id}/resend", headers=headers)
        assert reply.status == 202, reply.body
    reply = await call(gw, "POST", "/accounts/alice/renew", key=OPERATOR_KEY)
    assert reply.status == 200, reply.body


# Every route that reads a JSON body, with a key that passes its auth.
JSON_ROUTES = [
    ("POST", "/challenge", OTP_KEY),
    ("POST", "/verify", OTP_KEY),
    ("POST", "/challenge/" + "A" * 28 + "/resend", OTP_KEY),
    ("POST", "/accounts", OPERATOR_KEY),
    ("PATCH", "/accounts/alice", OPERATOR_KEY),
    ("PUT", "/accounts/alice/phone", OPERATOR_KEY),
    ("POST", "/accounts/alice/phone-change", OTP_KEY),
    ("POST", "/accounts/alice/phone-change/verify", OTP_KEY),
    ("PUT", "/accounts/alice/email", OTP_KEY),
    ("POST", "/accounts/alice/totp/confirm", OTP_KEY),
    ("POST", "/accounts/alice/totp/verify", OTP_KEY),
    ("POST", "/phones/blank", OPERATOR_KEY),
]


@pytest.mark.parametrize(("method", "path", "key"), JSON_ROUTES)
async def test_every_json_route_refuses_other_media_types(
    gw: Gateway, redis: aioredis.Redis, method: str, path: str, key: str
) -> None:
    await add_account(gw)
    headers = {"Content-Type": "text/plain"}
    probe = lambda: call(gw, method, path, key=key, data=b"{}", headers=headers)  # noqa: E731
    await refused_without_trace(gw, redis, probe, 415, "unsupported_media_type")
