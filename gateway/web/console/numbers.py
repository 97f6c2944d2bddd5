"""Phone numbers: an account's switched at once, an establishment's blanked on deployment day.

- "Changer le numéro": `AccountAdmin.set_phone`, as `PUT /accounts/{id}/phone`
  calls it: an admin confirms with a `contact.update` code; the account's
  trusted devices are revoked and it is told by e-mail. "Masqué" and the
  extension as in the API.
- "Remettre à blanc" (deployment day): `AccountAdmin.blank_phones` for one
  establishment, as `POST /phones/blank` calls it; operators only, as in the
  API (the circular: "remis à blanc par les services de la Caisse des
  Dépôts"), after a page that says what it does and how many accounts it touches.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from gateway.accounts.records import Account
from gateway.errors import Forbidden, GatewayError, InvalidRequest
from gateway.web.console import forms, stepup
from gateway.web.console.actions import account_url
from gateway.web.console.guard import SignedIn, page, signed_in, svc
from gateway.web.console.manage import FIELD_LABELS, posted, refused_on_form
from gateway.web.console.pages import redirect, render
from gateway.web.console.stepup import Sensitive
from gateway.web.request import account_id_of

BLANK: Final = "/console/numeros-a-blanc"


def _phone_page(
    request: web.Request, signed: SignedIn, account: Account, values: dict[str, Any],
    errors: dict[str, str], status: int = 200, error: str = "",
) -> web.Response:  # fmt: skip
    account_id = account.account_id
    return render(
        request, "phone.html", status=status, title=f"Changer le numéro du compte {account_id}",
        signed=signed, account=account.to_json(svc(request).accounts.now()), values=values,
        errors=errors, error=error, field_labels=FIELD_LABELS,
        action=account_url(account_id) + "/telephone", back=account_url(account_id),
    )  # fmt: skip


async def _target(request: web.Request, signed: SignedIn) -> Account:
    account_id = account_id_of(request.match_info["account_id"])
    return await svc(request).account_services.admin.target(signed.caller, account_id)


@page
async def phone_form(request: web.Request) -> web.StreamResponse:
    """The form: the new number (never the old one shown if hidden), "masqué", extension."""
    signed = await signed_in(request)
    account = await _target(request, signed)
    values = {
        "phone_extension": account.phone_extension or "",
        "phone_hidden": account.phone_hidden,
    }
    return _phone_page(request, signed, account, values, {})


@page
async def switch(request: web.Request) -> web.StreamResponse:
    """`PUT /accounts/{id}/phone`: at once (an admin: a `contact.update` code first)."""
    signed, fields = await posted(request)
    services = svc(request)
    admin = services.account_services.admin
    account_id = account_id_of(request.match_info["account_id"])
    path = account_url(account_id) + "/telephone"

    async def perform(body: dict[str, Any], token: str | None) -> web.StreamResponse:
        clear = forms.unseal(services, path, body)
        await admin.set_phone(
            signed.caller, account_id, clear["phone"], clear["phone_hidden"],
            clear["phone_extension"], token,
        )  # fmt: skip
        return redirect(account_url(account_id, "numero"))

    if stepup.code_typed(request, signed, fields):
        return await stepup.with_code(request, signed, fields["code"], perform)
    account = await admin.target(signed.caller, account_id)
    errors: dict[str, str] = {}
    body = forms.phone_fields(services, fields, errors, required=True)
    values = {"phone_extension": fields.get("phone_extension", ""),
              "phone_hidden": body["phone_hidden"]}  # fmt: skip
    if errors:
        return _phone_page(request, signed, account, values, errors, 400)
    what = Sensitive(
        f"le changement de numéro du compte {account_id}", "Changer le numéro", account_id,
        account_url(account_id),
    )  # fmt: skip
    try:
        return await stepup.attempt(
            request, signed, what, forms.seal(services, path, body), perform
        )
    except GatewayError as exc:
        return refused_on_form(
            exc, lambda e, s, m: _phone_page(request, signed, account, values, e, s, m)
        )


# --- deployment day -------------------------------------------------------------------------


def _operator_only(signed: SignedIn) -> None:
    if signed.caller.scope != "operator":
        raise Forbidden("only an operator can blank numbers", code="blank_operators_only")


def _establishment(value: str) -> str:
    name = value.strip()
    if not 1 <= len(name) <= 128:
        raise InvalidRequest("establishment is required")
    return name


@page
async def blank_form(request: web.Request) -> web.StreamResponse:
    """What blanking does, and how many accounts and numbers it touches."""
    signed = await signed_in(request)
    _operator_only(signed)
    establishment = _establishment(request.query.get("establishment", ""))
    accounts = await svc(request).accounts.all_in(establishment)
    return render(
        request, "blank.html", title=f"Remettre à blanc les numéros de {establishment}",
        signed=signed, establishment=establishment, total=len(accounts),
        with_phone=sum(1 for a in accounts if a.phone is not None),
        back="/console/comptes?" + urlencode({"establishment": establishment}),
    )  # fmt: skip


@page
async def blank(request: web.Request) -> web.StreamResponse:
    """`POST /phones/blank` for one establishment."""
    signed, fields = await posted(request)
    _operator_only(signed)
    establishment = _establishment(fields.get("establishment", ""))
    done = await svc(request).account_services.admin.blank_phones(signed.caller, establishment)
    query = {"establishment": establishment, "fait": "blanc", "nombre": str(done.blanked)}
    return redirect("/console/comptes?" + urlencode(query))
