"""What every route module takes from a request: the wired services, the caller's key.

The app keeps the runtime's `Services` in `SERVICES` and the API-key checker
in `API_KEYS` (the checker is the web layer's own: the runtime knows nothing
of HTTP). Route modules import these helpers from here, never from each other.
"""

from __future__ import annotations

import logging

from aiohttp import web

from gateway import logs
from gateway.accounts import valid_account_id
from gateway.clock import iso_ms
from gateway.errors import GatewayError, InvalidRequest, RateLimited
from gateway.metrics import Metrics
from gateway.otp.challenges import Created, Idempotency, Verified
from gateway.otp.tokens import DeviceService
from gateway.runtime import Services
from gateway.web.auth import ApiKeys

log = logging.getLogger("otp_gateway.otp")

SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", Metrics)
API_KEYS = web.AppKey("api_keys", ApiKeys)


def services(request: web.Request, *scopes: str) -> Services:
    """The wired services, once the caller's key has one of `scopes` (else 401/403)."""
    api_keys(request).require(request, *scopes)
    return request.app[SERVICES]


def api_keys(request: web.Request) -> ApiKeys:
    return request.app[API_KEYS]


def account_id_of(value: str) -> str:
    if not valid_account_id(value):
        raise InvalidRequest("account_id: 1-128 characters of A-Z a-z 0-9 . _ @ -")
    return value


# --- trusted devices: one handler set for /trusted-devices (otp) and /devices (accounts) ---


async def devices_listed(request: web.Request, devices: DeviceService) -> web.Response:
    """`{"devices": [...]}`: the account's live devices, newest first."""
    account_id = account_id_of(request.match_info["account_id"])
    listed = await devices.list(account_id)
    return web.json_response({"devices": [device.view() for device in listed]})


async def device_revoked(request: web.Request, devices: DeviceService) -> web.Response:
    """204 once the device is revoked (404 `not_found` when there is none)."""
    account_id = account_id_of(request.match_info["account_id"])
    await devices.revoke(account_id, request.match_info["device_id"])
    return web.Response(status=204)


async def devices_revoked(request: web.Request, devices: DeviceService) -> web.Response:
    """`{"revoked": n}`: every device of the account revoked."""
    account_id = account_id_of(request.match_info["account_id"])
    return web.json_response({"revoked": await devices.revoke_all(account_id)})


def verified_json(result: Verified) -> dict[str, object]:
    """`/verify`'s 200 body, whether an SMS/voice code or an app's code was verified."""
    out: dict[str, object] = {
        "verified": True,
        "account_id": result.account_id,
        "purpose": result.purpose,
    }
    if result.token_kind == "trusted_device":
        out |= {"trusted_device_token": result.token, "trusted_until": iso_ms(result.until_ms)}
    elif result.token_kind == "step_up":
        out |= {"step_up_token": result.token, "step_up_expires_at": iso_ms(result.until_ms)}
    return out


# --- a code asked for and checked: POST /challenge, POST /verify and the console's sign-in ---


async def challenge_requested(
    svc: Services,
    account_id: str,
    purpose: str,
    channel: str | None,
    client_ip: str | None,
    device_token: str | None,
    idempotency: Idempotency | None = None,
) -> Created | None:
    """`ChallengeService.request` with its metrics and log line (None: a trusted device)."""
    metrics = svc.metrics
    counter = metrics.challenges
    try:
        created = await svc.challenges.request(
            account_id, purpose, channel, client_ip, device_token, idempotency
        )
    except GatewayError as exc:
        metrics.child(counter, purpose, channel or "none", exc.code).inc()
        if isinstance(exc, RateLimited):
            metrics.rate_limited.labels(exc.scope).inc()
        logs.event(
            log, "challenge refused", purpose=purpose, channel=channel or "none", outcome=exc.code
        )
        raise
    if created is None:
        metrics.child(counter, purpose, channel or "none", "trusted_device").inc()
        logs.event(log, "challenge not required", purpose=purpose, outcome="trusted_device")
        return None
    if created.replayed:  # the first answer again: nothing was queued, nothing is counted
        metrics.child(counter, purpose, created.channel, "replayed").inc()
        logs.event(
            log, "challenge replayed", challenge_id=created.challenge_id, purpose=purpose,
            channel=created.channel, outcome="replayed",
        )  # fmt: skip
        return created
    metrics.child(counter, purpose, created.channel, "queued").inc()
    metrics.count_send(created.region)
    logs.event(
        log, "challenge created", challenge_id=created.challenge_id, purpose=purpose,
        channel=created.channel, destination=created.destination, outcome="queued",
    )  # fmt: skip
    return created


async def code_verified(
    svc: Services, challenge_id: str, code: str, trust_device: bool, device_label: str
) -> Verified:
    """`ChallengeService.verify` with its metrics and log line; a failure carries
    `"verified": false` in its body, as `/verify` answers it."""
    try:
        result = await svc.challenges.verify(challenge_id, code, trust_device, device_label)
    except GatewayError as exc:
        # verify.lua names the purpose only on success: failures count as "unknown".
        svc.metrics.child(svc.metrics.verifications, exc.purpose or "unknown", exc.code).inc()
        if isinstance(exc, RateLimited):
            svc.metrics.rate_limited.labels(exc.scope).inc()
        logs.event(
            log, "verification", challenge_id=logs.challenge_id_field(challenge_id),
            purpose="unknown", outcome=exc.code,
        )  # fmt: skip
        exc.extra = {"verified": False, **exc.extra}
        raise
    svc.metrics.child(svc.metrics.verifications, result.purpose, "verified").inc()
    logs.event(
        log, "verification", challenge_id=challenge_id, purpose=result.purpose,
        outcome="verified",
    )  # fmt: skip
    return result
