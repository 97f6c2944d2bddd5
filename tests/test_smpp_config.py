"""The `smpp` provider's options, TLS, and `otp-gateway simulate smpp`."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import load_config
from gateway.embedded import free_port
from gateway.errors import ConfigError, ProviderUnavailable
from gateway.provider import OutboundMessage, ProviderConfig, ProviderContext, build_providers
from gateway.simulator.smpp import Smsc
from providers.smpp import SmppProvider

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = ProviderContext(development=True, public_url="http://127.0.0.1:8080")
BASE = {"host": "127.0.0.1", "system_id": "otpgw", "password": "secret12",
        "source_addr": "MAIRIE"}  # fmt: skip
MESSAGE = OutboundMessage("c" * 27, "sms", "+33612345678", "123456", "Code 123456", 1, "login")


def provider(channels: tuple[str, ...] = ("sms",), **options: Any) -> SmppProvider:
    return SmppProvider(ProviderConfig("smpp", "smpp", channels, {**BASE, **options}), CONTEXT)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"host": None}, "host"),
        ({"host": "smsc example"}, "host"),
        ({"port": 0}, "port"),
        ({"system_id": "x" * 16}, "system_id"),
        ({"password": "123456789"}, "password"),  # SMPP 3.4: 8 at most
        ({"password": ""}, "password"),
        ({"system_type": "é"}, "system_type"),
        ({"source_addr": "+33 1 59"}, "source_addr"),
        ({"source_addr": "TWELVE CHARS"}, "source_addr"),
        ({"source_addr_ton": 7}, "source_addr_ton"),
        ({"window": 0}, "window"),
        ({"throughput_per_second": 0}, "throughput_per_second"),
        ({"enquire_link_seconds": "30"}, "enquire_link_seconds"),
        ({"reconnect_min_seconds": 5, "reconnect_max_seconds": 1}, "reconnect_max_seconds"),
        ({"tls": "yes"}, "tls"),
        ({"tls_ca_file": "/ca.pem"}, "tls_ca_file"),
        ({"tls": True, "tls_ca_file": "/nonexistent/ca.pem"}, "tls_ca_file"),
        ({"from_number": "+33159000000"}, "from_number"),
    ],
)
def test_a_bad_option_is_one_error_naming_it(options: dict[str, Any], key: str) -> None:
    table = {k: v for k, v in {**BASE, **options}.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        SmppProvider(ProviderConfig("smpp", "smpp", ("sms",), table), CONTEXT)
    assert caught.value.key == f"providers.smpp.{key}"
    assert "\n" not in str(caught.value) and "secret12" not in str(caught.value)


def test_smpp_sends_sms_only() -> None:
    with pytest.raises(ConfigError, match=r"providers\.smpp\.channels"):
        provider(channels=("sms", "voice"))


@pytest.mark.parametrize(
    ("source", "sent"),
    [("MAIRIE", ("MAIRIE", 5, 0)), ("+33159000000", ("33159000000", 1, 1)),
     ("38200", ("38200", 3, 0))],
)  # fmt: skip
def test_the_sender_s_ton_and_npi_follow_its_form(source: str, sent: tuple[str, int, int]) -> None:
    sender = provider(source_addr=source).sender
    assert (sender.addr, sender.ton, sender.npi) == sent


def test_the_password_never_shows() -> None:
    smpp = provider()
    assert "secret12" not in repr(smpp.session.settings)


def test_the_example_config_s_smpp_block_is_valid() -> None:
    """config/example.toml's commented SMPP block, uncommented, builds a provider."""
    text = (ROOT / "config" / "example.toml").read_text()
    block = text[text.index("# [[providers]]                       # SMPP") :]
    lines = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    [table] = tomllib.loads("\n".join(lines))["providers"]
    table = {k: v for k, v in table.items() if k != "password_env"} | {"password": "secret12"}
    name, kind, channels = table.pop("name"), table.pop("kind"), tuple(table.pop("channels"))
    [built] = build_providers((ProviderConfig(name, kind, channels, table),), CONTEXT)
    assert isinstance(built, SmppProvider)


def test_the_entry_point_names_the_provider(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        '[security]\nsecret = "' + "s" * 40 + '"\n[redis]\nurl = "redis://127.0.0.1:1/0"\n'
        '[[providers]]\nname = "smpp"\nkind = "smpp"\nchannels = ["sms"]\n'
        'host = "127.0.0.1"\nsystem_id = "otpgw"\npassword_env = "SMPP_PW"\n'
        'source_addr = "MAIRIE"\n'
    )
    loaded = load_config(str(config), {"SMPP_PW": "secret12"})
    [built] = build_providers(loaded.providers, CONTEXT)
    assert isinstance(built, SmppProvider)


# --- TLS ------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, in PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smsc.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_file, key_file = folder / "smsc.pem", folder / "smsc.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return cert_file, key_file


async def test_tls_binds_to_an_smsc_with_a_trusted_certificate(tmp_path: Path) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)
    smsc = await Smsc().start(tls=server_tls)
    trusting = provider(port=smsc.port, tls=True, tls_ca_file=str(cert_file))
    untrusting = provider(port=smsc.port, tls=True, reconnect_min_seconds=5)
    try:
        await trusting.send(MESSAGE)
        assert [s.text for s in smsc.submitted] == ["Code 123456"]
        with pytest.raises(ProviderUnavailable, match="SSLCertVerificationError"):
            await untrusting.send(MESSAGE)
    finally:
        await trusting.aclose()
        await untrusting.aclose()
        await smsc.close()


# --- otp-gateway simulate smpp -----------------------------------------------------------


async def test_the_cli_runs_the_smsc_and_prints_each_message() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "smpp", "--port", str(port),
        "--receipt-delay", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    smpp = provider(port=port)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert f"listening on 127.0.0.1:{port}" in line
        await smpp.send(MESSAGE)
        async with asyncio.timeout(10):
            while "Code 123456" not in line:
                line = (await proc.stdout.readline()).decode()
        assert "sms to +33612345678, GSM 03.38" in line
    finally:
        await smpp.aclose()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
