"""The example front end's pages: login, the code step, "connecté", and the step's files.

Sessions live in this process's memory (an example: a real front end keeps them
where it keeps its own). Cookies: `example_session` (the session) and
`example_trusted` (the gateway's trusted-device token, sent on the next
`/challenge`), both HttpOnly, SameSite=Strict, Secure behind HTTPS
(`EXAMPLE_SECURE_COOKIES=1`). Every POST carries the session's CSRF token
(compared in constant time). Pages carry a strict CSP: no inline script or style.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
import jinja2
from aiohttp import web

from examples.login_frontend.gateway import GatewayClient
from examples.login_frontend.messages import sentence
from examples.login_frontend.settings import Settings

HERE: Final = Path(__file__).parent
SESSION, TRUSTED = "example_session", "example_trusted"
SESSION_SECONDS: Final = 30 * 60
CSP: Final = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}
ASSETS: Final = {
    "otp-step.js": "text/javascript",
    "otp-step.css": "text/css",
    "otp-step.fr.json": "application/json",
    "example.css": "text/css",
}
ACCOUNT_ID = re.compile(r"[A-Za-z0-9._@-]{1,64}")
SETTINGS = web.AppKey("settings", Settings)
CLIENT = web.AppKey("gateway_client", GatewayClient)
SESSIONS = web.AppKey("sessions", dict[str, "Session"])
PAGES = web.AppKey("pages", jinja2.Environment)


@dataclass
class Challenge:
    """The code on its way: what the gateway said, with deadlines on this server's clock."""

    challenge_id: str
    channel: str
    destination: str
    expires_at: float  # time.monotonic()
    resend_at: float
    expires_utc: datetime

    @classmethod
    def of(cls, body: dict[str, Any]) -> Challenge:
        now = time.monotonic()
        expires_in, resend_after = int(body["expires_in"]), int(body["resend_after"])
        return cls(
            challenge_id=str(body["challenge_id"]), channel=str(body["channel"]),
            destination=str(body["destination"]), expires_at=now + expires_in,
            resend_at=now + resend_after,
            expires_utc=datetime.now(UTC) + timedelta(seconds=expires_in),
        )  # fmt: skip


@dataclass
class Session:
    """One visitor: the CSRF token, the account being signed in, the code step, who is in."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    started: float = field(default_factory=time.monotonic)
    account_id: str = ""
    challenge: Challenge | None = None
    signed_in: str = ""
    by_trusted_device: bool = False
    trusted_until: str = ""


def create_app(settings: Settings) -> web.Application:
    """The example front end, calling the gateway at `settings.gateway_url`."""
    app = web.Application(client_max_size=16 * 1024)
    app[SETTINGS] = settings
    app[SESSIONS] = {}
    app[PAGES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )  # fmt: skip

    async def gateway_client(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as http:
            app[CLIENT] = GatewayClient(http, settings.gateway_url, settings.api_key)
            yield

    app.cleanup_ctx.append(gateway_client)
    app.router.add_get("/", home, allow_head=False)
    app.router.add_get("/connexion", login_form, allow_head=False)
    app.router.add_post("/connexion", login)
    app.router.add_get("/code", code_form, allow_head=False)
    app.router.add_post("/code", code)
    app.router.add_post("/code/renvoi", resend_json)
    app.router.add_get("/connecte", signed_in, allow_head=False)
    app.router.add_post("/deconnexion", sign_out)
    app.router.add_get("/static/{name}", asset, allow_head=False)
    return app


# --- sessions, pages, forms -----------------------------------------------------------


def session_of(request: web.Request) -> Session | None:
    sessions = request.app[SESSIONS]
    found = sessions.get(request.cookies.get(SESSION, ""))
    if found is not None and time.monotonic() - found.started > SESSION_SECONDS:
        sessions.pop(request.cookies.get(SESSION, ""), None)
        return None
    return found


def new_session(request: web.Request) -> tuple[str, Session]:
    sessions, now = request.app[SESSIONS], time.monotonic()
    for old in [k for k, v in sessions.items() if now - v.started > SESSION_SECONDS]:
        del sessions[old]  # an example's memory store: dropped when stale, no timer
    sid = secrets.token_urlsafe(32)
    sessions[sid] = session = Session()
    return sid, session


def _cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, age: int | None
) -> None:
    response.set_cookie(
        name, value, max_age=age, path="/", httponly=True, samesite="Strict",
        secure=request.app[SETTINGS].secure_cookies,
    )  # fmt: skip


def render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    css, step_css = version(request, "example.css"), version(request, "otp-step.css")
    text = request.app[PAGES].get_template(template).render(css=css, step_css=step_css, **ctx)
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(PAGE_HEADERS)
    return response


def redirect(location: str) -> web.Response:
    """303: after a form, the browser GETs the next page."""
    response = web.Response(status=303, headers={"Location": location})
    response.headers.update(PAGE_HEADERS)
    return response


async def form_of(request: web.Request, session: Session | None) -> dict[str, str] | None:
    """The POSTed form, or None when its CSRF token is not the session's."""
    form = await request.post()
    token = form.get("csrf")
    if session is None or not isinstance(token, str):
        return None
    if not hmac.compare_digest(token.encode(), session.csrf.encode()):
        return None
    return {k: v for k, v in form.items() if isinstance(v, str)}


def refused(request: web.Request) -> web.Response:
    text = "Ce formulaire a expiré ou ne vient pas de ce site. Rechargez la page et recommencez."
    return render(request, "error.html", 403, title="Formulaire refusé", message=text)


def say(request: web.Request, body: dict[str, Any]) -> str:
    return sentence(request.app[SETTINGS].step_assets, body)


def failed_status(status: int) -> int:
    """A gateway error's status for our page: its own 4xx, else 503 (try again)."""
    return status if 400 <= status < 500 and status not in (401, 403, 415) else 503


# --- the pages ------------------------------------------------------------------------


async def home(request: web.Request) -> web.StreamResponse:
    """`/`: where the visitor is in the login."""
    session = session_of(request)
    return redirect("/connecte" if session and session.signed_in else "/connexion")


async def login_form(request: web.Request) -> web.StreamResponse:
    """The first factor: account id and password (a stand-in for the platform's own)."""
    session = session_of(request)
    if session and session.signed_in:
        return redirect("/connecte")
    if session is not None:
        return login_page(request, session)
    sid, session = new_session(request)
    page = login_page(request, session, ended=request.query.get("fin") == "1")
    _cookie(request, page, SESSION, sid, None)
    return page


def login_page(
    request: web.Request, session: Session, status: int = 200, error: str = "", ended: bool = False
) -> web.Response:
    return render(request, "login.html", status, title="Connexion", csrf=session.csrf,
                  account_id=session.account_id, error=error, ended=ended)  # fmt: skip


async def login(request: web.Request) -> web.StreamResponse:
    """Password stand-in checked, then `POST /challenge` with the trusted-device cookie."""
    session = session_of(request)
    form = await form_of(request, session)
    if form is None or session is None:
        return refused(request)
    session.account_id = account_id = form.get("account_id", "").strip()
    if not ACCOUNT_ID.fullmatch(account_id) or not form.get("password"):
        text = "Saisissez votre identifiant et votre mot de passe."
        return login_page(request, session, 422, error=text)
    status, body = await request.app[CLIENT].challenge(
        account_id, request.remote, request.cookies.get(TRUSTED)
    )
    return after_challenge(request, session, status, body)


def after_challenge(
    request: web.Request, session: Session, status: int, body: dict[str, Any]
) -> web.Response:
    if status == 200 and body.get("required") is False:
        session.signed_in, session.by_trusted_device = session.account_id, True
        return redirect("/connecte")
    if status == 202:
        session.challenge = Challenge.of(body)
        return redirect("/code")
    return login_page(request, session, failed_status(status), error=say(request, body))


async def code_form(request: web.Request) -> web.StreamResponse:
    """The code step (the drop-in markup; otp-step.js improves it when it runs)."""
    session = session_of(request)
    if session is None or session.challenge is None:
        return redirect("/connexion")
    return code_page(request, session)


def code_page(
    request: web.Request, session: Session, status: int = 200, error: str = "",
    notice: str = "", field_error: bool = False,
) -> web.Response:  # fmt: skip
    assert session.challenge is not None
    now, chal = time.monotonic(), session.challenge
    return render(
        request, "code.html", status, title="Saisie du code", csrf=session.csrf, chal=chal,
        expires_in=max(0, round(chal.expires_at - now)),
        resend_after=max(0, round(chal.resend_at - now)), until=paris_time(chal.expires_utc),
        error=error, notice=notice, field_error=field_error,
        js=version(request, "otp-step.js"), table=version(request, "otp-step.fr.json"),
    )  # fmt: skip


async def code(request: web.Request) -> web.StreamResponse:
    """The code step's form without JavaScript: verify, resend, or call instead."""
    session = session_of(request)
    form = await form_of(request, session)
    if form is None or session is None:
        return refused(request)
    if session.challenge is None:
        return redirect("/connexion")
    action = form.get("action", "verify")
    if action in ("resend", "voice", "sms"):
        channel = None if action == "resend" else action
        status, body = await request.app[CLIENT].resend(session.challenge.challenge_id, channel)
        return after_resend_page(request, session, status, body)
    return await verify(request, session, form)


async def verify(request: web.Request, session: Session, form: dict[str, str]) -> web.Response:
    assert session.challenge is not None
    typed = re.sub(r"[\s.-]", "", form.get("code", ""))
    if not typed.isascii() or not typed.isdigit() or not 4 <= len(typed) <= 10:
        text = "Saisissez les chiffres du code reçu."
        return code_page(request, session, 422, error=text, field_error=True)
    trust = form.get("trust_device") == "1"
    status, body = await request.app[CLIENT].verify(
        session.challenge.challenge_id, typed, trust, request.app[SETTINGS].device_label
    )
    if status == 200 and body.get("verified") is True:
        return signed_in_response(request, session, body)
    field_error = body.get("error") in ("invalid_code", "invalid_request")
    return code_page(request, session, failed_status(status), error=say(request, body),
                     field_error=field_error)  # fmt: skip


def signed_in_response(
    request: web.Request, session: Session, body: dict[str, Any]
) -> web.Response:
    session.signed_in, session.challenge = str(body["account_id"]), None
    response = redirect("/connecte")
    token, until = body.get("trusted_device_token"), body.get("trusted_until")
    if isinstance(token, str) and isinstance(until, str):
        ends = datetime.fromisoformat(until.replace("Z", "+00:00"))
        age = int((ends - datetime.now(UTC)).total_seconds())
        _cookie(request, response, TRUSTED, token, max(age, 0))
        session.trusted_until = paris_time(ends, with_date=True)
    return response


def after_resend_page(
    request: web.Request, session: Session, status: int, body: dict[str, Any]
) -> web.Response:
    if status != 202:
        return code_page(request, session, failed_status(status), error=say(request, body))
    session.challenge = Challenge.of(body)
    how = "par appel vocal au" if session.challenge.channel == "voice" else "par SMS au"
    return code_page(request, session, notice=f"Le code a été renvoyé {how} "
                     f"{session.challenge.destination}.")  # fmt: skip


async def resend_json(request: web.Request) -> web.StreamResponse:
    """`otp-step.js`'s resend: JSON in (`channel`, `csrf`), the gateway's JSON out."""
    session = session_of(request)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    token = body.get("csrf") if isinstance(body, dict) else None
    if session is None or not isinstance(token, str):
        return web.json_response({"error": "invalid_request", "message": "bad form"}, status=400)
    if not hmac.compare_digest(token.encode(), session.csrf.encode()):
        return web.json_response({"error": "invalid_request", "message": "bad form"}, status=400)
    if session.challenge is None:
        return web.json_response({"error": "challenge_not_found", "message": "none"}, status=404)
    channel = body.get("channel") if isinstance(body, dict) else None
    if channel not in (None, "sms", "voice"):
        return web.json_response({"error": "invalid_request", "message": "channel"}, status=400)
    status, answer = await request.app[CLIENT].resend(session.challenge.challenge_id, channel)
    if status == 202:
        session.challenge = Challenge.of(answer)
        return web.json_response(answer, status=202)
    return web.json_response(answer, status=failed_status(status))


async def signed_in(request: web.Request) -> web.StreamResponse:
    """The "connecté" page: where the platform's own pages would start."""
    session = session_of(request)
    if session is None or not session.signed_in:
        return redirect("/connexion")
    return render(request, "done.html", title="Connecté", session=session, csrf=session.csrf)


async def sign_out(request: web.Request) -> web.StreamResponse:
    """Ends the session; the trusted-device cookie stays (that is its point)."""
    session = session_of(request)
    if await form_of(request, session) is None:
        return refused(request)
    request.app[SESSIONS].pop(request.cookies.get(SESSION, ""), None)
    response = redirect("/connexion?fin=1")
    response.del_cookie(SESSION, path="/")
    return response


# --- the step's files, and times in words ---------------------------------------------


def _folder(request: web.Request, name: str) -> Path:
    return HERE / "static" if name == "example.css" else request.app[SETTINGS].step_assets


def version(request: web.Request, name: str) -> str:
    """The `?v=` of a file: its content's hash, as the gateway's own links carry."""
    return hashlib.sha256((_folder(request, name) / name).read_bytes()).hexdigest()[:12]


async def asset(request: web.Request) -> web.StreamResponse:
    """The drop-in step's files (from the gateway package, or a copy) and our stylesheet."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    body = (_folder(request, name) / name).read_bytes()
    fresh = request.query.get("v") == hashlib.sha256(body).hexdigest()[:12]
    headers = {
        "Cache-Control": "public, max-age=31536000, immutable" if fresh else "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    return web.Response(body=body, content_type=ASSETS[name], charset="utf-8", headers=headers)


def paris_time(moment: datetime, with_date: bool = False) -> str:
    """`14:05` (or `06/12/2026 à 14:05`) in Paris; in UTC where the zone data is missing."""
    try:
        local = moment.astimezone(ZoneInfo("Europe/Paris"))
        suffix = ""
    except ZoneInfoNotFoundError:
        local, suffix = moment.astimezone(UTC), " UTC"
    return local.strftime("%d/%m/%Y à %H:%M" if with_date else "%H:%M") + suffix
