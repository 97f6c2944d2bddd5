"""Create, modify rights, switch the number, delete, revoke trusted devices, blank numbers.

Each calls what its API route calls, as the same caller: `AccountAdmin.create`
(`POST /accounts`), `.update` (`PATCH`), `.set_phone` (`PUT .../phone`),
`.delete` (`DELETE`), `.devices(...).revoke_all` (`DELETE .../devices`),
`.blank_phones` (`POST /phones/blank`, operators only, as in the API). Where
the policy wants a step-up code, `stepup` asks for it inline. A form's errors
come back on the form, each next to its field; any other refusal of the API
(409 `last_admin`, 422 `step_up_conflict`...) is its French sentence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from gateway.accounts.records import Account
from gateway.errors import Conflict, Forbidden, GatewayError, InvalidRequest
from gateway.web.console import forms, labels, stepup, texts
from gateway.web.console.actions import account_url
from gateway.web.console.guard import (
    ADMIN_ROLES,
    USER_ROLES,
    SignedIn,
    check_csrf,
    form,
    page,
    signed_as,
    signed_in,
    svc,
)
from gateway.web.console.pages import date_fr, redirect, render
from gateway.web.console.stepup import Sensitive
from gateway.web.request import account_id_of

CREATE: Final = "/console/creer-un-compte"
FIELD_LABELS: Final = {
    "account_id": "Identifiant", "establishment": "Établissement", "last_name": "Nom",
    "first_name": "Prénom", "email": "Adresse courriel", "role": "Profil",
    "services": "Services", "phone": "Numéro de téléphone", "phone_extension": "Poste",
    "expires_at": "Date d'expiration",
}  # fmt: skip
# An API refusal that belongs to one field of the form.
FIELD_OF: Final = {"account_exists": "account_id", "invalid_phone": "phone"}


async def posted(request: web.Request) -> tuple[SignedIn, dict[str, str]]:
    signed = await signed_in(request)
    fields = await form(request)
    check_csrf(signed, fields)
    return signed, fields


def _list_url(signed: SignedIn, establishment: str, **query: str) -> str:
    params = {"establishment": establishment} if signed.caller.scope == "operator" else {}
    params |= query
    return "/console/comptes" + ("?" + urlencode(params) if params else "")


# --- create ------------------------------------------------------------------------


def _create_page(
    request: web.Request,
    signed: SignedIn,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
    error: str = "",
) -> web.Response:
    return render(
        request, "account_form.html", status=status, title="Créer un compte", signed=signed,
        values=values, errors=errors, error=error, field_labels=FIELD_LABELS, editing=False,
        action=CREATE, button="Créer le compte", back=_list_url(signed, values["establishment"]),
        validity_days=svc(request).config.accounts.validity_days,
        step_up_hint="La création demande un code de confirmation, envoyé sur votre téléphone.",
    )  # fmt: skip


def _establishment(signed: SignedIn, fields: dict[str, str]) -> str:
    """An admin's own establishment (it creates there only); an operator's choice."""
    if signed.caller.scope == "admin":
        return signed.account.establishment
    return fields.get("establishment", "").strip()


@page
async def create_form(request: web.Request) -> web.StreamResponse:
    """The empty create form."""
    signed = await signed_in(request)
    values = {"establishment": _establishment(signed, dict(request.query)), "role": "user"}
    return _create_page(request, signed, _blank_values(values), {})


def _blank_values(values: dict[str, Any]) -> dict[str, Any]:
    names = ("account_id", "last_name", "first_name", "email", "services", "phone")
    return {**dict.fromkeys(names, ""), "phone_extension": "", "expires_at": "",
            "net_entreprises": False, "phone_hidden": False, **values}  # fmt: skip


@page
async def create(request: web.Request) -> web.StreamResponse:
    """Create the account (`POST /accounts`); an admin confirms with an `account.create` code."""
    signed, fields = await posted(request)
    services = svc(request)
    admin = services.account_services.admin

    async def perform(body: dict[str, Any], token: str | None) -> web.StreamResponse:
        clear = forms.unseal(services, CREATE, body)
        try:
            account = await admin.create(signed.caller, forms.to_new_account(clear), token)
        except GatewayError as exc:  # e.g. 409 `account_exists`, met once the code is spent
            values = _values_of(clear)
            return refused_on_form(
                exc, lambda e, s, m: _create_page(request, signed, values, e, s, m)
            )
        return redirect(account_url(account.account_id, "cree"))

    if stepup.code_typed(request, signed, fields):
        return await stepup.with_code(request, signed, fields["code"], perform)
    body, errors = forms.new_account(services, fields, _establishment(signed, fields))
    values = _blank_values({k: v for k, v in fields.items() if k not in ("csrf",)})
    values |= {"establishment": _establishment(signed, fields)}
    values |= {k: fields.get(k) == "1" for k in ("net_entreprises", "phone_hidden")}
    if errors:
        return _create_page(request, signed, values, errors, 400)
    what = Sensitive(f"la création du compte {body['account_id']}", "Créer le compte", "", CREATE)
    return await stepup.attempt(request, signed, what, forms.seal(services, CREATE, body), perform)


def _values_of(body: dict[str, Any]) -> dict[str, Any]:
    """The create form filled in again from the body it sent."""
    expires = body.get("expires_at")
    return _blank_values({
        **{k: v or "" for k, v in body.items() if k not in ("services", "expires_at")},
        "services": ", ".join(body.get("services") or ()),
        "expires_at": date_fr(expires) if expires else "",
        "net_entreprises": bool(body.get("net_entreprises")),
        "phone_hidden": bool(body.get("phone_hidden")),
    })  # fmt: skip


Again = Callable[[dict[str, str], int, str], web.Response]


def refused_on_form(exc: GatewayError, again: Again) -> web.Response:
    """An API refusal on the form: next to its field when it has one, else on top.
    Anything else (404, 429, 503...) is the console's error page."""
    field = FIELD_OF.get(exc.code)
    if field is not None:
        return again({field: texts.sentence(exc)}, exc.status, "")
    if isinstance(exc, Forbidden | Conflict | InvalidRequest) or exc.status == 422:
        return again({}, exc.status, texts.sentence(exc))
    raise exc


# --- modify rights --------------------------------------------------------------------


def _edit_values(account: Account) -> dict[str, Any]:
    return {
        "account_id": account.account_id, "establishment": account.establishment,
        "last_name": account.last_name, "first_name": account.first_name,
        "email": account.email, "role": account.role.value,
        "services": ", ".join(account.services), "net_entreprises": account.net_entreprises,
    }  # fmt: skip


def _edit_page(
    request: web.Request, signed: SignedIn, values: dict[str, Any], errors: dict[str, str],
    status: int = 200, error: str = "",
) -> web.Response:  # fmt: skip
    account_id = values["account_id"]
    return render(
        request, "account_form.html", status=status, title=f"Modifier le compte {account_id}",
        signed=signed, values=values, errors=errors, error=error, field_labels=FIELD_LABELS,
        editing=True, action=account_url(account_id) + "/modifier", button="Enregistrer",
        back=account_url(account_id), validity_days=0,
        step_up_hint=(
            "Retirer les droits d'administrateur demande un code de confirmation, "
            "changer l'adresse courriel aussi : envoyé sur votre téléphone."
        ),
    )  # fmt: skip


@page
async def edit_form(request: web.Request) -> web.StreamResponse:
    """The "Modifier" form: names, e-mail, profile, services, Net-Entreprises."""
    signed = await signed_in(request)
    account_id = account_id_of(request.match_info["account_id"])
    account = await svc(request).account_services.admin.target(signed.caller, account_id)
    return _edit_page(request, signed, _edit_values(account), {})


def _changes(account: Account, body: dict[str, Any]) -> dict[str, Any]:
    """Only what differs: an unchanged e-mail asks for no code."""
    current = _edit_values(account) | {"services": list(account.services)}
    return {k: v for k, v in body.items() if current.get(k) != v}


@page
async def edit(request: web.Request) -> web.StreamResponse:
    """`PATCH /accounts/{id}`: a new e-mail needs `contact.update`, a demotion `account.manage`."""
    signed, fields = await posted(request)
    account_id = account_id_of(request.match_info["account_id"])
    admin = svc(request).account_services.admin

    async def perform(changes: dict[str, Any], token: str | None) -> web.StreamResponse:
        if not changes:
            return redirect(account_url(account_id, "inchange"))
        await admin.update(signed.caller, account_id, changes, token)
        return redirect(account_url(account_id, "modifie"))

    if stepup.code_typed(request, signed, fields):
        return await stepup.with_code(request, signed, fields["code"], perform)
    account = await admin.target(signed.caller, account_id)
    errors: dict[str, str] = {}
    body = forms.names_and_rights(fields, errors)
    values = _edit_values(account) | {
        k: fields.get(k, "") for k in ("last_name", "first_name", "email", "role", "services")
    } | {"net_entreprises": fields.get("net_entreprises") == "1"}  # fmt: skip
    if errors:
        return _edit_page(request, signed, values, errors, 400)
    changes = _changes(account, body)
    what = Sensitive(
        _edit_title(account, changes), "Enregistrer", account_id, account_url(account_id)
    )
    try:
        return await stepup.attempt(request, signed, what, changes, perform)
    except GatewayError as exc:
        return refused_on_form(exc, lambda e, s, m: _edit_page(request, signed, values, e, s, m))


def _edit_title(account: Account, changes: dict[str, Any]) -> str:
    """What the step-up code of a modification confirms."""
    if "email" in changes and len(changes) == 1:
        return f"le changement de l'adresse courriel du compte {account.account_id}"
    if changes.get("role") == "user" and account.role.value == "admin":
        return f"le retrait des droits d'administrateur du compte {account.account_id}"
    return f"la modification du compte {account.account_id}"


# --- delete, trusted devices ------------------------------------------------------------


@page
async def delete_form(request: web.Request) -> web.StreamResponse:
    """The confirmation page: the account named, what deleting it means."""
    signed = await signed_in(request)
    account_id = account_id_of(request.match_info["account_id"])
    services = svc(request)
    account = await services.account_services.admin.target(signed.caller, account_id)
    return render(
        request, "delete.html", title=f"Supprimer le compte {account_id}", signed=signed,
        account=account.to_json(services.accounts.now()), labels=labels,
        action=account_url(account_id) + "/supprimer", back=account_url(account_id),
    )  # fmt: skip


@page
async def delete(request: web.Request) -> web.StreamResponse:
    """`DELETE /accounts/{id}` (an admin: `account.manage` code; 409 `last_admin` first)."""
    signed, fields = await posted(request)
    account_id = account_id_of(request.match_info["account_id"])
    admin = svc(request).account_services.admin

    async def perform(_: dict[str, Any], token: str | None) -> web.StreamResponse:
        deleted = await admin.delete(signed.caller, account_id, token)
        return redirect(
            _list_url(signed, deleted.establishment, fait="supprime", compte=account_id)
        )

    if stepup.code_typed(request, signed, fields):
        return await stepup.with_code(request, signed, fields["code"], perform)
    what = Sensitive(
        f"la suppression du compte {account_id}",
        "Supprimer le compte",
        account_id,
        account_url(account_id),
    )
    return await stepup.attempt(request, signed, what, {}, perform)


@page
async def revoke_devices(request: web.Request) -> web.StreamResponse:
    """`DELETE /accounts/{id}/devices[/{device_id}]`: every trusted device, or the one in
    the form's `device` (an admin: `account.manage` code; an unknown device: 404 first)."""
    signed, fields = await posted(request)
    account_id = account_id_of(request.match_info["account_id"])
    admin = svc(request).account_services.admin

    async def perform(chosen: dict[str, Any], token: str | None) -> web.StreamResponse:
        devices = admin.devices(signed.caller, token)
        if chosen.get("device"):
            await devices.revoke(account_id, chosen["device"])
            return redirect(account_url(account_id, "poste"))
        await devices.revoke_all(account_id)
        return redirect(account_url(account_id, "postes"))

    if stepup.code_typed(request, signed, fields):
        return await stepup.with_code(request, signed, fields["code"], perform)
    device = fields.get("device", "")
    if len(device) > 64 or not (device.isascii() and device.isprintable()):
        raise InvalidRequest("device: a device id")
    whose = f"du compte {account_id}"
    what = Sensitive(
        f"le retrait d'un poste de confiance {whose}" if device
        else f"le retrait des postes de confiance {whose}",
        "Retirer le poste de confiance" if device else "Retirer les postes de confiance",
        account_id, account_url(account_id),
    )  # fmt: skip
    return await stepup.attempt(request, signed, what, {"device": device}, perform)


@page
async def resend(request: web.Request) -> web.StreamResponse:
    """ "Renvoyer le code" / "M'appeler plutôt" on a confirmation page."""
    return await stepup.resend(request, await signed_as(request, ADMIN_ROLES | USER_ROLES))
