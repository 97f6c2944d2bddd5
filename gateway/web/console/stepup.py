"""A sensitive action's step-up code, asked for and typed on the same page.

Every sensitive console action goes the same way, the API's own order:

1. the change is tried as the API would try it, without a token
   (`perform(fields, None)`): a 400, 404 or 409 `last_admin` comes first, and
   an operator (exempt) is done at once;
2. the policy answers `StepUpRequired` naming its purpose (`account.create`,
   `contact.update`, `account.manage`): a code of that purpose goes to the
   acting admin's own phone (`challenge_requested`, the `/challenge` path), and
   the session keeps the change as it was asked for, checked, with the path
   its form posts to;
3. the admin types the code on a page that says what it is for ("pour la
   suppression du compte alice"); `code_verified` (the `/verify` path) gives
   the grant, spent on the change the session kept, never on a later form's.

"Renvoyer le code" and "M'appeler plutôt" send the same code again
(`ChallengeService.resend`, the `/challenge/{id}/resend` path, its cooldown
and limits).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from gateway.clock import from_ms
from gateway.errors import GatewayError, InvalidRequest, StepUpRequired
from gateway.web.console import texts
from gateway.web.console.guard import (
    MINE,
    USER_ROLES,
    SignedIn,
    check_csrf,
    client_ip,
    error_page,
    form,
    store,
    svc,
)
from gateway.web.console.pages import render
from gateway.web.console.sessions import Session
from gateway.web.request import challenge_requested, code_verified

Perform = Callable[[dict[str, Any], str | None], Awaitable[web.StreamResponse]]
RESEND: Final = "/console/confirmation/renvoyer"
CHANNELS: Final = {"": None, "sms": "sms", "voice": "voice"}


@dataclass(frozen=True, slots=True)
class Sensitive:
    """What a step-up code confirms, in words, and where "Annuler" leads."""

    title: str  # "la suspension du compte alice"
    button: str  # "Suspendre le compte"
    target: str  # the account it is about
    back: str


def code_typed(request: web.Request, signed: SignedIn, fields: dict[str, str]) -> bool:
    """Whether this POST carries the code of the action waiting on this very path."""
    session = signed.session
    return "code" in fields and bool(session.action_challenge) and session.action == request.path


async def attempt(
    request: web.Request,
    signed: SignedIn,
    what: Sensitive,
    fields: dict[str, Any],
    perform: Perform,
) -> web.StreamResponse:
    """The change without a token; its step-up code asked for when the policy wants one."""
    try:
        return await perform(fields, None)
    except StepUpRequired as exc:
        return await _ask(request, signed, what, fields, str(exc.extra.get("purpose", "")))


async def with_code(
    request: web.Request, signed: SignedIn, typed: str, perform: Perform
) -> web.StreamResponse:
    """The typed code checked; its grant spent on the change the session kept."""
    services = svc(request)
    code = "".join(typed.split())
    length = services.config.otp.code_length
    if not (len(code) == length and code.isascii() and code.isdigit()):
        return page(request, signed, 400, error=f"Le code se compose de {length} chiffres.")
    session = signed.session
    try:
        verified = await code_verified(services, session.action_challenge, code, False, "")
    except GatewayError as exc:
        return page(request, signed, exc.status, error=texts.sentence(exc))
    await store(request).update(signed.session_id, _cleared(signed))
    return await perform(session.action_fields, verified.token)


async def _ask(
    request: web.Request,
    signed: SignedIn,
    what: Sensitive,
    fields: dict[str, Any],
    purpose: str,
) -> web.Response:
    services = svc(request)
    cleared = replace(signed, session=_cleared(signed))
    try:
        created = await challenge_requested(
            services, signed.account.account_id, purpose, None, client_ip(request), None
        )
    except GatewayError as exc:
        return page(request, cleared, exc.status, error=texts.sentence(exc), what=what)
    assert created is not None  # a sensitive purpose is never spared by a trusted device
    session = replace(
        signed.session, action=request.path, action_target=what.target,
        action_challenge=created.challenge_id, action_destination=created.destination,
        action_expires_ms=created.expires_at_ms, action_title=what.title,
        action_button=what.button, action_fields=fields, action_channel=created.channel,
    )  # fmt: skip
    await store(request).update(signed.session_id, session)
    return page(request, replace(signed, session=session), 200)


def _cleared(signed: SignedIn) -> Session:
    return replace(
        signed.session, action="", action_target="", action_challenge="", action_fields={},
        action_title="", action_button="", action_destination="", action_channel="",
    )  # fmt: skip


def page(
    request: web.Request,
    signed: SignedIn,
    status: int,
    error: str = "",
    notice: str = "",
    what: Sensitive | None = None,
) -> web.Response:
    """The confirmation page: what the code is for, where it went, the field to type it."""
    session = signed.session
    title = what.title if what is not None else session.action_title
    back = what.back if what is not None else _back(session)
    return render(
        request, "step_up.html", status=status, title=f"Confirmer {title}", action_title=title,
        signed=signed, error=error, notice=notice, back=back, session=session,
        sent=bool(session.action_challenge), expires_at=from_ms(session.action_expires_ms),
        code_length=svc(request).config.otp.code_length,
        cooldown=svc(request).config.otp.resend_cooldown_seconds,
    )  # fmt: skip


def _back(session: Session) -> str:
    if session.role in USER_ROLES:
        return MINE
    target = session.action_target
    return f"/console/comptes/{quote(target, safe='')}" if target else "/console/comptes"


async def resend(request: web.Request, signed: SignedIn) -> web.Response:
    """ "Renvoyer le code" / "M'appeler plutôt": the same code again, on the page."""
    fields = await form(request)
    check_csrf(signed, fields)
    session = signed.session
    if not session.action_challenge:  # nothing waits for a code (done, or another browser)
        return error_page(request, 409, texts.ERRORS["challenge_not_found"], "Demande refusée")
    if fields.get("channel", "") not in CHANNELS:
        raise InvalidRequest("channel must be sms or voice")
    channel = CHANNELS[fields.get("channel", "")]
    try:
        created = await svc(request).challenges.resend(
            session.action_challenge, channel, client_ip(request)
        )
    except GatewayError as exc:
        return page(request, signed, exc.status, error=texts.sentence(exc))
    session = replace(
        session, action_channel=created.channel,
        action_destination=created.destination or session.action_destination,
    )  # fmt: skip
    await store(request).update(signed.session_id, session)
    return page(
        request, replace(signed, session=session), 200,
        notice=texts.resent(created.channel, session.action_destination),
    )  # fmt: skip
