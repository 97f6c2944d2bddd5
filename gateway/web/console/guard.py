"""What every console handler goes through: cookies, the session, CSRF, the caller, errors.

Cookies (all `HttpOnly`, `SameSite=Strict`, `Path=/console/`, and `Secure`
unless `[server] mode = "development"`):

- `otpgw_console`: the session id (`sessions.SessionStore`);
- `otpgw_console_form`: the sign-in form's CSRF token, before any session
  exists (double submit: the form's hidden field must equal it);
- `otpgw_console_device`: the trusted-device token that "Faire confiance à ce
  poste" earned, sent back as `trusted_device_token` on the next sign-in.

Signed in, an admin acts as the API's `admin` caller for its own account (the
same `acting_admin` check on every request: a demoted, suspended or expired
admin is out at once); an account named in `[console] operators` acts as an
`operator` (every establishment); a user acts as the login front end does for
it (the API's `otp` caller, `user_caller`) on its own pages, "Mon compte"
(`mine`), and only there: each space refuses the other's sessions (403).
Errors become French pages (`texts`).
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from redis.exceptions import RedisError

from gateway.accounts.policy import Caller
from gateway.accounts.records import Account, Role
from gateway.crypto import constant_time_equal
from gateway.errors import GatewayError, InvalidRequest, NotFound, RateLimited, Unavailable
from gateway.runtime import Services
from gateway.web.body import parse_client_ip, read_form
from gateway.web.console import texts
from gateway.web.console.pages import redirect, render
from gateway.web.console.sessions import Session, SessionStore
from gateway.web.middleware import REQUEST_ID, UNAVAILABLE_RETRY_AFTER
from gateway.web.request import SERVICES

log = logging.getLogger("otp_gateway.http")

SESSION_COOKIE: Final = "otpgw_console"
FORM_COOKIE: Final = "otpgw_console_form"
DEVICE_COOKIE: Final = "otpgw_console_device"
PATH: Final = "/console/"
SIGN_IN: Final = "/console/connexion"
HOME: Final = "/console/comptes"
MINE: Final = "/console/mon-compte"
ADMIN_ROLES: Final = frozenset({"admin", "operator"})
USER_ROLES: Final = frozenset({"user"})
MAX_FIELD: Final = 256

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CsrfRefused(GatewayError):
    """A POST without this session's form token (403, a French page)."""

    status = 403
    code = "csrf"


class NotForConsole(GatewayError):
    """A signed-in account that is neither an admin nor a console operator (403)."""

    status = 403
    code = "not_admin"


class NotForUsers(GatewayError):
    """A user's session on an admin page (403): its space is "Mon compte"."""

    status = 403
    code = "admins_only"


class UsersOnly(GatewayError):
    """An admin's or operator's session on a user's page (403)."""

    status = 403
    code = "users_only"


class SessionOver(GatewayError):
    """No live signed-in session: back to the sign-in page."""

    status = 401
    code = "signed_out"


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A signed-in request: its session and the caller it acts as."""

    session_id: str
    session: Session
    caller: Caller
    account: Account


def svc(request: web.Request) -> Services:
    return request.app[SERVICES]


def store(request: web.Request) -> SessionStore:
    services = svc(request)
    return SessionStore(services.redis, services.config.console)


def client_ip(request: web.Request) -> str | None:
    """The browser's address, for the `ip` rate limit (none for a unix socket's peer)."""
    try:
        return parse_client_ip(request.remote)
    except GatewayError:
        return None


def set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int | None
) -> None:
    """An HttpOnly, SameSite=Strict cookie for the console's paths (Secure outside development)."""
    response.set_cookie(
        name, value, max_age=max_age, path=PATH, httponly=True, samesite="Strict",
        secure=not svc(request).config.server.development,
    )  # fmt: skip


def drop_cookie(request: web.Request, response: web.StreamResponse, name: str) -> None:
    set_cookie(request, response, name, "", max_age=0)


async def form(request: web.Request) -> dict[str, str]:
    """The POSTed form (strict, `read_form`): one value per name, none over 256 characters."""
    pairs = await read_form(request)
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields or len(value) > MAX_FIELD:
            raise InvalidRequest("a field is repeated or too long")
        fields[name] = value
    return fields


def form_token(request: web.Request) -> str:
    """The sign-in form's token: the cookie's, or a new one (set by `with_form_token`)."""
    current = request.cookies.get(FORM_COOKIE, "")
    return current if 30 <= len(current) <= 64 and current.isascii() else secrets.token_urlsafe(32)


def check_form_token(request: web.Request, fields: dict[str, str]) -> None:
    """The pre-session double submit: the field equals the cookie (constant time)."""
    cookie = request.cookies.get(FORM_COOKIE, "")
    presented = fields.get("csrf", "")
    if not cookie or not presented or not constant_time_equal(cookie, presented):
        raise CsrfRefused("the sign-in form's token does not match")


async def pending(request: web.Request) -> tuple[str, Session]:
    """The session of a sign-in waiting for its code; SessionOver otherwise."""
    session_id = request.cookies.get(SESSION_COOKIE, "")
    session = await store(request).get(session_id)
    if session is None or session.stage != "code":
        raise SessionOver("no sign-in under way")
    return session_id, session


async def signed_in(request: web.Request) -> SignedIn:
    """An admin's or operator's signed-in session (the console's pages)."""
    return await signed_as(request, ADMIN_ROLES)


async def user_signed_in(request: web.Request) -> SignedIn:
    """A user's signed-in session ("Mon compte")."""
    return await signed_as(request, USER_ROLES)


async def signed_as(request: web.Request, roles: frozenset[str]) -> SignedIn:
    """The signed-in session and its caller, re-checked on every request; a session of
    another space is refused (403) but kept: it was not misused, only misdirected."""
    session_id = request.cookies.get(SESSION_COOKIE, "")
    sessions = store(request)
    session = await sessions.get(session_id)
    if session is None or session.stage != "in":
        raise SessionOver("not signed in")
    if session.role not in roles:
        if session.role in USER_ROLES:
            raise NotForUsers("a user's session on an admin page")
        raise UsersOnly("an admin's session on a user's page")
    try:
        account = await acting_account(svc(request), session.account_id, session.role)
    except GatewayError:
        await sessions.end(session_id)
        raise
    return SignedIn(session_id, session, caller_of(request, session, account), account)


def console_role(services: Services, account: Account) -> str:
    """How an account uses the console: "operator", "admin", or "user" ("Mon compte")."""
    if account.account_id in services.config.console.operators:
        return "operator"
    return "admin" if account.role is Role.ADMIN else "user"


def home_of(role: str) -> str:
    """Where a signed-in session lands: the account list, or "Mon compte"."""
    return MINE if role in USER_ROLES else HOME


async def acting_account(services: Services, account_id: str, role: str) -> Account:
    """The account a session acts for, still able to (the API's own checks: `acting_admin`
    for an admin, `user_caller`'s active account for a user)."""
    account = await services.accounts.get(account_id)
    if account is None or console_role(services, account) != role:
        raise NotForConsole("this account may not use the console")
    if role == "admin":
        return await services.account_services.admin.acting_admin(account_id)
    account.require_active(services.accounts.now())
    return account


def caller_of(request: web.Request, session: Session, account: Account) -> Caller:
    """The policy's caller: an admin acting for itself, a user as the login front end
    acts for it (scope `otp`), or a named operator."""
    if session.role == "admin":
        return Caller("admin", "console", request[REQUEST_ID], account)
    if session.role == "user":
        return Caller("otp", "console", request[REQUEST_ID], account)
    return Caller("operator", f"console:{account.account_id}", request[REQUEST_ID])


def check_csrf(signed: SignedIn | Session, fields: dict[str, str]) -> None:
    session = signed.session if isinstance(signed, SignedIn) else signed
    if not session.csrf_ok(fields.get("csrf")):
        raise CsrfRefused("the form's token is not this session's")


def page(handler: Handler) -> Handler:
    """A console handler: a GatewayError becomes a French page with its status."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except SessionOver:
            if request.method == "GET":
                return redirect(SIGN_IN)
            return error_page(request, 401, texts.SESSION_OVER, "Session terminée")
        except CsrfRefused:
            return error_page(request, 403, texts.CSRF, "Requête refusée")
        except NotForUsers as exc:
            return _elsewhere(request, exc, MINE, "Aller à mon compte")
        except UsersOnly as exc:
            return _elsewhere(request, exc, HOME, "Revenir à la gestion des comptes")
        except NotFound:  # an account elsewhere is exactly one that does not exist
            return error_page(request, 404, texts.ERRORS["not_found"], "Page introuvable")
        except GatewayError as exc:
            return _refused(request, exc)
        except (RedisError, TimeoutError) as exc:  # as the API: 503, never the JSON body
            log.error("redis unavailable", extra={"error": type(exc).__name__})
            return _refused(request, Unavailable("the datastore is unreachable"))

    return wrapped


def _elsewhere(request: web.Request, exc: GatewayError, back: str, back_text: str) -> web.Response:
    """A page of the other space: a 403 that leads back to one's own."""
    return render(
        request, "error.html", status=403, title="Page réservée", message=texts.sentence(exc),
        back=back, back_text=back_text,
    )  # fmt: skip


def _refused(request: web.Request, exc: GatewayError) -> web.Response:
    """An API refusal as a French page, with the API's `Retry-After` where it has one."""
    title = "Service indisponible" if isinstance(exc, Unavailable) else "Demande refusée"
    response = error_page(request, exc.status, texts.sentence(exc), title)
    if isinstance(exc, RateLimited):
        response.headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, Unavailable):
        response.headers["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER)
    return response


def error_page(request: web.Request, status: int, message: str, title: str) -> web.Response:
    """A French error page (`role="alert"`); a 401 also drops the session cookie."""
    response = render(request, "error.html", status=status, title=title, message=message)
    if status == 401:
        drop_cookie(request, response, SESSION_COOKIE)
    return response
