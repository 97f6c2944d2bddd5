"""The `ovh` provider on the wire, against a fake OVHcloud API that checks every signature."""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import ProviderConfig, config_from_dict
from gateway.errors import ConfigError, ProviderRejected, ProviderUnavailable
from gateway.provider import DeliveryEvent, OutboundMessage, ProviderContext, available_kinds
from providers.ovh import RELAY_HEADER, OvhProvider, delivery_state, ovh_signature
from tests.support.config import SECRET
from tests.support.httpfake import closed_url
from tests.support.ovh import FakeOvh, fake_ovh
from tests.support.poll import poll

CONTEXT = ProviderContext(development=False, public_url="https://otp.example.org")
CHALLENGE = "abcdefghijklmnopqrstuvwxyz01"
TO = "+33612345678"
SMS = OutboundMessage(CHALLENGE, "sms", TO, "041290", "Code 041290 de connexion.", 2, "login")


def provider(fake: FakeOvh, context: ProviderContext = CONTEXT, **options: Any) -> OvhProvider:
    table = fake.provider(**{"follow_seconds": 0, **options})
    opts = {k: v for k, v in table.items() if k not in ("name", "kind", "channels")}
    return OvhProvider(ProviderConfig("ovh", "ovh", ("sms",), opts), context)


@pytest.fixture
async def fake() -> AsyncIterator[FakeOvh]:
    async with fake_ovh() as f:
        yield f


def test_the_entry_point_names_the_provider() -> None:
    assert available_kinds()["ovh"].load() is OvhProvider


def test_the_signature_is_ovhclouds() -> None:
    # SHA-1 over secret+consumer+METHOD+URL+body+timestamp, "$1$" in front.
    url = "https://eu.api.ovh.com/1.0/sms/sms-ab12345-1/jobs"
    data = f"AS+CK+POST+{url}+{{}}+1700000000".encode()
    expected = "$1$" + hashlib.sha1(data).hexdigest()
    assert ovh_signature("AS", "CK", "post", url, "{}", "1700000000") == expected


async def test_an_sms_is_sent_signed_and_as_documented(fake: FakeOvh) -> None:
    p = provider(fake)
    try:
        receipt = await p.send(SMS)
    finally:
        await p.aclose()
    [job] = fake.jobs
    assert receipt.provider_ref == str(job.id)
    assert fake.refused == []  # the fake recomputed and accepted the signature
    assert job.body == {
        "message": "Code 041290 de connexion.",
        "receivers": [TO],
        "sender": "MAIRIE",
        "noStopClause": True,
        "priority": "high",
        "validityPeriod": 5,
        "charset": "UTF-8",
        "coding": "7bit",
        "tag": CHALLENGE[:16],
    }


async def test_a_wrong_secret_is_refused_by_the_fake_as_a_credential_failure(
    fake: FakeOvh,
) -> None:
    p = provider(fake, application_secret="wrongSecret0123456789abcdefABCD")
    try:
        with pytest.raises(ProviderUnavailable, match="credentials 400 INVALID_SIGNATURE"):
            await p.send(SMS)
    finally:
        await p.aclose()
    assert fake.refused == ["INVALID_SIGNATURE"]
    assert fake.jobs == []


async def test_a_wrong_consumer_key_is_a_credential_failure(fake: FakeOvh) -> None:
    p = provider(fake, consumer_key="revokedConsumerKey0123456789")
    try:
        with pytest.raises(ProviderUnavailable, match="credentials 403 INVALID_CREDENTIAL"):
            await p.send(SMS)
    finally:
        await p.aclose()


async def test_the_servers_clock_is_used_when_ours_is_off(fake: FakeOvh) -> None:
    fake.skew = 3600  # OVHcloud's clock an hour ahead of ours
    p = provider(fake)
    try:
        await p.send(SMS)
        await p.send(SMS)
    finally:
        await p.aclose()
    assert len(fake.jobs) == 2
    assert fake.refused == []


async def test_a_refused_timestamp_makes_it_ask_the_time_again(fake: FakeOvh) -> None:
    p = provider(fake)
    try:
        await p.send(SMS)  # the offset is taken: 0
        fake.skew = 600  # then OVHcloud's clock (or ours) jumps
        with pytest.raises(ProviderUnavailable, match="QUERY_TIME_OUT"):
            await p.send(SMS)
        await p.send(SMS)  # the next send asks /auth/time again
    finally:
        await p.aclose()
    assert fake.refused == ["QUERY_TIME_OUT"]
    assert len(fake.jobs) == 2


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_fail_over(fake: FakeOvh, status: int) -> None:
    fake.outage = status
    p = provider(fake)
    try:
        with pytest.raises(ProviderUnavailable, match=f"HTTP {status}"):
            await p.send(SMS)
    finally:
        await p.aclose()


async def test_no_credit_left_fails_over_and_says_nothing_of_the_number(fake: FakeOvh) -> None:
    fake.credits = 0
    p = provider(fake)
    try:
        with pytest.raises(ProviderUnavailable) as raised:
            await p.send(SMS)
    finally:
        await p.aclose()
    assert str(raised.value) == "ovh: ovh HTTP 403"
    assert fake.jobs == []


async def test_an_invalid_receiver_is_final(fake: FakeOvh) -> None:
    fake.invalid.add(TO)
    p = provider(fake)
    try:
        with pytest.raises(ProviderRejected, match="invalid receiver") as raised:
            await p.send(SMS)
    finally:
        await p.aclose()
    assert TO not in str(raised.value)


async def test_a_job_whose_answer_never_came_is_not_sent_again(fake: FakeOvh) -> None:
    fake.slow = 5  # the job is taken, the answer comes after our timeout
    p = provider(fake, timeout_seconds=0.2)
    try:
        with pytest.raises(ProviderRejected, match="no answer from ovh"):
            await p.send(SMS)
        # An API that takes jobs and hangs must not make every code fail: the
        # next sends fail over at once, so the breaker sees them.
        fake.slow = 0
        with pytest.raises(ProviderUnavailable, match="holding off"):
            await p.send(SMS)
    finally:
        await p.aclose()
    assert len(fake.jobs) == 1


async def test_a_refused_connection_fails_over() -> None:
    dead = closed_url().removesuffix("/send")
    opts = FakeOvh(base=dead).provider(follow_seconds=0)
    opts = {k: v for k, v in opts.items() if k not in ("name", "kind", "channels")}
    p = OvhProvider(ProviderConfig("ovh", "ovh", ("sms",), opts), CONTEXT)
    try:
        with pytest.raises(ProviderUnavailable):
            await p.send(SMS)
    finally:
        await p.aclose()


def test_receipts_map_to_delivery_states() -> None:
    assert delivery_state({"dlr": "1"}) == DeliveryEvent("message", "delivered")
    assert delivery_state({"dlr": "2"}) == DeliveryEvent("message", "failed")
    assert delivery_state({"dlr": "16"}) == DeliveryEvent("message", "failed")
    assert delivery_state({"dlr": "8"}) == DeliveryEvent("message", "sent")
    assert delivery_state({"dlr": "7"}) is None
    assert delivery_state({}) is None


async def test_the_receipt_is_followed_and_relayed_signed(fake: FakeOvh) -> None:
    relayed: list[tuple[str, dict[str, str], dict[str, str]]] = []

    async def receive(request: web.Request) -> web.Response:
        form = await request.post()
        relayed.append((request.raw_path, {k: str(v) for k, v in form.items()},
                        dict(request.headers)))  # fmt: skip
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/callbacks/ovh/status", receive)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    public = str(server.make_url("")).rstrip("/")
    fake.receipts[TO] = 2
    p = provider(fake, ProviderContext(False, public), follow_seconds=5)
    try:
        receipt = await p.send(SMS)
        await poll(lambda: bool(relayed), what="a relayed receipt")
        path, form, headers = relayed[0]
        assert path == f"/callbacks/ovh/status?c={CHALLENGE}&n=2"
        assert form == {"id": receipt.provider_ref, "dlr": "2"}
        params = list(form.items())
        assert p.verify_callback(public + path, params, headers)
        assert p.delivery_event(form) == DeliveryEvent("message", "failed")
        forged = {**headers, RELAY_HEADER: "0" * 64}
        assert not p.verify_callback(public + path, params, forged)
        assert not p.verify_callback(public + path, [("id", "1"), ("dlr", "1")], headers)
    finally:
        await p.aclose()
        await server.close()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"endpoint": "ovh-mars"}, "endpoint"),
        ({"service_name": "my service"}, "service_name"),
        ({"sender": "MUCH TOO LONG SENDER"}, "sender"),
        ({"application_secret": "short"}, "application_secret"),
        ({"timeout_seconds": 30}, "timeout_seconds"),
        ({"colour": "blue"}, "colour"),
        ({"consumer_key": None}, "consumer_key"),
    ],
)
def test_bad_options_name_the_key(change: dict[str, Any], key: str) -> None:
    opts = FakeOvh(base="https://eu.api.ovh.com/1.0").provider()
    opts = {k: v for k, v in opts.items() if k not in ("name", "kind", "channels")}
    opts = {k: v for k, v in (opts | change).items() if v is not None}
    with pytest.raises(ConfigError) as raised:
        OvhProvider(ProviderConfig("ovh", "ovh", ("sms",), opts), CONTEXT)
    assert raised.value.key == f"providers.ovh.{key}"


def test_voice_is_refused_at_start_up() -> None:
    opts = FakeOvh(base="https://eu.api.ovh.com/1.0").provider()
    opts = {k: v for k, v in opts.items() if k not in ("name", "kind", "channels")}
    with pytest.raises(ConfigError, match="SMS only"):
        OvhProvider(ProviderConfig("ovh", "ovh", ("sms", "voice"), opts), CONTEXT)


def test_a_region_name_picks_its_endpoint() -> None:
    opts = FakeOvh().provider(endpoint="ovh-ca")
    opts = {k: v for k, v in opts.items() if k not in ("name", "kind", "channels")}
    p = OvhProvider(ProviderConfig("ovh", "ovh", ("sms",), opts), CONTEXT)
    assert p._s.endpoint == "https://ca.api.ovh.com/1.0"


def test_the_documented_example_builds_a_provider() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "providers.md").read_text()
    section = docs[docs.index("## `ovh`") :]
    start = section.index("```toml") + len("```toml")
    table = tomllib.loads(section[start : section.index("```", start)])["providers"][0]
    env = {"OVH_APPLICATION_SECRET": "docSecret0123456789", "OVH_CONSUMER_KEY": "docConsumer012345"}
    raw = {"redis": {"url": "redis://127.0.0.1:1/0"}, "security": {"secret": SECRET},
           "providers": [table]}  # fmt: skip
    [cfg] = config_from_dict(raw, env).providers
    p = OvhProvider(cfg, CONTEXT)
    assert (p.name, p.channels, p._s.endpoint) == ("ovh", ("sms",), "https://eu.api.ovh.com/1.0")
    assert p._s.consumer_key == env["OVH_CONSUMER_KEY"]
