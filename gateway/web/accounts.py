"""Account routes (scope `operator`): the minimal account management of the contract.

Admins (scope `admin`, acting for an account of their establishment, with
step-up for sensitive actions) come with the accounts issue; until then an
`admin` key is refused with 403 on these routes.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.accounts import KEEP, NewAccount, utc_now
from gateway.errors import InvalidRequest, NotFound
from gateway.services import Services
from gateway.web.body import Field, checked, read_object
from gateway.web.middleware import REQUEST_ID
from gateway.web.otp import account_id_of, services

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


def _actor(request: web.Request, svc: Services) -> tuple[str, str]:
    key = svc.api_keys.require(request, "operator")
    return f"operator:{key.name}", request[REQUEST_ID]


def _page(request: web.Request) -> tuple[int, int]:
    try:
        page = int(_digits(request.query.get("page", "1")))
        per_page = int(_digits(request.query.get("per_page", "50")))
    except ValueError:
        raise InvalidRequest("page and per_page must be positive integers") from None
    if page < 1 or not 1 <= per_page <= 200:
        raise InvalidRequest("page counts from 1; per_page is 1 to 200")
    return page, per_page


def _digits(value: str) -> str:
    if not re.fullmatch(r"[0-9]{1,6}", value):
        raise ValueError(value)
    return value


async def create_account(request: web.Request) -> web.Response:
    """Create an account."""
    svc = services(request, "operator")
    actor, request_id = _actor(request, svc)
    body = checked(await read_object(request), CREATE_FIELDS)
    expires = body.pop("expires_at", None)
    fields = NewAccount(
        **{k: v for k, v in body.items() if v is not None},
        expires_at=parse_time("expires_at", expires) if expires else None,
    )
    account = await svc.accounts.create(fields, actor=actor, request_id=request_id)
    return web.json_response(account.to_json(utc_now()), status=201)


async def get_account(request: web.Request) -> web.Response:
    """One account."""
    svc = services(request, "operator")
    account = await svc.accounts.require(account_id_of(request.match_info["account_id"]))
    return web.json_response(account.to_json(utc_now()))


async def list_accounts(request: web.Request) -> web.Response:
    """The accounts of one establishment, paginated."""
    svc = services(request, "operator")
    establishment = request.query.get("establishment", "")
    if not establishment or len(establishment) > 128:
        raise InvalidRequest("establishment is required (query parameter)")
    page, per_page = _page(request)
    accounts, total = await svc.accounts.list(establishment, page, per_page)
    now = utc_now()
    return web.json_response({
        "accounts": [a.to_json(now) for a in accounts],
        "page": page, "per_page": per_page, "total": total,
    })  # fmt: skip


async def patch_account(request: web.Request) -> web.Response:
    """Change fields of an account, status included."""
    svc = services(request, "operator")
    actor, request_id = _actor(request, svc)
    changes: dict[str, Any] = checked(await read_object(request), PATCH_FIELDS)
    if not changes:
        raise InvalidRequest("nothing to change")
    if "expires_at" in changes and changes["expires_at"] is not None:
        changes["expires_at"] = parse_time("expires_at", changes["expires_at"])
    account_id = account_id_of(request.match_info["account_id"])
    account = await svc.accounts.update(account_id, changes, actor=actor, request_id=request_id)
    return web.json_response(account.to_json(utc_now()))


async def delete_account(request: web.Request) -> web.Response:
    """Delete an account (its history stays)."""
    svc = services(request, "operator")
    actor, request_id = _actor(request, svc)
    account_id = account_id_of(request.match_info["account_id"])
    await svc.accounts.delete(account_id, actor=actor, request_id=request_id)
    return web.Response(status=204)


async def renew_account(request: web.Request) -> web.Response:
    """Push expiry by the configured validity; reactivates an expired account."""
    svc = services(request, "operator")
    actor, request_id = _actor(request, svc)
    account_id = account_id_of(request.match_info["account_id"])
    account = await svc.accounts.renew(account_id, actor=actor, request_id=request_id)
    return web.json_response(account.to_json(utc_now()))


async def set_phone(request: web.Request) -> web.Response:
    """Switch the number at once; revokes every trusted device."""
    svc = services(request, "operator")
    actor, request_id = _actor(request, svc)
    body = checked(await read_object(request), PHONE_FIELDS)
    account_id = account_id_of(request.match_info["account_id"])
    phone = svc.accounts.parse_phone(body["phone"])
    account = await svc.accounts.set_phone(
        account_id, phone, hidden=body.get("phone_hidden"),
        extension=body.get("phone_extension", KEEP),
        actor=actor, request_id=request_id,
    )  # fmt: skip
    return web.json_response(account.to_json(utc_now()))


async def history(request: web.Request) -> web.Response:
    """An account's audit entries, newest first."""
    svc = services(request, "operator")
    account_id = account_id_of(request.match_info["account_id"])
    page, per_page = _page(request)
    entries, total = await svc.accounts.history(account_id, page, per_page)
    if total == 0 and await svc.accounts.get(account_id) is None:
        raise NotFound("no such account", code="unknown_account")
    return web.json_response(
        {"entries": entries, "page": page, "per_page": per_page, "total": total}
    )


def setup(app: web.Application) -> None:
    app.router.add_post("/accounts", create_account)
    app.router.add_get("/accounts", list_accounts, allow_head=False)
    app.router.add_get("/accounts/{account_id}", get_account, allow_head=False)
    app.router.add_patch("/accounts/{account_id}", patch_account)
    app.router.add_delete("/accounts/{account_id}", delete_account)
    app.router.add_post("/accounts/{account_id}/renew", renew_account)
    app.router.add_put("/accounts/{account_id}/phone", set_phone)
    app.router.add_get("/accounts/{account_id}/history", history, allow_head=False)
