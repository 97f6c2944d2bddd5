"""The example login front end (examples/login_frontend) in front of a test gateway.

`start_frontend` serves it on loopback, calling the gateway with the test `otp`
key; `Visitor` is a browser without JavaScript (forms, cookies, redirects).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from examples.login_frontend.app import create_app
from examples.login_frontend.settings import Settings
from tests.support.config import OTP_KEY
from tests.support.console import Page, csrf_of
from tests.support.gateway import Gateway

Client = TestClient[web.Request, web.Application]


async def start_frontend(gw: Gateway, gateway_url: str | None = None) -> Client:
    """The example on loopback (any port); the caller closes it."""
    url = gateway_url or str(gw.client.make_url("/"))
    client = TestClient(TestServer(create_app(Settings(url, OTP_KEY)), host="127.0.0.1"))
    await client.start_server()
    return client


@dataclass
class Visitor:
    """A person at the example's pages without JavaScript."""

    client: Client
    gw: Gateway

    async def get(self, path: str) -> Page:
        resp = await self.client.get(path)
        return Page(resp.status, await resp.text(), str(resp.url), resp.headers)

    async def post(self, path: str, fields: dict[str, str], redirects: bool = True) -> Page:
        resp = await self.client.post(path, data=fields, allow_redirects=redirects)
        return Page(resp.status, await resp.text(), str(resp.url), resp.headers)

    async def log_in(self, account_id: str = "alice", password: str = "stand-in") -> Page:
        """The first factor's form, filled in and sent; the page it leads to."""
        form = await self.get("/connexion")
        fields = {"csrf": csrf_of(form.html), "account_id": account_id, "password": password}
        return await self.post("/connexion", fields)

    async def last_code(self) -> str:
        await self.gw.drain()
        codes = self.gw.sink.codes()
        assert codes, "no code reached the provider"
        return codes[-1]

    async def send_code(self, page: Page, code: str, trust: bool = False, **more: Any) -> Page:
        fields = {"csrf": csrf_of(page.html), "code": code, "action": "verify", **more}
        if trust:
            fields["trust_device"] = "1"
        return await self.post("/code", fields)

    async def press(self, page: Page, action: str) -> Page:
        """A no-JS press of "Renvoyer le code" (`resend`) or "M'appeler plutôt" (`voice`)."""
        return await self.post("/code", {"csrf": csrf_of(page.html), "action": action})

    def cookie(self, name: str) -> Any:
        for morsel in self.client.session.cookie_jar:
            if morsel.key == name:
                return morsel
        return None
