"""The standalone worker process: send workers plus /metrics and /healthz.

On SIGTERM or SIGINT it stops reading the queue, finishes the sends it holds
and exits 0. A send it could not finish (the process killed first) stays
pending in the consumer group and another worker claims it after
`[worker] claim_idle_seconds`: nothing queued is lost across a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

import redis.asyncio as aioredis
from aiohttp import web

from gateway import runtime
from gateway.config import Config
from gateway.errors import GatewayError
from gateway.keycheck import check_when_reachable
from gateway.listen import bind
from gateway.metrics import Metrics
from gateway.provider import build_providers
from gateway.runtime import provider_context, run_background
from gateway.web.auth import ApiKeys
from gateway.web.ops import scrape

log = logging.getLogger("otp_gateway.worker")


async def run_worker(
    config: Config, sockets: list[socket.socket] | None = None, *, loop: str = "asyncio"
) -> None:
    """Deliver sends until SIGTERM/SIGINT, then finish the jobs in hand.

    `sockets`: the metrics port, bound already (`gateway.listen.bind`); bound
    here when not given. `loop`: the running loop's name, for the log line."""
    if sockets is None and config.worker.metrics_port:
        sockets = bind(config.server.host, config.worker.metrics_port, "worker.metrics_port")
    metrics = Metrics()
    metrics.prime(config)
    providers = build_providers(config.providers, provider_context(config))
    async with runtime.open(config, providers, metrics) as services:
        await _run(config, services, sockets, loop)


async def _run(
    config: Config, services: runtime.Services, sockets: list[socket.socket] | None, loop: str
) -> None:
    redis = services.redis
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, _stopping, stop, sig)
    api_keys = ApiKeys(config.api_keys)
    runner = await _metrics_server(config, services.metrics, redis, api_keys, sockets)
    name = services.worker.name
    try:
        # The key check and `run` ride out a Redis that is not up yet (a worker
        # started before its Redis); `run` creates the group.
        log.info("worker started", extra={"worker": name, "loop": loop, "pid": os.getpid()})
        # Before the first send: a secret other than the data's stops the worker.
        await check_when_reachable(redis, config, stop)
        # The e-mail outbox, the expiry sweep and the webhooks (runtime.run_background).
        background = asyncio.create_task(
            run_background(services.account_services, stop, services.webhooks)
        )
        try:
            await services.worker.run(stop)
        finally:
            stop.set()
            await background
        log.info("worker stopped", extra={"worker": name})
    finally:
        await runner.cleanup()


def _stopping(stop: asyncio.Event, sig: signal.Signals) -> None:
    if not stop.is_set():
        log.info("worker stopping: finishing the sends in hand", extra={"signal": sig.name})
    stop.set()


async def _metrics_server(
    config: Config,
    metrics: Metrics,
    redis: aioredis.Redis,
    api_keys: ApiKeys,
    sockets: list[socket.socket] | None,
) -> web.AppRunner:
    """`/metrics` and `/healthz` on `[worker] metrics_port` (0: none)."""

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_route(request: web.Request) -> web.Response:
        if config.server.metrics_auth:  # the same rule as the gateway's /metrics
            try:
                api_keys.require(request, "metrics")
            except GatewayError as exc:
                return web.json_response(exc.body(), status=exc.status)
        return await scrape(metrics, redis, config.redis.timeout_seconds)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_route)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    for sock in sockets or []:
        await web.SockSite(runner, sock).start()
    return runner
