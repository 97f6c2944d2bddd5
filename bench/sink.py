"""The benchmark's SMS provider: answers the `http` provider and keeps the codes.

    python bench/sink.py --port PORT --secret SECRET

POST /send      the gateway's signed send (HMAC checked); 200, or 401 on a bad signature
GET  /code/{id} the code sent for a challenge; `?wait_ms=N` long-polls up to N ms
                (at most 5000), then 404
POST /codes     {"ids": [...]} -> {"codes": {id: code}} for those already received
GET  /healthz   liveness
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HOST

MAX_WAIT_MS = 5000


class CodeBook:
    """Codes by challenge id, and the long-polls waiting for one."""

    def __init__(self) -> None:
        self.codes: dict[str, str] = {}
        self._waiters: dict[str, list[asyncio.Future[str]]] = {}

    def put(self, challenge_id: str, code: str) -> None:
        self.codes[challenge_id] = code
        for waiter in self._waiters.pop(challenge_id, []):
            if not waiter.done():
                waiter.set_result(code)

    async def wait(self, challenge_id: str, seconds: float) -> str | None:
        known = self.codes.get(challenge_id)
        if known is not None or seconds <= 0:
            return known
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(challenge_id, []).append(waiter)
        try:
            async with asyncio.timeout(seconds):
                return await waiter
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(challenge_id, [])
            with contextlib.suppress(ValueError):
                waiting.remove(waiter)
            if not waiting:
                self._waiters.pop(challenge_id, None)


def make_app(secret: bytes) -> web.Application:
    # POST /codes carries a whole pool of ids: allow more than aiohttp's 1 MiB.
    app = web.Application(client_max_size=16 * 1024 * 1024)
    book = CodeBook()

    async def send(request: web.Request) -> web.Response:
        raw = await request.read()
        expected = hmac.new(secret, raw, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Signature-SHA256", "")):
            return web.Response(status=401)
        message = json.loads(raw)
        book.put(message["challenge_id"], message["code"])
        return web.json_response({"ok": True})

    async def code(request: web.Request) -> web.Response:
        wait_ms = min(int(request.query.get("wait_ms", "0")), MAX_WAIT_MS)
        found = await book.wait(request.match_info["challenge_id"], wait_ms / 1000)
        if found is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.json_response({"code": found})

    async def codes(request: web.Request) -> web.Response:
        ids = (await request.json())["ids"]
        found = {i: book.codes[i] for i in ids if i in book.codes}
        return web.json_response({"codes": found})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "received": len(book.codes)})

    app.router.add_post("/send", send)
    app.router.add_get("/code/{challenge_id}", code)
    app.router.add_post("/codes", codes)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(args.secret.encode()), host=HOST, port=args.port, print=None, access_log=None
    )


if __name__ == "__main__":
    main()
