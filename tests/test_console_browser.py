"""The admin console in a real browser: Debian's Chromium, headless, driven by Selenium.

A real gateway on a loopback socket, real Redis, the test provider whose codes
are typed in; axe-core checks every page (WCAG 2.1 A/AA: no serious or
critical violation). With OTP_CONSOLE_SCREENSHOTS=1 these tests also write
the screenshots of docs/console.md.
"""

from __future__ import annotations

from typing import Any

import pytest
from selenium.webdriver.common.keys import Keys

from tests.support.admin import admin_gateway, as_operator
from tests.support.browser import Browser
from tests.support.console import seed_people
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.smtp import Inbox


@pytest.fixture
async def browser(chromium_driver: Any, agw: Gateway) -> Browser:
    """The session's Chromium, cookies cleared, pointed at this test's gateway."""
    browser = Browser(chromium_driver, str(agw.client.make_url("/")))
    await browser.reset()
    return browser


async def last_code(gw: Gateway) -> str:
    await gw.drain()
    return gw.sink.codes()[-1]


async def sign_in_page(browser: Browser, account_id: str) -> None:
    await browser.open("/console/")
    await browser.at("/console/connexion")
    await browser.type("#account_id", account_id)
    await browser.click("form[action='/console/connexion'] button[type=submit]")
    await browser.at("/console/code")


async def signed_in(browser: Browser, gw: Gateway, account_id: str = "boss") -> None:
    await sign_in_page(browser, account_id)
    await browser.type("#code", await last_code(gw))
    await browser.click("form[action='/console/code'] button[type=submit]")
    await browser.at("/console/comptes")


async def confirm_with_code(browser: Browser, gw: Gateway, what: str, shot: str = "") -> None:
    """The confirmation page: it names the action; axe; the code typed; sent."""
    await browser.shows(f"pour {what}")
    await browser.axe()
    if shot:
        await browser.screenshot(shot)
    await browser.type("#code", await last_code(gw))
    await browser.keys(Keys.ENTER)


async def test_an_admin_signs_in_trusts_the_post_and_is_not_asked_again(
    browser: Browser, agw: Gateway
) -> None:
    await seed_people(agw)
    await browser.open("/console/")
    minor = await browser.axe()
    assert all(v["impact"] in ("minor", "moderate") for v in minor)
    await browser.screenshot("connexion")
    await sign_in_page(browser, "boss")
    assert "+33 * ** ** ** 31" in await browser.text()
    await browser.axe()
    await browser.screenshot("code")  # before typing: no code in the docs' pictures
    await browser.type("#code", await last_code(agw))
    await browser.click("#trust")
    await browser.click("form[action='/console/code'] button[type=submit]")
    await browser.at("/console/comptes")
    assert "Seul administrateur" in await browser.text()
    await browser.axe()
    await browser.screenshot("comptes")
    await browser.open("/console/comptes/boss")  # its trusted post listed, each with "Retirer"
    assert "Retirer tous les postes de confiance" in await browser.text()
    await browser.axe()
    await browser.open("/console/comptes")
    await browser.click(".signout button")
    await browser.at("/console/connexion?message=fin")
    assert "Vous êtes déconnecté" in await browser.text()
    sent = len(agw.sink.codes())
    await browser.type("#account_id", "boss")
    await browser.click("form[action='/console/connexion'] button[type=submit]")
    await browser.at("/console/comptes")  # the trusted post: no code asked
    await agw.drain()
    assert len(agw.sink.codes()) == sent


async def test_an_admin_searches_opens_an_account_and_its_history(
    browser: Browser, agw: Gateway
) -> None:
    await seed_people(agw)  # Jeanne Dupont (jdupont) among them
    await sign_in_page(browser, "boss")
    await browser.type("#code", await last_code(agw))
    await browser.click("form[action='/console/code'] button[type=submit]")
    await browser.at("/console/comptes")
    await browser.type("#q", "dupont")
    await browser.click("form[role=search] button[type=submit]")
    await browser.at("/console/comptes?q=dupont&service=&status=&role=&group_by=&per_page=25")
    text = await browser.text()
    assert "1-1 sur 1 résultat(s)" in text and "jdupont" in text and "alice" not in text
    await browser.axe()
    await browser.click("a[href='/console/comptes/jdupont']")
    await browser.at("/console/comptes/jdupont")
    text = await browser.text()
    assert "Jeanne Dupont" in text and "Création du compte" in text and "CARRIERES" in text
    await browser.axe()
    await browser.screenshot("compte")
    await browser.click(".signout button")
    await browser.at("/console/connexion?message=fin")
    await browser.open("/console/comptes")
    await browser.at("/console/connexion")


async def test_a_user_lands_on_its_own_space_and_is_refused_the_admins(
    browser: Browser, agw: Gateway
) -> None:
    await sign_in_page(browser, "alice")
    await browser.type("#code", await last_code(agw))
    await browser.click("form[action='/console/code'] button[type=submit]")
    await browser.at("/console/mon-compte")
    await browser.open("/console/comptes")
    await browser.shows("réservée aux administrateurs")  # a 403 page, leading back
    await browser.axe()
    await browser.screenshot("refus")
    await browser.click("a[href='/console/mon-compte']")
    await browser.at("/console/mon-compte")


async def test_a_wrong_code_is_announced(browser: Browser, agw: Gateway) -> None:
    await sign_in_page(browser, "boss")
    code = await last_code(agw)
    await browser.type("#code", str((int(code) + 1) % 10**6).zfill(6))
    await browser.click("form[action='/console/code'] button[type=submit]")
    await browser.shows("Code incorrect. Il vous reste 4 essais.")
    alert = await browser.find("[role=alert]")
    assert "Code incorrect" in await browser.call(lambda: alert.text)
    await browser.axe()


async def test_keyboard_only_sign_in(browser: Browser, agw: Gateway) -> None:
    await browser.open("/console/connexion")
    await browser.keys(Keys.TAB)
    assert await browser.focused() == "a:Aller au contenu"
    await browser.keys(Keys.TAB)
    assert await browser.focused() == "input#account_id"
    await browser.keys("boss", Keys.TAB)
    assert await browser.focused() == "input#channel_auto"
    await browser.keys(Keys.TAB)
    assert await browser.focused() == "button:Recevoir un code"
    await browser.keys(Keys.ENTER)
    await browser.at("/console/code")
    assert await browser.focused() == "input#code"  # autofocus: type at once
    await browser.keys(await last_code(agw), Keys.TAB)
    assert await browser.focused() == "input#trust"
    await browser.keys(Keys.SPACE, Keys.TAB)
    assert await browser.focused() == "button:Valider"
    await browser.keys(Keys.ENTER)
    await browser.at("/console/comptes")
    assert "otpgw_console_device" in await browser.cookies()


async def test_an_admin_suspends_an_account_with_its_code_inline(
    browser: Browser, agw: Gateway
) -> None:
    await seed_people(agw)
    await sign_in_page(browser, "boss")
    await browser.type("#code", await last_code(agw))
    await browser.click("form[action='/console/code'] button[type=submit]")
    await browser.at("/console/comptes")
    await browser.open("/console/comptes/alice")
    await browser.click("form[action='/console/comptes/alice/suspendre'] button")
    await browser.shows("pour la suspension du compte alice")
    await browser.axe()
    await browser.screenshot("confirmation")
    await browser.type("#code", await last_code(agw))
    await browser.click("form[action='/console/comptes/alice/suspendre'] button")
    await browser.at("/console/comptes/alice?fait=suspendu")
    text = await browser.text()
    assert "Le compte a été suspendu." in text and "Suspendu" in text
    await browser.axe()
    await browser.click("form[action='/console/comptes/alice/reactiver'] button")
    await browser.at("/console/comptes/alice?fait=reactive")


# --- slice 2: create, modify, switch a number, delete, blank, errors -------------------------


async def test_keyboard_only_creation_with_its_code(browser: Browser, agw: Gateway) -> None:
    await seed_people(agw)
    await signed_in(browser, agw)
    await browser.open("/console/creer-un-compte")
    await browser.axe()
    await browser.screenshot("creer")
    for _ in range(8):  # skip link, menu, sign-out, "Annuler": then the first field
        await browser.keys(Keys.TAB)
        if await browser.focused() == "input#account_id":
            break
    assert await browser.focused() == "input#account_id"
    typed = [
        ("mpetit", "input#last_name"), ("Petit", "input#first_name"), ("Marion", "input#email"),
        ("marion.petit@mairie-luisant.fr", "input#role"),
    ]  # fmt: skip
    for text, then in typed:
        await browser.keys(text, Keys.TAB)
        assert await browser.focused() == then
    await browser.keys(Keys.TAB)
    assert await browser.focused() == "input#services"  # one stop for the radio group
    await browser.keys("PAIE", Keys.TAB)
    assert await browser.focused() == "input#net_entreprises"
    await browser.keys(Keys.SPACE, Keys.TAB)
    assert await browser.focused() == "input#phone"
    await browser.keys("06 45 12 78 90", Keys.TAB, Keys.TAB, Keys.TAB, Keys.TAB)
    assert await browser.focused() == "button:Créer le compte"
    await browser.keys(Keys.ENTER)
    await browser.shows("pour la création du compte mpetit")
    assert await browser.focused() == "input#code"  # autofocus: type at once
    await confirm_with_code(browser, agw, "la création du compte mpetit", shot="creer-code")
    await browser.at("/console/comptes/mpetit?fait=cree")
    text = await browser.text()
    assert "Le compte a été créé." in text and "Marion Petit" in text and "PAIE" in text
    await browser.axe()


async def test_create_errors_are_announced_by_their_fields(browser: Browser, agw: Gateway) -> None:
    await signed_in(browser, agw)
    await browser.open("/console/creer-un-compte")
    await browser.type("#account_id", "mpetit")
    await browser.type("#email", "marion.petit@")
    await browser.type("#phone", "12")
    await browser.click("form[action='/console/creer-un-compte'] button[type=submit]")
    await browser.shows("4 champs à corriger")  # names, e-mail, number
    summary = await browser.find("#erreurs[role=alert]")
    assert "Adresse courriel" in await browser.call(lambda: summary.text)
    email = await browser.find("#email")
    described = await browser.call(email.get_attribute, "aria-describedby")
    assert "email-erreur" in described
    await browser.axe()
    await browser.screenshot("creer-erreurs")


async def test_an_admin_modifies_rights_switches_a_number_and_deletes(
    browser: Browser, agw: Gateway
) -> None:
    await seed_people(agw)
    await signed_in(browser, agw)
    await browser.open("/console/comptes/jdupont")
    await browser.click("a[href='/console/comptes/jdupont/modifier']")
    await browser.at("/console/comptes/jdupont/modifier")
    await browser.axe()
    await browser.screenshot("modifier")
    await browser.type("#services", "GESTION DES CARRIERES, PAIE")
    await browser.click("#role_admin")
    await browser.click("form[action='/console/comptes/jdupont/modifier'] button[type=submit]")
    await browser.at("/console/comptes/jdupont?fait=modifie")  # granting needs no code
    assert "Administrateur" in await browser.text()
    await browser.click("a[href='/console/comptes/jdupont/telephone']")
    await browser.at("/console/comptes/jdupont/telephone")
    await browser.axe()
    await browser.screenshot("telephone")
    await browser.type("#phone", "06 98 12 34 56")
    await browser.click("form[action='/console/comptes/jdupont/telephone'] button[type=submit]")
    await confirm_with_code(browser, agw, "le changement de numéro du compte jdupont")
    await browser.at("/console/comptes/jdupont?fait=numero")
    assert "+33698123456" in await browser.text()
    await browser.click("a[href='/console/comptes/jdupont/supprimer']")
    await browser.at("/console/comptes/jdupont/supprimer")
    assert "Supprimer le compte de Jeanne Dupont (jdupont) ?" in await browser.text()
    await browser.axe()
    await browser.screenshot("supprimer")
    await browser.click("form[action='/console/comptes/jdupont/supprimer'] button")
    await confirm_with_code(browser, agw, "la suppression du compte jdupont", shot="supprimer-code")
    await browser.at("/console/comptes?fait=supprime&compte=jdupont")
    assert "Le compte jdupont a été supprimé." in await browser.text()
    await browser.axe()
    assert (await as_operator(agw, "GET", "/accounts/jdupont")).status == 404


async def test_the_last_admin_is_refused_in_french(browser: Browser, agw: Gateway) -> None:
    await signed_in(browser, agw)
    await browser.open("/console/comptes/boss/supprimer")
    await browser.click("form[action='/console/comptes/boss/supprimer'] button")
    await browser.shows("C'est le dernier administrateur actif de l'établissement")
    await browser.axe()


async def test_groups_by_service_and_the_establishments_history(
    browser: Browser, agw: Gateway
) -> None:
    await seed_people(agw)
    await signed_in(browser, agw)
    await browser.open("/console/comptes?group_by=service")
    text = await browser.text()
    assert "Service GESTION DES CARRIERES" in text and "Service PAIE" in text
    await browser.axe()
    await browser.screenshot("grouper")
    await browser.click("a[href='/console/historique']")
    await browser.at("/console/historique")
    assert "Historique de l'établissement Mairie de Luisant" in await browser.text()
    await browser.axe()
    await browser.screenshot("historique")


async def test_an_operator_blanks_the_numbers(
    make_gateway: GatewayFactory, inbox: Inbox, chromium_driver: Any
) -> None:
    gw = await admin_gateway(make_gateway, inbox, console={"operators": ["support1"]})
    await add_account(gw, account_id="support1", establishment="Caisse des Dépôts",
                      first_name="Nadia", last_name="Roux", email="n.roux@example.org")  # fmt: skip
    await seed_people(gw)
    browser = Browser(chromium_driver, str(gw.client.make_url("/")))
    await browser.reset()
    await signed_in(browser, gw, "support1")
    await browser.open("/console/comptes?establishment=Mairie+de+Luisant")
    await browser.click("a[href='/console/numeros-a-blanc?establishment=Mairie%20de%20Luisant']")
    await browser.shows("6 comptes dans cet établissement, dont 6 avec un numéro")
    await browser.axe()
    await browser.screenshot("numeros-a-blanc")
    await browser.click("form[action='/console/numeros-a-blanc'] button")
    await browser.shows("6 numéros remis à blanc.")


async def test_error_pages_are_french_pages(browser: Browser, agw: Gateway) -> None:
    await signed_in(browser, agw)
    await browser.open("/console/nulle-part")
    await browser.shows("Cette page n'existe pas")
    await browser.axe()
    await browser.open("/console/comptes/alice/renouveler")
    await browser.shows("passez par les boutons de la console")
    await browser.axe()
