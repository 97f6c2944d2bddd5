"""The composition root: config in, a wired aiohttp application out.

Everything shared lives in typed `web.AppKey`s; Redis, providers and the
in-process worker are opened and closed in `cleanup_ctx`. No module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.config import Config
from gateway.metrics import Metrics
from gateway.provider import build_providers
from gateway.queue import ensure_group
from gateway.services import METRICS, SERVICES, build_services, provider_context, redis_client
from gateway.web import accounts as account_routes
from gateway.web import ops as ops_routes
from gateway.web import otp as otp_routes
from gateway.web.body import MAX_BODY
from gateway.web.middleware import build_middleware


def create_app(config: Config, *, run_worker: bool = True) -> web.Application:
    """The HTTP API; with `run_worker`, an in-process send worker too."""
    metrics = Metrics()
    # Providers are built here, before start-up, so bad provider config fails fast.
    providers = build_providers(config.providers, provider_context(config))
    app = web.Application(client_max_size=MAX_BODY, middlewares=[build_middleware(metrics)])
    app[METRICS] = metrics

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        redis = redis_client(config)
        services = build_services(config, redis, providers, metrics)
        app[SERVICES] = services
        stop = asyncio.Event()
        worker_task = None
        if run_worker:
            with contextlib.suppress(Exception):
                await ensure_group(redis)
            worker_task = asyncio.create_task(services.worker.run(stop))
        yield
        stop.set()
        if worker_task is not None:
            await worker_task
        await services.dispatcher.aclose()
        await redis.aclose()

    app.cleanup_ctx.append(lifecycle)
    otp_routes.setup(app)
    account_routes.setup(app)
    ops_routes.setup(app)
    return app
