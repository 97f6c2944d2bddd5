"""The `http` provider against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.config import ProviderConfig
from gateway.errors import ConfigError, ProviderRejected, ProviderUnavailable
from gateway.provider import (
    OutboundMessage,
    Provider,
    ProviderContext,
    SendReceipt,
    build_providers,
)
from providers.http import HttpProvider
from tests.support.httpfake import SINK_SECRET, Stub, StubFactory, closed_url, stub_servers

PROD = ProviderContext(development=False, public_url="https://otp.example.org")
MESSAGE = OutboundMessage(
    challenge_id="abcdefghijklmnopqrstuvwxyz01",
    channel="sms",
    to="+33612345678",
    code="123456",
    text="Code 123456 pour connexion. Valable 5 min. Ne le communiquez jamais.",
    attempt=2,
    purpose="login",
)


@pytest.fixture
async def stubs() -> AsyncIterator[StubFactory]:
    async with stub_servers() as make:
        yield make


def http(url: str, name: str = "hook", **options: Any) -> HttpProvider:
    opts = {"url": url, "secret": SINK_SECRET, **options}
    return HttpProvider(ProviderConfig(name, "http", ("sms", "voice"), opts), PROD)


async def send(stub: Stub, **options: Any) -> SendReceipt:
    provider = http(stub.url, **options)
    try:
        return await provider.send(MESSAGE)
    finally:
        await provider.aclose()


async def test_posts_signed_json_with_an_idempotency_key(stubs: StubFactory) -> None:
    stub = await stubs()
    receipt = await send(stub)
    assert receipt.provider_ref == "abcdefghijklmnopqrstuvwxyz01:2"
    [hit] = stub.hits
    assert json.loads(hit.body) == {
        "challenge_id": MESSAGE.challenge_id,
        "channel": "sms",
        "to": "+33612345678",
        "code": "123456",
        "message": MESSAGE.text,
        "attempt": 2,
    }
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.signature_ok(SINK_SECRET)
    assert not hit.signature_ok("another-secret-0123456789")
    assert hit.headers["Idempotency-Key"] == f"{MESSAGE.challenge_id}:2"


def test_is_a_provider() -> None:
    provider = http("http://127.0.0.1:9/send")
    assert isinstance(provider, Provider)
    assert provider.name == "hook" and provider.channels == ("sms", "voice")


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_any_2xx_is_accepted(stubs: StubFactory, status: int) -> None:
    stub = await stubs(status=status)
    assert isinstance(await send(stub), SendReceipt)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 425, 429])
async def test_5xx_and_throttling_are_retryable(stubs: StubFactory, status: int) -> None:
    stub = await stubs(status=status)
    with pytest.raises(ProviderUnavailable) as info:
        await send(stub)
    assert str(status) in str(info.value)
    assert "123456" not in str(info.value) and "+336" not in str(info.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
async def test_other_4xx_are_final(stubs: StubFactory, status: int) -> None:
    stub = await stubs(status=status)
    with pytest.raises(ProviderRejected) as info:
        await send(stub)
    assert str(status) in str(info.value)


async def test_refused_connection_is_retryable() -> None:
    provider = http(closed_url())
    try:
        with pytest.raises(ProviderUnavailable):
            await provider.send(MESSAGE)
    finally:
        await provider.aclose()


async def test_slow_server_times_out_as_retryable(stubs: StubFactory) -> None:
    stub = await stubs(delay=10)
    with pytest.raises(ProviderUnavailable):
        await send(stub, timeout_seconds=0.2)
    assert len(stub.hits) == 1 and stub.accepted == []


async def test_session_is_reused_and_closed(stubs: StubFactory) -> None:
    stub = await stubs()
    provider = http(stub.url)
    await provider.send(MESSAGE)
    await provider.send(MESSAGE)
    assert len(stub.hits) == 2
    await provider.aclose()
    await provider.aclose()  # twice is fine


# --- configuration ---------------------------------------------------------------


@pytest.mark.parametrize("missing", ["url", "secret"])
def test_missing_option_names_the_key(missing: str) -> None:
    options = {"url": "http://127.0.0.1:9000/send", "secret": SINK_SECRET}
    del options[missing]
    with pytest.raises(ConfigError) as info:
        HttpProvider(ProviderConfig("hook", "http", ("sms",), options), PROD)
    assert info.value.key == f"providers.hook.{missing}"
    assert f"providers.hook.{missing}" in str(info.value)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"colour": "blue"}, "providers.hook.colour"),
        ({"url": "ftp://127.0.0.1/send"}, "providers.hook.url"),
        ({"url": 8080}, "providers.hook.url"),
        ({"secret": "short"}, "providers.hook.secret"),
        ({"timeout_seconds": "fast"}, "providers.hook.timeout_seconds"),
    ],
)
def test_bad_option_names_the_key(options: dict[str, Any], key: str) -> None:
    full = {"url": "http://127.0.0.1:9000/send", "secret": SINK_SECRET, **options}
    with pytest.raises(ConfigError) as info:
        HttpProvider(ProviderConfig("hook", "http", ("sms",), full), PROD)
    assert info.value.key == key
    assert SINK_SECRET not in str(info.value)


def test_built_through_its_entry_point() -> None:
    options = {"url": "http://127.0.0.1:9000/send", "secret": SINK_SECRET, "timeout_seconds": 3}
    [provider] = build_providers((ProviderConfig("hook", "http", ("voice",), options),), PROD)
    assert isinstance(provider, HttpProvider)
    assert provider.channels == ("voice",)
