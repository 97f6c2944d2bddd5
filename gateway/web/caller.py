"""Who calls an account route (see `gateway.accounts.policy`): resolved before the body is read.

- `account_caller`: an `operator` key, or an `admin` key with
  `X-Acting-Account: <admin account id>` (400 without it; 403 when that
  account is not an admin, or cannot act; 404 when the key is bound to
  establishments and that account is not in one of them).
- `user_caller`: an `otp` key (the login front end) acting for the active
  account named in the path.
- `any_caller`: either, by the key's scopes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateway.accounts import listing
from gateway.accounts.policy import Caller
from gateway.accounts.records import Account, valid_account_id
from gateway.config import ApiKey
from gateway.errors import Forbidden, InvalidRequest, NotFound
from gateway.runtime import Services
from gateway.web.middleware import REQUEST_ID
from gateway.web.request import SERVICES, api_keys

ACTING_HEADER: Final = "X-Acting-Account"
STEP_UP_HEADER: Final = "X-Step-Up-Token"
ADMINS_HEADER: Final = "X-Establishment-Admins"


def page_of(request: web.Request) -> tuple[int, int]:
    """`page` (from 1) and `per_page` (1-200, default 50) query parameters."""
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


def step_up_token(request: web.Request) -> str | None:
    """`X-Step-Up-Token`, if it could be one: tokens are printable ASCII.

    Anything else (aiohttp keeps non-UTF-8 bytes as lone surrogates, which no
    `.encode()` takes) counts as no token: 401 `step_up_required` where one is needed."""
    token = request.headers.get(STEP_UP_HEADER, "")
    return token if token and token.isascii() and token.isprintable() else None


async def account_caller(request: web.Request) -> tuple[Services, Caller]:
    """An operator, or an admin acting for the account in `X-Acting-Account`."""
    svc = request.app[SERVICES]
    key = api_keys(request).identify(request)
    acting_id = request.headers.get(ACTING_HEADER)
    if "admin" in key.scopes and (acting_id is not None or "operator" not in key.scopes):
        return svc, await _admin(svc, key, request, acting_id)
    if "operator" in key.scopes:
        return svc, Caller("operator", key.name, request[REQUEST_ID])
    raise Forbidden("this key lacks the admin or operator scope")


async def _admin(svc: Services, key: ApiKey, request: web.Request, acting_id: str | None) -> Caller:
    if acting_id is None:
        raise InvalidRequest(f"an admin key needs {ACTING_HEADER}: <admin account id>")
    if not valid_account_id(acting_id):
        raise InvalidRequest(f"{ACTING_HEADER} must be an account id")
    acting = await svc.account_services.admin.acting_admin(acting_id, key.establishments)
    return Caller("admin", key.name, request[REQUEST_ID], acting)


async def user_caller(request: web.Request, account_id: str) -> tuple[Services, Caller]:
    """The login front end (scope `otp`) acting for the signed-in, active account."""
    svc = request.app[SERVICES]
    key = api_keys(request).require(request, "otp")
    account = await _existing(svc, account_id)
    account.require_active(svc.accounts.now())
    return svc, Caller("otp", key.name, request[REQUEST_ID], account)


async def any_caller(request: web.Request, account_id: str) -> tuple[Services, Caller]:
    """`user_caller` for a key with only the `otp` scope, else `account_caller`."""
    key = api_keys(request).identify(request)
    if "otp" in key.scopes and not key.scopes & {"admin", "operator"}:
        return await user_caller(request, account_id)
    return await account_caller(request)


async def _existing(svc: Services, account_id: str) -> Account:
    account = await svc.accounts.get(account_id)
    if account is None:
        raise NotFound("no such account", code="unknown_account")
    return account


def warnings(active_admins: int) -> list[str]:
    """What account responses say about the establishment's admins (two recommended)."""
    if active_admins == 0:
        return ["no_active_admin"]
    return ["single_admin"] if active_admins == 1 else []


async def account_response(svc: Services, account: Account, status: int = 200) -> web.Response:
    """An account as JSON, with the establishment's admin count and warnings."""
    admins = await svc.account_services.admin.admin_count(account.establishment)
    body = {**account.to_json(svc.accounts.now()), "warnings": warnings(admins)}
    response = web.json_response(body, status=status)
    response.headers[ADMINS_HEADER] = str(admins)
    return response


@dataclass(frozen=True, slots=True)
class Listed:
    """One page of an establishment's accounts, as `GET /accounts` and the console show it."""

    establishment: str
    query: listing.Query
    page: listing.Page
    active_admins: int


async def account_list(svc: Services, caller: Caller, params: Mapping[str, str]) -> Listed:
    """`GET /accounts`: the caller's establishment (an operator's choice), filtered,
    flagged, sorted, grouped and paginated by `params` (400 on a bad one)."""
    admin = svc.account_services.admin
    establishment = admin.establishment_of(caller, params.get("establishment"))
    query = listing.parse(params, svc.config.accounts.inactive_days)
    accounts = await svc.accounts.all_in(establishment)
    now = svc.accounts.now()
    page = listing.run(accounts, query, now)
    admins = sum(1 for a in accounts if a.is_active_admin(now))
    return Listed(establishment, query, page, admins)
