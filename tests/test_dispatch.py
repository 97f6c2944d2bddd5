"""Failover across providers, and provider discovery through entry points."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.app import create_app
from gateway.config import ProviderConfig
from gateway.errors import ConfigError
from gateway.provider import ProviderContext, available_kinds, build_providers
from tests.support.config import make_config
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.httpfake import Stub, StubFactory, closed_url
from tests.support.metrics import sample
from tests.support.poll import poll
from tests.support.queues import dead_count, queued

DEV = ProviderContext(development=True, public_url="http://127.0.0.1:8080")


async def send_one(gw: Gateway, **body: Any) -> str:
    """Create alice's challenge and drain the queue; returns the challenge id."""
    await add_account(gw)
    resp = await gw.post("/challenge", {"account_id": "alice", **body})
    assert resp.status == 202, await resp.text()
    challenge_id: str = (await resp.json())["challenge_id"]
    assert await gw.drain() == 1
    return challenge_id


async def delivery(gw: Gateway, challenge_id: str) -> str:
    resp = await gw.get(f"/challenge/{challenge_id}")
    state: str = (await resp.json())["delivery"]
    return state


def deliveries(gw: Gateway, provider: str, outcome: str) -> float:
    return sample(
        gw.services.metrics.render(), "otp_deliveries_total", provider=provider, outcome=outcome
    )


# --- failover -------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
async def test_retryable_status_fails_over_to_the_next_provider(
    make_gateway: GatewayFactory, stubs: StubFactory, sink: Stub, redis: aioredis.Redis, status: int
) -> None:
    first = await stubs(status=status)
    gw = await make_gateway(providers=[first.provider("first"), sink.provider("second")])
    challenge_id = await send_one(gw)
    assert len(first.hits) == 1
    assert len(sink.codes(challenge_id)) == 1
    assert await delivery(gw, challenge_id) == "sent"
    assert deliveries(gw, "first", "unavailable") == 1
    assert deliveries(gw, "second", "accepted") == 1
    assert await queued(redis) == 0


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_final_rejection_does_not_fail_over(
    make_gateway: GatewayFactory, stubs: StubFactory, sink: Stub, redis: aioredis.Redis, status: int
) -> None:
    first = await stubs(status=status)
    gw = await make_gateway(
        providers=[first.provider("first"), sink.provider("second")],
        sms={"fallback_to_voice": False},  # the SMS alone: no call follows
    )
    challenge_id = await send_one(gw)
    assert len(first.hits) == 1
    assert sink.received == []
    assert await delivery(gw, challenge_id) == "unreachable"
    assert deliveries(gw, "first", "rejected") == 1
    assert deliveries(gw, "second", "accepted") == 0
    # Final: acknowledged, neither retried nor dead-lettered.
    assert await queued(redis) == 0
    assert await dead_count(redis) == 0
    assert await gw.drain() == 0
    assert len(first.hits) == 1


async def test_refused_connection_fails_over(make_gateway: GatewayFactory, sink: Stub) -> None:
    gone = {**sink.provider("first"), "url": closed_url()}
    gw = await make_gateway(providers=[gone, sink.provider("second")])
    challenge_id = await send_one(gw)
    assert len(sink.codes(challenge_id)) == 1
    assert await delivery(gw, challenge_id) == "sent"
    assert deliveries(gw, "first", "unavailable") == 1
    assert deliveries(gw, "second", "accepted") == 1


async def test_provider_timeout_fails_over(
    make_gateway: GatewayFactory, stubs: StubFactory, sink: Stub
) -> None:
    slow = await stubs(delay=10)
    gw = await make_gateway(
        providers=[slow.provider("first", timeout_seconds=0.2), sink.provider("second")]
    )
    challenge_id = await send_one(gw)
    assert len(slow.hits) == 1 and slow.accepted == []
    assert len(sink.codes(challenge_id)) == 1
    assert deliveries(gw, "first", "unavailable") == 1
    assert deliveries(gw, "second", "accepted") == 1


async def test_dispatcher_send_timeout_fails_over(
    make_gateway: GatewayFactory, stubs: StubFactory, sink: Stub
) -> None:
    """`[worker] send_timeout_seconds` bounds a provider whatever its own timeout."""
    slow = await stubs(delay=10)
    gw = await make_gateway(
        providers=[slow.provider("first"), sink.provider("second")],
        worker={"send_timeout_seconds": 0.2},
    )
    challenge_id = await send_one(gw)
    assert len(sink.codes(challenge_id)) == 1
    assert deliveries(gw, "first", "unavailable") == 1


async def test_providers_are_tried_in_order_and_only_for_their_channels(
    make_gateway: GatewayFactory, stubs: StubFactory
) -> None:
    sms_only = await stubs()
    voice_only = await stubs()
    both = await stubs()
    gw = await make_gateway(
        providers=[
            voice_only.provider("voice-only", ("voice",)),
            sms_only.provider("sms-only", ("sms",)),
            both.provider("both"),
        ]
    )
    sms_id = await send_one(gw)
    body = {"account_id": "alice", "channel": "voice", "purpose": "rncps"}
    resp = await gw.post("/challenge", body)
    assert resp.status == 202, await resp.text()
    voice_id = (await resp.json())["challenge_id"]
    assert await gw.drain() == 1
    assert [h.json["challenge_id"] for h in sms_only.hits] == [sms_id]
    assert [h.json["challenge_id"] for h in voice_only.hits] == [voice_id]
    assert voice_only.hits[0].json["channel"] == "voice"
    assert both.hits == []


async def test_failover_continues_past_several_failures(
    make_gateway: GatewayFactory, stubs: StubFactory
) -> None:
    down: Stub = await stubs(status=503)
    last = await stubs()
    gw = await make_gateway(
        providers=[
            down.provider("a"),
            {**down.provider("b"), "url": closed_url()},
            last.provider("c"),
        ]
    )
    challenge_id = await send_one(gw)
    assert last.codes(challenge_id)
    assert deliveries(gw, "a", "unavailable") == 1
    assert deliveries(gw, "b", "unavailable") == 1
    assert deliveries(gw, "c", "accepted") == 1


# --- discovery through entry points ----------------------------------------------

PLUGIN = textwrap.dedent(
    '''
    """A third-party provider, installed as its own distribution."""

    from gateway.errors import ProviderUnavailable
    from gateway.provider import SendReceipt, reject_unknown_options


    class BrokenProvider:
        """Raises something no provider should: the dispatcher must shrug it off."""

        def __init__(self, config, context):
            reject_unknown_options(config.options, {"mode"}, f"providers.{config.name}")
            self.name = config.name
            self.channels = config.channels
            self.mode = config.options.get("mode", "bug")

        async def send(self, message):
            if self.mode == "bug":
                raise RuntimeError("a bug in a plugin")
            raise ProviderUnavailable("down")

        async def aclose(self):
            pass
    '''
)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Installs `acme_otp` (entry point kind "acme") on sys.path, as pip would."""
    (tmp_path / "acme_otp.py").write_text(PLUGIN)
    info = tmp_path / "acme_otp-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-otp\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[otp_gateway.providers]\nacme = acme_otp:BrokenProvider\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "acme"
    sys.modules.pop("acme_otp", None)


def test_builtin_kinds_are_entry_points() -> None:
    kinds = available_kinds()
    assert {"console", "http"} <= set(kinds)
    assert kinds["http"].value == "providers.http:HttpProvider"
    assert kinds["console"].value == "providers.console:ConsoleProvider"


def test_a_plugin_distribution_adds_a_kind(plugin: str) -> None:
    assert plugin in available_kinds()
    [provider] = build_providers((ProviderConfig("acme1", plugin, ("sms",), {}),), DEV)
    assert provider.name == "acme1" and provider.channels == ("sms",)


async def test_a_provider_bug_does_not_stop_failover(
    plugin: str, make_gateway: GatewayFactory, sink: Stub
) -> None:
    gw = await make_gateway(
        providers=[
            {"name": "buggy", "kind": plugin, "channels": ["sms"]},
            {"name": "down", "kind": plugin, "channels": ["sms"], "mode": "down"},
            sink.provider("second"),
        ]
    )
    challenge_id = await send_one(gw)
    assert len(sink.codes(challenge_id)) == 1
    assert deliveries(gw, "buggy", "error") == 1
    assert deliveries(gw, "down", "unavailable") == 1
    assert deliveries(gw, "second", "accepted") == 1


def test_unknown_kind_names_the_key() -> None:
    configs = (
        ProviderConfig("ok", "console", ("sms",), {}),
        ProviderConfig("nope", "carrier-pigeon", ("sms",), {}),
    )
    with pytest.raises(ConfigError) as info:
        build_providers(configs, DEV)
    assert info.value.key == "providers[1].kind"
    assert "carrier-pigeon" in str(info.value)
    assert "http" in str(info.value)  # it lists the known kinds


def test_unknown_kind_stops_the_app_at_build() -> None:
    config = make_config(
        "redis://127.0.0.1:1/0", providers=[{"name": "x", "kind": "nope", "channels": ["sms"]}]
    )
    with pytest.raises(ConfigError) as info:
        create_app(config)
    assert info.value.key == "providers[0].kind"


# --- circuit breakers ------------------------------------------------------------------


def provider_up(gw: Gateway, provider: str) -> float:
    return sample(gw.services.metrics.render(), "otp_provider_up", provider=provider)


async def test_breaker_skips_a_dead_provider_then_probes_it(
    make_gateway: GatewayFactory, stubs: StubFactory, sink: Stub
) -> None:
    down = await stubs(status=503)
    gw = await make_gateway(
        providers=[down.provider("first"), sink.provider("second")],
        worker={"breaker_threshold": 2, "breaker_open_seconds": 0.3},
    )
    breaker = gw.services.dispatcher.breakers["first"]
    assert provider_up(gw, "first") == 1
    for i in range(4):
        await add_account(gw, account_id=f"u{i}", phone=f"06 12 34 56 {i:02d}")
        resp = await gw.post("/challenge", {"account_id": f"u{i}"})
        assert resp.status == 202
        assert await gw.drain() == 1
    assert len(down.hits) == 2  # then skipped
    assert len(sink.received) == 4  # nobody went without their code
    assert deliveries(gw, "first", "circuit_open") == 2
    assert provider_up(gw, "first") == 0 and provider_up(gw, "second") == 1

    down.status = 200  # back up: the probe after the open time closes the breaker
    await poll(lambda: breaker.retry_in() == 0, within=3, what="the open time")
    await add_account(gw, account_id="u9", phone="06 12 34 56 99")
    assert (await gw.post("/challenge", {"account_id": "u9"})).status == 202
    assert await gw.drain() == 1
    assert len(down.accepted) == 1 and provider_up(gw, "first") == 1


async def test_a_refused_number_does_not_trip_the_breaker(
    make_gateway: GatewayFactory, stubs: StubFactory
) -> None:
    refusing = await stubs(status=400)
    gw = await make_gateway(
        providers=[refusing.provider("first")],
        worker={"breaker_threshold": 1},
        sms={"fallback_to_voice": False},  # one send: the refused SMS
    )
    await send_one(gw)
    assert str(gw.services.dispatcher.breakers["first"].state) == "closed"
    assert provider_up(gw, "first") == 1
