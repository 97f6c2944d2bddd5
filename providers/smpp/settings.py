"""`[[providers]] kind = "smpp"`: its options, checked once into frozen values.

Every bad value is one ConfigError naming `providers.<name>.<option>`. SMPP
3.4's own limits apply: system_id at most 15 characters, password 8,
system_type 12, source_addr 20 (their C-octet strings hold one more, the NUL).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.provider import ProviderConfig, option, reject_unknown_options
from providers.smpp.pdu import Bind
from providers.smpp.session import SessionSettings

OPTIONS = {
    "host", "port", "system_id", "password", "system_type", "source_addr", "source_addr_ton",
    "source_addr_npi", "window", "throughput_per_second", "enquire_link_seconds",
    "response_timeout_seconds", "connect_timeout_seconds", "reconnect_min_seconds",
    "reconnect_max_seconds", "throttle_retries", "tls", "tls_ca_file",
}  # fmt: skip
_ALPHANUMERIC = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_INTERNATIONAL = re.compile(r"\+[1-9][0-9]{6,14}")
_SHORT_CODE = re.compile(r"[0-9]{3,8}")
_ASCII = re.compile(r"[ -~]*")


@dataclass(frozen=True, slots=True)
class Sender:
    """source_addr with its TON and NPI, as sent in every submit_sm."""

    addr: str
    ton: int
    npi: int


@dataclass(frozen=True, slots=True)
class SmppSettings:
    """One SMPP provider's configuration (the password sits in `session.bind`, unprinted)."""

    session: SessionSettings
    sender: Sender


def parse(config: ProviderConfig) -> SmppSettings:
    """Check the options of `config`; ConfigError names the first bad one."""
    where = f"providers.{config.name}"
    opts = config.options
    reject_unknown_options(opts, OPTIONS, where)
    if tuple(config.channels) != ("sms",):
        raise ConfigError(f"{where}.channels", 'smpp sends SMS only: channels = ["sms"]')
    bind = Bind(
        _text(opts, "system_id", where, 15),
        _text(opts, "password", where, 8),
        _text(opts, "system_type", where, 12, ""),
    )
    session = SessionSettings(
        host=_host(opts, where),
        port=_int(opts, "port", where, 2775, 1, 65535),
        bind=bind,
        tls=_tls(opts, where),
        window=_int(opts, "window", where, 10, 1, 100),
        throughput=_seconds(opts, "throughput_per_second", where, 10.0, 0.1, 1000.0),
        enquire_link_seconds=_seconds(opts, "enquire_link_seconds", where, 30.0, 0.05, 3600.0),
        response_timeout=_seconds(opts, "response_timeout_seconds", where, 5.0, 0.05, 60.0),
        connect_timeout=_seconds(opts, "connect_timeout_seconds", where, 5.0, 0.05, 60.0),
        reconnect_min=_seconds(opts, "reconnect_min_seconds", where, 1.0, 0.01, 60.0),
        reconnect_max=_seconds(opts, "reconnect_max_seconds", where, 60.0, 0.01, 3600.0),
        throttle_retries=_int(opts, "throttle_retries", where, 3, 0, 10),
    )
    if session.reconnect_max < session.reconnect_min:
        raise ConfigError(f"{where}.reconnect_max_seconds", "must be >= reconnect_min_seconds")
    return SmppSettings(session, _sender(opts, where))


def _text(opts: Mapping[str, Any], key: str, where: str, most: int, default: Any = None) -> str:
    value: str = option(opts, key, str, where, default)
    if len(value) > most or not _ASCII.fullmatch(value):
        raise ConfigError(f"{where}.{key}", f"must be at most {most} printable ASCII characters")
    if default is None and not value:
        raise ConfigError(f"{where}.{key}", "must not be empty")
    return value


def _int(opts: Mapping[str, Any], key: str, where: str, default: int, low: int, high: int) -> int:
    value: int = option(opts, key, int, where, default)
    if not low <= value <= high:
        raise ConfigError(f"{where}.{key}", f"must be between {low} and {high}")
    return value


def _seconds(
    opts: Mapping[str, Any], key: str, where: str, default: float, low: float, high: float
) -> float:
    value: float = option(opts, key, float, where, default)
    if not low <= value <= high:
        raise ConfigError(f"{where}.{key}", f"must be between {low} and {high}")
    return value


def _host(opts: Mapping[str, Any], where: str) -> str:
    host: str = option(opts, "host", str, where)
    if not re.fullmatch(r"[A-Za-z0-9.:\-\[\]]{1,253}", host):
        raise ConfigError(f"{where}.host", "must be a host name or an IP address")
    return host


def _tls(opts: Mapping[str, Any], where: str) -> ssl.SSLContext | None:
    if not option(opts, "tls", bool, where, False):
        if "tls_ca_file" in opts:
            raise ConfigError(f"{where}.tls_ca_file", "needs tls = true")
        return None
    ca_file: str | None = option(opts, "tls_ca_file", str, where, "") or None
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}.tls_ca_file", f"cannot be read ({type(exc).__name__})") from exc


def _sender(opts: Mapping[str, Any], where: str) -> Sender:
    """source_addr's TON/NPI from its form unless given: +E.164 is international
    (1/1, sent without the +), letters alphanumeric (5/0), digits a short code (3/0)."""
    addr = _text(opts, "source_addr", where, 20)
    if _INTERNATIONAL.fullmatch(addr):
        default = Sender(addr[1:], 1, 1)
    elif _ALPHANUMERIC.fullmatch(addr):
        default = Sender(addr, 5, 0)
    elif _SHORT_CODE.fullmatch(addr):
        default = Sender(addr, 3, 0)
    else:
        raise ConfigError(
            f"{where}.source_addr",
            "must be an E.164 number, a short code or an alphanumeric sender id (1-11)",
        )
    ton = _int(opts, "source_addr_ton", where, default.ton, 0, 6)
    npi = _int(opts, "source_addr_npi", where, default.npi, 0, 18)
    return Sender(default.addr, ton, npi)
