""" "Mon compte": a user's own pages, over the services the login front end's routes call.

A user signs in like an admin (the same two-factor sign-in) and lands here; it
acts as the API's `otp` caller acting for itself (`user_caller`), so the rules
are the self-service routes':

- "Changer mon numéro": `PhoneChanges.start` then `.finish`, as
  `POST /accounts/{id}/phone-change` and `.../verify` call them: a code goes to
  the NEW number and is typed here; only then does the number switch (trusted
  devices revoked, the e-mail notice sent by the service). An account that has
  a number confirms first with a `contact.update` code to its current one
  (`stepup`, inline); an account without one (blanked) enrols without.
- "Mes postes de confiance": `TrustedDevices.list/.revoke/.revoke_all`, as
  `/accounts/{id}/trusted-devices` calls them (the account's own: no step-up).
- the authenticator app: `mine_app`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from aiohttp import web

from gateway.clock import from_ms
from gateway.errors import GatewayError, InvalidRequest
from gateway.web.console import forms, stepup, texts
from gateway.web.console.guard import (
    MINE,
    SignedIn,
    check_csrf,
    client_ip,
    form,
    page,
    store,
    svc,
    user_signed_in,
)
from gateway.web.console.manage import FIELD_LABELS, refused_on_form
from gateway.web.console.pages import redirect, render
from gateway.web.console.sessions import Session
from gateway.web.console.stepup import Sensitive

PHONE: Final = MINE + "/telephone"
PHONE_CODE: Final = PHONE + "/code"
DEVICES: Final = MINE + "/postes/retirer"
CHANNELS: Final = {"": None, "sms": "sms", "voice": "voice"}
DONE: Final = {
    "numero": "Votre nouveau numéro est enregistré. Un courriel vous le confirme ; vos postes "
    "de confiance ont été retirés.",
    "poste": "Le poste de confiance a été retiré.",
    "postes": "Tous vos postes de confiance ont été retirés.",
    "application": "Votre application d'authentification est prête. Un courriel vous le confirme.",
    "application-retiree": "Votre application d'authentification a été retirée.",
}
# A phone-change code that will never verify again: the change starts over.
_DEAD: Final = frozenset({
    "expired", "already_used", "too_many_attempts", "challenge_not_found", "phone_already_set",
})  # fmt: skip


async def posted(request: web.Request) -> tuple[SignedIn, dict[str, str]]:
    """A user's POST: its session and its form, the form's token checked."""
    signed = await user_signed_in(request)
    fields = await form(request)
    check_csrf(signed, fields)
    return signed, fields


@page
async def home(request: web.Request) -> web.StreamResponse:
    """ "Mon compte": the number, the trusted devices, the authenticator app."""
    signed = await user_signed_in(request)
    services = svc(request)
    account_id = signed.account.account_id
    devices = await services.trusted.list(account_id)
    app = await services.account_services.totp.status(account_id)
    return render(
        request, "mine.html", title="Mon compte", signed=signed,
        account=signed.account.to_json(services.accounts.now()), devices=devices, app=app,
        done=DONE.get(request.query.get("fait", ""), ""), from_ms=from_ms,
    )  # fmt: skip


# --- trusted devices ------------------------------------------------------------------


@page
async def revoke_devices(request: web.Request) -> web.StreamResponse:
    """One device (the form's `device`), or all of them."""
    signed, fields = await posted(request)
    trusted = svc(request).trusted
    account_id = signed.account.account_id
    device = fields.get("device", "")
    if device:
        await trusted.revoke(account_id, device)  # 404 when it is not this account's
        return redirect(MINE + "?fait=poste")
    await trusted.revoke_all(account_id)
    return redirect(MINE + "?fait=postes")


# --- a new number, proven by a code sent to it -------------------------------------------


def _phone_page(
    request: web.Request, signed: SignedIn, values: dict[str, Any], errors: dict[str, str],
    status: int = 200, error: str = "",
) -> web.Response:  # fmt: skip
    services = svc(request)
    return render(
        request, "mine_phone.html", status=status, title="Changer mon numéro", signed=signed,
        account=signed.account.to_json(services.accounts.now()), values=values, errors=errors,
        error=error, field_labels=FIELD_LABELS,
    )  # fmt: skip


@page
async def phone_form(request: web.Request) -> web.StreamResponse:
    """The new number, "masqué", the extension, how to receive the code."""
    signed = await user_signed_in(request)
    account = signed.account
    values = {
        "phone_extension": account.phone_extension or "",
        "phone_hidden": account.phone_hidden,
        "channel": "",
    }
    return _phone_page(request, signed, values, {})


@page
async def start_phone_change(request: web.Request) -> web.StreamResponse:
    """`POST /accounts/{id}/phone-change`: a code to the new number (after a
    `contact.update` code to the current one, when there is one)."""
    signed, fields = await posted(request)
    services = svc(request)

    async def perform(body: dict[str, Any], token: str | None) -> web.StreamResponse:
        clear = forms.unseal(services, PHONE, body)
        phone = services.accounts.parse_phone(clear["phone"])
        options = {
            "phone_hidden": clear["phone_hidden"],
            "phone_extension": clear["phone_extension"],
            "channel": clear["channel"],
            "client_ip": client_ip(request),
        }
        started = await services.account_services.phone_changes.start(
            signed.caller, signed.account, phone, options, token
        )
        created = started.created
        current = await store(request).get(signed.session_id)  # as `stepup` left it
        if current is None:
            return redirect(MINE)
        await store(request).update(signed.session_id, replace(
            current, change_challenge=created.challenge_id,
            change_destination=started.destination, change_expires_ms=created.expires_at_ms,
            change_channel=created.channel,
        ))  # fmt: skip
        return redirect(PHONE_CODE)

    if stepup.code_typed(request, signed, fields):
        return await stepup.with_code(request, signed, fields["code"], perform)
    errors: dict[str, str] = {}
    body = forms.phone_fields(services, fields, errors, required=True)
    channel = fields.get("channel", "")
    values = {"phone_extension": fields.get("phone_extension", ""),
              "phone_hidden": body["phone_hidden"], "channel": channel}  # fmt: skip
    if channel not in CHANNELS:
        raise InvalidRequest("channel must be sms or voice")
    if errors:
        return _phone_page(request, signed, values, errors, 400)
    body["channel"] = CHANNELS[channel]
    what = Sensitive("le changement de votre numéro", "Continuer", "", MINE)
    try:
        return await stepup.attempt(
            request, signed, what, forms.seal(services, PHONE, body), perform
        )
    except GatewayError as exc:
        return refused_on_form(exc, lambda e, s, m: _phone_page(request, signed, values, e, s, m))


def _code_page(
    request: web.Request, signed: SignedIn, status: int = 200, error: str = "", notice: str = ""
) -> web.Response:
    config = svc(request).config
    session = signed.session
    return render(
        request, "mine_phone_code.html", status=status, title="Le code reçu sur mon nouveau numéro",
        signed=signed, session=session, expires_at=from_ms(session.change_expires_ms),
        error=error, notice=notice, code_length=config.otp.code_length,
        cooldown=config.otp.resend_cooldown_seconds,
    )  # fmt: skip


@page
async def phone_code_form(request: web.Request) -> web.StreamResponse:
    """Where the code went (the new number, masked), until when, the field to type it."""
    signed = await user_signed_in(request)
    if not signed.session.change_challenge:
        return redirect(PHONE)
    return _code_page(request, signed)


@page
async def finish_phone_change(request: web.Request) -> web.StreamResponse:
    """`POST /accounts/{id}/phone-change/verify`: the number switches only now."""
    signed, fields = await posted(request)
    services = svc(request)
    session = signed.session
    if not session.change_challenge:
        return redirect(PHONE)
    code = "".join(fields.get("code", "").split())
    length = services.config.otp.code_length
    if not (len(code) == length and code.isascii() and code.isdigit()):
        return _code_page(request, signed, 400, f"Le code se compose de {length} chiffres.")
    try:
        await services.account_services.phone_changes.finish(
            signed.caller, signed.account.account_id, session.change_challenge, code
        )
    except GatewayError as exc:
        if exc.code not in _DEAD:
            return _code_page(request, signed, exc.status, texts.sentence(exc))
        await store(request).update(signed.session_id, _change_cleared(session))
        values = {"phone_extension": "", "phone_hidden": False, "channel": ""}
        return _phone_page(request, signed, values, {}, exc.status, texts.sentence(exc))
    await store(request).update(signed.session_id, _change_cleared(session))
    return redirect(MINE + "?fait=numero")


@page
async def resend_phone_code(request: web.Request) -> web.StreamResponse:
    """ "Renvoyer le code" / "M'appeler plutôt": the same code to the new number again."""
    signed, fields = await posted(request)
    session = signed.session
    if not session.change_challenge:
        return redirect(PHONE)
    if fields.get("channel", "") not in CHANNELS:
        raise InvalidRequest("channel must be sms or voice")
    try:
        created = await svc(request).challenges.resend(
            session.change_challenge, CHANNELS[fields.get("channel", "")], client_ip(request)
        )
    except GatewayError as exc:
        return _code_page(request, signed, exc.status, texts.sentence(exc))
    session = replace(session, change_channel=created.channel)
    await store(request).update(signed.session_id, session)
    notice = texts.resent(created.channel, session.change_destination)
    return _code_page(request, replace(signed, session=session), notice=notice)


def _change_cleared(session: Session) -> Session:
    return replace(
        session, change_challenge="", change_destination="", change_expires_ms=0,
        change_channel="",
    )  # fmt: skip
