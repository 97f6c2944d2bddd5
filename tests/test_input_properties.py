"""Every route, hostile input (hypothesis): never a 5xx, the error shape, no write on a 4xx.

The routes come from the application's own router, so a route added later is
covered without touching this file; so are the body fields, read from the
handlers' field specs. Each example is one raw HTTP request (tests/support/rawhttp.py:
header bytes that are not UTF-8, bodies in any media type, path segments
with anything percent-encoded) to a gateway on a real socket and a real
Redis, whose every key and value is compared before and after a 4xx.
"""

from __future__ import annotations

import json
from importlib import import_module
from typing import Any
from urllib.parse import quote

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.web.body import Field
from tests.support.config import ADMIN_KEY, METRICS_KEY, OPERATOR_KEY, OTP_KEY, make_config
from tests.support.dates import iso_in
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.httpfake import Stub
from tests.support.otp import redis_fingerprint
from tests.support.rawhttp import exchange, request
from tests.support.twilio import unreachable_twilio

# --- what to attack: read from the application itself ----------------------------------


def _routes() -> list[tuple[str, str]]:
    # Built, never started: no Redis is reached at construction.
    app = create_app(make_config("redis://127.0.0.1:1/0"), run_worker=False)
    found = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "*")
        # The console answers HTML pages, not the JSON error shape these properties
        # check: tests/test_console.py gives it bad input of its own. /docs and the
        # step's files take no input (tests/test_pages.py).
        and not route.resource.canonical.startswith(("/console", "/docs", "/static/"))
    }
    return sorted(found, key=lambda r: (r[1], r[0]))


def _field_names() -> list[str]:
    """Every body field some handler declares (its `{name: Field}` specs)."""
    names: set[str] = set()
    for module in ("otp", "accounts", "selfservice", "totp"):
        for value in vars(import_module(f"gateway.web.{module}")).values():
            if (
                isinstance(value, dict)
                and value
                and all(isinstance(v, Field) for v in value.values())
            ):
                names.update(value)
    return sorted(names)


ROUTES = _routes()
FIELDS = _field_names()
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def test_the_routes_and_fields_are_found() -> None:
    assert len(ROUTES) >= 30 and ("POST", "/challenge") in ROUTES
    assert ("POST", "/callbacks/{provider}/status") in ROUTES
    assert {"account_id", "code", "device_label", "email", "establishment"} <= set(FIELDS)


# --- hostile input ----------------------------------------------------------------------

CHALLENGE = "A" * 28
SAMPLES = [
    "", " ", "alice", "boss", "carol", CHALLENGE, "twilio", "sink", "login", "account.create",
    "sms", "voice", "admin", "user", "operator", "suspended", "+33612345678", "06 12 34 56 78",
    "alice@example.org", "Mairie de Luisant", iso_in(30), iso_in(-1), "0060-00-00", "0-0",
    "18446744073709551616-0", "123456", "\ud800", "a\udfff", "\x00", "\u202e", "é", "../..",
    "%00", "0" * 300, "-1", "1e309",
]  # fmt: skip
text = st.one_of(st.sampled_from(SAMPLES), st.text(max_size=30), st.characters().map(str))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
objects = st.dictionaries(st.sampled_from(FIELDS) | text, json_values, max_size=6)


def _encoded(value: Any) -> bytes:
    # ensure_ascii writes a lone surrogate as the \udXXX escape a client would send.
    return json.dumps(value, allow_nan=True).encode()


bodies = st.one_of(
    st.none(),
    objects.map(_encoded),
    objects.map(_encoded),
    json_values.map(_encoded),
    st.binary(max_size=120),
    objects.map(_encoded).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
)
# Bytes a header value may hold on the wire (visible ASCII and obs-text): an
# aiohttp that refuses the rest answers itself, before any route.
header_bytes = st.lists(
    st.sampled_from([*range(0x20, 0x7F), *range(0x80, 0x100)]), max_size=40
).map(bytes)
keys = st.sampled_from([OTP_KEY, ADMIN_KEY, OPERATOR_KEY, METRICS_KEY])
bearer = keys.map(lambda k: f"Bearer {k}".encode())
# Mostly a real key (of any scope): a refusal at the door tests little else.
authorization = st.one_of(
    bearer, bearer, bearer, bearer, st.none(), header_bytes, header_bytes.map(b"Bearer ".__add__)
)
content_types = st.one_of(
    st.just("application/json"),
    st.just("application/json"),
    st.none(),
    st.sampled_from(
        [
            "application/json; charset=utf-8",
            "application/json; charset=latin-1", "text/plain", "multipart/form-data",
            "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=nope",
        ]
    ),
    header_bytes.map(lambda b: b.decode("latin-1")),
)  # fmt: skip
optional_header = st.one_of(st.none(), st.sampled_from([b"boss", b"alice"]), header_bytes)
queries = st.dictionaries(
    st.sampled_from(["page", "per_page", "limit", "before", "establishment", "c", "n", "t"]) | text,
    text,
    max_size=3,
)


def _segment(value: str) -> str:
    return quote(value, safe="", errors="surrogatepass") or "x"


@st.composite
def hostile_requests(draw: st.DrawFn, method: str, template: str) -> bytes:
    """A raw request aimed at one route: mostly its own method, any header, body, path."""
    path = template
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + _segment(draw(text)) + path[end + 1 :]
    query = draw(queries)
    if query:
        path += "?" + "&".join(f"{_segment(k)}={_segment(v)}" for k, v in query.items())
    headers: dict[str, str | bytes] = {}
    named = {
        "Authorization": draw(authorization),
        "Content-Type": draw(content_types),
        "X-Acting-Account": draw(optional_header),
        "X-Step-Up-Token": draw(optional_header),
        "X-Request-ID": draw(optional_header),
    }
    headers = {name: value for name, value in named.items() if value is not None}
    verb = draw(st.sampled_from([method] * 10 + METHODS))
    return request(verb, path, headers, draw(bodies))


# --- the property -----------------------------------------------------------------------

TWILIO = unreachable_twilio(("voice",))


@pytest.fixture
async def target(make_gateway: GatewayFactory, sink: Stub) -> Gateway:
    """A gateway with an admin, a user and their establishment; limits that never
    expire within the test, so a key's TTL cannot pass for a write."""
    still = {k: "100/100d" for k in ("account", "number", "ip", "country", "global", "failures")}
    gw = await make_gateway(
        rate_limits=still,
        otp={"resend_cooldown_seconds": 0},
        providers=[sink.provider(channels=("sms",)), TWILIO],
    )
    await add_account(gw, account_id="boss", role="admin", email="boss@example.org")
    await add_account(gw)
    await gw.drain()  # the queue's group exists before any snapshot
    return gw


@pytest.mark.parametrize(("method", "template"), ROUTES)
@settings(
    max_examples=15,
    deadline=None,
    derandomize=True,  # the same examples every run: the suite stays deterministic
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one gateway per route, not per example
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
async def test_hostile_input_is_never_a_5xx_and_a_4xx_writes_nothing(
    target: Gateway, redis: aioredis.Redis, method: str, template: str, data: st.DataObject
) -> None:
    raw = data.draw(hostile_requests(method, template), label="request")
    before = await redis_fingerprint(redis)
    reply = await exchange(target.client.port, raw)
    event(f"status {reply.status}")
    assert reply.status < 500, (reply.status, reply.body)
    if reply.status < 400:
        return
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.body
    body = reply.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert await redis_fingerprint(redis) == before, (reply.status, body)
