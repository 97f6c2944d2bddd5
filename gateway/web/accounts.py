"""Account routes: scope `operator`, or scope `admin` acting for an admin account.

- `/accounts[/{id}...]`: the account record (create, list, read, change,
  delete, renew, phone, history).
- `GET /history`: the audit entries of a whole establishment, newest first.
- `GET|DELETE /accounts/{id}/devices[/{device_id}]`: an account's trusted
  devices, listed and revoked by its admins (step-up `account.manage`) or an
  operator (audited).
- `POST /phones/blank` (operator): the deployment-day reset of every number of
  one establishment, or of all.

Who may do what is `gateway.accounts.policy`'s business (tenant isolation, step-up,
the last-admin rule, audit, change notices); these handlers only parse and
answer. Account responses carry `warnings` (`single_admin`, `no_active_admin`)
and the `X-Establishment-Admins` header.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.accounts.records import KEEP, NewAccount
from gateway.errors import Forbidden, InvalidRequest
from gateway.web.body import Field, checked, read_object
from gateway.web.caller import (
    ADMINS_HEADER,
    account_caller,
    account_list,
    account_response,
    page_of,
    step_up_token,
    warnings,
)
from gateway.web.request import (
    account_id_of,
    device_revoked,
    devices_listed,
    devices_revoked,
)

CREATE_FIELDS = {
    "account_id": Field(str, required=True, max_len=128),
    "establishment": Field(str, required=True, max_len=128),
    "last_name": Field(str, required=True, max_len=100),
    "first_name": Field(str, required=True, max_len=100),
    "email": Field(str, required=True, max_len=254),
    "role": Field(str, required=True, max_len=10),
    "phone": Field(str, max_len=64),
    "phone_hidden": Field(bool),
    "phone_extension": Field(str, max_len=10),
    "services": Field(list),
    "net_entreprises": Field(bool),
    "expires_at": Field(str, max_len=40),
}
PATCH_FIELDS = {
    "last_name": Field(str, max_len=100),
    "first_name": Field(str, max_len=100),
    "email": Field(str, max_len=254),
    "role": Field(str, max_len=10),
    "services": Field(list),
    "net_entreprises": Field(bool),
    "expires_at": Field(str, max_len=40),
    "status": Field(str, max_len=10),
    "phone_extension": Field(str, max_len=10),
}
PHONE_FIELDS = {
    "phone": Field(str, required=True, max_len=64),
    "phone_hidden": Field(bool),
    "phone_extension": Field(str, max_len=10),
}
_ISO_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?"
)


def parse_time(name: str, value: str) -> datetime:
    """ISO 8601; a time without offset is UTC."""
    if not _ISO_RE.fullmatch(value):
        raise InvalidRequest(f"{name} must be an ISO 8601 date or time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"{name} must be an ISO 8601 date or time") from None
    return parsed


async def create_account(request: web.Request) -> web.Response:
    """Create an account (admins: step-up `account.create`)."""
    svc, caller = await account_caller(request)
    body = checked(await read_object(request), CREATE_FIELDS)
    expires = body.pop("expires_at", None)
    fields = NewAccount(
        **{k: v for k, v in body.items() if v is not None},
        expires_at=parse_time("expires_at", expires) if expires else None,
    )
    admin = svc.account_services.admin
    account = await admin.create(caller, fields, step_up_token(request))
    return await account_response(svc, account, status=201)


async def get_account(request: web.Request) -> web.Response:
    """One account."""
    svc, caller = await account_caller(request)
    account_id = account_id_of(request.match_info["account_id"])
    account = await svc.account_services.admin.target(caller, account_id)
    return await account_response(svc, account)


async def list_accounts(request: web.Request) -> web.Response:
    """An establishment's accounts: filtered, flagged, sorted, grouped, paginated."""
    svc, caller = await account_caller(request)
    listed = await account_list(svc, caller, request.query)
    body: dict[str, Any] = {
        "accounts": listed.page.rows, "page": listed.query.page,
        "per_page": listed.query.per_page, "total": listed.page.total,
        "active_admins": listed.active_admins, "warnings": warnings(listed.active_admins),
    }  # fmt: skip
    if listed.page.groups is not None:
        body["groups"] = listed.page.groups
    response = web.json_response(body)
    response.headers[ADMINS_HEADER] = str(listed.active_admins)
    return response


async def patch_account(request: web.Request) -> web.Response:
    """Change fields, status included (admins: step-up `contact.update` for a new
    e-mail, `account.manage` to suspend, demote or bring the expiry forward)."""
    svc, caller = await account_caller(request)
    changes: dict[str, Any] = checked(await read_object(request), PATCH_FIELDS)
    if not changes:
        raise InvalidRequest("nothing to change")
    if "expires_at" in changes and changes["expires_at"] is not None:
        changes["expires_at"] = parse_time("expires_at", changes["expires_at"])
    account_id = account_id_of(request.match_info["account_id"])
    admin = svc.account_services.admin
    account = await admin.update(caller, account_id, changes, step_up_token(request))
    return await account_response(svc, account)


async def delete_account(request: web.Request) -> web.Response:
    """Delete an account, its history kept (admins: step-up `account.manage`)."""
    svc, caller = await account_caller(request)
    account_id = account_id_of(request.match_info["account_id"])
    deleted = await svc.account_services.admin.delete(caller, account_id, step_up_token(request))
    admins = await svc.account_services.admin.admin_count(deleted.establishment)
    return web.Response(status=204, headers={ADMINS_HEADER: str(admins)})


async def renew_account(request: web.Request) -> web.Response:
    """Push expiry by the configured validity; reactivates an expired account."""
    svc, caller = await account_caller(request)
    account_id = account_id_of(request.match_info["account_id"])
    account = await svc.account_services.admin.renew(caller, account_id)
    return await account_response(svc, account)


async def set_phone(request: web.Request) -> web.Response:
    """Switch the number at once (admins: step-up `contact.update`)."""
    svc, caller = await account_caller(request)
    body = checked(await read_object(request), PHONE_FIELDS)
    account_id = account_id_of(request.match_info["account_id"])
    account = await svc.account_services.admin.set_phone(
        caller, account_id, body["phone"], body.get("phone_hidden"),
        body.get("phone_extension", KEEP), step_up_token(request),
    )  # fmt: skip
    return await account_response(svc, account)


async def history(request: web.Request) -> web.Response:
    """An account's audit entries, newest first."""
    svc, caller = await account_caller(request)
    account_id = account_id_of(request.match_info["account_id"])
    page, per_page = page_of(request)
    entries, total = await svc.account_services.admin.history(caller, account_id, page, per_page)
    return web.json_response(
        {"entries": entries, "page": page, "per_page": per_page, "total": total}
    )


# --- beyond the record: establishment history, trusted devices, blanking numbers ---


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
    return await devices_listed(request, svc.account_services.admin.devices(caller, None))


async def revoke_devices(request: web.Request) -> web.Response:
    """Revoke every trusted device of an account (admins: step-up `account.manage`)."""
    svc, caller = await account_caller(request)
    service = svc.account_services.admin.devices(caller, step_up_token(request))
    return await devices_revoked(request, service)


async def revoke_device(request: web.Request) -> web.Response:
    """Revoke one trusted device of an account (admins: step-up `account.manage`)."""
    svc, caller = await account_caller(request)
    service = svc.account_services.admin.devices(caller, step_up_token(request))
    return await device_revoked(request, service)


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
    app.router.add_post("/accounts", create_account)
    app.router.add_get("/accounts", list_accounts, allow_head=False)
    app.router.add_get("/accounts/{account_id}", get_account, allow_head=False)
    app.router.add_patch("/accounts/{account_id}", patch_account)
    app.router.add_delete("/accounts/{account_id}", delete_account)
    app.router.add_post("/accounts/{account_id}/renew", renew_account)
    app.router.add_put("/accounts/{account_id}/phone", set_phone)
    app.router.add_get("/accounts/{account_id}/history", history, allow_head=False)
    app.router.add_get("/history", establishment_history, allow_head=False)
    app.router.add_get("/accounts/{account_id}/devices", list_devices, allow_head=False)
    app.router.add_delete("/accounts/{account_id}/devices", revoke_devices)
    app.router.add_delete("/accounts/{account_id}/devices/{device_id}", revoke_device)
    app.router.add_post("/phones/blank", blank_phones)
