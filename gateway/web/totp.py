"""Authenticator-app routes (see `gateway.accounts.totp`; `[accounts] totp = true` to allow).

- `GET /accounts/{id}/totp`: whether the account has one (the user, its admins,
  operators).
- `POST /accounts/{id}/totp`: enrol (the user, step-up `contact.update`):
  the `otpauth://` URI to scan, shown this once.
- `POST /accounts/{id}/totp/confirm`: the app's first code.
- `POST /accounts/{id}/totp/verify`: an app code instead of a phone code;
  answers like `/verify`.
- `DELETE /accounts/{id}/totp`: remove (the user with step-up
  `contact.update`, its admins with step-up `account.manage`, operators).
"""

from __future__ import annotations

from aiohttp import web

from gateway.accounts.policy import ACCOUNT_MANAGE, CONTACT_UPDATE
from gateway.errors import GatewayError, InvalidRequest, NotFound
from gateway.web.body import Field, checked, read_object
from gateway.web.caller import any_caller, step_up_token, user_caller
from gateway.web.request import account_id_of, verified_json

CODE_FIELDS = {"code": Field(str, required=True, max_len=32)}
TOTP_VERIFY_FIELDS = {
    "code": Field(str, required=True, max_len=32),
    "purpose": Field(str, max_len=40),
    "trust_device": Field(bool),
    "device_label": Field(str, max_len=64),
}


async def totp_status(request: web.Request) -> web.Response:
    """Whether the account has an authenticator app (or one being enrolled)."""
    account_id = account_id_of(request.match_info["account_id"])
    svc, caller = await any_caller(request, account_id)
    await svc.account_services.admin.target(caller, account_id)
    return web.json_response(await svc.account_services.totp.status(account_id))


async def enrol(request: web.Request) -> web.Response:
    """Start enrolling an app: the otpauth:// URI (shown once)."""
    account_id = account_id_of(request.match_info["account_id"])
    svc, caller = await user_caller(request, account_id)
    totp, admin = svc.account_services.totp, svc.account_services.admin
    totp.require_allowed()
    who = await admin.step_up(caller, CONTACT_UPDATE, step_up_token(request))
    assert caller.acting is not None
    uri = await totp.enrol(caller.acting, who)
    return web.json_response({"otpauth_uri": uri, "confirmed": False}, status=201)


async def confirm(request: web.Request) -> web.Response:
    """Confirm the app with its first code; announced by e-mail."""
    account_id = account_id_of(request.match_info["account_id"])
    svc, caller = await user_caller(request, account_id)
    body = checked(await read_object(request), CODE_FIELDS)
    assert caller.acting is not None
    await svc.account_services.totp.confirm(caller.acting, body["code"], caller.who())
    await svc.account_services.admin.notify(caller, caller.acting, "totp_added")
    return web.json_response({"confirmed": True})


async def verify(request: web.Request) -> web.Response:
    """An app code instead of a phone code: the same answer as `/verify`."""
    account_id = account_id_of(request.match_info["account_id"])
    svc, caller = await user_caller(request, account_id)
    body = checked(await read_object(request), TOTP_VERIFY_FIELDS)
    purpose = body.get("purpose") or "login"
    if purpose not in svc.config.otp.purposes:
        raise InvalidRequest(f"purpose must be one of {', '.join(svc.config.otp.purposes)}")
    assert caller.acting is not None
    try:
        result = await svc.account_services.totp.verify(
            caller.acting, body["code"], purpose, bool(body.get("trust_device")),
            body.get("device_label") or "",
        )  # fmt: skip
    except GatewayError as exc:
        exc.extra = {"verified": False, **exc.extra}
        raise
    return web.json_response(verified_json(result))


async def remove(request: web.Request) -> web.Response:
    """Remove the account's app (step-up: the user `contact.update`, an admin
    `account.manage`)."""
    account_id = account_id_of(request.match_info["account_id"])
    svc, caller = await any_caller(request, account_id)
    admin = svc.account_services.admin
    account = await admin.target(caller, account_id)
    status = await svc.account_services.totp.status(account_id)
    if not (status["enrolled"] or status["pending"]):  # before the grant is spent
        raise NotFound("this account has no authenticator app", code="not_found")
    purpose = CONTACT_UPDATE if caller.scope == "otp" else ACCOUNT_MANAGE
    who = await admin.step_up(caller, purpose, step_up_token(request))
    if not await svc.account_services.totp.remove(account, who):
        raise NotFound("this account has no authenticator app", code="not_found")
    await admin.notify(caller, account, "totp_removed")
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    app.router.add_get("/accounts/{account_id}/totp", totp_status, allow_head=False)
    app.router.add_post("/accounts/{account_id}/totp", enrol)
    app.router.add_delete("/accounts/{account_id}/totp", remove)
    app.router.add_post("/accounts/{account_id}/totp/confirm", confirm)
    app.router.add_post("/accounts/{account_id}/totp/verify", verify)
