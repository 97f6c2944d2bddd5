"""The `console` provider: prints codes, so development mode only."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.config import ProviderConfig
from gateway.errors import ConfigError
from gateway.provider import OutboundMessage, Provider, ProviderContext, build_providers
from providers.console import ConsoleProvider
from tests.support.config import make_config
from tests.support.gateway import GatewayFactory, add_account

OTP_GATEWAY = str(Path(sys.executable).with_name("otp-gateway"))
DEV = ProviderContext(development=True, public_url="http://127.0.0.1:8080")
PROD = ProviderContext(development=False, public_url="https://otp.example.org")
CONSOLE = ProviderConfig("console", "console", ("sms", "voice"), {})
MESSAGE = OutboundMessage(
    challenge_id="abcdefghijklmnopqrstuvwxyz01",
    channel="sms",
    to="+33612345678",
    code="654321",
    text="Code 654321 pour connexion.",
    attempt=1,
    purpose="login",
)


def test_refused_outside_development_mode() -> None:
    with pytest.raises(ConfigError) as info:
        ConsoleProvider(CONSOLE, PROD)
    assert info.value.key == "providers.console.kind"
    assert "development" in str(info.value)


def test_refused_by_the_registry_in_production() -> None:
    with pytest.raises(ConfigError):
        build_providers((CONSOLE,), PROD)


def test_production_app_with_a_console_provider_does_not_start() -> None:
    config = make_config(
        "redis://127.0.0.1:1/0",
        server={"mode": "production"},
        providers=[{"name": "console", "kind": "console", "channels": ["sms", "voice"]}],
    )
    with pytest.raises(ConfigError) as info:
        create_app(config)
    assert info.value.key == "providers.console.kind"


def test_rejects_unknown_options() -> None:
    config = ProviderConfig("console", "console", ("sms",), {"colour": "green"})
    with pytest.raises(ConfigError) as info:
        ConsoleProvider(config, DEV)
    assert info.value.key == "providers.console.colour"


async def test_prints_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    provider = ConsoleProvider(CONSOLE, DEV)
    assert isinstance(provider, Provider)
    receipt = await provider.send(MESSAGE)
    await provider.aclose()
    out = capsys.readouterr().out
    assert "[console sms to +33612345678] Code 654321 pour connexion." in out
    assert receipt.provider_ref == f"console-{MESSAGE.challenge_id}:1"


async def test_delivers_through_the_queue_in_development(
    make_gateway: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = await make_gateway(
        providers=[{"name": "console", "kind": "console", "channels": ["sms", "voice"]}]
    )
    await add_account(gw)
    resp = await gw.post("/challenge", {"account_id": "alice"})
    assert resp.status == 202
    challenge_id = (await resp.json())["challenge_id"]
    capsys.readouterr()
    assert await gw.drain() == 1
    out = capsys.readouterr().out
    match = re.search(r"\[console sms to \+33612345678\] Code ([0-9]{6}) ", out)
    assert match, out
    resp = await gw.post("/verify", {"challenge_id": challenge_id, "code": match[1]})
    assert resp.status == 200, await resp.text()


def test_cli_refuses_a_production_config_with_console(tmp_path: Path) -> None:
    config = tmp_path / "prod.toml"
    config.write_text(
        '[redis]\nurl = "redis://127.0.0.1:1/0"\n'
        '[security]\nsecret = "0123456789abcdef0123456789abcdef-prod"\n'
        '[[providers]]\nname = "console"\nkind = "console"\n'
    )
    result = subprocess.run(
        [OTP_GATEWAY, "worker", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()  # one clear line, naming the key
    assert line.startswith("configuration error: providers.console.kind: ")
    assert "development" in line
