"""Actions on an account: renew, suspend (with its step-up code inline), reactivate.

Each calls what the API route calls (`AccountAdmin.renew`, `.update`), as the
same caller. Where the policy needs a step-up (suspending: `account.manage`),
the console asks the acting admin for a code of that purpose
(`challenge_requested`, the `/challenge` path), says which action the code is
for, and spends the `/verify` grant on that one change; an operator is exempt,
as in the API. Renewing and reactivating need no step-up in the API: none here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final
from urllib.parse import quote

from aiohttp import web

from gateway.accounts.policy import ACCOUNT_MANAGE
from gateway.clock import from_ms
from gateway.errors import GatewayError, StepUpRequired
from gateway.web.console import texts
from gateway.web.console.guard import (
    SignedIn,
    check_csrf,
    client_ip,
    form,
    page,
    signed_in,
    store,
    svc,
)
from gateway.web.console.pages import redirect, render
from gateway.web.request import account_id_of, challenge_requested, code_verified

DONE: Final = {
    "renouvele": "Le compte a été renouvelé.",
    "suspendu": "Le compte a été suspendu.",
    "reactive": "Le compte a été réactivé.",
}


def _account_url(account_id: str, done: str = "") -> str:
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
    return redirect(_account_url(account_id, "renouvele"))


@page
async def reactivate(request: web.Request) -> web.StreamResponse:
    """Lift a suspension (`PATCH status: active`: no step-up in the API)."""
    signed, account_id, _ = await _acted(request)
    admin = svc(request).account_services.admin
    await admin.update(signed.caller, account_id, {"status": "active"}, None)
    return redirect(_account_url(account_id, "reactive"))


@page
async def suspend(request: web.Request) -> web.StreamResponse:
    """Suspend: an operator at once; an admin first asks, then types, its step-up code."""
    signed, account_id, fields = await _acted(request)
    services = svc(request)
    admin = services.account_services.admin
    session = signed.session
    if "code" in fields and session.action == "suspend" and session.action_target == account_id:
        return await _suspend_with_code(request, signed, account_id, fields["code"])
    try:
        # The API's own order: 404 and 409 `last_admin` before the step-up is asked for.
        await admin.update(signed.caller, account_id, {"status": "suspended"}, None)
    except StepUpRequired:
        return await _ask_step_up(request, signed, account_id)
    return redirect(_account_url(account_id, "suspendu"))  # an operator: exempt


async def _suspend_with_code(
    request: web.Request, signed: SignedIn, account_id: str, typed: str
) -> web.StreamResponse:
    services = svc(request)
    code = "".join(typed.split())
    length = services.config.otp.code_length
    if not (len(code) == length and code.isascii() and code.isdigit()):
        return _step_up_page(request, signed, 400, f"Le code se compose de {length} chiffres.")
    session = signed.session
    try:
        verified = await code_verified(services, session.action_challenge, code, False, "")
    except GatewayError as exc:
        return _step_up_page(request, signed, exc.status, texts.sentence(exc))
    await store(request).update(signed.session_id, replace(session, action=""))
    admin = services.account_services.admin
    await admin.update(signed.caller, account_id, {"status": "suspended"}, verified.token)
    return redirect(_account_url(account_id, "suspendu"))


async def _ask_step_up(request: web.Request, signed: SignedIn, account_id: str) -> web.Response:
    """A code of purpose `account.manage` to the acting admin; the page to type it."""
    services = svc(request)
    try:
        created = await challenge_requested(
            services, signed.account.account_id, ACCOUNT_MANAGE, None, client_ip(request), None
        )
    except GatewayError as exc:
        return _step_up_page(request, signed, exc.status, texts.sentence(exc), account_id)
    assert created is not None  # a sensitive purpose is never spared by a trusted device
    session = replace(
        signed.session, action="suspend", action_target=account_id,
        action_challenge=created.challenge_id, action_destination=created.destination,
        action_expires_ms=created.expires_at_ms,
    )  # fmt: skip
    await store(request).update(signed.session_id, session)
    return _step_up_page(request, replace(signed, session=session), 200, "")


def _step_up_page(
    request: web.Request, signed: SignedIn, status: int, error: str, target: str = ""
) -> web.Response:
    session = signed.session
    return render(
        request, "step_up.html", status=status, title="Confirmer la suspension",
        signed=signed, target=target or session.action_target, error=error,
        sent=bool(session.action_challenge) and not target, session=session,
        expires_at=from_ms(session.action_expires_ms),
        code_length=svc(request).config.otp.code_length,
        back=_account_url(target or session.action_target),
    )  # fmt: skip
