""" "Mon compte", a user's own pages, in a real browser (Debian's Chromium, Selenium).

A real gateway on a loopback socket, real Redis, the test provider (its codes,
on the number they went to, are typed in); axe-core on every page (WCAG 2.1
A/AA: no serious or critical violation). With OTP_CONSOLE_SCREENSHOTS=1 these
tests also write their screenshots into docs/console/.
"""

from __future__ import annotations

from typing import Any

import pyotp
import pytest
from selenium.webdriver.common.keys import Keys

from tests.support.admin import admin_gateway, as_operator
from tests.support.browser import Browser
from tests.support.console import seed_people
from tests.support.gateway import Gateway, GatewayFactory
from tests.support.smtp import Inbox

MINE = "/console/mon-compte"
NEW = "07 81 45 67 89"
NEW_E164 = "+33781456789"


async def browser_on(driver: Any, gw: Gateway) -> Browser:
    """The session's Chromium, cookies cleared, pointed at this test's gateway."""
    browser = Browser(driver, str(gw.client.make_url("/")))
    await browser.reset()
    return browser


@pytest.fixture
async def browser(chromium_driver: Any, agw: Gateway) -> Browser:
    await seed_people(agw)  # Jeanne Dupont (jdupont), a user, among them
    return await browser_on(chromium_driver, agw)


async def last_code(gw: Gateway) -> str:
    await gw.drain()
    return gw.sink.codes()[-1]


async def code_to(gw: Gateway, e164: str) -> str:
    await gw.drain()
    return [body["code"] for body in gw.sink.received if body["to"] == e164][-1]


async def user_signs_in(
    browser: Browser, gw: Gateway, account_id: str, trust: bool = False
) -> None:
    await browser.open("/console/")
    await browser.at("/console/connexion")
    await browser.type("#account_id", account_id)
    await browser.click("form[action='/console/connexion'] button[type=submit]")
    await browser.at("/console/code")
    await browser.type("#code", await last_code(gw))
    if trust:
        await browser.click("#trust")
    await browser.click("form[action='/console/code'] button[type=submit]")
    await browser.at(MINE)


async def test_a_user_changes_its_number_with_the_code_sent_to_the_new_one(
    browser: Browser, agw: Gateway
) -> None:
    await user_signs_in(browser, agw, "jdupont")
    assert "Vos codes sont envoyés au +33671234589" in await browser.text()
    await browser.axe()
    await browser.click(f"a[href='{MINE}/telephone']")
    await browser.at(MINE + "/telephone")
    await browser.axe()
    await browser.type("#phone", NEW)
    await browser.screenshot("mon-numero")
    await browser.click(f"form[action='{MINE}/telephone'] button[type=submit]")
    # first the contact.update code, to the current number
    await browser.shows("pour le changement de votre numéro")
    await browser.axe()
    await browser.type("#code", await code_to(agw, "+33671234589"))
    await browser.keys(Keys.ENTER)
    await browser.at(MINE + "/telephone/code")
    assert "+33 * ** ** ** 89" in await browser.text()
    await browser.axe()
    await browser.screenshot("mon-numero-code")
    await browser.type("#code", await code_to(agw, NEW_E164))
    await browser.keys(Keys.ENTER)
    await browser.at(MINE + "?fait=numero")
    await browser.shows("Votre nouveau numéro est enregistré")
    assert f"Vos codes sont envoyés au {NEW_E164}" in await browser.text()
    await browser.axe()
    account = await as_operator(agw, "GET", "/accounts/jdupont")
    assert account.body["phone"] == NEW_E164


async def test_a_user_revokes_a_trusted_device(browser: Browser, agw: Gateway) -> None:
    await user_signs_in(browser, agw, "jdupont", trust=True)
    text = await browser.text()
    assert "Mes postes de confiance" in text and "Console d'administration" in text  # its label
    await browser.axe()
    await browser.screenshot("mon-compte")
    await browser.click(f"form[action='{MINE}/postes/retirer'] input[name=device] ~ button")
    await browser.at(MINE + "?fait=poste")
    await browser.shows("Le poste de confiance a été retiré")
    assert "Aucun poste de confiance" in await browser.text()
    await browser.axe()
    devices = await as_operator(agw, "GET", "/accounts/jdupont/devices")
    assert devices.body["devices"] == []


async def test_a_user_enrols_an_authenticator_app_from_its_qr_page(
    chromium_driver: Any, make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(make_gateway, inbox, accounts={"totp": True})
    await seed_people(gw)
    browser = await browser_on(chromium_driver, gw)
    await user_signs_in(browser, gw, "jdupont")
    await browser.click(f"a[href='{MINE}/application']")
    await browser.at(MINE + "/application")
    await browser.axe()
    await browser.click(f"form[action='{MINE}/application'] button[type=submit]")
    await browser.shows("pour l'ajout d'une application d'authentification")
    await browser.axe()
    await browser.type("#code", await last_code(gw))
    await browser.keys(Keys.ENTER)
    await browser.at(MINE + "/application")
    await browser.shows("Scannez ce QR code")
    # the image loaded under the strict CSP: drawn by the gateway, same origin
    width = await browser.call(
        browser.driver.execute_script, "return document.querySelector('img.qr').naturalWidth"
    )
    assert width > 100
    await browser.axe()
    await browser.screenshot("application")
    secret = await browser.call((await browser.find("#cle")).get_attribute, "textContent")
    await browser.type("#code", pyotp.TOTP(secret.replace(" ", "")).now())
    await browser.keys(Keys.ENTER)
    await browser.at(MINE + "?fait=application")
    await browser.shows("Votre application d'authentification est prête")
    await browser.axe()
    status = await as_operator(gw, "GET", "/accounts/jdupont/totp")
    assert status.body["enrolled"] is True
