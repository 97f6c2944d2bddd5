"""Actions on an account: renew, suspend (with its step-up code inline), reactivate.

Each calls what the API route calls (`AccountAdmin.renew`, `.update`), as the
same caller. Suspending needs a step-up (`account.manage`) for an admin: the
console asks for it inline (`stepup`); an operator is exempt, as in the API.
Renewing and reactivating need no step-up in the API: none here.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from gateway.web.console import stepup
from gateway.web.console.guard import SignedIn, check_csrf, form, page, signed_in, svc
from gateway.web.console.pages import redirect
from gateway.web.console.stepup import Sensitive
from gateway.web.request import account_id_of

# What the account page says after an action (`?fait=...`).
DONE: Final = {
    "renouvele": "Le compte a été renouvelé.",
    "suspendu": "Le compte a été suspendu.",
    "reactive": "Le compte a été réactivé.",
    "cree": "Le compte a été créé.",
    "modifie": "Les modifications ont été enregistrées.",
    "inchange": "Aucune modification : rien n'a changé.",
    "numero": (
        "Le numéro a été changé. Les postes de confiance du compte ont été retirés "
        "et son titulaire est prévenu par courriel."
    ),
    "postes": "Les postes de confiance du compte ont été retirés.",
    "poste": "Le poste de confiance a été retiré.",
}


def account_url(account_id: str, done: str = "") -> str:
    url = f"/console/comptes/{quote(account_id, safe='')}"
    return f"{url}?fait={done}" if done else url


async def _acted(request: web.Request) -> tuple[SignedIn, str, dict[str, str]]:
    """The signed-in caller, the account in the path, the form (its token checked)."""
    signed = await signed_in(request)
    fields = await form(request)
    check_csrf(signed, fields)
    return signed, account_id_of(request.match_info["account_id"]), fields


@page
async def renew(request: web.Request) -> web.StreamResponse:
    """Push the account's expiry by `[accounts] validity_days` (`POST /accounts/{id}/renew`)."""
    signed, account_id, _ = await _acted(request)
    await svc(request).account_services.admin.renew(signed.caller, account_id)
    return redirect(account_url(account_id, "renouvele"))


@page
async def reactivate(request: web.Request) -> web.StreamResponse:
    """Lift a suspension (`PATCH status: active`: no step-up in the API)."""
    signed, account_id, _ = await _acted(request)
    admin = svc(request).account_services.admin
    await admin.update(signed.caller, account_id, {"status": "active"}, None)
    return redirect(account_url(account_id, "reactive"))


@page
async def suspend(request: web.Request) -> web.StreamResponse:
    """Suspend: an operator at once; an admin first asks, then types, its step-up code."""
    signed, account_id, fields = await _acted(request)
    admin = svc(request).account_services.admin

    async def perform(_: dict[str, Any], token: str | None) -> web.StreamResponse:
        # The API's own order: 404 and 409 `last_admin` before the step-up is asked for.
        await admin.update(signed.caller, account_id, {"status": "suspended"}, token)
        return redirect(account_url(account_id, "suspendu"))

    if stepup.code_typed(request, signed, fields):
        return await stepup.with_code(request, signed, fields["code"], perform)
    what = Sensitive(f"la suspension du compte {account_id}", "Suspendre le compte", account_id,
                     account_url(account_id))  # fmt: skip
    return await stepup.attempt(request, signed, what, {}, perform)
