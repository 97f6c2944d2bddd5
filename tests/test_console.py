"""The admin console over HTTP (gateway/web/console): every route, its headers, its refusals.

A real gateway, real Redis, the test provider (its codes are the ones typed);
the test client's cookie jar is the browser's. Browser tests: test_console_browser.py.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from yarl import URL

from gateway.clock import to_ms
from gateway.web.console.pages import CSP, _last_sunday
from gateway.web.console.sessions import SessionStore
from tests.support.admin import admin_gateway, as_operator
from tests.support.config import ADMIN_KEY
from tests.support.console import PAGE_HEADERS, Console, Page, csrf_of
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.otp import wrong
from tests.support.smtp import Inbox

SESSION = "otpgw_console"
DEVICE = "otpgw_console_device"


def assert_page(page: Page, status: int = 200) -> str:
    """A console page: its status, HTML in French, and the headers every page carries."""
    assert page.status == status, (page.status, page.html[:2000])
    assert page.headers["Content-Type"].startswith("text/html")
    assert '<html lang="fr">' in page.html
    assert page.headers["Content-Security-Policy"] == CSP
    for name, value in PAGE_HEADERS.items():
        assert page.headers[name] == value, name
    assert page.html.count("<h1") == 1
    return page.html


def set_cookies(console: Console) -> dict[str, Any]:
    """The Set-Cookie attributes the jar kept, by name."""
    return {m.key: m for m in console.gw.client.session.cookie_jar}


def plant(console: Console, name: str, value: str) -> None:
    url = URL(str(console.gw.client.make_url("/console/")))
    console.gw.client.session.cookie_jar.update_cookies({name: value}, url)


@pytest.fixture
async def console(agw: Gateway) -> Console:
    return Console(agw)


# --- sign-in -------------------------------------------------------------------


async def test_an_admin_signs_in_with_the_code_it_received(console: Console) -> None:
    page = await console.ask_code("boss")
    html = assert_page(page)
    assert page.url.endswith("/console/code")
    assert "<strong>+33 * ** ** ** 31</strong>" in html  # masked, as /challenge gives it
    assert 'autocomplete="one-time-code"' in html and 'inputmode="numeric"' in html
    pending = console.cookie(SESSION)
    landed = await console.type_code(page, await console.last_code())
    html = assert_page(landed)
    assert landed.url.endswith("/console/comptes")
    assert "Gestion des comptes" in html and "Mairie de Luisant" in html
    assert console.cookie(SESSION) not in (None, pending)  # a new id once signed in


async def test_cookies_are_httponly_strict_and_secure_outside_development(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    dev = Console(await admin_gateway(make_gateway, inbox))
    await dev.sign_in()
    jar = set_cookies(dev)
    assert jar[SESSION]["httponly"] and jar[SESSION]["samesite"] == "Strict"
    assert jar[SESSION]["path"] == "/console/" and not jar[SESSION]["secure"]
    prod = await make_gateway(server={"mode": "production"})
    resp = await prod.client.get("/console/connexion")
    cookie = resp.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


async def test_a_user_proves_its_code_and_lands_on_its_own_space(console: Console) -> None:
    page = await console.ask_code("alice")
    landed = await console.type_code(page, await console.last_code(), trust=True)
    html = assert_page(landed)
    assert landed.url.endswith("/console/mon-compte") and "<h1>Mon compte</h1>" in html
    assert console.cookie(DEVICE) is not None  # "poste de confiance" honoured, as for an admin
    refused = await console.get("/console/comptes")  # the admins' pages stay closed
    assert "réservée aux administrateurs" in assert_page(refused, 403)
    devices = await as_operator(console.gw, "GET", "/accounts/alice/devices")
    assert len(devices.body["devices"]) == 1


async def test_a_trusted_post_signs_in_again_without_a_code(console: Console) -> None:
    await console.sign_in("boss", trust=True)
    device = set_cookies(console)[DEVICE]
    assert device["httponly"] and device["samesite"] == "Strict"
    assert int(device["max-age"]) > 6 * 86400
    home = await console.get("/console/comptes")
    signed_out = await console.post("/console/deconnexion", {"csrf": csrf_of(home.html)})
    assert "Vous êtes déconnecté" in assert_page(signed_out)
    sent = len(console.gw.sink.codes())
    again = await console.ask_code("boss")
    assert again.url.endswith("/console/comptes"), again.html
    await console.gw.drain()
    assert len(console.gw.sink.codes()) == sent  # no code this time
    # ... but only for the account that earned it.
    other = await console.ask_code("other")
    assert other.url.endswith("/console/code")


async def test_a_wrong_code_is_announced_and_the_page_stays(console: Console) -> None:
    page = await console.ask_code("boss")
    code = await console.last_code()
    again = await console.type_code(page, wrong(code))
    html = assert_page(again, 422)
    assert re.search(r'role="alert" id="erreur"><p>Code incorrect\. Il vous reste 4 essais', html)
    assert 'aria-describedby="erreur envoi" aria-invalid="true"' in html
    assert (await console.type_code(again, "12a")).status == 400
    assert (await console.type_code(again, code)).url.endswith("/console/comptes")


async def test_refusals_of_the_challenge_are_french_sentences(console: Console) -> None:
    unknown = await console.ask_code("nobody")
    assert "Aucun code ne peut être envoyé" in assert_page(unknown, 404)
    await as_operator(console.gw, "PATCH", "/accounts/alice", {"status": "suspended"})
    suspended = await console.ask_code("alice")
    assert "suspendu" in assert_page(suspended, 403)
    bad = await console.ask_code("bad id!")
    assert 'aria-invalid="true"' in assert_page(bad, 400)


async def test_the_same_limits_as_the_api(make_gateway: GatewayFactory, inbox: Inbox) -> None:
    gw = await admin_gateway(make_gateway, inbox, rate_limits={"account": "1/15m"})
    console = Console(gw)
    await console.ask_code("boss")
    limited = await console.ask_code("boss")
    assert "Trop de demandes" in assert_page(limited, 429)


# --- sessions and CSRF -----------------------------------------------------------


async def test_posts_without_the_form_token_are_403_french_pages(console: Console) -> None:
    page = await console.get("/console/connexion")
    no_token = await console.post("/console/connexion", {"account_id": "boss"})
    assert "Ce formulaire a expiré" in assert_page(no_token, 403)
    foreign = {"account_id": "boss", "csrf": csrf_of(page.html) + "x"}
    assert (await console.post("/console/connexion", foreign)).status == 403
    code_page = await console.ask_code("boss")
    code = await console.last_code()
    assert (await console.post("/console/code", {"code": code})).status == 403
    await console.type_code(code_page, code)
    assert (await console.post("/console/deconnexion", {})).status == 403
    assert (await console.get("/console/comptes")).status == 200  # still signed in


async def test_signed_out_pages_send_to_the_sign_in(console: Console) -> None:
    for path in ("/console/comptes", "/console/comptes/boss", "/console/code"):
        resp = await console.gw.client.get(path, allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"] == "/console/connexion"
    assert (await console.post("/console/code", {"csrf": "x", "code": "1"})).status == 401
    home = await console.gw.client.get("/console", allow_redirects=True)
    assert str(home.url).endswith("/console/connexion")


@pytest.mark.parametrize(
    ("created_ago", "seen_ago", "live"),
    [
        (timedelta(hours=11), timedelta(minutes=29), True),
        (timedelta(hours=1), timedelta(minutes=31), False),  # idle 30 min
        (timedelta(hours=12, minutes=1), timedelta(minutes=1), False),  # 12 h, however busy
    ],
)
async def test_sessions_end_when_idle_or_old(
    console: Console, created_ago: timedelta, seen_ago: timedelta, live: bool
) -> None:
    services = console.gw.services
    now = datetime.now(UTC)
    then = SessionStore(services.redis, services.config.console, lambda: to_ms(now - created_ago))
    session_id = await then.start("boss", "in", "admin")
    session = await then.get(session_id)
    assert session is not None
    # Signed in `created_ago`, last used `seen_ago` ago.
    await then.update(session_id, replace(session, seen_ms=to_ms(now - seen_ago)))
    plant(console, SESSION, session_id)
    page = await console.get("/console/comptes")
    assert page.url.endswith("/console/comptes" if live else "/console/connexion")


async def test_a_demoted_admin_is_out_at_once(console: Console) -> None:
    await console.sign_in("boss")
    await add_account(console.gw, account_id="second", role="admin", email="s@example.org")
    await as_operator(console.gw, "PATCH", "/accounts/boss", {"role": "user"})
    page = await console.get("/console/comptes")
    assert "ne donne plus accès à ces pages" in assert_page(page, 403)
    assert (await console.get("/console/comptes")).url.endswith("/console/connexion")


# --- the accounts ------------------------------------------------------------------


async def test_the_list_searches_filters_and_pages(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(make_gateway, inbox, console={"per_page": 5})
    for n in range(6):
        await add_account(gw, account_id=f"agent{n}", email=f"agent{n}@example.org",
                          last_name=f"Durand{n}", services=["PAIE"])  # fmt: skip
    console = Console(gw)
    await console.sign_in()
    first = assert_page(await console.get("/console/comptes"))
    assert "1-5 sur 8 résultat(s)" in first and 'href="?page=2"' in first
    assert "<caption>" in first and 'scope="col"' in first and 'scope="row"' in first
    second = assert_page(await console.get("/console/comptes?page=2"))
    assert "6-8 sur 8 résultat(s)" in second and "Page précédente" in second
    found = assert_page(await console.get("/console/comptes?q=durand3"))
    assert "1-1 sur 1" in found and "agent3" in found and "agent4" not in found
    admins = assert_page(await console.get("/console/comptes?role=admin"))
    assert "boss" in admins and "agent1" not in admins
    assert "Seul administrateur" in admins  # a flag in words, not a colour
    suspended = assert_page(await console.get("/console/comptes?status=suspended"))
    assert "Aucun compte ne correspond" in suspended


async def test_flags_are_words(console: Console) -> None:
    soon = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await add_account(console.gw, account_id="accueil", email="accueil@example.org",
                      first_name="Accueil", last_name="Mairie", expires_at=soon)  # fmt: skip
    await console.sign_in()
    html = assert_page(await console.get("/console/comptes?q=accueil"))
    assert "Expire bientôt" in html and "Compte générique ?" in html


async def test_an_account_page_hides_a_hidden_number_and_lists_history(console: Console) -> None:
    await as_operator(console.gw, "POST", "/accounts/alice/renew")
    await console.sign_in()
    html = assert_page(await console.get("/console/comptes/alice"))
    assert "Numéro masqué par son titulaire" in html
    assert "12 34 56 78" not in html and "+33612345678" not in html and "** 78" not in html
    renewed, created = html.index("Renouvellement"), html.index("Création du compte")
    assert renewed < created  # newest first
    assert re.search(r"[0-9]{2}/[0-9]{2}/[0-9]{4} à [0-9]{2}:[0-9]{2}", html)
    assert "Support (ops)" in html


async def test_another_establishment_is_a_404_page(console: Console) -> None:
    await console.sign_in()
    page = await console.get("/console/comptes/carol")
    assert "pas de votre établissement" in assert_page(page, 404)
    assert (await console.get("/console/comptes?establishment=Clinique+du+Parc")).status == 404


async def test_an_operator_picks_an_establishment(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(make_gateway, inbox, console={"operators": ["support1"]})
    await add_account(gw, account_id="support1", establishment="Support", email="s@example.org")
    console = Console(gw)
    await console.sign_in("support1")
    chooser = assert_page(await console.get("/console/comptes"))
    assert 'id="establishment"' in chooser and "Choisissez un établissement" in chooser
    listed = assert_page(await console.get("/console/comptes?establishment=Clinique+du+Parc"))
    assert "carol" in listed and "boss" not in listed
    assert "carol" in assert_page(await console.get("/console/comptes/carol"))


# --- bad input: 4xx French pages, never a 5xx, nothing written -------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/console/comptes?status=bogus", 400),
        ("/console/comptes?role=root", 400),
        ("/console/comptes?page=0", 400),
        ("/console/comptes?page=abc", 400),
        ("/console/comptes?q=" + "x" * 101, 400),
        ("/console/comptes/bad%20id", 400),
        ("/console/comptes/alice?page=-1", 400),
        ("/console/nowhere", 404),
        ("/console/comptes/boss/extra", 404),
    ],
)
async def test_bad_queries_are_4xx_pages(console: Console, path: str, status: int) -> None:
    await console.sign_in()
    assert 'role="alert"' in assert_page(await console.get(path), status)


@pytest.mark.parametrize(
    "body",
    [
        b"csrf=a&csrf=b&account_id=boss",
        b"account_id=" + b"x" * 300,
        b"\xff\xfe=\x00",
        b"%zz",
    ],
)
async def test_bad_forms_are_4xx_pages(console: Console, body: bytes) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    sign_in = await console.gw.client.post("/console/connexion", data=body, headers=headers)
    assert sign_in.status in (400, 403) and "text/html" in sign_in.headers["Content-Type"]
    assert [k async for k in console.gw.services.redis.scan_iter("otp:console:*")] == []
    await console.ask_code("boss")  # a sign-in under way: its session is all there is
    code = await console.gw.client.post("/console/code", data=body, headers=headers)
    assert code.status in (400, 403) and "text/html" in code.headers["Content-Type"]
    await console.sign_in()
    out = await console.gw.client.post("/console/deconnexion", data=body, headers=headers)
    assert out.status in (400, 403) and "text/html" in out.headers["Content-Type"]
    assert (await console.get("/console/comptes")).status == 200  # not signed out


async def test_a_json_body_is_a_415_page(console: Console) -> None:
    resp = await console.gw.client.post("/console/connexion", json={"account_id": "boss"})
    assert resp.status == 415 and resp.headers["Content-Type"].startswith("text/html")


async def test_the_stylesheet_is_served_by_the_gateway(console: Console) -> None:
    resp = await console.gw.client.get("/console/console.css")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/css")
    assert "focus-visible" in await resp.text()


async def test_a_disabled_console_is_not_there(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(console={"enabled": False})
    resp = await gw.client.get("/console/connexion")
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"


async def test_the_json_api_is_unchanged_beside_it(console: Console) -> None:
    resp = await console.gw.client.get(
        "/accounts", headers={"Authorization": f"Bearer {ADMIN_KEY}", "X-Acting-Account": "boss"}
    )
    assert resp.status == 200 and (await resp.json())["total"] == 2


def test_paris_time_without_zone_data_follows_the_eu_rule() -> None:
    """Images without tzdata fall back to the EU rule: it agrees with the zone data."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for hours in range(0, 2 * 366 * 24):
        moment = start + timedelta(hours=hours)
        summer = _last_sunday(moment.year, 3) <= moment < _last_sunday(moment.year, 10)
        expected = moment.astimezone(ZoneInfo("Europe/Paris")).utcoffset()
        assert timedelta(hours=2 if summer else 1) == expected, moment


# --- actions: renew, suspend with its step-up code inline, reactivate -------------------


async def test_renew_is_the_apis_renew(console: Console) -> None:
    await console.sign_in()
    page = await console.get("/console/comptes/alice")
    no_token = await console.post("/console/comptes/alice/renouveler", {})
    assert no_token.status == 403
    done = await console.post("/console/comptes/alice/renouveler", {"csrf": csrf_of(page.html)})
    html = assert_page(done)
    assert done.url.endswith("/console/comptes/alice?fait=renouvele")
    assert "Le compte a été renouvelé." in html
    history = await as_operator(console.gw, "GET", "/accounts/alice/history")
    actions = [e["action"] for e in history.body["entries"]]
    assert actions.count("renew") == 1  # the CSRF-less POST changed nothing
    assert history.body["entries"][0]["actor"] == "admin:console"
    assert history.body["entries"][0]["acting_for"] == "boss"


async def test_an_admin_suspends_with_a_code_typed_on_the_same_page(console: Console) -> None:
    await console.sign_in()
    csrf = csrf_of((await console.get("/console/comptes/alice")).html)
    asked = await console.post("/console/comptes/alice/suspendre", {"csrf": csrf})
    html = assert_page(asked)
    assert "pour la suspension du compte alice" in html and "** 31" in html
    await console.gw.drain()
    step_up = console.gw.sink.received[-1]
    assert step_up["to"] == "+33698765431"  # the acting admin's phone, not alice's
    wrong_code = await console.post(
        "/console/comptes/alice/suspendre", {"csrf": csrf, "code": wrong(step_up["code"])}
    )
    assert "Code incorrect" in assert_page(wrong_code, 422)
    alice = await as_operator(console.gw, "GET", "/accounts/alice")
    assert alice.body["status"] == "active"
    done = await console.post(
        "/console/comptes/alice/suspendre", {"csrf": csrf, "code": step_up["code"]}
    )
    assert "Le compte a été suspendu." in assert_page(done)
    history = await as_operator(console.gw, "GET", "/accounts/alice/history")
    assert history.body["entries"][0]["step_up"] == "verified"
    assert (await as_operator(console.gw, "GET", "/accounts/alice")).body["status"] == "suspended"
    back = await console.post("/console/comptes/alice/reactiver", {"csrf": csrf})
    assert "Le compte a été réactivé." in assert_page(back)
    assert (await as_operator(console.gw, "GET", "/accounts/alice")).body["status"] == "active"


async def test_the_last_admin_is_refused_before_any_code(console: Console) -> None:
    await console.sign_in()
    await console.gw.drain()
    sent = len(console.gw.sink.codes())
    csrf = csrf_of((await console.get("/console/comptes/boss")).html)
    refused = await console.post("/console/comptes/boss/suspendre", {"csrf": csrf})
    assert "dernier administrateur actif" in assert_page(refused, 409)
    await console.gw.drain()
    assert len(console.gw.sink.codes()) == sent


async def test_an_operator_suspends_without_a_code(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(make_gateway, inbox, console={"operators": ["support1"]})
    await add_account(gw, account_id="support1", establishment="Support", email="s@example.org")
    console = Console(gw)
    await console.sign_in("support1")
    csrf = csrf_of((await console.get("/console/comptes/carol")).html)
    done = await console.post("/console/comptes/carol/suspendre", {"csrf": csrf})
    assert "Le compte a été suspendu." in assert_page(done)
    history = await as_operator(gw, "GET", "/accounts/carol/history")
    assert history.body["entries"][0]["actor"] == "operator:console:support1"
    assert history.body["entries"][0]["step_up"] == "exempt"


async def test_actions_on_another_establishment_are_404(console: Console) -> None:
    await console.sign_in()
    csrf = csrf_of((await console.get("/console/comptes")).html)
    for action in ("renouveler", "suspendre", "reactiver"):
        page = await console.post(f"/console/comptes/carol/{action}", {"csrf": csrf})
        assert_page(page, 404)


async def test_signing_in_again_ends_the_earlier_session(console: Console) -> None:
    await console.sign_in()
    first = console.cookie(SESSION)
    await console.sign_in()
    assert console.cookie(SESSION) != first
    assert first is not None
    plant(console, SESSION, first)
    assert (await console.get("/console/comptes")).url.endswith("/console/connexion")
