"""A user's own pages, "Mon compte" (gateway/web/console/mine.py, mine_app.py), over HTTP.

A real gateway, real Redis, the test provider (its codes, on the number they
went to, are the ones typed), a real SMTP server. Browser tests:
test_console_browser.py.
"""

from __future__ import annotations

from typing import Any

import pyotp
import pytest

from tests.support.admin import admin_gateway, as_operator, mails_after_drain
from tests.support.console import Console, Page, csrf_of
from tests.support.gateway import Gateway, GatewayFactory
from tests.support.otp import wrong
from tests.support.smtp import Inbox
from tests.test_console import assert_page

MINE = "/console/mon-compte"
NEW = "07 81 45 67 89"
NEW_E164 = "+33781456789"


@pytest.fixture
async def console(agw: Gateway) -> Console:
    return Console(agw)


@pytest.fixture
async def totp_console(make_gateway: GatewayFactory, inbox: Inbox) -> Console:
    return Console(await admin_gateway(make_gateway, inbox, accounts={"totp": True}))


def code_to(gw: Gateway, e164: str) -> str:
    """The last code the test provider received for that number."""
    codes = [body["code"] for body in gw.sink.received if body["to"] == e164]
    assert codes, f"no code went to {e164}"
    return codes[-1]


async def phone_of(gw: Gateway, account_id: str) -> str | None:
    account = await gw.services.accounts.get(account_id)
    assert account is not None
    return None if account.phone is None else account.phone.e164


async def ask_new_number(console: Console, fields: dict[str, str] | None = None) -> Page:
    """The phone form sent, its `contact.update` code (to the current number) typed:
    the page asking for the code sent to the new number."""
    _, csrf = await console.form(MINE + "/telephone")
    asked, sent = await console.confirm(
        MINE + "/telephone", {"csrf": csrf, "phone": NEW, **(fields or {})}
    )
    assert "le changement de votre numéro" in asked.html
    return sent


# --- sign-in and the two spaces --------------------------------------------------


async def test_a_user_signs_in_to_its_own_space(console: Console) -> None:
    landed = await console.sign_in("alice", trust=True)
    html = assert_page(landed)
    assert landed.url.endswith(MINE)
    assert "<h1>Mon compte</h1>" in html and "Alice Martin, identifiant" in html
    assert "masqué à votre demande" in html and "06 12" not in html  # alice's number is hidden
    assert "Gestion des comptes" not in html
    assert (await console.get("/console/")).url.endswith(MINE)
    # a trusted device, as for an admin: listed on the page
    assert "Mes postes de confiance" in html and "Retirer tous mes postes" in html


async def test_a_user_cannot_reach_the_admin_pages(console: Console) -> None:
    home = await console.sign_in("alice")
    csrf = csrf_of(home.html)
    for path in ("/console/comptes", "/console/comptes/alice", "/console/historique"):
        html = assert_page(await console.get(path), 403)
        assert "réservée aux administrateurs" in html and f'href="{MINE}"' in html
    renew = await console.post("/console/comptes/alice/renouveler", {"csrf": csrf})
    assert_page(renew, 403)
    history = await as_operator(console.gw, "GET", "/accounts/alice/history")
    assert all(e["action"] != "renew" for e in history.body["entries"])
    assert (await console.get(MINE)).status == 200  # the session is kept


async def test_an_admin_cannot_reach_the_user_pages(console: Console) -> None:
    await console.sign_in("boss")
    for path in (MINE, MINE + "/telephone", MINE + "/application"):
        html = assert_page(await console.get(path), 403)
        assert "celle des utilisateurs" in html
    assert (await console.get("/console/comptes")).status == 200


async def test_signed_out_the_user_pages_lead_to_the_sign_in(console: Console) -> None:
    for path in (MINE, MINE + "/telephone", MINE + "/telephone/code", MINE + "/application"):
        assert (await console.get(path)).url.endswith("/console/connexion"), path
    refused = await console.post(MINE + "/postes/retirer", {"csrf": "x" * 32})
    assert_page(refused, 401)


async def test_a_user_signs_out(console: Console) -> None:
    home = await console.sign_in("alice")
    out = await console.post("/console/deconnexion", {"csrf": csrf_of(home.html)})
    assert "Vous êtes déconnecté" in assert_page(out)
    assert (await console.get(MINE)).url.endswith("/console/connexion")


# --- changer mon numéro ----------------------------------------------------------


async def test_a_user_changes_its_number_with_the_code_sent_to_the_new_one(
    console: Console, inbox: Inbox
) -> None:
    await console.sign_in("alice")
    old = await phone_of(console.gw, "alice")
    page = await ask_new_number(console, {"phone_hidden": "1"})
    html = assert_page(page)
    assert page.url.endswith(MINE + "/telephone/code")
    assert "+33 * ** ** ** **" in html  # alice hides its number: masked to the last digit
    assert await phone_of(console.gw, "alice") == old  # not before its code
    await console.gw.drain()
    done = await console.post(
        MINE + "/telephone/code",
        {"csrf": csrf_of(page.html), "code": code_to(console.gw, NEW_E164)},
    )
    assert "Votre nouveau numéro est enregistré" in assert_page(done)
    assert done.url.endswith(MINE + "?fait=numero")
    assert await phone_of(console.gw, "alice") == NEW_E164
    await mails_after_drain(console.gw)
    assert inbox.to("alice@example.org")  # the notice the service sends
    history = await as_operator(console.gw, "GET", "/accounts/alice/history")
    assert history.body["entries"][0]["action"] == "phone.change"


async def test_a_wrong_code_for_the_new_number_is_announced(console: Console) -> None:
    await console.sign_in("alice")
    page = await ask_new_number(console)
    await console.gw.drain()
    bad = wrong(code_to(console.gw, NEW_E164))
    refused = await console.post(
        MINE + "/telephone/code", {"csrf": csrf_of(page.html), "code": bad}
    )
    html = assert_page(refused, 422)
    assert "Code incorrect" in html and "Il vous reste" in html and 'aria-invalid="true"' in html
    short = await console.post(MINE + "/telephone/code", {"csrf": csrf_of(page.html), "code": "1"})
    assert "se compose de 6 chiffres" in assert_page(short, 400)
    assert await phone_of(console.gw, "alice") == "+33612345678"


async def test_the_new_number_form_errors_by_field_before_any_code(console: Console) -> None:
    await console.sign_in("alice")
    _, csrf = await console.form(MINE + "/telephone")
    await console.gw.drain()
    sent = len(console.gw.sink.received)
    bad = await console.post(
        MINE + "/telephone", {"csrf": csrf, "phone": "12", "phone_extension": "x"}
    )
    html = assert_page(bad, 400)
    assert 'id="phone-erreur"' in html and 'id="phone_extension-erreur"' in html
    bad_channel = await console.post(
        MINE + "/telephone", {"csrf": csrf, "phone": NEW, "channel": "fax"}
    )
    assert_page(bad_channel, 400)
    await console.gw.drain()
    assert len(console.gw.sink.received) == sent


async def test_a_user_without_a_number_enrols_one_without_a_step_up(console: Console) -> None:
    await console.sign_in("alice")  # then its number is blanked (deployment day)
    await as_operator(console.gw, "POST", "/phones/blank", {"establishment": "Mairie de Luisant"})
    await console.gw.drain()
    sent = len(console.gw.sink.received)
    _, csrf = await console.form(MINE + "/telephone")
    page = await console.post(MINE + "/telephone", {"csrf": csrf, "phone": NEW})
    assert page.url.endswith(MINE + "/telephone/code"), page.html[:2000]
    await console.gw.drain()
    assert [b["to"] for b in console.gw.sink.received[sent:]] == [NEW_E164]  # only the new one
    done = await console.post(
        MINE + "/telephone/code", {"csrf": csrf, "code": code_to(console.gw, NEW_E164)}
    )
    assert done.url.endswith("?fait=numero")
    assert await phone_of(console.gw, "alice") == NEW_E164


async def test_the_new_number_s_code_can_be_sent_again(console: Console) -> None:
    await console.sign_in("alice")
    page = await ask_new_number(console)
    again = await console.post(
        MINE + "/telephone/renvoyer", {"csrf": csrf_of(page.html), "channel": ""}
    )
    assert "Le même code vous a été renvoyé" in assert_page(again)
    await console.gw.drain()
    first, second = [b["code"] for b in console.gw.sink.received if b["to"] == NEW_E164]
    assert first == second


# --- mes postes de confiance -----------------------------------------------------


async def trusted(gw: Gateway, account_id: str) -> list[dict[str, Any]]:
    reply = await as_operator(gw, "GET", f"/accounts/{account_id}/devices")
    devices: list[dict[str, Any]] = reply.body["devices"]
    return devices


async def test_a_user_lists_and_revokes_its_trusted_devices(console: Console) -> None:
    await console.sign_in("alice", trust=True)
    console.gw.client.session.cookie_jar.clear()  # another browser: a second device
    home = await console.sign_in("alice", trust=True)
    devices = await trusted(console.gw, "alice")
    assert len(devices) == 2
    html = assert_page(home)
    assert html.count('name="device"') == 2 and "Depuis le" in html and "Jusqu'au" in html
    one = await console.post(
        MINE + "/postes/retirer", {"csrf": csrf_of(html), "device": devices[0]["device_id"]}
    )
    assert "Le poste de confiance a été retiré" in assert_page(one)
    assert [d["device_id"] for d in await trusted(console.gw, "alice")] == [devices[1]["device_id"]]
    unknown = await console.post(
        MINE + "/postes/retirer", {"csrf": csrf_of(html), "device": "nope"}
    )
    assert_page(unknown, 404)
    every = await console.post(MINE + "/postes/retirer", {"csrf": csrf_of(html)})
    assert "Tous vos postes de confiance ont été retirés" in assert_page(every)
    assert await trusted(console.gw, "alice") == []


async def test_a_user_cannot_revoke_another_account_s_device(console: Console) -> None:
    other = Console(console.gw)
    await other.sign_in("boss", trust=True)
    [device] = await trusted(console.gw, "boss")
    console.gw.client.session.cookie_jar.clear()
    home = await console.sign_in("alice")
    refused = await console.post(
        MINE + "/postes/retirer", {"csrf": csrf_of(home.html), "device": device["device_id"]}
    )
    assert_page(refused, 404)
    assert len(await trusted(console.gw, "boss")) == 1


async def test_a_csrf_less_post_to_every_user_form_is_refused(totp_console: Console) -> None:
    console = totp_console
    await console.sign_in("alice", trust=True)
    for path, fields in [
        (MINE + "/postes/retirer", {}),
        (MINE + "/telephone", {"phone": NEW}),
        (MINE + "/telephone/code", {"code": "123456"}),
        (MINE + "/telephone/renvoyer", {}),
        (MINE + "/application", {}),
        (MINE + "/application/confirmer", {"code": "123456"}),
        (MINE + "/application/retirer", {}),
        ("/console/confirmation/renvoyer", {}),
    ]:
        for token in ({}, {"csrf": "x" * 32}):
            refused = await console.post(path, {**fields, **token})
            assert refused.status == 403, path
            assert_page(refused, 403)
    assert len(await trusted(console.gw, "alice")) == 1
    await console.gw.drain()
    assert all(body["to"] != NEW_E164 for body in console.gw.sink.received)


# --- application d'authentification ----------------------------------------------


async def test_without_totp_the_app_pages_do_not_exist(console: Console) -> None:
    home = await console.sign_in("alice")
    assert "Application d'authentification" not in home.html
    assert_page(await console.get(MINE + "/application"), 404)
    assert_page(await console.get(MINE + "/application/qr.png"), 404)
    refused = await console.post(MINE + "/application", {"csrf": csrf_of(home.html)})
    assert_page(refused, 404)


async def test_a_user_enrols_an_app_with_its_qr_code_and_removes_it(
    totp_console: Console, inbox: Inbox
) -> None:
    console = totp_console
    home = await console.sign_in("alice")
    assert "Ajouter une application" in home.html
    _, csrf = await console.form(MINE + "/application")
    assert_page(await console.get(MINE + "/application/qr.png"), 404)  # nothing under way
    asked, shown = await console.confirm(MINE + "/application", {"csrf": csrf})
    assert "l&#39;ajout d&#39;une application" in asked.html
    html = assert_page(shown)
    assert shown.url.endswith(MINE + "/application")
    assert '<img class="qr" src="/console/mon-compte/application/qr.png"' in html
    secret = html.split('<strong id="cle">')[1].split("</strong>")[0].replace(" ", "")
    qr = await console.gw.client.get(MINE + "/application/qr.png")
    assert qr.status == 200 and qr.headers["Content-Type"] == "image/png"
    assert qr.headers["Cache-Control"] == "no-store"
    assert (await qr.read()).startswith(b"\x89PNG\r\n\x1a\n")
    redis = console.gw.services.redis  # the session never keeps the secret in clear
    sessions = [await redis.get(k) async for k in redis.scan_iter("otp:console:session:*")]
    assert sessions and all(secret.encode() not in value for value in sessions)
    wrong_code = await console.post(
        MINE + "/application/confirmer", {"csrf": csrf, "code": wrong(pyotp.TOTP(secret).now())}
    )
    assert "Code incorrect" in assert_page(wrong_code, 422)
    done = await console.post(
        MINE + "/application/confirmer", {"csrf": csrf, "code": pyotp.TOTP(secret).now()}
    )
    assert "authentification est prête" in assert_page(done)
    status = await as_operator(console.gw, "GET", "/accounts/alice/totp")
    assert status.body["enrolled"] is True
    assert_page(await console.get(MINE + "/application/qr.png"), 404)  # shown once
    await mails_after_drain(console.gw)
    assert inbox.to("alice@example.org")
    asked, removed = await console.confirm(MINE + "/application/retirer", {"csrf": csrf})
    assert "le retrait de votre application" in asked.html
    assert "authentification a été retirée" in assert_page(removed)
    status = await as_operator(console.gw, "GET", "/accounts/alice/totp")
    assert status.body["enrolled"] is False and status.body["pending"] is False


async def test_removing_no_app_is_a_404_before_any_code(totp_console: Console) -> None:
    console = totp_console
    home = await console.sign_in("alice")
    await console.gw.drain()
    sent = len(console.gw.sink.received)
    refused = await console.post(MINE + "/application/retirer", {"csrf": csrf_of(home.html)})
    assert_page(refused, 404)
    await console.gw.drain()
    assert len(console.gw.sink.received) == sent
