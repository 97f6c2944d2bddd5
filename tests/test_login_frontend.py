"""The example login front end (examples/login_frontend) over HTTP, without JavaScript.

A real gateway and Redis behind it, the test provider receiving the codes: the
no-JS path of the code step works end to end (the same form the script
improves), the trusted device is honoured, every gateway error becomes the
table's French sentence, and the API key stays on the server.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from examples.login_frontend.messages import sentence, wait_fr
from tests.support.config import OTP_KEY
from tests.support.console import csrf_of
from tests.support.frontend import Visitor, start_frontend
from tests.support.gateway import Gateway, GatewayFactory, add_account

STATIC = Path(__file__).resolve().parent.parent / "gateway" / "web" / "static"


@pytest.fixture
async def front_gw(make_gateway: GatewayFactory) -> Gateway:
    """A gateway with no resend cooldown (a resend is possible at once), and alice."""
    gw = await make_gateway(otp={"resend_cooldown_seconds": 0})
    await add_account(gw)
    return gw


@pytest.fixture
async def visitor(front_gw: Gateway) -> AsyncIterator[Visitor]:
    client = await start_frontend(front_gw)
    yield Visitor(client, front_gw)
    await client.close()


async def test_log_in_with_the_code_trust_the_post_and_skip_the_code_next_time(
    visitor: Visitor,
) -> None:
    page = await visitor.log_in()
    assert page.url.endswith("/code"), page.html
    assert "par SMS au" in page.html and "+33 * ** ** ** 78" in page.html
    field = re.search(r'<input class="otp-step__code"[^>]*>', page.html)
    assert field and 'autocomplete="one-time-code"' in field[0]
    assert 'inputmode="numeric"' in field[0] and 'name="code"' in field[0]
    done = await visitor.send_code(page, await visitor.last_code(), trust=True)
    assert done.url.endswith("/connecte") and "connecté en tant que" in done.html
    assert "poste de confiance jusqu'au" in done.html
    trusted = visitor.cookie("example_trusted")
    assert trusted is not None and trusted.value.startswith("td_")
    assert trusted["httponly"] and trusted["samesite"] == "Strict"
    sent = len(visitor.gw.sink.codes())
    out = await visitor.post("/deconnexion", {"csrf": csrf_of(done.html)})
    assert out.url.endswith("/connexion?fin=1") and "Vous êtes déconnecté" in out.html
    again = await visitor.log_in()
    assert again.url.endswith("/connecte"), again.html  # no code asked
    assert "aucun code ne vous a été demandé" in again.html
    await visitor.gw.drain()
    assert len(visitor.gw.sink.codes()) == sent


async def test_without_trust_the_next_login_asks_for_a_code(visitor: Visitor) -> None:
    page = await visitor.log_in()
    done = await visitor.send_code(page, await visitor.last_code())
    assert done.url.endswith("/connecte") and visitor.cookie("example_trusted") is None
    await visitor.post("/deconnexion", {"csrf": csrf_of(done.html)})
    assert (await visitor.log_in()).url.endswith("/code")


async def test_a_wrong_code_is_a_french_sentence_tied_to_the_field(visitor: Visitor) -> None:
    page = await visitor.log_in()
    code = await visitor.last_code()
    wrong = await visitor.send_code(page, str((int(code) + 1) % 10**6).zfill(6))
    assert wrong.status == 422
    assert "Code incorrect. Vérifiez les chiffres reçus : il vous reste 4 essais." in wrong.html
    assert re.search(r'role="alert"[^>]*>Code incorrect', wrong.html)
    field = re.search(r'<input class="otp-step__code"[^>]*>', wrong.html)
    assert field and 'aria-invalid="true"' in field[0] and "otp-error" in field[0]
    typo = await visitor.send_code(wrong, "12a")
    assert typo.status == 422 and "Saisissez les chiffres du code reçu." in typo.html
    done = await visitor.send_code(typo, f"{code[:3]} {code[3:]}")  # spaces are forgiven
    assert done.url.endswith("/connecte")


async def test_resend_and_call_instead_without_javascript(visitor: Visitor) -> None:
    page = await visitor.log_in()
    first = await visitor.last_code()
    again = await visitor.press(page, "resend")
    assert again.status == 200
    assert "Le code a été renvoyé par SMS au +33 * ** ** ** 78." in again.html
    call = await visitor.press(again, "voice")
    assert "Le code a été renvoyé par appel vocal au" in call.html
    assert "Recevoir un SMS plutôt" in call.html
    await visitor.gw.drain()
    channels = [body["channel"] for body in visitor.gw.sink.received]
    assert channels == ["sms", "sms", "voice"]
    assert visitor.gw.sink.codes() == [first] * 3  # the same code, as the contract says
    done = await visitor.send_code(call, first)
    assert done.url.endswith("/connecte")


async def test_the_script_resends_through_the_front_end_not_the_gateway(
    visitor: Visitor,
) -> None:
    page = await visitor.log_in()
    csrf = csrf_of(page.html)
    resp = await visitor.client.post("/code/renvoi", json={"channel": "voice", "csrf": csrf})
    assert resp.status == 202
    body = await resp.json()
    assert body["channel"] == "voice" and body["destination"] == "+33 * ** ** ** 78"
    for bad in ({"channel": "voice"}, {"csrf": "x" * 43}, {"csrf": csrf, "channel": "fax"}):
        refused = await visitor.client.post("/code/renvoi", json=bad)
        assert refused.status == 400 and (await refused.json())["error"] == "invalid_request"
    not_json = await visitor.client.post("/code/renvoi", data=b"{", headers={
        "Content-Type": "application/json"})  # fmt: skip
    assert not_json.status == 400


async def test_api_errors_become_the_tables_sentences(visitor: Visitor) -> None:
    unknown = await visitor.log_in("nobody")
    assert unknown.status == 404 and "Aucun code ne peut être envoyé pour cet identifiant" in (
        unknown.html
    )
    empty = await visitor.log_in("alice", password="")
    assert empty.status == 422 and "Saisissez votre identifiant et votre mot de passe." in (
        empty.html
    )
    table = json.loads((STATIC / "otp-step.fr.json").read_text(encoding="utf-8"))
    assert (
        sentence(STATIC, {"error": "invalid_code", "attempts_left": 1})
        == (table["errors"]["invalid_code_last"])
    )
    assert sentence(STATIC, {"error": "rate_limited", "scope": "cooldown", "retry_after": 30}) == (
        "Un code vient d'être envoyé. Vous pourrez en demander un autre dans 30 secondes."
    )
    assert sentence(STATIC, {"error": "something_new"}) == table["errors"]["default"]
    assert [wait_fr(s) for s in (1, 59, 61, 3600, 3601)] == [
        "1 seconde", "59 secondes", "2 minutes", "1 heure", "2 heures"]  # fmt: skip


async def test_cooldown_is_a_sentence(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()  # the default 30 s cooldown
    await add_account(gw)
    client = await start_frontend(gw)
    try:
        visitor = Visitor(client, gw)
        page = await visitor.log_in()
        refused = await visitor.press(page, "resend")
        assert refused.status == 429
        assert re.search(r"Vous pourrez en demander un autre dans [0-9]+ secondes\.", refused.html)
    finally:
        await client.close()


async def test_a_gateway_out_of_reach_is_said_plainly(
    front_gw: Gateway, unused_tcp_port: int
) -> None:
    client = await start_frontend(front_gw, f"http://127.0.0.1:{unused_tcp_port}")
    try:
        page = await Visitor(client, front_gw).log_in()
        assert page.status == 503
        assert "momentanément indisponible" in page.html
    finally:
        await client.close()


async def test_forms_without_the_token_are_refused(visitor: Visitor) -> None:
    await visitor.get("/connexion")
    refused = await visitor.post("/connexion", {"account_id": "alice", "password": "x"})
    assert refused.status == 403 and "Ce formulaire a expiré" in refused.html
    await visitor.gw.drain()
    assert visitor.gw.sink.codes() == []  # nothing was asked of the gateway
    assert (await visitor.post("/code", {"code": "123456"})).status == 403


async def test_pages_and_files_headers_and_no_key_in_the_browser(visitor: Visitor) -> None:
    seen: list[Any] = [await visitor.get("/connexion")]
    seen.append(await visitor.log_in())
    for page in seen:
        assert OTP_KEY not in page.html
        assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
        assert page.headers["X-Frame-Options"] == "DENY"
        assert "<script>" not in page.html and " style=" not in page.html
    script = re.search(r'<script src="(/static/otp-step\.js\?v=[0-9a-f]{12})" defer>', seen[1].html)
    assert script, "the code page loads the step's script, versioned"
    resp = await visitor.client.get(script[1])
    assert resp.content_type == "text/javascript"
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert await resp.read() == (STATIC / "otp-step.js").read_bytes()  # the gateway's own file
    assert (await visitor.client.get("/static/../app.py")).status == 404


def test_settings_come_from_the_environment() -> None:
    from examples.login_frontend.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="OTP_GATEWAY_API_KEY"):
        Settings.from_env({})
    settings = Settings.from_env({"OTP_GATEWAY_API_KEY": "k" * 40, "EXAMPLE_PORT": "8001"})
    assert settings.port == 8001 and settings.gateway_url == "http://127.0.0.1:8080"
    assert "k" * 40 not in repr(settings)
    assert (settings.step_assets / "otp-step.js").exists()
