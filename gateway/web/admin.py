"""Admin and operator routes beyond the account record itself.

- `GET /history`: the audit entries of a whole establishment, newest first.
- `GET|DELETE /accounts/{id}/devices[/{device_id}]`: an account's trusted
  devices, listed and revoked by its admins (step-up `account.manage`) or an
  operator (audited).
- `POST /phones/blank` (operator): the deployment-day reset of every number of
  one establishment, or of all.
"""

from __future__ import annotations

from aiohttp import web

from gateway.clock import iso_ms
from gateway.errors import Forbidden, InvalidRequest
from gateway.web.body import Field, checked, read_object
from gateway.web.caller import account_caller, page_of, step_up_token
from gateway.web.otp import account_id_of

BLANK_FIELDS = {
    "establishment": Field(str, max_len=128),
    "all": Field(bool),
}


async def establishment_history(request: web.Request) -> web.Response:
    """Audit entries of every account of an establishment, newest first."""
    svc, caller = await account_caller(request)
    admin = svc.account_services.admin
    establishment = admin.establishment_of(caller, request.query.get("establishment"))
    page, per_page = page_of(request)
    entries, total = await svc.accounts.establishment_history(establishment, page, per_page)
    return web.json_response(
        {"entries": entries, "page": page, "per_page": per_page, "total": total}
    )


async def list_devices(request: web.Request) -> web.Response:
    """An account's live trusted devices."""
    svc, caller = await account_caller(request)
    account_id = account_id_of(request.match_info["account_id"])
    devices = await svc.account_services.admin.devices(caller, account_id)
    return web.json_response({
        "devices": [
            {"device_id": d.device_id, "label": d.label,
             "created_at": iso_ms(d.created_ms), "trusted_until": iso_ms(d.until_ms)}
            for d in devices
        ]
    })  # fmt: skip


async def revoke_devices(request: web.Request) -> web.Response:
    """Revoke every trusted device of an account (admins: step-up `account.manage`)."""
    svc, caller = await account_caller(request)
    account_id = account_id_of(request.match_info["account_id"])
    token = step_up_token(request)
    revoked = await svc.account_services.admin.revoke_devices(caller, account_id, token)
    return web.json_response({"revoked": revoked})


async def revoke_device(request: web.Request) -> web.Response:
    """Revoke one trusted device of an account (admins: step-up `account.manage`)."""
    svc, caller = await account_caller(request)
    account_id = account_id_of(request.match_info["account_id"])
    device_id = request.match_info["device_id"]
    token = step_up_token(request)
    await svc.account_services.admin.revoke_device(caller, account_id, device_id, token)
    return web.Response(status=204)


async def blank_phones(request: web.Request) -> web.Response:
    """Deployment day: blank the numbers of one establishment, or all (operators only)."""
    svc, caller = await account_caller(request)
    if caller.scope != "operator":
        raise Forbidden("only an operator can blank numbers")
    body = checked(await read_object(request), BLANK_FIELDS)
    # An empty name is no establishment: it would blank nothing and answer 200.
    establishment, everything = body.get("establishment") or None, body.get("all") is True
    if (establishment is None) == (not everything):
        raise InvalidRequest('give either "establishment" or "all": true')
    done = await svc.account_services.admin.blank_phones(caller, establishment)
    return web.json_response({"accounts": done.accounts, "blanked": done.blanked})


def setup(app: web.Application) -> None:
    app.router.add_get("/history", establishment_history, allow_head=False)
    app.router.add_get("/accounts/{account_id}/devices", list_devices, allow_head=False)
    app.router.add_delete("/accounts/{account_id}/devices", revoke_devices)
    app.router.add_delete("/accounts/{account_id}/devices/{device_id}", revoke_device)
    app.router.add_post("/phones/blank", blank_phones)
