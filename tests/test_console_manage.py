"""The console's account management over HTTP: create, modify rights, switch a number,
delete, revoke trusted devices, blank numbers, resend a code, the list's groups, the
reminders, and the console's error pages.

A real gateway, real Redis, the test provider whose codes are typed; every sensitive
action of an admin is confirmed with the step-up code its own phone received.
Browser tests: test_console_browser.py.
"""

from __future__ import annotations

import asyncio
import html as entities
import re
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.admin import admin_gateway, as_operator, mails_after_drain
from tests.support.config import make_config
from tests.support.console import Console, Page, csrf_of
from tests.support.gateway import Gateway, GatewayFactory, add_account, start_gateway
from tests.support.httpfake import Stub
from tests.support.otp import wrong
from tests.support.smtp import Inbox
from tests.test_console import assert_page as assert_html
from tests.test_console import plant

BOSS_PHONE = "+33698765431"
CREATE = "/console/creer-un-compte"
NEW = {
    "account_id": "jdupont", "last_name": "Dupont", "first_name": "Jeanne",
    "email": "jeanne.dupont@mairie-luisant.fr", "role": "user", "services": "CARRIERES, PAIE",
    "net_entreprises": "1", "phone": "02 37 12 34 56", "phone_extension": "214",
}  # fmt: skip


def assert_page(page: Page, status: int = 200) -> str:
    """`test_console.assert_page`, its text unescaped (l'adresse, not l&#39;adresse)."""
    return " ".join(entities.unescape(assert_html(page, status)).split())


@pytest.fixture
async def console(agw: Gateway) -> Console:
    return Console(agw)


async def signed_in(console: Console) -> Console:
    await console.sign_in()
    return console


async def codes_sent(gw: Gateway) -> int:
    await gw.drain()
    return len(gw.sink.codes())


# --- create ------------------------------------------------------------------------


async def test_an_admin_creates_an_account_with_its_code(console: Console) -> None:
    await signed_in(console)
    form, csrf = await console.form(CREATE)
    html = assert_page(form)
    assert "Mairie de Luisant" in html and 'for="account_id"' in html
    asked = await console.post(CREATE, {"csrf": csrf, **NEW})
    assert "pour la création du compte jdupont" in assert_page(asked)
    code = await console.last_code()
    assert console.gw.sink.received[-1]["to"] == BOSS_PHONE  # the acting admin's phone
    assert (await as_operator(console.gw, "GET", "/accounts/jdupont")).status == 404
    done = await console.post(CREATE, {"csrf": csrf, "code": code})
    assert done.url.endswith("/console/comptes/jdupont?fait=cree")
    assert "Le compte a été créé." in assert_page(done)
    account = (await as_operator(console.gw, "GET", "/accounts/jdupont")).body
    assert account["establishment"] == "Mairie de Luisant"  # the admin's own
    assert account["phone"] == "+33237123456" and account["phone_extension"] == "214"
    assert account["services"] == ["CARRIERES", "PAIE"] and account["net_entreprises"] is True
    history = (await as_operator(console.gw, "GET", "/accounts/jdupont/history")).body
    entry = history["entries"][0]
    assert entry["action"] == "create" and entry["step_up"] == "verified"
    assert entry["actor"] == "admin:console" and entry["acting_for"] == "boss"


async def test_the_number_waiting_for_its_code_is_sealed_in_the_session(
    console: Console,
) -> None:
    await signed_in(console)
    _, csrf = await console.form(CREATE)
    await console.post(CREATE, {"csrf": csrf, **NEW})
    redis = console.gw.services.redis
    stored = [await redis.get(k) async for k in redis.scan_iter("otp:console:session:*")]
    assert stored and all(b"2 37 12 34 56" not in v and b"237123456" not in v for v in stored)


async def test_the_create_form_announces_each_error_by_its_field(console: Console) -> None:
    await signed_in(console)
    sent = await codes_sent(console.gw)
    _, csrf = await console.form(CREATE)
    bad = {**NEW, "csrf": csrf, "last_name": " ", "email": "jeanne@", "phone": "12",
           "expires_at": "31/02/2027", "services": "PAIE, CARRIÈRES"}  # fmt: skip
    page = await console.post(CREATE, bad)
    html = assert_page(page, 400)
    assert 'role="alert" id="erreurs"' in html and "5 champs à corriger" in html
    for name in ("last_name", "email", "phone", "expires_at", "services"):
        assert f'id="{name}-erreur"' in html and f'href="#{name}"' in html
        field = re.search(rf'<input id="{name}"[^>]*>', html, re.S)
        assert field and "aria-invalid" in field[0] and f"{name}-erreur" in field[0]
    assert 'value="jeanne@"' in html  # what was typed stays
    assert (await as_operator(console.gw, "GET", "/accounts/jdupont")).status == 404
    assert await codes_sent(console.gw) == sent  # no code for a form with errors


async def test_an_id_already_taken_is_said_by_its_field(console: Console) -> None:
    await signed_in(console)
    _, csrf = await console.form(CREATE)
    _, done = await console.confirm(CREATE, {**NEW, "csrf": csrf, "account_id": "carol"})
    html = assert_page(done, 409)
    assert 'id="account_id-erreur">Cet identifiant est déjà pris' in html


async def test_an_operator_creates_in_the_establishment_it_names(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(make_gateway, inbox, console={"operators": ["support1"]})
    await add_account(gw, account_id="support1", establishment="Support", email="s@example.org")
    console = Console(gw)
    await console.sign_in("support1")
    _, csrf = await console.form(CREATE + "?establishment=Clinique+du+Parc")
    fields = {**NEW, "csrf": csrf, "establishment": "Clinique du Parc"}
    done = await console.post(CREATE, fields)  # exempt: no code
    assert "Le compte a été créé." in assert_page(done)
    account = (await as_operator(gw, "GET", "/accounts/jdupont")).body
    assert account["establishment"] == "Clinique du Parc"


# --- modify rights ---------------------------------------------------------------------


async def test_rights_change_without_a_code_and_a_new_email_with_one(
    console: Console, inbox: Inbox
) -> None:
    await signed_in(console)
    sent = await codes_sent(console.gw)
    path = "/console/comptes/alice/modifier"
    form, csrf = await console.form(path)
    assert 'value="alice@example.org"' in assert_page(form)
    rights = {"csrf": csrf, "last_name": "Martin", "first_name": "Alice",
              "email": "alice@example.org", "role": "user", "services": "PAIE",
              "net_entreprises": "1"}  # fmt: skip
    done = await console.post(path, rights)
    assert "Les modifications ont été enregistrées." in assert_page(done)
    assert await codes_sent(console.gw) == sent  # services and N-E: no step-up in the API
    alice = (await as_operator(console.gw, "GET", "/accounts/alice")).body
    assert alice["services"] == ["PAIE"] and alice["net_entreprises"] is True
    asked, done = await console.confirm(path, {**rights, "email": "a.martin@example.org"})
    assert "pour le changement de l'adresse courriel du compte alice" in entities.unescape(
        asked.html
    )
    assert "Les modifications ont été enregistrées." in assert_page(done)
    alice = (await as_operator(console.gw, "GET", "/accounts/alice")).body
    assert alice["email"] == "a.martin@example.org"
    await mails_after_drain(console.gw)
    assert inbox.to("alice@example.org")  # the old address is told


async def test_demoting_the_last_admin_is_refused_in_french(console: Console) -> None:
    await signed_in(console)
    sent = await codes_sent(console.gw)
    path = "/console/comptes/boss/modifier"
    _, csrf = await console.form(path)
    fields = {"csrf": csrf, "last_name": "Martin", "first_name": "Alice",
              "email": "boss@example.org", "role": "user", "services": ""}  # fmt: skip
    refused = await console.post(path, fields)
    assert "dernier administrateur actif" in assert_page(refused, 409)
    assert await codes_sent(console.gw) == sent
    assert (await as_operator(console.gw, "GET", "/accounts/boss")).body["role"] == "admin"


async def test_demoting_another_admin_needs_its_code(console: Console) -> None:
    await add_account(console.gw, account_id="second", role="admin", email="s@example.org")
    await signed_in(console)
    path = "/console/comptes/second/modifier"
    _, csrf = await console.form(path)
    fields = {"csrf": csrf, "last_name": "Martin", "first_name": "Alice",
              "email": "s@example.org", "role": "user", "services": ""}  # fmt: skip
    asked, done = await console.confirm(path, fields)
    assert "pour le retrait des droits d'administrateur du compte second" in entities.unescape(
        asked.html
    )
    assert_page(done)
    assert (await as_operator(console.gw, "GET", "/accounts/second")).body["role"] == "user"


async def test_a_new_email_and_a_demotion_at_once_are_one_sentence(console: Console) -> None:
    await add_account(console.gw, account_id="second", role="admin", email="s@example.org")
    await signed_in(console)
    path = "/console/comptes/second/modifier"
    _, csrf = await console.form(path)
    fields = {"csrf": csrf, "last_name": "Martin", "first_name": "Alice",
              "email": "new@example.org", "role": "user", "services": ""}  # fmt: skip
    refused = await console.post(path, fields)
    assert "dans une modification à part" in assert_page(refused, 422)


# --- switch a number ----------------------------------------------------------------------


async def test_an_admin_switches_a_number_with_its_code(console: Console, inbox: Inbox) -> None:
    await signed_in(console)
    path = "/console/comptes/alice/telephone"
    form, csrf = await console.form(path)
    html = assert_page(form)
    assert "masqué par son titulaire" in html and "12 34 56 78" not in html
    bad = await console.post(path, {"csrf": csrf, "phone": "0000"})
    assert 'id="phone-erreur"' in assert_page(bad, 400)
    asked, done = await console.confirm(
        path, {"csrf": csrf, "phone": "07 81 22 33 44", "phone_extension": ""}
    )
    assert "pour le changement de numéro du compte alice" in entities.unescape(asked.html)
    assert "Le numéro a été changé." in assert_page(done)
    alice = (await as_operator(console.gw, "GET", "/accounts/alice")).body
    assert alice["phone"] == "+33781223344" and alice["phone_hidden"] is False
    history = (await as_operator(console.gw, "GET", "/accounts/alice/history")).body
    assert history["entries"][0]["step_up"] == "verified"
    await mails_after_drain(console.gw)
    assert inbox.to("alice@example.org")


# --- delete, trusted devices ----------------------------------------------------------------


async def test_an_admin_deletes_an_account_after_a_page_naming_it(console: Console) -> None:
    await signed_in(console)
    path = "/console/comptes/alice/supprimer"
    form, csrf = await console.form(path)
    html = assert_page(form)
    assert "Supprimer le compte de Alice Martin (alice) ?" in html and "définitive" in html
    asked, done = await console.confirm(path, {"csrf": csrf})
    assert "pour la suppression du compte alice" in entities.unescape(asked.html)
    assert "Le compte alice a été supprimé." in assert_page(done)
    assert (await as_operator(console.gw, "GET", "/accounts/alice")).status == 404


async def test_the_last_admin_cannot_be_deleted(console: Console) -> None:
    await signed_in(console)
    sent = await codes_sent(console.gw)
    _, csrf = await console.form("/console/comptes/boss/supprimer")
    refused = await console.post("/console/comptes/boss/supprimer", {"csrf": csrf})
    assert "C'est le dernier administrateur actif" in assert_page(refused, 409)
    assert await codes_sent(console.gw) == sent


async def test_an_admin_revokes_trusted_devices_with_its_code(console: Console) -> None:
    await console.sign_in("boss", trust=True)
    page = assert_page(await console.get("/console/comptes/boss"))
    assert "Postes de confiance du compte boss" in page
    asked, done = await console.confirm("/console/comptes/boss/postes/retirer",
                                        {"csrf": csrf_of(page)})  # fmt: skip
    assert "pour le retrait des postes de confiance du compte boss" in entities.unescape(asked.html)
    assert "Les postes de confiance du compte ont été retirés." in assert_page(done)
    devices = await as_operator(console.gw, "GET", "/accounts/boss/devices")
    assert devices.body["devices"] == []


async def test_an_admin_revokes_one_device_with_its_code(console: Console) -> None:
    await console.sign_in("boss", trust=True)
    listed = await as_operator(console.gw, "GET", "/accounts/boss/devices")
    (device,) = listed.body["devices"]
    page = assert_page(await console.get("/console/comptes/boss"))
    assert f'name="device" value="{device["device_id"]}"' in page
    path = "/console/comptes/boss/postes/retirer"
    unknown = await console.post(path, {"csrf": csrf_of(page), "device": "nope"})
    assert_page(unknown, 404)  # before any code
    fields = {"csrf": csrf_of(page), "device": device["device_id"]}
    asked, done = await console.confirm(path, fields)
    assert "pour le retrait d'un poste de confiance du compte boss" in assert_page(asked)
    assert "Le poste de confiance a été retiré." in assert_page(done)
    assert (await as_operator(console.gw, "GET", "/accounts/boss/devices")).body["devices"] == []
    history = (await as_operator(console.gw, "GET", "/accounts/boss/history")).body
    assert history["entries"][0]["action"] == "devices.revoke"


async def test_a_wrong_step_up_code_leaves_the_change_undone(console: Console) -> None:
    await signed_in(console)
    path = "/console/comptes/alice/supprimer"
    _, csrf = await console.form(path)
    await console.post(path, {"csrf": csrf})
    again = await console.post(path, {"csrf": csrf, "code": wrong(await console.last_code())})
    assert "Code incorrect" in assert_page(again, 422)
    assert (await as_operator(console.gw, "GET", "/accounts/alice")).status == 200


# --- blank numbers (deployment day) --------------------------------------------------------


async def test_an_operator_blanks_an_establishments_numbers(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(make_gateway, inbox, console={"operators": ["support1"]})
    await add_account(gw, account_id="support1", establishment="Support", email="s@example.org")
    console = Console(gw)
    await console.sign_in("support1")
    listed = assert_page(await console.get("/console/comptes?establishment=Mairie+de+Luisant"))
    assert "/console/numeros-a-blanc?establishment=Mairie%20de%20Luisant" in listed
    page, csrf = await console.form("/console/numeros-a-blanc?establishment=Mairie+de+Luisant")
    html = assert_page(page)
    assert "<strong>2 comptes</strong>" in html and "2 numéros" in html
    done = await console.post(
        "/console/numeros-a-blanc", {"csrf": csrf, "establishment": "Mairie de Luisant"}
    )
    assert "2 numéros remis à blanc." in assert_page(done)
    for account_id in ("boss", "alice"):
        body = (await as_operator(gw, "GET", f"/accounts/{account_id}")).body
        assert body["phone_set"] is False
    carol = (await as_operator(gw, "GET", "/accounts/carol")).body
    assert carol["phone_set"] is True  # another establishment: untouched


async def test_an_admin_may_not_blank_numbers(console: Console) -> None:
    await signed_in(console)
    page = await console.get("/console/numeros-a-blanc?establishment=Mairie+de+Luisant")
    assert "faite par le support" in assert_page(page, 403)
    csrf = csrf_of((await console.get("/console/comptes")).html)
    fields = {"csrf": csrf, "establishment": "Mairie de Luisant"}
    assert (await console.post("/console/numeros-a-blanc", fields)).status == 403
    assert (await as_operator(console.gw, "GET", "/accounts/boss")).body["phone_set"] is True


# --- CSRF on every new form ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        CREATE,
        "/console/comptes/alice/modifier",
        "/console/comptes/alice/telephone",
        "/console/comptes/alice/supprimer",
        "/console/comptes/alice/postes/retirer",
        "/console/numeros-a-blanc",
        "/console/confirmation/renvoyer",
    ],
)
async def test_posts_without_the_form_token_are_refused(console: Console, path: str) -> None:
    await signed_in(console)
    sent = await codes_sent(console.gw)
    fields = {**NEW, "account_id": "csrfless", "phone": "0781223344", "establishment": "X"}
    refused = await console.post(path, fields)
    assert "Ce formulaire a expiré" in assert_page(refused, 403)
    assert (await as_operator(console.gw, "GET", "/accounts/csrfless")).status == 404
    assert (await as_operator(console.gw, "GET", "/accounts/alice")).body["phone_set"] is True
    assert (await as_operator(console.gw, "GET", "/accounts/alice")).body["email"] == (
        "alice@example.org"
    )
    assert await codes_sent(console.gw) == sent


async def test_the_code_pages_resend_refuses_a_foreign_token(console: Console) -> None:
    page = await console.ask_code("boss")
    refused = await console.post("/console/code/renvoyer", {"csrf": "x" * 32})
    assert_page(refused, 403)
    assert "Renvoyer le code" in entities.unescape(
        page.html
    ) and "M'appeler plutôt" in entities.unescape(page.html)


# --- resend -------------------------------------------------------------------------------


async def test_resend_sends_the_same_code_and_call_me_calls(console: Console) -> None:
    page = await console.ask_code("boss")
    code = await console.last_code()
    again = await console.post("/console/code/renvoyer", {"csrf": csrf_of(page.html)})
    assert "Le même code vous a été renvoyé par SMS au +33 * ** ** ** 31" in assert_page(again)
    assert await console.last_code() == code
    call = await console.post(
        "/console/code/renvoyer", {"csrf": csrf_of(page.html), "channel": "voice"}
    )
    assert "renvoyé par appel vocal" in assert_page(call)
    await console.gw.drain()
    assert console.gw.sink.received[-1]["channel"] == "voice"
    signed = await console.type_code(call, code)
    assert signed.url.endswith("/console/comptes")


async def test_resend_within_the_cooldown_is_a_sentence(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(make_gateway, inbox, otp={"resend_cooldown_seconds": 30})
    console = Console(gw)
    page = await console.ask_code("boss")
    assert "30 secondes au moins après l'envoi précédent" in assert_page(page)
    again = await console.post("/console/code/renvoyer", {"csrf": csrf_of(page.html)})
    html = assert_page(again, 429)
    assert re.search(r"Réessayez dans [0-9]+ secondes?\.", html)


async def test_a_step_up_code_can_be_sent_again(console: Console) -> None:
    await signed_in(console)
    _, csrf = await console.form("/console/comptes/alice/supprimer")
    await console.post("/console/comptes/alice/supprimer", {"csrf": csrf})
    code = await console.last_code()
    again = await console.post("/console/confirmation/renvoyer", {"csrf": csrf})
    html = assert_page(again)
    assert (
        "Le même code vous a été renvoyé" in html and "pour la suppression du compte alice" in html
    )
    assert await console.last_code() == code
    done = await console.post("/console/comptes/alice/supprimer", {"csrf": csrf, "code": code})
    assert "Le compte alice a été supprimé." in assert_page(done)
    spent = await console.post("/console/confirmation/renvoyer", {"csrf": csrf})
    assert "plus valable" in assert_page(spent, 409)  # nothing waits for a code any more


# --- the list: service filter, groups ---------------------------------------------------------


async def test_the_list_filters_by_service_and_groups_by_service(console: Console) -> None:
    await add_account(console.gw, account_id="jdupont", email="j@example.org",
                      last_name="Dupont", services=["CARRIERES"])  # fmt: skip
    await add_account(console.gw, account_id="pleroy", email="p@example.org",
                      last_name="Leroy", services=["PAIE"])  # fmt: skip
    await signed_in(console)
    paie = assert_page(await console.get("/console/comptes?service=PAIE"))
    assert "pleroy" in paie and "jdupont" not in paie
    grouped = assert_page(await console.get("/console/comptes?group_by=service"))
    assert grouped.count("<table>") == 3  # CARRIERES, PAIE, and the accounts without one
    for heading in ("Service CARRIERES", "Service PAIE", "Sans service"):
        assert f"<h2>{heading}</h2>" in grouped and f"<caption>{heading} :" in grouped
    assert (await console.get("/console/comptes?group_by=bogus")).status == 400


# --- the account page: expiry and reminders ----------------------------------------------------


async def test_the_account_page_shows_its_expiry_and_reminders(console: Console) -> None:
    soon = (datetime.now(UTC) + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await add_account(console.gw, account_id="jdupont", email="j@example.org", expires_at=soon)
    before = assert_page(await (await signed_in(console)).get("/console/comptes/jdupont"))
    assert "Rappel à 30 jours" in before and "pas encore envoyé" in before
    assert "dans 19 jours" in before or "dans 20 jours" in before
    await console.gw.services.account_services.sweeper.sweep_once(force=True)
    after = assert_page(await console.get("/console/comptes/jdupont"))
    assert re.search(
        r"Rappel à 30 jours \(le [0-9/]{10}\) :\s+envoyé aux administrateurs le "
        r"[0-9]{2}/[0-9]{2}/[0-9]{4} à [0-9]{2}:[0-9]{2}",
        after,
    ), after
    assert re.search(r"Rappel à 7 jours \(le [0-9/]{10}\) :\s+pas encore envoyé", after)


# --- error pages: never the JSON body on a /console path ------------------------------------


async def test_a_get_of_an_action_is_a_405_page(console: Console) -> None:
    await signed_in(console)
    page = await console.get("/console/comptes/alice/renouveler")
    assert "passez par les boutons" in assert_page(page, 405)
    assert page.headers["Allow"] == "POST"


async def test_a_body_too_large_is_a_413_page(console: Console) -> None:
    await signed_in(console)
    resp = await console.gw.client.post(
        CREATE, data=b"x=" + b"y" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert resp.status == 413 and resp.headers["Content-Type"].startswith("text/html")
    assert "trop volumineux" in await resp.text()


async def test_a_redis_that_does_not_answer_is_a_503_page_with_retry_after(
    sink: Stub,
) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    accepted: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    config = make_config(url, redis={"url": url, "timeout_seconds": 0.3},
                         providers=[sink.provider()])  # fmt: skip
    gw = await start_gateway(config, sink)
    try:
        console = Console(gw)
        plant(console, "otpgw_console", "s" * 43)
        page = await console.get("/console/comptes")
        assert "momentanément indisponible" in assert_page(page, 503)
        assert page.headers["Retry-After"] == "1"
    finally:
        await gw.client.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


# --- the establishment's history, the page size ------------------------------------------------


async def test_the_establishments_history_lists_every_account_deleted_ones_too(
    console: Console,
) -> None:
    await as_operator(console.gw, "DELETE", "/accounts/alice")
    await signed_in(console)
    listed = assert_page(await console.get("/console/comptes"))
    assert 'href="/console/historique"' in listed and "Voir l'historique" in listed
    html = assert_page(await console.get("/console/historique"))
    assert "Historique de l'établissement Mairie de Luisant" in html
    assert "Suppression" in html and "alice" in html and "boss" in html
    assert "carol" not in html  # another establishment's
    assert html.index("Suppression") < html.index("Création du compte")  # newest first
    assert (await console.get("/console/historique?establishment=Clinique+du+Parc")).status == 404
    assert (await console.get("/console/historique?page=0")).status == 400


async def test_results_per_page_are_chosen_from_the_sizes_offered(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(make_gateway, inbox)
    for n in range(11):
        await add_account(gw, account_id=f"agent{n:02}", email=f"agent{n}@example.org")
    console = await signed_in(Console(gw))
    default = assert_page(await console.get("/console/comptes"))
    assert "1-13 sur 13 résultat(s)" in default and '<option value="25" selected>' in default
    ten = assert_page(await console.get("/console/comptes?per_page=10"))
    assert "1-10 sur 13 résultat(s)" in ten and 'href="?per_page=10&page=2"' in ten
    assert (await console.get("/console/comptes?per_page=7")).status == 400
