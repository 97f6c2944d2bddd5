"""The standalone worker process: send workers plus /metrics and /healthz."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from gateway.config import Config
from gateway.metrics import Metrics
from gateway.provider import build_providers
from gateway.services import build_services, provider_context, redis_client

log = logging.getLogger("otp_gateway.worker")


async def run_worker(config: Config) -> None:
    """Deliver sends until SIGTERM/SIGINT, then finish the jobs in hand."""
    metrics = Metrics()
    providers = build_providers(config.providers, provider_context(config))
    redis = redis_client(config)
    services = build_services(config, redis, providers, metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = await _metrics_server(config, services.metrics, redis)
    try:
        # No Redis call before the loop: `run` creates the group and rides out
        # a Redis that is not up yet (a worker started before its Redis).
        log.info("worker started", extra={"worker": services.worker.name})
        await services.worker.run(stop)
    finally:
        await runner.cleanup()
        await services.dispatcher.aclose()
        await redis.aclose()


async def _metrics_server(config: Config, metrics: Metrics, redis: object) -> web.AppRunner:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if config.worker.metrics_port:
        await web.TCPSite(runner, config.server.host, config.worker.metrics_port).start()
    return runner
