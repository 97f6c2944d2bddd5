"""Sign-in and sign-out: the gateway's own two-factor login, through the same services.

Account id -> `challenge_requested` (the `/challenge` path: same limits, same
trusted-device rule) -> the code page -> `code_verified` (the `/verify`
path) -> a new session. Where it leads is decided after the code, so the
pages tell a stranger nothing about an account's role: an admin (or a console
operator) to the account list, a user to "Mon compte". "Faire confiance à ce
poste" asks `/verify` for a trusted-device token, kept in an HttpOnly cookie
for the next sign-in.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from aiohttp import web

from gateway.accounts import valid_account_id
from gateway.clock import from_ms, now_ms
from gateway.errors import GatewayError, InvalidRequest
from gateway.web.console import texts
from gateway.web.console.guard import (
    ADMIN_ROLES,
    DEVICE_COOKIE,
    FORM_COOKIE,
    SESSION_COOKIE,
    SIGN_IN,
    USER_ROLES,
    NotForConsole,
    SessionOver,
    check_csrf,
    check_form_token,
    client_ip,
    console_role,
    drop_cookie,
    form,
    form_token,
    home_of,
    page,
    pending,
    set_cookie,
    signed_as,
    store,
    svc,
)
from gateway.web.console.pages import redirect, render
from gateway.web.console.sessions import Session
from gateway.web.request import challenge_requested, code_verified

CHANNELS: Final = {"": None, "sms": "sms", "voice": "voice"}
NOTICES: Final = {"fin": texts.SIGNED_OUT, "expiree": texts.SESSION_OVER}
# A code that will never verify again ends the sign-in: start over.
_DEAD: Final = frozenset({
    "expired", "already_used", "too_many_attempts", "challenge_not_found",
    "account_expired", "account_suspended",
})  # fmt: skip


def _sign_in_page(
    request: web.Request, status: int = 200, error: str = "", account_id: str = "", notice: str = ""
) -> web.Response:
    token = form_token(request)
    response = render(
        request, "signin.html", status=status, title="Connexion", csrf=token, error=error,
        account_id=account_id, notice=notice,
    )  # fmt: skip
    set_cookie(request, response, FORM_COOKIE, token, max_age=None)
    return response


@page
async def sign_in_form(request: web.Request) -> web.StreamResponse:
    """The sign-in page: an account id and how to receive the code."""
    notice = NOTICES.get(request.query.get("message", ""), "")
    return _sign_in_page(request, notice=notice)


@page
async def sign_in(request: web.Request) -> web.StreamResponse:
    """Ask for a code (or, on a trusted device, sign in at once)."""
    fields = await form(request)
    check_form_token(request, fields)
    account_id = fields.get("account_id", "").strip()
    channel = fields.get("channel", "")
    if not valid_account_id(account_id) or channel not in CHANNELS:
        error = "Saisissez votre identifiant : lettres, chiffres et . _ @ - uniquement."
        return _sign_in_page(request, 400, error, account_id[:128])
    services = svc(request)
    device = request.cookies.get(DEVICE_COOKIE) or None
    try:
        created = await challenge_requested(
            services, account_id, "login", CHANNELS[channel], client_ip(request), device
        )
    except GatewayError as exc:
        return _sign_in_page(request, exc.status, texts.sentence(exc), account_id)
    if created is None:
        return await _signed_in(request, account_id)
    sessions = store(request)
    await sessions.end(request.cookies.get(SESSION_COOKIE, ""))  # a new sign-in ends the last
    session_id = await sessions.start(
        account_id, "code", "", challenge_id=created.challenge_id, channel=created.channel,
        destination=created.destination, expires_at_ms=created.expires_at_ms,
    )  # fmt: skip
    response = redirect("/console/code")
    set_cookie(request, response, SESSION_COOKIE, session_id, max_age=None)
    return response


@page
async def code_form(request: web.Request) -> web.StreamResponse:
    """The code page: where the code went, until when, and "poste de confiance"."""
    _, session = await pending(request)
    return _render_code(request, session.csrf, session, 200, "")


def _render_code(
    request: web.Request, csrf: str, session: Session, status: int, error: str, notice: str = ""
) -> web.Response:
    config = svc(request).config
    return render(
        request, "code.html", status=status, title="Saisie du code", csrf=csrf, error=error,
        session=session, expires_at=from_ms(session.expires_at_ms), notice=notice,
        code_length=config.otp.code_length, trusted_days=config.otp.trusted_device_days,
        cooldown=config.otp.resend_cooldown_seconds,
    )  # fmt: skip


@page
async def resend(request: web.Request) -> web.StreamResponse:
    """ "Renvoyer le code" / "M'appeler plutôt": the same code again (`/challenge/{id}/resend`)."""
    session_id, session = await pending(request)
    fields = await form(request)
    check_csrf(session, fields)
    if fields.get("channel", "") not in CHANNELS:
        raise InvalidRequest("channel must be sms or voice")
    try:
        created = await svc(request).challenges.resend(
            session.challenge_id, CHANNELS[fields.get("channel", "")], client_ip(request)
        )
    except GatewayError as exc:
        return _render_code(request, session.csrf, session, exc.status, texts.sentence(exc))
    session = replace(
        session, channel=created.channel, destination=created.destination or session.destination
    )
    await store(request).update(session_id, session)
    notice = texts.resent(created.channel, session.destination)
    return _render_code(request, session.csrf, session, 200, "", notice)


@page
async def check_code(request: web.Request) -> web.StreamResponse:
    """Check the code; a live code, wrong, leaves the page; a dead one ends the sign-in."""
    session_id, session = await pending(request)
    fields = await form(request)
    check_csrf(session, fields)
    services = svc(request)
    code = "".join(fields.get("code", "").split())
    length = services.config.otp.code_length
    if not (len(code) == length and code.isascii() and code.isdigit()):
        error = f"Le code se compose de {length} chiffres."
        return _render_code(request, session.csrf, session, 400, error)
    account = await services.accounts.get(session.account_id)
    role = None if account is None else console_role(services, account)
    trust = fields.get("trust") == "1" and role is not None
    label = services.config.console.device_label
    try:
        verified = await code_verified(services, session.challenge_id, code, trust, label)
    except GatewayError as exc:
        if exc.code not in _DEAD:
            return _render_code(request, session.csrf, session, exc.status, texts.sentence(exc))
        await store(request).end(session_id)
        restart = _sign_in_page(request, exc.status, texts.sentence(exc), session.account_id)
        drop_cookie(request, restart, SESSION_COOKIE)
        return restart
    await store(request).end(session_id)
    response = await _signed_in(request, session.account_id)
    if verified.token_kind == "trusted_device" and verified.token:
        max_age = max(0, (verified.until_ms - now_ms()) // 1000)
        set_cookie(request, response, DEVICE_COOKIE, verified.token, max_age=max_age)
    return response


async def _signed_in(request: web.Request, account_id: str) -> web.StreamResponse:
    """A new session for a proven account, landing on its own space."""
    services = svc(request)
    account = await services.accounts.get(account_id)
    role = None if account is None else console_role(services, account)
    if role is None:
        raise NotForConsole("this account may not use the console")
    sessions = store(request)
    await sessions.end(request.cookies.get(SESSION_COOKIE, ""))  # one session per sign-in
    session_id = await sessions.start(account_id, "in", role)
    response = redirect(home_of(role))
    set_cookie(request, response, SESSION_COOKIE, session_id, max_age=None)
    drop_cookie(request, response, FORM_COOKIE)
    return response


@page
async def sign_out(request: web.Request) -> web.StreamResponse:
    """End the session (the form's token required, like every POST)."""
    try:
        signed = await signed_as(request, ADMIN_ROLES | USER_ROLES)
    except SessionOver:
        return redirect(SIGN_IN)
    check_csrf(signed, await form(request))
    await store(request).end(signed.session_id)
    response = redirect(f"{SIGN_IN}?message=fin")
    drop_cookie(request, response, SESSION_COOKIE)
    return response
