"""A fake OVHcloud API on loopback: `/auth/time`, SMS jobs and outgoing SMS.

It checks every signed request the way OVHcloud documents it: the application
and consumer keys must be known, the timestamp within `TIME_WINDOW` seconds of
*its* clock (which a test may set ahead: `skew`), and X-Ovh-Signature must be
"$1$" + SHA-1 of `secret+consumer+METHOD+URL+body+timestamp`, recomputed from
what arrived (method, the URL under its own base, the raw body) and compared in
constant time. Refusals carry OVHcloud's error body: `{"errorCode",
"httpCode", "message"}`.

Scriptable per test: `outage` (answer every API call with that status),
`credits` (0: jobs are refused for want of credit), `invalid` (numbers put in
`invalidReceivers`), `slow` (take the job, then answer only after that many
seconds: the caller's timeout makes it ambiguous), and `receipts` (the DLR id
that `outgoing/{id}` shows, per number; 1 "success" by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

APP_KEY = "fakeAppKey0123"
APP_SECRET = "fakeAppSecret0123456789abcdefAB"
CONSUMER_KEY = "fakeConsumerKey0123456789abcdefA"
SERVICE = "sms-ab12345-1"
TIME_WINDOW = 30  # seconds a timestamp may stray from the fake's clock


@dataclass
class Job:
    """One SMS job the fake took."""

    id: int
    body: dict[str, Any]

    @property
    def to(self) -> str:
        return str(self.body["receivers"][0])

    @property
    def text(self) -> str:
        return str(self.body["message"])


def _error(status: int, code: str, message: str) -> web.Response:
    reason = web.Response(status=status).reason
    body = {"errorCode": code, "httpCode": f"{status} {reason}", "message": message}
    return web.json_response(body, status=status)


@dataclass
class FakeOvh:
    """The fake's state and its script (see the module doc)."""

    base: str = ""  # its own API root, ".../1.0": what clients sign
    skew: int = 0
    outage: int | None = None
    credits: int = 1000
    slow: float = 0.0
    invalid: set[str] = field(default_factory=set)
    receipts: dict[str, int] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # errorCodes of refused requests
    outgoing_reads: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(123450001))

    def now(self) -> int:
        return int(time.time()) + self.skew

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._signed])
        app.router.add_get("/1.0/auth/time", self._time)
        app.router.add_post("/1.0/sms/{service}/jobs", self._create_job)
        app.router.add_get("/1.0/sms/{service}/outgoing/{id}", self._outgoing)
        return app

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response(self.now())

    @web.middleware
    async def _signed(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/1.0/auth/time":
            return await handler(request)  # type: ignore[no-any-return]
        refusal = self._check(request, await request.read())
        if refusal is not None:
            self.refused.append(refusal[1])
            return _error(*refusal)
        if self.outage is not None:
            return _error(self.outage, "", "Internal server error")
        if request.match_info.get("service") != SERVICE:
            name = request.match_info.get("service")
            return _error(404, "", f"The requested object (serviceName = {name}) does not exist")
        return await handler(request)  # type: ignore[no-any-return]

    def _check(self, request: web.Request, body: bytes) -> tuple[int, str, str] | None:
        h = request.headers
        if h.get("X-Ovh-Application") != APP_KEY:
            return 403, "INVALID_KEY", "Invalid application key"
        if h.get("X-Ovh-Consumer") != CONSUMER_KEY:
            return 403, "INVALID_CREDENTIAL", "This credential is not valid"
        stamp = h.get("X-Ovh-Timestamp", "")
        if not stamp.isdigit() or abs(int(stamp) - self.now()) > TIME_WINDOW:
            return 400, "QUERY_TIME_OUT", "Query out of time"
        data = "+".join(
            (APP_SECRET, CONSUMER_KEY, request.method, self.url_of(request), body.decode(), stamp)
        )
        expected = "$1$" + hashlib.sha1(data.encode()).hexdigest()
        if not hmac.compare_digest(expected.encode(), h.get("X-Ovh-Signature", "").encode()):
            return 400, "INVALID_SIGNATURE", "Invalid signature"
        return None

    def url_of(self, request: web.Request) -> str:
        """The full URL the client called (and signed): our base, then path and query."""
        return self.base.removesuffix("/1.0") + request.raw_path

    async def _create_job(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        receivers = [str(r) for r in body.get("receivers", [])]
        if self.credits < len(receivers):
            return _error(403, "", "Not enough credits to send this SMS")
        valid = [r for r in receivers if r not in self.invalid]
        ids = []
        for receiver in valid:
            job = Job(next(self._ids), {**body, "receivers": [receiver]})
            self.jobs.append(job)
            ids.append(job.id)
        self.credits -= len(valid)
        if self.slow:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.slow)
        return web.json_response(
            {
                "ids": ids,
                "validReceivers": valid,
                "invalidReceivers": [r for r in receivers if r in self.invalid],
                "totalCreditsRemoved": len(valid),
            }
        )

    async def _outgoing(self, request: web.Request) -> web.Response:
        self.outgoing_reads += 1
        job = next((j for j in self.jobs if str(j.id) == request.match_info["id"]), None)
        if job is None:
            return _error(404, "", "The requested object (id) does not exist")
        dlr = self.receipts.get(job.to, 1)
        return web.json_response(
            {"id": job.id, "receiver": job.to, "tag": job.body.get("tag", ""),
             "ptt": {1: 4, 2: 5, 16: 20}.get(dlr, 3), "deliveryReceipt": dlr}
        )  # fmt: skip

    def messages_to(self, number: str) -> list[Job]:
        return [j for j in self.jobs if j.to == number]

    def provider(self, name: str = "ovh", **options: Any) -> dict[str, Any]:
        """A `[[providers]]` table of kind ovh pointed at this fake."""
        return {
            "name": name,
            "kind": "ovh",
            "channels": ["sms"],
            "endpoint": self.base,
            "application_key": APP_KEY,
            "application_secret": APP_SECRET,
            "consumer_key": CONSUMER_KEY,
            "service_name": SERVICE,
            "sender": "MAIRIE",
            "timeout_seconds": 2,
            "poll_seconds": 0.02,
            **options,
        }


@contextlib.asynccontextmanager
async def fake_ovh() -> AsyncIterator[FakeOvh]:
    """A FakeOvh served on 127.0.0.1; a slow answer is released when it closes."""
    fake = FakeOvh()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.base = str(server.make_url("/1.0"))
    try:
        yield fake
    finally:
        fake.release.set()
        await server.close()
