"""The gateway under test as a client sees it, and the one account most tests need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import Config
from gateway.runtime import Services
from gateway.web.request import SERVICES
from tests.support.config import OPERATOR_KEY, OTP_KEY
from tests.support.httpfake import Stub


@dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    services: Services
    sink: Stub

    def headers(self, key: str = OTP_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    async def post(self, path: str, body: Any, key: str = OTP_KEY) -> Any:
        return await self.client.post(path, json=body, headers=self.headers(key))

    async def get(self, path: str, key: str = OTP_KEY) -> Any:
        return await self.client.get(path, headers=self.headers(key))

    async def drain(self) -> int:
        return await self.services.worker.drain()


GatewayFactory = Any


async def start_gateway(
    config: Config, sink: Stub, *, run_worker: bool = False, port: int | None = None
) -> Gateway:
    """The app of `config` served on loopback (`port`, or any); the caller closes
    `gw.client`. Without a worker, tests deliver with `gw.drain()`."""
    app = create_app(config, run_worker=run_worker)
    client = TestClient(TestServer(app, host="127.0.0.1", port=port))
    await client.start_server()
    return Gateway(client, client.app[SERVICES], sink)


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
