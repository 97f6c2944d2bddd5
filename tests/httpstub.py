"""Programmable HTTP servers on 127.0.0.1 standing in for SMS/voice providers.

Unlike conftest's `Sink`, a `Stub` records every request as it arrives (raw
body and headers, signature unchecked) and answers what the test says: a
status, a delay, or nothing at all for its first request (`hold_first`).
Whatever a stub is still holding is released when the servers close, so
teardown never waits on a sleeping handler.
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
from prometheus_client.parser import text_string_to_metric_families

from gateway.embedded import free_port
from tests.conftest import SINK_SECRET


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
    status: int = 200
    delay: float = 0.0  # seconds before answering (cut short when the stub closes)
    hold_first: bool = False  # the first request is never answered (until close)
    url: str = ""
    hits: list[Hit] = field(default_factory=list)  # every request, on arrival
    accepted: list[Hit] = field(default_factory=list)  # answered with a 2xx
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        hit = Hit(await request.read(), dict(request.headers))
        self.hits.append(hit)
        self.arrived.set()
        if self.hold_first and len(self.hits) == 1:
            await self.release.wait()
            return web.Response(status=503)
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.delay)
        if 200 <= self.status < 300:
            self.accepted.append(hit)
        return web.Response(status=self.status)

    def codes(self, challenge_id: str | None = None) -> list[str]:
        """Codes of the accepted sends (of one challenge)."""
        return [
            h.json["code"]
            for h in self.accepted
            if challenge_id is None or h.json["challenge_id"] == challenge_id
        ]

    def provider(
        self, name: str, channels: tuple[str, ...] = ("sms", "voice"), **options: Any
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


def sample(text: bytes | str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent) in a text exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def poll(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 5.0,
    every: float = 0.02,
    what: str = "condition",
) -> None:
    """Wait until `check()` is true, failing the test after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(every)
