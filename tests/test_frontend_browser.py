"""The code step in a real browser: the example front end and /docs in Debian's Chromium.

A real gateway and Redis, the example front end (examples/login_frontend) before
it, the test provider whose codes are typed in. axe-core checks every page
(WCAG 2.1 A/AA: no serious or critical violation). With OTP_CONSOLE_SCREENSHOTS=1
these tests also write docs/frontend/*.png (docs/frontend.md shows them).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.keys import Keys

from examples.login_frontend.messages import sentence
from tests.support.browser import SCREENSHOTS_ENV, Browser
from tests.support.frontend import Client, start_frontend
from tests.support.gateway import Gateway, GatewayFactory, add_account

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "gateway" / "web" / "static"
SHOTS = ROOT / "docs" / "frontend"


@pytest.fixture
async def gateway(make_gateway: GatewayFactory) -> Gateway:
    gw = await make_gateway()
    await add_account(gw)
    return gw


Front = Callable[[Gateway], Awaitable[Browser]]


@pytest.fixture
async def make_front(chromium_driver: Any) -> AsyncIterator[Front]:
    """Opens the example before a gateway, in the session's Chromium (cookies cleared)."""
    clients: list[Client] = []

    async def open_front(gw: Gateway) -> Browser:
        clients.append(await start_frontend(gw))
        browser = Browser(chromium_driver, str(clients[-1].make_url("/")))
        await browser.reset()
        return browser

    yield open_front
    for client in clients:
        await client.close()


@pytest.fixture
async def front(make_front: Front, gateway: Gateway) -> Browser:
    """The example before `gateway` (the default 30 s cooldown)."""
    return await make_front(gateway)


async def screenshot(browser: Browser, name: str) -> None:
    if os.environ.get(SCREENSHOTS_ENV):
        SHOTS.mkdir(parents=True, exist_ok=True)
        await browser.call(browser.driver.save_screenshot, str(SHOTS / f"{name}.png"))


async def focused_text(browser: Browser) -> str:
    """The focused element as `tag:text` (its name aside: buttons share `action`)."""
    script = (
        "const e = document.activeElement;"
        "return e.tagName.toLowerCase() + ':' + e.textContent.trim();"
    )
    text: str = await browser.call(browser.driver.execute_script, script)
    return text


async def last_code(gw: Gateway) -> str:
    await gw.drain()
    return gw.sink.codes()[-1]


async def log_in(browser: Browser, account_id: str = "alice") -> None:
    await browser.open("/connexion")
    await browser.type("#account_id", account_id)
    await browser.type("#password", "stand-in")
    await browser.click("form[action='/connexion'] button[type=submit]")
    await browser.at("/code")


async def test_a_user_trusts_the_post_and_is_not_asked_again(
    front: Browser, gateway: Gateway
) -> None:
    await front.open("/connexion")
    await front.axe()
    await screenshot(front, "connexion")
    await log_in(front)
    text = await front.text()
    assert "par SMS au +33 * ** ** ** 78" in text
    await front.shows("Le code expire dans 4 min")  # the script's countdown, visible
    await front.shows("Vous pourrez demander un nouvel envoi dans")
    resend = await front.find("button[value=resend]")
    assert await front.call(resend.get_attribute, "aria-disabled") == "true"
    status = await front.find("[data-otp-status]")
    assert await front.call(status.get_attribute, "role") == "status"  # polite, not alert
    await front.axe()
    await screenshot(front, "code")  # before typing: no code in the docs' pictures
    await front.type("#otp-code", await last_code(gateway))
    await front.click("#otp-trust")
    await front.click("button[value=verify]")
    await front.at("/connecte")
    assert "poste de confiance jusqu'au" in await front.text()
    await front.axe()
    await screenshot(front, "connecte")
    await front.click("form[action='/deconnexion'] button")
    await front.at("/connexion?fin=1")
    sent = len(gateway.sink.codes())
    await front.type("#account_id", "alice")
    await front.type("#password", "stand-in")
    await front.click("form[action='/connexion'] button[type=submit]")
    await front.at("/connecte")  # the trusted post: no code asked
    assert "aucun code ne vous a été demandé" in await front.text()
    await gateway.drain()
    assert len(gateway.sink.codes()) == sent


async def test_keyboard_only(front: Browser, gateway: Gateway) -> None:
    await front.open("/connexion")
    assert await front.focused() == "input#account_id"  # autofocus: type at once
    await front.keys("alice", Keys.TAB)
    assert await front.focused() == "input#password"
    await front.keys("stand-in", Keys.ENTER)
    await front.at("/code")
    assert await front.focused() == "input#otp-code"
    await front.keys(await last_code(gateway), Keys.TAB)
    assert await front.focused() == "input#otp-trust"
    await front.keys(Keys.SPACE, Keys.TAB)
    assert await focused_text(front) == "button:Valider"
    await front.keys(Keys.ENTER)
    await front.at("/connecte")


async def test_errors_are_announced_in_french_and_tied_to_the_field(
    make_front: Front, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(otp={"resend_cooldown_seconds": 0})
    await add_account(gw)
    front = await make_front(gw)
    await log_in(front)
    code = await last_code(gw)
    await front.type("#otp-code", "12")  # the script stops a malformed code
    await front.click("button[value=verify]")
    await front.shows("Saisissez les 6 chiffres du code reçu.")
    assert await front.path() == "/code" and await front.focused() == "input#otp-code"
    field = await front.find("#otp-code")
    assert await front.call(field.get_attribute, "aria-invalid") == "true"
    assert "otp-error" in await front.call(field.get_attribute, "aria-describedby")
    wrong = str((int(code) + 1) % 10**6).zfill(6)
    await front.type("#otp-code", wrong)
    await front.click("button[value=verify]")
    await front.shows("il vous reste 4 essais.")
    alert = await front.find("[role=alert]")
    assert "Code incorrect" in await front.call(lambda: alert.text)
    await front.axe()
    await screenshot(front, "erreur")
    for _ in range(4):  # the challenge burns
        await front.type("#otp-code", wrong)
        await front.click("button[value=verify]")
        await front.at("/code")
    await front.shows("ce code est bloqué")
    await front.click("button[value=voice]")  # the script's resend: the gateway says 410
    await front.shows("Trop de codes incorrects : ce code est bloqué. Demandez un nouveau code.")
    assert await front.path() == "/code"


async def test_call_instead_without_leaving_the_page(
    make_front: Front, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(otp={"resend_cooldown_seconds": 0})
    await add_account(gw)
    front = await make_front(gw)
    await log_in(front)
    await front.shows("Vous pouvez demander un nouvel envoi.")
    await front.click("button[value=voice]")
    await front.shows("Vous allez recevoir un appel au +33 * ** ** ** 78")
    assert "par appel vocal au" in await front.text()
    assert await front.focused() == "input#otp-code"
    await gw.drain()
    assert [body["channel"] for body in gw.sink.received] == ["sms", "voice"]
    await front.type("#otp-code", gw.sink.codes()[-1])
    await front.click("button[value=verify]")
    await front.at("/connecte")


async def test_the_script_says_what_the_server_says(front: Browser, gateway: Gateway) -> None:
    """otp-step.js and the no-JS pages read the same table and fill it in alike."""
    await log_in(front)
    table = json.loads((STATIC / "otp-step.fr.json").read_text(encoding="utf-8"))
    bodies: list[dict[str, Any]] = [{"error": code, "attempts_left": 3, "retry_after": 90}
                                    for code in table["errors"]]  # fmt: skip
    bodies += [{"error": "rate_limited", "scope": s, "retry_after": 7200}
               for s in table["rate_limited"]]  # fmt: skip
    bodies += [{"error": "invalid_code", "attempts_left": 1}, {"error": "brand_new"}]
    script = "return arguments[1].map(b => window.OtpStep.sentence(arguments[0], b));"
    said = await front.call(front.driver.execute_script, script, table, bodies)
    assert said == [sentence(STATIC, body) for body in bodies]


async def test_docs_page_in_the_browser(chromium_driver: Any, gateway: Gateway) -> None:
    browser = Browser(chromium_driver, str(gateway.client.make_url("/")))
    await browser.open("/docs")
    await browser.shows("Référence de l'API HTTP")
    await browser.axe()
    await screenshot(browser, "docs")
    await browser.click("a[href='#post-verify']")
    assert (await browser.path()).endswith("/docs#post-verify")
