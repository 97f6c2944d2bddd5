"""What every route module takes from a request: the wired services, the caller's key.

The app keeps the runtime's `Services` in `SERVICES` and the API-key checker
in `API_KEYS` (the checker is the web layer's own: the runtime knows nothing
of HTTP). Route modules import these helpers from here, never from each other.
"""

from __future__ import annotations

from aiohttp import web

from gateway.accounts import valid_account_id
from gateway.clock import iso_ms
from gateway.errors import InvalidRequest
from gateway.metrics import Metrics
from gateway.otp.challenges import Verified
from gateway.otp.tokens import DeviceService
from gateway.runtime import Services
from gateway.web.auth import ApiKeys

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
