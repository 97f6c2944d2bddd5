"""The baseline: a bare aiohttp app, one JSON POST endpoint, one Redis round trip.

    python bench/bare.py --port PORT --redis-url URL [--loop uvloop|asyncio] [--reuse-port]

POST /bare  reads a JSON object, does one INCR against Redis, answers JSON
GET /healthz liveness

It uses the same stack as the gateway (aiohttp, redis.asyncio with hiredis,
same connection-pool settings), so the gateway's figures divided by these
measure what the gateway adds on top of "HTTP + JSON + one Redis call".
`--loop` runs it on the gateway's event loop (run.py passes the gateway's);
`--reuse-port` lets several of them share one port (SO_REUSEPORT), as
`otp-gateway serve --processes N` does: bench/scaling.py starts two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HOST

REDIS = web.AppKey("redis", aioredis.Redis)
COUNTER = "bench:bare"


def make_app(redis_url: str) -> web.Application:
    app = web.Application()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        client = aioredis.Redis.from_url(redis_url, max_connections=512)
        app[REDIS] = client
        yield
        await client.aclose()

    async def bare(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if not isinstance(body, dict):
            return web.json_response({"error": "invalid_request"}, status=400)
        count = await request.app[REDIS].incr(COUNTER)
        return web.json_response({"ok": True, "count": count})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/bare", bare)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="asyncio")
    parser.add_argument("--reuse-port", action="store_true")
    args = parser.parse_args()
    loop = asyncio.new_event_loop()
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    web.run_app(
        make_app(args.redis_url), host=HOST, port=args.port, print=None, access_log=None,
        reuse_port=args.reuse_port or None, loop=loop,
    )  # fmt: skip


if __name__ == "__main__":
    main()
