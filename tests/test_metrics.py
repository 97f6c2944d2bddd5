"""Metrics (gateway/metrics.py): names, labels, what moves them, and scrapes.

Label values must come from bounded sets: never an account id, a number, a
code, a challenge id or a raw path.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from gateway.embedded import RedisServer, free_port
from gateway.metrics import DEAD_LETTER_REASONS, RATE_SCOPES, Metrics
from gateway.otp.challenges import RATE_MESSAGES
from gateway.otp.queue import Failure
from tests.support.config import METRICS_KEY, make_config
from tests.support.gateway import GatewayFactory, add_account, start_gateway
from tests.support.httpfake import Stub, StubFactory, closed_url
from tests.support.metrics import sample
from tests.support.ops import children, prometheus_tool, wait_healthy, write_config
from tests.support.otp import (
    MOBILE_DIGITS,
    NO_COOLDOWN,
    REUNION_MOBILE,
    call,
    challenge,
    code_for,
    verify,
    wrong,
)
from tests.support.poll import poll

# name -> (type, label names); counters are listed without their `_total`.
EXPECTED = {
    "otp_challenges": ("counter", {"purpose", "channel", "outcome"}),
    "otp_verifications": ("counter", {"purpose", "outcome"}),
    "otp_deliveries": ("counter", {"provider", "channel", "outcome"}),
    "otp_delivery_seconds": ("histogram", {"provider", "channel"}),
    "otp_voice_calls": ("counter", {"outcome"}),
    "otp_rate_limited": ("counter", {"scope"}),
    "otp_sends_by_country": ("counter", {"country"}),
    "otp_sends_dropped": ("counter", {"reason"}),
    "otp_sends_dead_lettered": ("counter", {"reason"}),
    "otp_http_request_duration_seconds": ("histogram", {"route", "method", "status"}),
    "otp_queue_depth": ("gauge", set()),
    "otp_queue_oldest_seconds": ("gauge", set()),
    "otp_dead_letters": ("gauge", set()),
    "otp_redis_up": ("gauge", set()),
    "otp_provider_up": ("gauge", {"provider"}),
    "otp_build_info": ("gauge", {"version"}),
}


def families(text: bytes | str) -> dict[str, Any]:
    if isinstance(text, bytes):
        text = text.decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def otp_label_values(text: bytes | str) -> set[tuple[str, str]]:
    return {
        (name, value)
        for family in families(text).values()
        if family.name.startswith("otp_")
        for s in family.samples
        for name, value in s.labels.items()
    }


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    with children(tmp_path) as start:
        yield start


def test_every_metric_has_its_name_type_and_labels(redis_server: RedisServer) -> None:
    metrics = Metrics()
    metrics.prime(make_config(redis_server.url))
    # Series that exist only once something happens, made here to see their labels.
    metrics.delivery_seconds.labels("p", "sms").observe(1)
    metrics.http_seconds.labels("/verify", "POST", "200").observe(0.01)
    metrics.sends_dropped.labels("expired").inc()
    metrics.provider_up.labels("p").set(1)
    found = families(metrics.render())
    for name, (kind, labels) in EXPECTED.items():
        assert name in found, name
        assert found[name].type == kind, name
        keys = {k for s in found[name].samples for k in s.labels if k != "le"}
        assert keys == labels, (name, keys)
    # Standard process metrics, to see restarts and memory per process.
    assert "process_start_time_seconds" in found


def test_primed_series_exist_at_zero(redis_server: RedisServer) -> None:
    config = make_config(redis_server.url)
    metrics = Metrics()
    metrics.prime(config)
    text = metrics.render().decode()
    for region in config.phones.allowed_regions:
        assert f'otp_sends_by_country_total{{country="{region}"}} 0.0' in text
    assert 'otp_challenges_total{channel="sms",outcome="queued",purpose="login"} 0.0' in text
    assert 'otp_verifications_total{outcome="verified",purpose="login"} 0.0' in text
    assert 'otp_rate_limited_total{scope="global"} 0.0' in text
    assert 'otp_voice_calls_total{outcome="machine"} 0.0' in text
    assert 'otp_sends_dead_lettered_total{reason="unreadable"} 0.0' in text
    # A region off the allow-list is counted as "other", never under its own name.
    metrics.count_send("ZZ")
    assert sample(metrics.render(), "otp_sends_by_country_total", country="other") == 1


def test_rate_scopes_are_the_rate_limit_scopes() -> None:
    assert set(RATE_SCOPES) == set(RATE_MESSAGES)


def test_dead_letter_reasons_are_the_worker_failures() -> None:
    assert set(DEAD_LETTER_REASONS) == {failure.value for failure in Failure}


async def test_otp_flow_moves_the_counters_with_bounded_labels(
    make_gateway: GatewayFactory,
) -> None:
    gw = await make_gateway(otp=NO_COOLDOWN, rate_limits={"account": "2/15m"})
    await add_account(gw)
    await add_account(gw, account_id="rey", phone=REUNION_MOBILE)
    first = await challenge(gw)
    second = await challenge(gw)  # replaces the first
    limited = await call(gw, "POST", "/challenge", {"account_id": "alice"})
    assert limited.status == 429
    rey = await challenge(gw, "rey")
    resent = await call(gw, "POST", f"/challenge/{rey['challenge_id']}/resend", {})
    assert resent.status == 202, resent.body
    code = await code_for(gw, second["challenge_id"])
    assert (await verify(gw, second["challenge_id"], wrong(code))).status == 422
    assert (await verify(gw, second["challenge_id"], code)).status == 200
    assert (await verify(gw, "x" * 28, code)).status == 404
    assert (await verify(gw, second["challenge_id"], "12ab")).status == 400

    text = gw.services.metrics.render()
    counted = {
        ("otp_challenges_total", "purpose=login,channel=sms,outcome=queued"): 3,
        ("otp_challenges_total", "purpose=login,channel=none,outcome=rate_limited"): 1,
        ("otp_rate_limited_total", "scope=account"): 1,
        ("otp_sends_by_country_total", "country=FR"): 2,
        ("otp_sends_by_country_total", "country=RE"): 2,
        ("otp_verifications_total", "purpose=login,outcome=verified"): 1,
        ("otp_verifications_total", "purpose=login,outcome=invalid_code"): 1,
        ("otp_verifications_total", "purpose=unknown,outcome=challenge_not_found"): 1,
        ("otp_verifications_total", "purpose=unknown,outcome=invalid_request"): 1,
        ("otp_http_request_duration_seconds_count", "route=/verify,method=POST,status=200"): 1,
        (
            "otp_http_request_duration_seconds_count",
            "route=/challenge/{challenge_id}/resend,method=POST,status=202",
        ): 1,
    }
    for (name, labels), value in counted.items():
        wanted = dict(pair.split("=", 1) for pair in labels.split(","))
        assert sample(text, name, **wanted) == value, (name, labels)

    secrets = {"alice", "rey", code, MOBILE_DIGITS, first["challenge_id"], rey["challenge_id"]}
    for name, value in otp_label_values(text):
        assert not any(s in value for s in secrets), (name, value)


async def test_routes_are_templates_and_methods_a_fixed_set(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    await gw.get("/challenge/some-raw-id-12345")
    await gw.client.get("/no/such/path/98765")
    await gw.client.request("PURGE", "/challenge")
    text = gw.services.metrics.render()
    routes = {r.canonical for r in gw.client.app.router.resources()} | {"unmatched"}
    values = otp_label_values(text)
    assert ("route", "/challenge/{challenge_id}") in values
    assert ("method", "other") in values
    assert {v for k, v in values if k == "route"} <= routes
    assert {v for k, v in values if k == "method"} <= {"GET", "POST", "other"}


async def test_scrape_reads_queue_and_dead_letters_from_redis(
    make_gateway: GatewayFactory,
) -> None:
    down = {"name": "down", "kind": "http", "url": closed_url(), "secret": "s" * 20}
    gw = await make_gateway(
        providers=[down], worker={"max_deliveries": 1}, sms={"fallback_to_voice": False}
    )
    await add_account(gw)
    await challenge(gw)
    resp = await gw.client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await resp.text()
    assert sample(text, "otp_redis_up") == 1
    assert sample(text, "otp_queue_depth") == 1
    assert 0 <= sample(text, "otp_queue_oldest_seconds") < 10
    assert sample(text, "otp_dead_letters") == 0

    await gw.drain()  # every provider fails: after one delivery, a dead letter
    text = await (await gw.client.get("/metrics")).text()
    assert sample(text, "otp_queue_depth") == 0
    assert sample(text, "otp_queue_oldest_seconds") == 0
    assert sample(text, "otp_dead_letters") == 1


@pytest.fixture
async def lone_gateway(
    tmp_path: Path, sink: Stub
) -> AsyncIterator[tuple[RedisServer, TestClient[web.Request, web.Application]]]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    config = make_config(server.url, server={"mode": "development", "metrics_auth": True})
    client = (await start_gateway(config, sink)).client
    try:
        yield server, client
    finally:
        await client.close()
        server.stop()


async def test_scrape_without_redis_says_so_and_still_serves(
    lone_gateway: tuple[RedisServer, TestClient[web.Request, web.Application]],
) -> None:
    server, client = lone_gateway
    headers = {"Authorization": f"Bearer {METRICS_KEY}"}
    assert (await client.get("/metrics")).status == 401  # metrics_auth = true
    assert sample(await (await client.get("/metrics", headers=headers)).text(), "otp_redis_up") == 1
    server.stop()
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200
    text = await resp.text()
    assert sample(text, "otp_redis_up") == 0
    assert sample(text, "otp_sends_by_country_total", country="FR") == 0  # counters still there
    server.start()

    async def back() -> bool:
        text = await (await client.get("/metrics", headers=headers)).text()
        return sample(text, "otp_redis_up") == 1

    await poll(back, within=10, what="otp_redis_up back to 1")


async def test_worker_scrape_reads_the_queue_from_redis(
    make_gateway: GatewayFactory,
    stubs: StubFactory,
    spawn: Any,
    redis_server: RedisServer,
    redis: aioredis.Redis,
    tmp_path: Path,
) -> None:
    stub = await stubs(hold_first=True)  # the send stays in flight, so in the queue
    providers = [stub.provider("hook")]
    port = free_port()
    config = write_config(
        tmp_path / "worker.toml", redis_server.url, providers,
        server={"metrics_auth": True}, worker={"metrics_port": port},
    )  # fmt: skip
    worker = spawn("worker", "--config", str(config))
    base = f"http://127.0.0.1:{port}"
    await wait_healthy(worker, base)
    gw = await make_gateway(providers=providers)
    await add_account(gw)
    await challenge(gw)
    await poll(lambda: stub.arrived.is_set(), within=10, what="the held send")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/metrics") as resp:
            assert resp.status == 401  # the same metrics_auth rule as the gateway
        headers = {"Authorization": f"Bearer {METRICS_KEY}"}
        async with session.get(f"{base}/metrics", headers=headers) as resp:
            assert resp.status == 200
            text = await resp.text()
    assert sample(text, "otp_redis_up") == 1
    assert sample(text, "otp_queue_depth") == 1
    assert sample(text, "otp_queue_oldest_seconds") > 0
    assert sample(text, "otp_provider_up", provider="hook") == 1


def promtool_check_metrics(text: str) -> None:
    """`promtool check metrics` on a scrape: exit 0 and not one lint message."""
    result = subprocess.run(
        [prometheus_tool("promtool"), "check", "metrics"],
        input=text, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


async def test_promtool_accepts_real_scrapes_of_a_gateway_and_a_worker(
    make_gateway: GatewayFactory,
    sink: Stub,
    spawn: Any,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    prometheus_tool("promtool")
    providers = [sink.provider("hook")]
    port = free_port()
    config = write_config(
        tmp_path / "w.toml", redis_server.url, providers, worker={"metrics_port": port}
    )
    worker = spawn("worker", "--config", str(config))
    base = f"http://127.0.0.1:{port}"
    await wait_healthy(worker, base)
    gw = await make_gateway(providers=providers)
    await add_account(gw)
    created = await challenge(gw)
    await poll(lambda: bool(sink.codes(created["challenge_id"])), what="the send")
    code = sink.codes(created["challenge_id"])[0]
    await verify(gw, created["challenge_id"], wrong(code))
    await verify(gw, created["challenge_id"], code)
    promtool_check_metrics(await (await gw.client.get("/metrics")).text())
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as resp:
        worker_text = await resp.text()
    assert sample(worker_text, "otp_deliveries_total", outcome="accepted") == 1
    promtool_check_metrics(worker_text)
