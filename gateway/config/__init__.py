"""Configuration: one TOML file parsed once into frozen dataclasses.

Every key is checked at start-up; an unknown or bad key stops the process with
one line naming it (`ConfigError`). This package is the only code that reads
the environment: `OTPGW_CONFIG`, `OTPGW_REDIS_URL`, `OTPGW_PORT`, and any
`<name>_env = "VAR"` that stands for a secret `<name>`.

`model` holds the values (`Config`, one dataclass per section, their
defaults), `table` the TOML reader, `redis` the `[redis]` section (where Redis
is), `sections` every other one; here, `load_config` and the checks across
sections. Every public name is imported from `gateway.config` itself.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.config.model import (
    BUILTIN_PURPOSES,
    CHANNELS,
    FRANCE_AND_OVERSEAS,
    SCOPES,
    AccountsConfig,
    ApiKey,
    Config,
    ConsoleConfig,
    LoggingConfig,
    OtpConfig,
    PhoneConfig,
    ProviderConfig,
    Rate,
    RateLimits,
    RedisConfig,
    Secret,
    ServerConfig,
    SmsConfig,
    SmtpConfig,
    VoiceConfig,
    WebhookConfig,
    WorkerConfig,
)
from gateway.config.redis import parse_redis
from gateway.config.sections import (
    SECTIONS,
    parse_api_keys,
    parse_providers,
    parse_security,
    parse_server,
    parse_webhooks,
)
from gateway.config.table import Table, parse_rate
from gateway.errors import ConfigError
from gateway.messages import check_sms_fits, parse_templates

__all__ = [
    "BUILTIN_PURPOSES",
    "CHANNELS",
    "FRANCE_AND_OVERSEAS",
    "SCOPES",
    "AccountsConfig",
    "ApiKey",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "LoggingConfig",
    "OtpConfig",
    "PhoneConfig",
    "ProviderConfig",
    "Rate",
    "RateLimits",
    "RedisConfig",
    "Secret",
    "ServerConfig",
    "SmsConfig",
    "SmtpConfig",
    "VoiceConfig",
    "WebhookConfig",
    "WorkerConfig",
    "config_from_dict",
    "load_config",
    "parse_rate",
]


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, check and freeze the configuration (file optional, env overrides)."""
    env = os.environ if env is None else env
    path = path or env.get("OTPGW_CONFIG") or None
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from exc
    return _build(raw, env, source=path or "<embedded default>", has_file=path is not None)


def config_from_dict(raw: dict[str, Any], env: Mapping[str, str] | None = None) -> Config:
    """The same checks as `load_config`, on an already parsed TOML document."""
    return _build(raw, {} if env is None else env, source="<dict>", has_file=True)


def _build(raw: dict[str, Any], env: Mapping[str, str], *, source: str, has_file: bool) -> Config:
    top = Table(raw, "", env)
    redis = parse_redis(top.sub("redis"), env)
    server = parse_server(top.sub("server"), env)
    if not has_file and redis.embedded:
        # The embedded default is a development sandbox: console provider allowed.
        server = replace(server, mode="development")
    parsed = {name: fn(top.sub(name)) for name, fn in SECTIONS.items()}
    cfg = Config(
        server=server,
        redis=redis,
        security_secret=parse_security(top.sub("security"), embedded=redis.embedded),
        api_keys=parse_api_keys(top.data.pop("api_keys", []), env),
        providers=parse_providers(top.data.pop("providers", []), env),
        webhooks=parse_webhooks(top.data.pop("webhooks", []), env),
        templates=parse_templates(top.data.pop("templates", {})),
        source=source,
        **parsed,
    )
    top.done()
    _check_whole(cfg)
    return cfg


def _check_whole(cfg: Config) -> None:
    _check_messages(cfg)
    if cfg.otp.resend_cooldown_seconds >= cfg.otp.ttl_seconds:
        raise ConfigError("otp.resend_cooldown_seconds", "must be shorter than otp.ttl_seconds")
    try:
        ipaddress.ip_address(cfg.server.host)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", cfg.server.host):
            raise ConfigError("server.host", "must be an IP address or a host name") from None


def _check_messages(cfg: Config) -> None:
    language = cfg.voice.language
    if language not in cfg.templates:
        known = ", ".join(sorted(cfg.templates))
        raise ConfigError("voice.language", f"no templates for {language!r} (known: {known})")
    for name, templates in cfg.templates.items():
        check_sms_fits(
            templates, cfg.otp.purposes, cfg.otp.code_length, cfg.otp.ttl_seconds,
            cfg.sms.webotp_host, f"templates.{name}.sms",
        )  # fmt: skip
