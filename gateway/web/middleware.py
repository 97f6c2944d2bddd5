"""Every response passes here: request ids, timing, and the one error mapping.

A `GatewayError` becomes the contract's `{"error", "message"}` body with its
status; aiohttp's own HTTP errors (404, 405, 413) get the same shape; a Redis
outage is a 503 (never a 200 by default: the gateway fails closed); anything
else is a 500 whose message says nothing of the cause.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from redis.exceptions import RedisError

from gateway.errors import GatewayError, RateLimited
from gateway.metrics import Metrics

log = logging.getLogger("otp_gateway.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def _from_gateway_error(exc: GatewayError) -> web.Response:
    response = web.json_response(exc.body(), status=exc.status)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, "http_error")
    response = error_response(exc.status, code, exc.reason)
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def build_middleware(metrics: Metrics) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        presented = request.headers.get("X-Request-ID", "")
        request_id = presented if _REQUEST_ID_RE.fullmatch(presented) else secrets.token_hex(8)
        request[REQUEST_ID] = request_id
        started = time.perf_counter()
        response = await _respond(request, handler)
        response.headers["X-Request-ID"] = request_id
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics.http_seconds.labels(route, request.method, str(response.status)).observe(
            time.perf_counter() - started
        )
        return response

    return middleware


async def _respond(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return _from_gateway_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except RedisError as exc:
        log.error("redis unavailable", extra={"error": type(exc).__name__})
        return error_response(503, "unavailable", "the datastore is unreachable; try again")
    except Exception:
        log.exception(
            "unhandled error",
            extra={
                "path": request.match_info.route.resource
                and request.match_info.route.resource.canonical
            },
        )
        return error_response(500, "internal_error", "internal error")
