"""The establishment's history ("Voir l'historique"): what `GET /history` returns.

Every account's audit entries (created, modified, renewed, deleted, blanked...),
newest first, deleted accounts included; an admin sees its own establishment,
an operator the one it names.
"""

from __future__ import annotations

import math
from typing import Final
from urllib.parse import urlencode

from aiohttp import web

from gateway.web.console import labels
from gateway.web.console.accounts import page_links, page_number
from gateway.web.console.guard import page, signed_in, svc
from gateway.web.console.pages import render

PATH: Final = "/console/historique"
PER_PAGE: Final = 25


@page
async def establishment_history(request: web.Request) -> web.StreamResponse:
    """The establishment's audit entries, newest first, by pages."""
    signed = await signed_in(request)
    services = svc(request)
    requested = request.query.get("establishment") if "establishment" in request.query else None
    establishment = services.account_services.admin.establishment_of(signed.caller, requested)
    number = page_number(request.query.get("page", "1"))
    entries, total = await services.accounts.establishment_history(establishment, number, PER_PAGE)
    base = {"establishment": establishment} if signed.caller.scope == "operator" else {}
    pages = max(1, math.ceil(total / PER_PAGE))
    return render(
        request, "history.html", title=f"Historique de {establishment}", signed=signed,
        establishment=establishment, entries=entries, labels=labels, total=total,
        page=number, pages=pages, links=page_links(base, number, pages),
        back="/console/comptes" + ("?" + urlencode(base) if base else ""),
    )  # fmt: skip
