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

from tests.support.browser import Browser
from tests.support.gateway import Gateway, add_account


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


async def test_an_admin_signs_in_trusts_the_post_and_is_not_asked_again(
    browser: Browser, agw: Gateway
) -> None:
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
    await add_account(agw, account_id="jdupont", first_name="Jeanne", last_name="Dupont",
                      email="jeanne.dupont@example.org", services=["CARRIERES"])  # fmt: skip
    await sign_in_page(browser, "boss")
    await browser.type("#code", await last_code(agw))
    await browser.click("form[action='/console/code'] button[type=submit]")
    await browser.at("/console/comptes")
    await browser.type("#q", "dupont")
    await browser.click("form[role=search] button[type=submit]")
    await browser.at("/console/comptes?q=dupont&status=&role=")
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


async def test_a_user_is_refused_in_french(browser: Browser, agw: Gateway) -> None:
    await sign_in_page(browser, "alice")
    await browser.type("#code", await last_code(agw))
    await browser.click("form[action='/console/code'] button[type=submit]")
    await browser.shows("réservée aux administrateurs")  # the POST's answer, a 403 page
    await browser.axe()
    await browser.screenshot("refus")


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
