""" "Application d'authentification": a user's own app, over `TotpService` as the API calls it.

Only where the deployment allows apps (`[accounts] totp`, the service's
`allowed`, as `GET /accounts/{id}/totp` says); elsewhere these paths are 404.

- enrol (`POST /accounts/{id}/totp`): a `contact.update` code first (`stepup`,
  inline), then a new pending secret. Its `otpauth://` URI is kept in the
  session sealed (AES-GCM under the key TOTP secrets are sealed with, bound to
  the account and this use), never in clear in Redis, until confirmed or
  removed. The page shows it as a QR code, an `<img>` drawn by the gateway
  itself (segno, PNG) at a same-origin URL the strict CSP allows, and the
  secret as text for manual entry.
- confirm (`POST /accounts/{id}/totp/confirm`): the app's first code; the
  e-mail notice, as the route sends it.
- remove (`DELETE /accounts/{id}/totp`, the user's way: `contact.update`).
"""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import segno
from aiohttp import web

from gateway.accounts.policy import CONTACT_UPDATE
from gateway.errors import GatewayError, NotFound
from gateway.runtime import Services
from gateway.web.console import stepup, texts
from gateway.web.console.guard import MINE, SignedIn, page, store, svc, user_signed_in
from gateway.web.console.mine import posted
from gateway.web.console.pages import PAGE_HEADERS, redirect, render
from gateway.web.console.sessions import Session
from gateway.web.console.stepup import Sensitive

APP: Final = MINE + "/application"
QR: Final = APP + "/qr.png"
CONFIRM: Final = APP + "/confirmer"
REMOVE: Final = APP + "/retirer"


def _aad(account_id: str) -> bytes:
    return b"otp-gateway/console-totp-uri/" + account_id.encode()


def _seal(services: Services, account_id: str, uri: str) -> str:
    sealed = services.account_services.totp.sealer.seal(uri.encode(), _aad(account_id))
    return base64.b64encode(sealed).decode()


def _uri(services: Services, signed: SignedIn) -> str | None:
    """The URI of the enrolment this session started, in clear (memory only); None if none."""
    sealed = signed.session.totp_uri_sealed
    if not sealed:
        return None
    aad = _aad(signed.account.account_id)
    return services.account_services.totp.sealer.open(base64.b64decode(sealed), aad).decode()


def secret_of(uri: str) -> str:
    """The base32 secret of an otpauth:// URI, in groups of four for typing."""
    secret = parse_qs(urlsplit(uri).query).get("secret", [""])[0]
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def _allowed(request: web.Request) -> Services:
    """The services where apps are allowed; 404 where they are not (no such page)."""
    services = svc(request)
    if not services.account_services.totp.allowed:
        raise NotFound("authenticator apps are not enabled here", code="not_found")
    return services


async def _remember(request: web.Request, signed: SignedIn, sealed: str) -> None:
    current = await store(request).get(signed.session_id)  # as `stepup` left it
    if current is not None:
        await store(request).update(signed.session_id, replace(current, totp_uri_sealed=sealed))


def _app_page(
    request: web.Request, signed: SignedIn, status: dict[str, bool], code_error: str = "",
    http_status: int = 200,
) -> web.Response:  # fmt: skip
    services = svc(request)
    uri = _uri(services, signed) if status["pending"] else None
    return render(
        request, "mine_app.html", status=http_status, title="Application d'authentification",
        signed=signed, app=status, enrolling=uri is not None,
        secret=secret_of(uri) if uri else "", issuer=services.account_services.totp.issuer,
        error=code_error, qr=QR,
    )  # fmt: skip


@page
async def app_page(request: web.Request) -> web.StreamResponse:
    """The app's state: none (add one), being added (QR, secret, first code), in use (remove)."""
    signed = await user_signed_in(request)
    services = _allowed(request)
    status = await services.account_services.totp.status(signed.account.account_id)
    return _app_page(request, signed, status)


@page
async def qr_image(request: web.Request) -> web.StreamResponse:
    """The enrolment's QR code as a PNG, drawn here: nothing leaves the gateway."""
    signed = await user_signed_in(request)
    services = _allowed(request)
    uri = _uri(services, signed)
    if uri is None:
        raise NotFound("no enrolment under way", code="not_found")
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="png", scale=6, border=4)
    response = web.Response(body=out.getvalue(), content_type="image/png")
    response.headers.update(PAGE_HEADERS)  # no-store: it is a secret
    return response


@page
async def enrol(request: web.Request) -> web.StreamResponse:
    """A new pending secret, after a `contact.update` code."""
    signed, fields = await posted(request)
    services = _allowed(request)
    totp, admin = services.account_services.totp, services.account_services.admin

    async def perform(body: dict[str, Any], token: str | None) -> web.StreamResponse:
        who = await admin.step_up(signed.caller, CONTACT_UPDATE, token)
        uri = await totp.enrol(signed.account, who)
        await _remember(request, signed, _seal(services, signed.account.account_id, uri))
        return redirect(APP)

    if stepup.code_typed(request, signed, fields):
        return await stepup.with_code(request, signed, fields["code"], perform)
    what = Sensitive("l'ajout d'une application d'authentification", "Continuer", "", APP)
    return await stepup.attempt(request, signed, what, {}, perform)


@page
async def confirm(request: web.Request) -> web.StreamResponse:
    """The app's first code: the app is the account's from now on."""
    signed, fields = await posted(request)
    services = _allowed(request)
    totp = services.account_services.totp
    account = signed.account
    code = "".join(fields.get("code", "").split())
    try:
        await totp.confirm(account, code, signed.caller.who())
    except GatewayError as exc:
        status = await totp.status(account.account_id)
        message = texts.sentence(exc)
        if exc.code == "invalid_request":  # the service's own format check
            message = "Le code de l'application se compose de 6 chiffres."
        return _app_page(request, signed, status, message, exc.status)
    await services.account_services.admin.notify(signed.caller, account, "totp_added")
    await store(request).update(signed.session_id, _forgotten(signed.session))
    return redirect(MINE + "?fait=application")


@page
async def remove(request: web.Request) -> web.StreamResponse:
    """Remove the app (or the enrolment under way), after a `contact.update` code."""
    signed, fields = await posted(request)
    services = _allowed(request)
    totp, admin = services.account_services.totp, services.account_services.admin
    account = signed.account
    status = await totp.status(account.account_id)
    if not (status["enrolled"] or status["pending"]):  # before any code, as the API
        raise NotFound("this account has no authenticator app", code="not_found")

    async def perform(body: dict[str, Any], token: str | None) -> web.StreamResponse:
        who = await admin.step_up(signed.caller, CONTACT_UPDATE, token)
        if await totp.remove(account, who):
            await admin.notify(signed.caller, account, "totp_removed")
        current = await store(request).get(signed.session_id)
        if current is not None:
            await store(request).update(signed.session_id, _forgotten(current))
        return redirect(MINE + "?fait=application-retiree")

    if stepup.code_typed(request, signed, fields):
        return await stepup.with_code(request, signed, fields["code"], perform)
    what = Sensitive("le retrait de votre application d'authentification", "Retirer", "", APP)
    return await stepup.attempt(request, signed, what, {}, perform)


def _forgotten(session: Session) -> Session:
    return replace(session, totp_uri_sealed="")
