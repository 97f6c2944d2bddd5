"""The composition root: config in, a wired aiohttp application out.

Everything shared lives in typed `web.AppKey`s; Redis, providers and the
in-process worker are opened and closed in `cleanup_ctx`. No module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.account_services import run_background
from gateway.config import Config
from gateway.keycheck import check_at_start
from gateway.metrics import Metrics
from gateway.otp.queue import ensure_group
from gateway.provider import build_providers
from gateway.services import METRICS, SERVICES, build_services, provider_context, redis_client
from gateway.web import accounts as account_routes
from gateway.web import admin as admin_routes
from gateway.web import callbacks as callback_routes
from gateway.web import dead_letters as dead_letter_routes
from gateway.web import ops as ops_routes
from gateway.web import otp as otp_routes
from gateway.web import selfservice as selfservice_routes
from gateway.web import totp as totp_routes
from gateway.web.auth import warn_unbound
from gateway.web.body import BODY_TIMEOUT, MAX_BODY
from gateway.web.middleware import build_middleware

log = logging.getLogger("otp_gateway")


def create_app(config: Config, *, run_worker: bool = True) -> web.Application:
    """The HTTP API; with `run_worker`, an in-process send worker too."""
    metrics = Metrics()
    metrics.prime(config)
    # Providers are built here, before start-up, so bad provider config fails fast.
    providers = build_providers(config.providers, provider_context(config))
    warn_unbound(config.api_keys)
    app = web.Application(client_max_size=MAX_BODY, middlewares=[build_middleware(metrics)])
    app[METRICS] = metrics
    app[BODY_TIMEOUT] = config.server.body_timeout_seconds

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await check_at_start(config)  # a secret other than the data's stops start-up
        redis = redis_client(config)
        services = build_services(config, redis, providers, metrics)
        app[SERVICES] = services
        stop = asyncio.Event()
        worker_task = background = None
        if run_worker:
            with contextlib.suppress(Exception):
                await ensure_group(redis)
            worker_task = asyncio.create_task(services.worker.run(stop))
            # The e-mail outbox and the expiry sweep (gateway/account_services.py).
            background = asyncio.create_task(run_background(services.account_services, stop))
        yield
        stop.set()
        if worker_task is not None:
            await worker_task
        if background is not None:
            await background
        await services.dispatcher.aclose()
        await redis.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(_stopping)
    otp_routes.setup(app)
    account_routes.setup(app)
    admin_routes.setup(app)
    selfservice_routes.setup(app)
    totp_routes.setup(app)
    ops_routes.setup(app)
    callback_routes.setup(app)
    dead_letter_routes.setup(app)
    return app


async def _stopping(app: web.Application) -> None:
    # Called once the listening sockets are closed (SIGTERM): requests in flight
    # finish next, then `lifecycle` stops the in-process worker.
    log.info("gateway stopping: no new connections, finishing requests in flight")
