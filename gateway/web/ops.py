"""Operations routes: liveness, readiness, metrics, the OpenAPI document."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from gateway.apidoc import served_document
from gateway.cluster import reachable
from gateway.metrics import CONTENT_TYPE, Metrics
from gateway.web.request import SERVICES, api_keys


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: Redis answers (a cluster: every primary, its state ok) and every
    channel has a provider."""
    svc = request.app[SERVICES]
    try:
        redis_ok = await reachable(svc.redis)
    except (RedisError, OSError):
        redis_ok = False
    channels = {ch: ch in svc.dispatcher.channels for ch in ("sms", "voice")}
    ready = redis_ok and all(channels.values())
    body = {"status": "ready" if ready else "not_ready", "redis": redis_ok, "channels": channels}
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; the Redis and queue gauges are read from Redis now."""
    svc = request.app[SERVICES]
    if svc.config.server.metrics_auth:
        api_keys(request).require(request, "metrics")
    return await scrape(svc.metrics, svc.redis, svc.config.redis.timeout_seconds)


async def scrape(metrics: Metrics, redis: aioredis.Redis, within: float) -> web.Response:
    """A scrape of one process's registry, gauges refreshed from Redis first.

    Without Redis the scrape still serves the process's own counters, with
    `otp_redis_up 0`: shared by the gateway and the standalone worker.
    """
    await metrics.refresh(redis, within)
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of the whole API, with this deployment's settings."""
    body = served_document(request.app[SERVICES].config)
    return web.Response(body=body, content_type="application/json")


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
