"""Shared fixtures: one real redis-server for the session, flushed per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.config import Config, config_from_dict
from gateway.embedded import RedisServer

SECRET = "test-secret-0123456789-abcdefghijklmnop"
OTP_KEY = "otp-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
OPERATOR_KEY = "operator-key-0123456789abcdef"
METRICS_KEY = "metrics-key-0123456789abcdef"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


def make_config(redis_url: str, **sections: Any) -> Config:
    """A valid test configuration; keyword arguments replace whole sections."""
    raw: dict[str, Any] = {
        "server": {"mode": "development"},
        "redis": {"url": redis_url},
        "security": {"secret": SECRET},
        "api_keys": [
            {"name": "front", "key": OTP_KEY, "scopes": ["otp"]},
            {"name": "admin", "key": ADMIN_KEY, "scopes": ["admin"]},
            {"name": "ops", "key": OPERATOR_KEY, "scopes": ["operator"]},
            {"name": "prom", "key": METRICS_KEY, "scopes": ["metrics"]},
        ],
        "providers": [{"name": "console", "kind": "console", "channels": ["sms", "voice"]}],
    }
    raw.update(sections)
    return config_from_dict(raw)


@pytest.fixture
def config(redis_server: RedisServer, redis: aioredis.Redis) -> Config:
    return make_config(redis_server.url)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


# --- the gateway under test, with the http provider pointed at a real sink ---

import asyncio  # noqa: E402
import hashlib  # noqa: E402
import hmac  # noqa: E402
import json  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.runtime import Services  # noqa: E402
from gateway.web.request import SERVICES  # noqa: E402

SINK_SECRET = "sink-secret-0123456789abcdef"
# After SINK_SECRET: the stubs sign with it, importing it from here.
from tests.httpstub import StubFactory, stub_servers  # noqa: E402


@dataclass
class Sink:
    """An HTTP server speaking the `http` provider's protocol; keeps what it got."""

    received: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    url: str = ""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        expected = hmac.new(SINK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Signature-SHA256", "")):
            return web.Response(status=401)
        if self.status >= 300:
            return web.Response(status=self.status)
        self.received.append(
            {**json.loads(raw), "idempotency_key": request.headers.get("Idempotency-Key")}
        )
        self.arrived.set()
        return web.json_response({"ok": True})

    def codes_for(self, challenge_id: str) -> list[str]:
        return [m["code"] for m in self.received if m["challenge_id"] == challenge_id]


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    sink = Sink()
    app = web.Application()
    app.router.add_post("/send", sink.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sink.url = str(server.make_url("/send"))
    yield sink
    await server.close()


@pytest.fixture
async def stubs() -> AsyncIterator[StubFactory]:
    """Provider stand-ins (tests/httpstub.py): each call starts one more."""
    async with stub_servers() as make:
        yield make


def sink_provider(
    sink: Sink, name: str = "sink", channels: tuple[str, ...] = ("sms", "voice")
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "http",
        "channels": list(channels),
        "url": sink.url,
        "secret": SINK_SECRET,
    }


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    services: Services
    sink: Sink

    def headers(self, key: str = OTP_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def post(self, path: str, body: Any, key: str = OTP_KEY) -> Any:
        return await self.client.post(path, json=body, headers=self.headers(key))

    async def get(self, path: str, key: str = OTP_KEY) -> Any:
        return await self.client.get(path, headers=self.headers(key))

    async def drain(self) -> int:
        return await self.services.worker.drain()


GatewayFactory = Any


@pytest.fixture
async def make_gateway(
    redis_server: RedisServer, redis: aioredis.Redis, sink: Sink
) -> AsyncIterator[GatewayFactory]:
    """Builds a gateway (no background worker: tests drain the queue) per config."""
    opened: list[TestClient[web.Request, web.Application]] = []

    async def build(**sections: Any) -> Gateway:
        sections.setdefault("providers", [sink_provider(sink)])
        config = make_config(redis_server.url, **sections)
        client = TestClient(TestServer(create_app(config, run_worker=False), host="127.0.0.1"))
        await client.start_server()
        opened.append(client)
        return Gateway(client, client.app[SERVICES], sink)

    yield build
    for client in opened:
        await client.close()


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()


ACCOUNT = {
    "account_id": "alice",
    "establishment": "Mairie de Luisant",
    "last_name": "Martin",
    "first_name": "Alice",
    "email": "alice@example.org",
    "role": "user",
    "phone": "06 12 34 56 78",
}


async def add_account(gw: Gateway, **overrides: Any) -> dict[str, Any]:
    resp = await gw.post("/accounts", {**ACCOUNT, **overrides}, key=OPERATOR_KEY)
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body
