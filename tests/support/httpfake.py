"""An HTTP server on 127.0.0.1 speaking the `http` provider's protocol: `Stub`.

The one fake for every HTTP provider peer. A `Stub` records every request as it
arrives (raw body and headers) and answers what the test says: a status, a
delay, or nothing at all for its first request (`hold_first`); with
`check_signature` (the `sink` fixture) a request not signed with SINK_SECRET is
refused with a 401. Whatever a stub is still holding is released when the
servers close, so teardown never waits on a sleeping handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.embedded import free_port

SINK_SECRET = "sink-secret-0123456789abcdef"


@dataclass
class Hit:
    """One request as the provider's server got it."""

    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def signature_ok(self, secret: str = SINK_SECRET) -> bool:
        expected = hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.headers.get("X-Signature-SHA256", ""))


@dataclass
class Stub:
    """A provider's far end, scripted by the test (see above)."""

    status: int = 200
    delay: float = 0.0  # seconds before answering (cut short when the stub closes)
    hold_first: bool = False  # the first request is never answered (until close)
    check_signature: bool = False  # a request badly signed is answered 401
    url: str = ""
    hits: list[Hit] = field(default_factory=list)  # every request, on arrival
    accepted: list[Hit] = field(default_factory=list)  # answered with a 2xx
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        hit = Hit(await request.read(), dict(request.headers))
        self.hits.append(hit)
        self.arrived.set()
        if self.check_signature and not hit.signature_ok():
            return web.Response(status=401)
        if self.hold_first and len(self.hits) == 1:
            await self.release.wait()
            return web.Response(status=503)
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay)
        if 200 <= self.status < 300:
            self.accepted.append(hit)
        return web.Response(status=self.status)

    @property
    def received(self) -> list[dict[str, Any]]:
        """The JSON bodies of the accepted sends, in order."""
        return [hit.json for hit in self.accepted]

    def codes(self, challenge_id: str | None = None) -> list[str]:
        """Codes of the accepted sends (of one challenge)."""
        return [
            body["code"]
            for body in self.received
            if challenge_id is None or body["challenge_id"] == challenge_id
        ]

    def provider(
        self, name: str = "sink", channels: tuple[str, ...] = ("sms", "voice"), **options: Any
    ) -> dict[str, Any]:
        """A `[[providers]]` table of kind http pointed at this stub."""
        return {
            "name": name,
            "kind": "http",
            "channels": list(channels),
            "url": self.url,
            "secret": SINK_SECRET,
            **options,
        }


StubFactory = Callable[..., Awaitable[Stub]]


@contextlib.asynccontextmanager
async def stub_servers() -> AsyncIterator[StubFactory]:
    """Yields `make(status=..., delay=..., hold_first=...)`; closes every stub after."""
    made: list[tuple[Stub, TestServer]] = []

    async def make(**kwargs: Any) -> Stub:
        stub = Stub(**kwargs)
        app = web.Application()
        app.router.add_post("/send", stub.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        stub.url = str(server.make_url("/send"))
        made.append((stub, server))
        return stub

    try:
        yield make
    finally:
        for stub, _ in made:
            stub.release.set()
        for _, server in made:
            await server.close()


def closed_url() -> str:
    """A URL on a loopback port nobody listens on: connections are refused."""
    return f"http://127.0.0.1:{free_port()}/send"
