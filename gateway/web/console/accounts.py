"""The establishment's accounts: the list (search, filters, pages, flags) and one account
with its history. Each page calls what `GET /accounts`, `GET /accounts/{id}` and
`GET /accounts/{id}/history` call, as the same caller (tenant isolation included),
and shows what they return: a hidden number stays hidden.
"""

from __future__ import annotations

import math
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from gateway.accounts import valid_account_id
from gateway.clock import from_ms
from gateway.errors import InvalidRequest
from gateway.web.caller import account_list, warnings
from gateway.web.console import labels
from gateway.web.console.actions import DONE
from gateway.web.console.guard import SignedIn, page, signed_in, svc
from gateway.web.console.pages import render
from gateway.web.console.reminders import days_left, reminders
from gateway.web.request import account_id_of

FILTERS: Final = ("q", "status", "role", "service", "group_by")
HISTORY_PER_PAGE: Final = 20
PER_PAGE: Final = ("10", "25", "50", "100")  # "Résultats par page"


def _params(request: web.Request, signed: SignedIn) -> dict[str, str]:
    """The list's query, as `GET /accounts` reads it (empty fields left out)."""
    params = {k: request.query[k].strip() for k in FILTERS if request.query.get(k, "").strip()}
    params["per_page"] = request.query.get("per_page", _default_size(request))
    if params["per_page"] not in sizes(request):
        raise InvalidRequest("per_page must be one of the sizes offered")
    params["page"] = request.query.get("page", "1")
    # The policy decides: an operator's choice, an admin's own (any other: 404).
    if signed.caller.scope == "operator" or "establishment" in request.query:
        params["establishment"] = request.query.get("establishment", "").strip()
    return params


def _default_size(request: web.Request) -> str:
    return str(svc(request).config.console.per_page)


def sizes(request: web.Request) -> list[str]:
    """ "Résultats par page": the usual sizes and `[console] per_page`."""
    return sorted({*PER_PAGE, _default_size(request)}, key=int)


def _flags(row: dict[str, Any], soon_days: int, active_admins: int) -> list[str]:
    """The API's flags, plus "expiring soon" (within the first reminder) and "only admin"."""
    found = list(row["flags"])
    if row["status"] == "active" and row["expires_in_days"] <= soon_days:
        found.insert(0, "expiring")
    if active_admins == 1 and row["role"] == "admin" and row["status"] == "active":
        found.append("single_admin")
    return [labels.FLAGS[f] for f in found]


@page
async def account_list_page(request: web.Request) -> web.StreamResponse:
    """The accounts of the admin's establishment (an operator picks one first)."""
    signed = await signed_in(request)
    params = _params(request, signed)
    # Links keep the filters, and the page size only when one was chosen.
    base = {k: v for k, v in params.items() if k not in ("page", "per_page")}
    if "per_page" in request.query:
        base["per_page"] = params["per_page"]
    context: dict[str, Any] = {
        "signed": signed, "filters": base, "labels": labels, "listed": None, "rows": [],
        "pages": 0, "links": {}, "groups": None, "per_page_choices": sizes(request),
        "per_page": params["per_page"],
    }  # fmt: skip
    if signed.caller.scope == "admin" or params.get("establishment"):
        listed = await account_list(svc(request), signed.caller, params)
        reminders = svc(request).config.accounts.reminder_days
        soon = max(reminders) if reminders else 30
        pages = max(1, math.ceil(listed.page.total / listed.query.per_page))
        context |= {
            "listed": listed,
            "warnings": warnings(listed.active_admins),
            "rows": [(row, _flags(row, soon, listed.active_admins)) for row in listed.page.rows],
            "pages": pages,
            "links": page_links(base, listed.query.page, pages),
        }
        if listed.query.group_by is not None:
            context["groups"] = _groups(context["rows"])
    context["done"] = _done(request)
    return render(request, "accounts.html", title="Gestion des comptes", **context)


def _done(request: web.Request) -> str:
    """What the list says after a deletion or a blanking (`?fait=...`)."""
    done = request.query.get("fait", "")
    if done == "supprime" and valid_account_id(request.query.get("compte", "")):
        return f"Le compte {request.query['compte']} a été supprimé."
    count = request.query.get("nombre", "")
    if done == "blanc" and count.isascii() and count.isdigit() and len(count) <= 9:
        n = int(count)
        return f"{n} numéro{'s' if n > 1 else ''} remis à blanc."
    return ""


def _groups(rows: list[tuple[dict[str, Any], list[str]]]) -> list[tuple[str, list[Any]]]:
    """The page's rows by service, in the API's order (its `group` key)."""
    groups: dict[str, list[Any]] = {}
    for row, flags in rows:
        groups.setdefault(str(row.get("group", "")), []).append((row, flags))
    return list(groups.items())


def page_links(base: dict[str, str], current: int, pages: int) -> dict[str, str]:
    links = {}
    if current > 1:
        links["previous"] = "?" + urlencode({**base, "page": current - 1})
    if current < pages:
        links["next"] = "?" + urlencode({**base, "page": current + 1})
    return links


@page
async def account_page(request: web.Request) -> web.StreamResponse:
    """One account: its fields as the API shows them, and its history, newest first."""
    signed = await signed_in(request)
    services = svc(request)
    admin = services.account_services.admin
    account_id = account_id_of(request.match_info["account_id"])
    account = await admin.target(signed.caller, account_id)
    now = services.accounts.now()
    view = account.to_json(now)
    number = page_number(request.query.get("page", "1"))
    entries, total = await admin.history(signed.caller, account_id, number, HISTORY_PER_PAGE)
    pages = max(1, math.ceil(total / HISTORY_PER_PAGE))
    back = {"establishment": account.establishment} if signed.caller.scope == "operator" else {}
    return render(
        request, "account.html", title=f"Compte {account_id}", signed=signed, account=view,
        entries=entries, labels=labels, links=page_links({}, number, pages),
        back="/console/comptes" + ("?" + urlencode(back) if back else ""),
        done=DONE.get(request.query.get("fait", ""), ""),
        validity_days=services.config.accounts.validity_days,
        devices=await admin.devices(signed.caller, None).list(account_id),
        reminders=await reminders(services, account), days_left=days_left(account, now),
        from_ms=from_ms,
    )  # fmt: skip


def page_number(value: str) -> int:
    if not (value.isascii() and value.isdigit() and 1 <= len(value) <= 6 and int(value) >= 1):
        raise InvalidRequest("page counts from 1")
    return int(value)
