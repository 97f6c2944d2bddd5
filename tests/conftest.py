"""Fixtures only (helpers live in tests/support): one real Redis for the session,
flushed per test, and gateways whose `http` provider is a real server.

`OTP_TESTS_REDIS` picks that Redis: `single` (the default) one redis-server,
`cluster` a real 3-primary Redis Cluster (tests/support/cluster.py). Tests that
only mean something on one instance are marked `single_only` and skipped on a
cluster, with the reason the marker gives.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.config import Config
from gateway.embedded import RedisServer
from tests.support.admin import admin_gateway
from tests.support.browser import chromium
from tests.support.cluster import Cluster, ClusterServer
from tests.support.config import make_config
from tests.support.gateway import Gateway, GatewayFactory, start_gateway
from tests.support.httpfake import Stub, StubFactory, stub_servers
from tests.support.smtp import Inbox, smtp_server

TOPOLOGY = os.environ.get("OTP_TESTS_REDIS", "single")
if TOPOLOGY not in ("single", "cluster"):
    raise pytest.UsageError(f"OTP_TESTS_REDIS={TOPOLOGY!r}: single or cluster")


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("single_only")
    if marker is not None and TOPOLOGY == "cluster":
        pytest.skip(f"single instance only: {marker.kwargs.get('reason', marker.args)}")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real 3-primary Redis Cluster for the session, started when first asked for."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Any]:
    """The suite's Redis: a `RedisServer`, or under `OTP_TESTS_REDIS=cluster` a
    `ClusterServer` (its `url` is one `make_config` understands)."""
    if TOPOLOGY == "cluster":
        yield ClusterServer(request.getfixturevalue("redis_cluster"))
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: Any) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the suite's Redis, emptied first (every primary of a cluster)."""
    if isinstance(redis_server, ClusterServer):
        client: Any = redis_server.client()
    else:
        client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def config(redis_server: Any, redis: aioredis.Redis) -> Config:
    return make_config(redis_server.url)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
async def stubs() -> AsyncIterator[StubFactory]:
    """Provider stand-ins (tests/support/httpfake.py): each call starts one more."""
    async with stub_servers() as make:
        yield make


@pytest.fixture
async def sink(stubs: StubFactory) -> Stub:
    """The provider of `make_gateway`'s gateways: a stub that checks signatures."""
    return await stubs(check_signature=True)


@pytest.fixture
async def make_gateway(
    redis_server: Any, redis: aioredis.Redis, sink: Stub
) -> AsyncIterator[GatewayFactory]:
    """Builds a gateway (no background worker: tests drain the queue) per config."""
    opened: list[Gateway] = []

    async def build(**sections: Any) -> Gateway:
        sections.setdefault("providers", [sink.provider()])
        opened.append(await start_gateway(make_config(redis_server.url, **sections), sink))
        return opened[-1]

    yield build
    for gw in opened:
        await gw.client.close()


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


@pytest.fixture
async def inbox() -> AsyncIterator[Inbox]:
    """A real SMTP server (tests/support/smtp.py) for the gateway's mails."""
    async with smtp_server() as box:
        yield box


@pytest.fixture
async def agw(make_gateway: GatewayFactory, inbox: Inbox) -> Gateway:
    """The admin tests' gateway: two establishments, their admins and users, mail to
    `inbox` (tests/support/admin.py, admin_gateway)."""
    return await admin_gateway(make_gateway, inbox)


@pytest.fixture(scope="session")
def chromium_driver() -> Iterator[Any]:
    """One headless Chromium for the session (tests/support/browser.py); skips without it."""
    with chromium() as driver:
        yield driver
