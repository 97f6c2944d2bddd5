"""Self-service routes (scope `otp`): the login front end acting for the signed-in user.

- `POST /accounts/{id}/phone-change`: a code to the new number (step-up
  `contact.update` when the account already has one; none to enrol a first
  number, e.g. after the deployment-day reset).
- `POST /accounts/{id}/phone-change/verify`: that code; the number switches
  only now.
- `PUT /accounts/{id}/email`: a new address (step-up `contact.update`),
  announced to both addresses.
"""

from __future__ import annotations

from aiohttp import web

from gateway.clock import iso_ms, now_ms
from gateway.errors import GatewayError
from gateway.web.body import Field, checked, parse_channel, parse_client_ip, read_object
from gateway.web.caller import account_response, step_up_token, user_caller
from gateway.web.request import account_id_of

PHONE_CHANGE_FIELDS = {
    "phone": Field(str, required=True, max_len=64),
    "phone_hidden": Field(bool),
    "phone_extension": Field(str, max_len=10),
    "channel": Field(str, max_len=10),
    "client_ip": Field(str, max_len=64),
}
PHONE_PROOF_FIELDS = {
    "challenge_id": Field(str, required=True, max_len=64),
    "code": Field(str, required=True, max_len=32),
}
EMAIL_FIELDS = {"email": Field(str, required=True, max_len=254)}


async def start_phone_change(request: web.Request) -> web.Response:
    """Send a code to the new number; it replaces the old one once verified."""
    account_id = account_id_of(request.match_info["account_id"])
    svc, caller = await user_caller(request, account_id)
    body = checked(await read_object(request), PHONE_CHANGE_FIELDS)
    phone = svc.accounts.parse_phone(body.pop("phone"))
    body["channel"] = parse_channel(body.get("channel"))
    body["client_ip"] = parse_client_ip(body.get("client_ip"))
    assert caller.acting is not None
    started = await svc.account_services.phone_changes.start(
        caller, caller.acting, phone, body, step_up_token(request)
    )
    created, now = started.created, now_ms()
    return web.json_response(
        {
            "challenge_id": created.challenge_id,
            "channel": created.channel,
            "destination": started.destination,
            "expires_at": iso_ms(created.expires_at_ms),
            "expires_in": max(0, (created.expires_at_ms - now) // 1000),
            "resend_after": max(0, -(-(created.resend_after_ms - now) // 1000)),
            "enrolment": started.enrolment,
        },
        status=202,
    )


async def verify_phone_change(request: web.Request) -> web.Response:
    """Check the code sent to the new number; on success the account has it."""
    account_id = account_id_of(request.match_info["account_id"])
    svc, caller = await user_caller(request, account_id)
    body = checked(await read_object(request), PHONE_PROOF_FIELDS)
    try:
        account = await svc.account_services.phone_changes.finish(
            caller, account_id, body["challenge_id"], body["code"]
        )
    except GatewayError as exc:
        exc.extra = {"verified": False, **exc.extra}
        raise
    return await account_response(svc, account)


async def change_email(request: web.Request) -> web.Response:
    """Change one's own e-mail address (step-up `contact.update`)."""
    account_id = account_id_of(request.match_info["account_id"])
    svc, caller = await user_caller(request, account_id)
    body = checked(await read_object(request), EMAIL_FIELDS)
    account = await svc.account_services.admin.update(
        caller, account_id, {"email": body["email"]}, step_up_token(request)
    )
    return await account_response(svc, account)


def setup(app: web.Application) -> None:
    app.router.add_post("/accounts/{account_id}/phone-change", start_phone_change)
    app.router.add_post("/accounts/{account_id}/phone-change/verify", verify_phone_change)
    app.router.add_put("/accounts/{account_id}/email", change_email)
