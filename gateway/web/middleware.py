"""Every response passes here: request ids, timing, access log, the one error mapping.

A `GatewayError` becomes the contract's `{"error", "message"}` body with its
status; aiohttp's own HTTP errors (404, 405, 413) get the same shape; a Redis
outage or a Redis slower than `[redis] timeout_seconds` is a 503 with
`Retry-After` (never a 200 by default: the gateway fails closed; and never
after a command was sent twice, see gateway/datastore.py); a client that hangs
up mid-body is one info line and a 499 in the access line and the metrics (no
5xx: nothing here failed); a command over several hash slots (a cluster's
CROSSSLOT, or redis-py's refusal before sending it) is a bug: a 500 and one
critical log line; anything else is a 500 whose message says nothing of the
cause.

Each request gets an id (a well-formed `X-Request-ID` it came with, else a
new one), returned in `X-Request-ID` and bound to every log line written
while it is handled. Each request ends with one access line and one
`otp_http_request_duration_seconds` observation, both by route template: never
the raw path, the query, the body or a header.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from redis.exceptions import RedisClusterException, RedisError

from gateway import logs
from gateway.cluster import cross_slot
from gateway.errors import GatewayError, RateLimited, RequestTimeout, Unavailable
from gateway.metrics import Metrics, method_label

log = logging.getLogger("otp_gateway.http")
access_log = logging.getLogger("otp_gateway.access")
CLIENT_GONE = 499  # nginx's code for a client that left before the answer
# A Redis blip lasts a moment (a failover, a restart, a stall); the request is
# safe to send again, as nothing of it ran twice.
UNAVAILABLE_RETRY_AFTER = 1

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(status: int, code: str, message: str, **extra: object) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def _from_gateway_error(exc: GatewayError) -> web.Response:
    response = web.json_response(exc.body(), status=exc.status)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, Unavailable):
        response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
    elif isinstance(exc, RequestTimeout):
        # `Connection: close`: the stalled connection serves nothing more. aiohttp
        # then drains what is left of the body for at most its lingering time
        # (10 s, no handler held) and closes it.
        response.force_close()
    return response


def _unavailable() -> web.Response:
    response = error_response(503, "unavailable", "the datastore is unreachable; try again")
    response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
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
        request_id = _request_id(request)
        request[REQUEST_ID] = request_id
        token = logs.bind_request(request_id)
        started = time.perf_counter()
        status = CLIENT_GONE  # unless an answer is made: cancelled means the client left
        try:
            response = await _respond(request, handler)
            status = response.status
            response.headers["X-Request-ID"] = request_id
            return response
        except web.HTTPException as exc:  # a redirect, passed on to aiohttp
            status = exc.status
            raise
        finally:
            _record(metrics, request, status, started)
            logs.unbind_request(token)

    return middleware


def _request_id(request: web.Request) -> str:
    presented = request.headers.get("X-Request-ID", "")
    return presented if _REQUEST_ID_RE.fullmatch(presented) else secrets.token_hex(8)


def route_of(request: web.Request) -> str:
    """The matched route's template (`/challenge/{challenge_id}`), else "unmatched"."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _record(metrics: Metrics, request: web.Request, status: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    route, method = route_of(request), method_label(request.method)
    metrics.child(metrics.http_seconds, route, method, str(status)).observe(elapsed)
    access_log.info(
        "request",
        extra={
            "route": route,
            "method": method,
            "status": status,
            "duration_ms": round(elapsed * 1000, 1),
        },
    )


async def _respond(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return _from_gateway_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except ConnectionResetError:
        if not _client_left(request):
            return _internal_error(request)
        # Reading the body failed because the client hung up: nobody to answer,
        # nothing broken here. Counted as 499, never as a 5xx that pages.
        log.info("client disconnected", extra={"route": route_of(request)})
        return error_response(CLIENT_GONE, "client_gone", "the client closed the connection")
    except (RedisError, RedisClusterException, TimeoutError) as exc:
        return _from_redis_error(request, exc)  # TimeoutError: an asyncio deadline on Redis
    except Exception:
        return _internal_error(request)


def _from_redis_error(request: web.Request, exc: Exception) -> web.Response:
    """A Redis outage is a 503 to try again; a command over several hash slots
    (refused by redis-py or by a cluster's node) is our bug: a 500, logged as
    one critical line naming it, not a traceback."""
    if cross_slot(exc):
        log.critical(
            "a Redis command spans several hash slots (a bug): refused",
            extra={"route": route_of(request), "error": type(exc).__name__},
        )
        return error_response(500, "internal_error", "internal error")
    log.error("redis unavailable", extra={"error": type(exc).__name__})
    return _unavailable()


def _internal_error(request: web.Request) -> web.Response:
    log.exception("unhandled error", extra={"route": route_of(request)})
    return error_response(500, "internal_error", "internal error")


def _client_left(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()
