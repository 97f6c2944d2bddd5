"""OTP routes (scope `otp`): challenge, verify, status, resend, trusted devices."""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from gateway import logs
from gateway.clock import iso_ms, now_ms
from gateway.errors import GatewayError, InvalidRequest, RateLimited
from gateway.otp.challenges import Created, Idempotency
from gateway.web.body import Field, checked, parse_channel, parse_client_ip, read_object
from gateway.web.request import (
    SERVICES,
    account_id_of,
    api_keys,
    challenge_requested,
    code_verified,
    device_revoked,
    devices_listed,
    devices_revoked,
    services,
    verified_json,
)

log = logging.getLogger("otp_gateway.otp")

CHALLENGE_FIELDS = {
    "account_id": Field(str, required=True, max_len=128),
    "purpose": Field(str, max_len=40),
    "channel": Field(str, max_len=10),
    "trusted_device_token": Field(str, max_len=100),
    "client_ip": Field(str, max_len=64),
}
VERIFY_FIELDS = {
    "challenge_id": Field(str, required=True, max_len=64),
    "code": Field(str, required=True, max_len=32),
    "trust_device": Field(bool),
    "device_label": Field(str, max_len=64),
}
# What the OpenAPI document allows too: 1 to 255 visible ASCII characters.
_IDEMPOTENCY_KEY = re.compile(r"[!-~]{1,255}")
RESEND_FIELDS = {"channel": Field(str, max_len=10), "client_ip": Field(str, max_len=64)}


def _created_body(created: Created, now_ms: int) -> dict[str, Any]:
    return {
        "challenge_id": created.challenge_id,
        "channel": created.channel,
        "destination": created.destination,
        "expires_at": iso_ms(created.expires_at_ms),
        "expires_in": max(0, (created.expires_at_ms - now_ms) // 1000),
        "resend_after": max(0, -(-(created.resend_after_ms - now_ms) // 1000)),
    }


def _idempotency_key(request: web.Request) -> str | None:
    header = request.headers.get("Idempotency-Key")
    if header is not None and not _IDEMPOTENCY_KEY.fullmatch(header):
        raise InvalidRequest("Idempotency-Key: 1 to 255 visible ASCII characters")
    return header


async def create_challenge(request: web.Request) -> web.Response:
    """Send a code to the account's phone (or spare it on a trusted device).

    Under an `Idempotency-Key` header, a repeat of the same request by the same
    API key for the same account, while the code lives, gets the first answer
    and sends nothing; another request under that key is 422 `idempotency_conflict`."""
    caller = api_keys(request).require(request, "otp")
    svc = request.app[SERVICES]
    idempotency_key = _idempotency_key(request)
    body = checked(await read_object(request), CHALLENGE_FIELDS)
    account_id = account_id_of(body["account_id"])
    purpose = body.get("purpose") or "login"
    if purpose not in svc.config.otp.purposes:
        raise InvalidRequest(f"purpose must be one of {', '.join(svc.config.otp.purposes)}")
    channel = parse_channel(body.get("channel"))
    client_ip = parse_client_ip(body.get("client_ip"))
    device_token = body.get("trusted_device_token")
    idempotency = None
    if idempotency_key is not None:
        meaning = {"purpose": purpose, "channel": channel, "client_ip": client_ip,
                   "trusted_device_token": device_token}  # fmt: skip
        idempotency = Idempotency.of(caller.name, idempotency_key, meaning)
    created = await challenge_requested(
        svc, account_id, purpose, channel, client_ip, device_token, idempotency
    )
    if created is None:
        return web.json_response({"required": False, "reason": "trusted_device"})
    return web.json_response(_created_body(created, created.answered_ms or now_ms()), status=202)


async def verify(request: web.Request) -> web.Response:
    """Check a code; on success, maybe a trusted-device or step-up token."""
    svc = services(request, "otp")
    body = checked(await read_object(request), VERIFY_FIELDS)
    result = await code_verified(
        svc, body["challenge_id"], body["code"], bool(body.get("trust_device")),
        body.get("device_label") or "",
    )  # fmt: skip
    return web.json_response(verified_json(result))


async def challenge_status(request: web.Request) -> web.Response:
    """A challenge's state and its delivery state."""
    svc = services(request, "otp")
    return web.json_response(await svc.challenges.status(request.match_info["challenge_id"]))


async def resend(request: web.Request) -> web.Response:
    """Send the same code again, on the same or the other channel."""
    svc = services(request, "otp")
    body = checked(await read_object(request), RESEND_FIELDS)
    try:
        created = await svc.challenges.resend(
            request.match_info["challenge_id"], parse_channel(body.get("channel")),
            parse_client_ip(body.get("client_ip")),
        )  # fmt: skip
    except GatewayError as exc:
        if isinstance(exc, RateLimited):
            svc.metrics.rate_limited.labels(exc.scope).inc()
        challenge_id = logs.challenge_id_field(request.match_info["challenge_id"])
        logs.event(log, "resend refused", challenge_id=challenge_id, outcome=exc.code)
        raise
    svc.metrics.count_send(created.region)
    logs.event(
        log, "challenge resent", challenge_id=created.challenge_id, channel=created.channel,
        destination=created.destination, outcome="queued",
    )  # fmt: skip
    return web.json_response(_created_body(created, now_ms()), status=202)


async def list_trusted_devices(request: web.Request) -> web.Response:
    """An account's live trusted devices."""
    return await devices_listed(request, services(request, "otp", "operator").trusted)


async def revoke_trusted_device(request: web.Request) -> web.Response:
    """Forget one trusted device."""
    return await device_revoked(request, services(request, "otp", "operator").trusted)


async def revoke_all_trusted_devices(request: web.Request) -> web.Response:
    """Forget every trusted device of an account."""
    return await devices_revoked(request, services(request, "otp", "operator").trusted)


def setup(app: web.Application) -> None:
    app.router.add_post("/challenge", create_challenge)
    app.router.add_post("/verify", verify)
    app.router.add_get("/challenge/{challenge_id}", challenge_status, allow_head=False)
    app.router.add_post("/challenge/{challenge_id}/resend", resend)
    app.router.add_get(
        "/accounts/{account_id}/trusted-devices", list_trusted_devices, allow_head=False
    )
    app.router.add_delete("/accounts/{account_id}/trusted-devices", revoke_all_trusted_devices)
    app.router.add_delete(
        "/accounts/{account_id}/trusted-devices/{device_id}", revoke_trusted_device
    )
