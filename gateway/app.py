"""The HTTP entry point: config in, a wired aiohttp application out.

The services come from the one composition root, `gateway.runtime`, opened in
`cleanup_ctx` (with the in-process worker); the API-key checker is built here.
Everything shared lives in typed `web.AppKey`s (`gateway.web.request`). No
module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import runtime
from gateway.config import Config
from gateway.keycheck import check_at_start
from gateway.metrics import Metrics
from gateway.otp.queue import ensure_group
from gateway.provider import build_providers
from gateway.runtime import provider_context, run_background
from gateway.web import accounts as account_routes
from gateway.web import callbacks as callback_routes
from gateway.web import console
from gateway.web import dead_letters as dead_letter_routes
from gateway.web import ops as ops_routes
from gateway.web import otp as otp_routes
from gateway.web import pages as page_routes
from gateway.web import selfservice as selfservice_routes
from gateway.web import totp as totp_routes
from gateway.web.auth import ApiKeys, warn_unbound
from gateway.web.body import BODY_TIMEOUT, MAX_BODY
from gateway.web.middleware import build_middleware
from gateway.web.request import API_KEYS, METRICS, SERVICES

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
    app[API_KEYS] = ApiKeys(config.api_keys)
    app[BODY_TIMEOUT] = config.server.body_timeout_seconds

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await check_at_start(config)  # a secret other than the data's stops start-up
        async with runtime.open(config, providers, metrics) as services:
            app[SERVICES] = services
            stop = asyncio.Event()
            worker_task = background = None
            if run_worker:
                with contextlib.suppress(Exception):
                    await ensure_group(services.redis)
                worker_task = asyncio.create_task(services.worker.run(stop))
                # The e-mail outbox, the expiry sweep and the webhooks (runtime.run_background).
                background = asyncio.create_task(
                    run_background(services.account_services, stop, services.webhooks)
                )
            yield
            stop.set()
            if worker_task is not None:
                await worker_task
            if background is not None:
                await background

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(_stopping)
    otp_routes.setup(app)
    account_routes.setup(app)
    selfservice_routes.setup(app)
    totp_routes.setup(app)
    ops_routes.setup(app)
    callback_routes.setup(app)
    dead_letter_routes.setup(app)
    page_routes.setup(app)  # /docs and the code-entry step's files (gateway/web/pages.py)
    console.setup(app, config)  # the admin console's pages (gateway/web/console)
    return app


async def _stopping(app: web.Application) -> None:
    # Called once the listening sockets are closed (SIGTERM): requests in flight
    # finish next, then `lifecycle` stops the in-process worker.
    log.info("gateway stopping: no new connections, finishing requests in flight")
