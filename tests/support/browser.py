"""Debian's Chromium, headless, driven by Selenium through chromedriver; axe-core in the page.

The browser tests skip when `chromium` or `chromedriver` is not on PATH, unless
OTP_TESTS_REQUIRE_BROWSER is set (as .ci/run does): then they fail.

One Chromium for the whole session (it takes a second or two to start), with
the flags this machine needs (no sandbox as root; no background networking,
which a closed network refuses) and a fresh profile; every test starts with
an empty cookie jar (`Browser.reset`). WebDriver calls block, and the gateway
runs in the test's own event loop: `Browser` runs each call in a thread.

`Browser.axe()` injects the vendored axe-core (tests/support/axe) and runs it
with the WCAG 2.1 A and AA rules: any serious or critical violation fails the
test, each printed. `Browser.screenshot(name)` writes docs/console/<name>.png
when OTP_CONSOLE_SCREENSHOTS is set (docs/console.md shows them).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.poll import poll

REQUIRE_ENV = "OTP_TESTS_REQUIRE_BROWSER"
SCREENSHOTS_ENV = "OTP_CONSOLE_SCREENSHOTS"
AXE = Path(__file__).parent / "axe" / "axe.min.js"
AXE_VERSION = "4.14.1"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,900", "--lang=fr-FR",
]  # fmt: skip
T = TypeVar("T")


def _binaries() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = "chromium" if not chromium else "chromedriver"
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{missing} is not on PATH and {REQUIRE_ENV} is set")
    pytest.skip(f"{missing} is not on PATH (Debian: apt-get install chromium chromium-driver)")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium with a fresh profile, closed (and its profile removed) after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _binaries()
    profile = tempfile.mkdtemp(prefix="otpgw-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Browser:
    """The session's Chromium, pointed at one gateway; every WebDriver call in a thread."""

    def __init__(self, driver: Any, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def reset(self) -> None:
        """An empty cookie jar: a new visitor."""
        await self.call(self.driver.execute_cdp_cmd, "Network.clearBrowserCookies", {})

    async def open(self, path: str) -> None:
        await self.call(self.driver.get, self.base_url + path)

    async def path(self) -> str:
        url: str = await self.call(lambda: self.driver.current_url)
        return url.removeprefix(self.base_url)

    async def at(self, path: str, within: float = 10.0) -> None:
        """Wait until the page at `path` has loaded (a click navigates in the background)."""
        seen: list[str] = []

        async def arrived() -> bool:
            seen.append(await self.path())
            ready = await self.call(self.driver.execute_script, "return document.readyState")
            return seen[-1] == path and ready == "complete"

        try:
            await poll(arrived, within=within, every=0.05, what=f"the page {path}")
        except AssertionError:
            page = await self.text()
            raise AssertionError(f"expected {path}, still at {seen[-1:]}: {page}") from None

    async def shows(self, text: str, within: float = 10.0) -> None:
        """Wait until the page's text holds `text` (a form's answer may be the same path)."""
        seen: list[str] = []

        async def showing() -> bool:
            seen.append(await self.text())
            return text in seen[-1]

        try:
            await poll(showing, within=within, every=0.05, what=repr(text))
        except AssertionError:
            raise AssertionError(f"{text!r} not on the page: {seen[-1:]}") from None

    async def cookies(self) -> set[str]:
        """The names of the cookies the browser holds for the page."""
        cookies: list[dict[str, Any]] = await self.call(self.driver.get_cookies)
        return {c["name"] for c in cookies}

    async def text(self) -> str:
        # One script, not find-then-read: a page that navigates meanwhile is no error.
        script = "return document.body ? document.body.innerText : ''"
        text: str = await self.call(self.driver.execute_script, script)
        return text

    async def find(self, css: str) -> Any:
        return await self.call(self.driver.find_element, "css selector", css)

    async def type(self, css: str, text: str) -> None:
        element = await self.find(css)
        await self.call(element.clear)
        await self.call(element.send_keys, text)

    async def click(self, css: str) -> None:
        element = await self.find(css)
        await self.call(element.click)

    async def keys(self, *keys: str) -> None:
        """Keys sent to whatever has the focus, as a keyboard would."""
        from selenium.webdriver.common.action_chains import ActionChains

        def press() -> None:
            chain = ActionChains(self.driver)
            for key in keys:
                chain.send_keys(key)
            chain.perform()

        await self.call(press)

    async def focused(self) -> str:
        """The focused element, as `tag#id` (or `tag[name=..]`, or its text)."""
        script = (
            "const e = document.activeElement;"
            "return e.tagName.toLowerCase() + (e.id ? '#' + e.id : '')"
            " + (!e.id && e.name ? '[name=' + e.name + ']' : '')"
            " + (!e.id && !e.name ? ':' + e.textContent.trim() : '');"
        )
        focused: str = await self.call(self.driver.execute_script, script)
        return focused

    async def axe(self) -> list[dict[str, Any]]:
        """Run axe-core (WCAG 2.1 A/AA) on the page; fail on serious or critical violations."""
        if not await self.call(self.driver.execute_script, "return !!window.axe"):
            await self.call(self.driver.execute_script, AXE.read_text(encoding="utf-8"))
        options = {"runOnly": {"type": "tag", "values": AXE_TAGS}, "resultTypes": ["violations"]}
        script = (
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, arguments[0]).then(r => done(r.violations),"
            " e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
        )
        violations: list[dict[str, Any]] = await self.call(
            self.driver.execute_async_script, script, options
        )
        bad = [v for v in violations if v.get("impact") in ("serious", "critical")]
        for v in bad:
            targets = [n.get("target") for n in v.get("nodes", [])]
            print(f"axe {v['impact']}: {v['id']}: {v.get('help')} at {json.dumps(targets)}")
        assert not bad, f"{await self.path()}: {[v['id'] for v in bad]}"
        return violations

    async def screenshot(self, name: str) -> None:
        """docs/console/<name>.png, when OTP_CONSOLE_SCREENSHOTS is set."""
        if not os.environ.get(SCREENSHOTS_ENV):
            return
        DOCS.mkdir(parents=True, exist_ok=True)
        await self.call(self.driver.save_screenshot, str(DOCS / f"{name}.png"))
