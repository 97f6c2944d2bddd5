"""Every section but `[redis]`: one reader per table, `[[api_keys]]` and
`[[providers]]` (arrays of named tables), each checking its own keys."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gateway.config.model import (
    BUILTIN_PURPOSES,
    CHANNELS,
    FRANCE_AND_OVERSEAS,
    SCOPES,
    WEBHOOK_EVENTS,
    AccountsConfig,
    ApiKey,
    ConsoleConfig,
    LoggingConfig,
    OtpConfig,
    PhoneConfig,
    ProviderConfig,
    Rate,
    RateLimits,
    Secret,
    ServerConfig,
    SmsConfig,
    SmtpConfig,
    VoiceConfig,
    WebhookConfig,
    WorkerConfig,
)
from gateway.config.table import Table, array, parse_rate
from gateway.errors import ConfigError

_PURPOSE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,39}")


def parse_server(t: Table, env: Mapping[str, str]) -> ServerConfig:
    """`[server]`, with `OTPGW_PORT` over its `port`."""
    host = t.get("host", str, "127.0.0.1")
    port = t.int_in("port", 8080, 0, 65535)
    if "OTPGW_PORT" in env:
        if not re.fullmatch(r"[0-9]{1,5}", env["OTPGW_PORT"]) or int(env["OTPGW_PORT"]) > 65535:
            raise ConfigError("OTPGW_PORT", "must be a port number")
        port = int(env["OTPGW_PORT"])
    public_url = t.get("public_url", str, f"http://{host}:{port}").rstrip("/")
    if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", public_url):
        raise ConfigError(t.key("public_url"), "must be an http(s) URL")
    server = ServerConfig(
        host=host,
        port=port,
        public_url=public_url,
        mode=t.choice("mode", "production", ("production", "development")),
        metrics_auth=t.get("metrics_auth", bool, False),
        body_timeout_seconds=t.get("body_timeout_seconds", float, 10.0),
        event_loop=t.choice("event_loop", "auto", ("auto", "uvloop", "asyncio")),
    )
    if not 0.05 <= server.body_timeout_seconds <= 300:
        raise ConfigError(t.key("body_timeout_seconds"), "must be between 0.05 and 300")
    t.done()
    return server


def _otp(t: Table) -> OtpConfig:
    extra = t.str_list("purposes", ())
    for purpose in extra:
        if not _PURPOSE_RE.fullmatch(purpose):
            raise ConfigError(t.key("purposes"), "purpose names are lowercase [a-z0-9_.-]")
    cfg = OtpConfig(
        code_length=t.int_in("code_length", 6, 6, 10),
        # NIST SP 800-63B and ASVS cap out-of-band codes at 10 minutes.
        ttl_seconds=t.int_in("ttl_seconds", 300, 1, 600),
        max_attempts=t.int_in("max_attempts", 5, 1, 10),
        resend_cooldown_seconds=t.int_in("resend_cooldown_seconds", 30, 0, 600),
        trusted_device_days=t.int_in("trusted_device_days", 7, 0, 90),
        max_sends=t.int_in("max_sends", 5, 1, 10),
        step_up_ttl_seconds=t.int_in("step_up_ttl_seconds", 300, 10, 300),
        tombstone_seconds=t.int_in("tombstone_seconds", 900, 60, 86400),
        purposes=tuple(dict.fromkeys(BUILTIN_PURPOSES + extra)),
    )
    t.done()
    return cfg


def _rate_limits(t: Table) -> RateLimits:
    d = RateLimits()

    def rate(name: str, default: Rate) -> Rate:
        text = t.get(name, str, "")
        return parse_rate(text, t.key(name)) if text else default

    def optional(name: str) -> Rate | None:
        text = t.get(name, str, "")
        return parse_rate(text, t.key(name)) if text else None

    limits = RateLimits(
        account=rate("account", d.account),
        number=rate("number", d.number),
        ip=rate("ip", d.ip),
        country=rate("country", d.country),
        global_=rate("global", d.global_),
        # NIST SP 800-63B 5.2.2 allows up to 100 consecutive failures; we
        # default to 20 an hour (see docs/security.md).
        failures=rate("failures", d.failures),
        # Off unless set: an establishment's size is the deployment's business.
        establishment=optional("establishment"),
    )
    t.done()
    return limits


def _phones(t: Table) -> PhoneConfig:
    regions = t.str_list("allowed_regions", FRANCE_AND_OVERSEAS)
    for region in regions:
        if not re.fullmatch(r"[A-Z]{2}", region):
            raise ConfigError(t.key("allowed_regions"), "regions are ISO 3166 codes like FR")
    cfg = PhoneConfig(
        default_region=t.get("default_region", str, "FR"),
        allowed_regions=regions,
        allow_voip=t.get("allow_voip", bool, True),
    )
    t.done()
    return cfg


def _accounts(t: Table) -> AccountsConfig:
    days = t.get("reminder_days", list, [30, 7])
    if not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 366 for d in days):
        raise ConfigError(t.key("reminder_days"), "must be a list of days between 1 and 365")
    cfg = AccountsConfig(
        validity_days=t.int_in("validity_days", 365, 1, 3650),
        reminder_days=tuple(sorted(set(days), reverse=True)),
        sweep_interval_seconds=t.int_in("sweep_interval_seconds", 3600, 1, 86400),
        inactive_days=t.int_in("inactive_days", 90, 1, 3650),
        language=t.choice("language", "fr", ("fr", "en")),
        last_admin_grace_days=t.int_in("last_admin_grace_days", 7, 1, 90),
        totp=t.get("totp", bool, False),
        totp_issuer=t.get("totp_issuer", str, "otp-gateway"),
    )
    if not re.fullmatch(r"[^:\x00-\x1f]{1,64}", cfg.totp_issuer):
        raise ConfigError(t.key("totp_issuer"), "must be 1-64 characters, no colon")
    t.done()
    return cfg


def _smtp(t: Table) -> SmtpConfig:
    cfg = SmtpConfig(
        host=t.get("host", str, "127.0.0.1"),
        port=t.int_in("port", 25, 1, 65535),
        security=t.choice("security", "none", ("none", "starttls", "tls")),
        username=t.get("username", str, ""),
        password=t.secret("password", required=False),
        sender=t.get("from", str, "otp-gateway@example.org"),
    )
    t.done()
    return cfg


def _worker(t: Table) -> WorkerConfig:
    cfg = WorkerConfig(
        metrics_port=t.int_in("metrics_port", 9101, 0, 65535),
        concurrency=t.int_in("concurrency", 32, 1, 1024),
        claim_idle_seconds=t.get("claim_idle_seconds", float, 30.0),
        max_deliveries=t.int_in("max_deliveries", 5, 1, 100),
        dead_letters_max=t.int_in("dead_letters_max", 10_000, 1, 10_000_000),
        send_timeout_seconds=t.get("send_timeout_seconds", float, 10.0),
        breaker_threshold=t.int_in("breaker_threshold", 5, 1, 1000),
        breaker_open_seconds=t.get("breaker_open_seconds", float, 30.0),
        webhook_max_deliveries=t.int_in("webhook_max_deliveries", 8, 1, 100),
        webhook_retry_seconds=t.get("webhook_retry_seconds", float, 5.0),
    )
    if not 0.1 <= cfg.webhook_retry_seconds <= 3600:
        raise ConfigError(t.key("webhook_retry_seconds"), "must be between 0.1 and 3600")
    if not 0.01 <= cfg.breaker_open_seconds <= 3600:
        raise ConfigError(t.key("breaker_open_seconds"), "must be between 0.01 and 3600")
    if not 0.1 <= cfg.claim_idle_seconds <= 3600:
        raise ConfigError(t.key("claim_idle_seconds"), "must be between 0.1 and 3600")
    if not 0.1 <= cfg.send_timeout_seconds <= 120:
        raise ConfigError(t.key("send_timeout_seconds"), "must be between 0.1 and 120")
    t.done()
    return cfg


def _logging(t: Table) -> LoggingConfig:
    cfg = LoggingConfig(
        level=t.choice("level", "info", ("debug", "info", "warning", "error")),
        format=t.choice("format", "json", ("json", "text")),
    )
    t.done()
    return cfg


def _voice(t: Table) -> VoiceConfig:
    cfg = VoiceConfig(
        retry_delay_seconds=t.get("retry_delay_seconds", float, 15.0),
        busy_retry_delay_seconds=t.get("busy_retry_delay_seconds", float, 10.0),
        answer_window_seconds=t.get("answer_window_seconds", float, 60.0),
        max_calls=t.int_in("max_calls", 10, 1, 20),
        language=t.get("language", str, "fr-FR"),
        require_keypress=t.get("require_keypress", bool, True),
        repeat=t.int_in("repeat", 2, 1, 3),
        service_name=t.get("service_name", str, ""),
    )
    for name in ("retry_delay_seconds", "busy_retry_delay_seconds", "answer_window_seconds"):
        if not 0 <= getattr(cfg, name) <= 600:
            raise ConfigError(t.key(name), "must be between 0 and 600")
    t.done()
    return cfg


def _sms(t: Table) -> SmsConfig:
    cfg = SmsConfig(
        fallback_to_voice=t.get("fallback_to_voice", bool, True),
        webotp_host=t.get("webotp_host", str, ""),
    )
    host_re = r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?"
    if cfg.webotp_host and not re.fullmatch(host_re, cfg.webotp_host):
        raise ConfigError(t.key("webotp_host"), "must be a lowercase host name (login.example.org)")
    t.done()
    return cfg


def _console(t: Table) -> ConsoleConfig:
    cfg = ConsoleConfig(
        enabled=t.get("enabled", bool, True),
        idle_minutes=t.int_in("idle_minutes", 30, 1, 24 * 60),
        absolute_hours=t.int_in("absolute_hours", 12, 1, 7 * 24),
        per_page=t.int_in("per_page", 25, 5, 200),
        operators=t.str_list("operators", ()),
        device_label=t.get("device_label", str, "Console d'administration"),
    )
    if cfg.idle_minutes > cfg.absolute_hours * 60:
        raise ConfigError(t.key("idle_minutes"), "must not exceed console.absolute_hours")
    if not all(re.fullmatch(r"[A-Za-z0-9._@-]{1,128}", a) for a in cfg.operators):
        raise ConfigError(t.key("operators"), "must be a list of account ids")
    if not re.fullmatch(r"[^\x00-\x1f\x7f|]{1,64}", cfg.device_label):
        raise ConfigError(t.key("device_label"), "must be 1-64 printable characters, no '|'")
    t.done()
    return cfg


def parse_security(t: Table, embedded: bool) -> Secret | None:
    """`[security] secret`: required unless Redis is the embedded default."""
    secret = t.secret("secret", required=not embedded)
    if secret is not None and len(secret.reveal().encode()) < 32:
        raise ConfigError(t.key("secret"), "must be at least 32 bytes")
    t.done()
    return secret


def parse_api_keys(items: Any, env: Mapping[str, str]) -> tuple[ApiKey, ...]:
    """`[[api_keys]]`: named keys, scopes, an admin key's establishments."""
    keys = []
    for i, t in enumerate(array("api_keys", items, env)):
        name = t.get("name", str, "")
        if not name:
            raise ConfigError(t.key("name"), "is required")
        key = t.secret("key", required=True)
        assert key is not None
        if len(key.reveal()) < 16:
            raise ConfigError(t.key("key"), "must be at least 16 characters")
        scopes = frozenset(t.str_list("scopes", ()))
        if not scopes or not scopes <= SCOPES:
            raise ConfigError(t.key("scopes"), f"must be a non-empty subset of {sorted(SCOPES)}")
        establishments = _bound_to(t, scopes)
        t.done()
        keys.append(ApiKey(name=name, key=key, scopes=scopes, establishments=establishments))
        if any(k.key == key for k in keys[:i]):
            raise ConfigError(t.key("key"), "is the same as another API key")
    return tuple(keys)


def _bound_to(t: Table, scopes: frozenset[str]) -> frozenset[str] | None:
    """`establishments = [...]`: the only ones an admin key may act in."""
    if "establishments" not in t.data:
        return None
    value = t.data.pop("establishments")
    name = t.key("establishments")
    if not isinstance(value, list) or not value:
        raise ConfigError(name, "must be a non-empty list of establishment names")
    if not all(isinstance(v, str) and 0 < len(v) <= 128 for v in value):
        raise ConfigError(name, "must be a list of non-empty strings (at most 128 characters)")
    # An operator reaches every establishment without X-Acting-Account: a bound
    # key with that scope would drop its binding by leaving the header out.
    if "admin" not in scopes or "operator" in scopes:
        raise ConfigError(name, "binds admin keys only: needs the admin scope, not operator")
    return frozenset(value)


def parse_webhooks(items: Any, env: Mapping[str, str]) -> tuple[WebhookConfig, ...]:
    """`[[webhooks]]`: a URL, its signing secret, the events it wants."""
    hooks: list[WebhookConfig] = []
    for i, t in enumerate(array("webhooks", items, env)):
        name = t.get("name", str, f"webhook{i + 1}")
        if not re.fullmatch(r"[a-z0-9_-]{1,40}", name) or any(h.name == name for h in hooks):
            raise ConfigError(t.key("name"), "must be 1-40 chars of [a-z0-9_-], unique")
        url = t.get("url", str, "")
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise ConfigError(t.key("url"), "must be an http(s) URL")
        secret = t.secret("secret", required=True)
        assert secret is not None
        if len(secret.reveal()) < 16:
            raise ConfigError(t.key("secret"), "must be at least 16 characters")
        events = frozenset(t.str_list("events", WEBHOOK_EVENTS))
        if not events or not events <= set(WEBHOOK_EVENTS):
            raise ConfigError(t.key("events"), f"must be a non-empty subset of {WEBHOOK_EVENTS}")
        timeout = t.get("timeout_seconds", float, 5.0)
        if not 0.1 <= timeout <= 60:
            raise ConfigError(t.key("timeout_seconds"), "must be between 0.1 and 60")
        t.done()
        hooks.append(WebhookConfig(name, url, secret, events, timeout))
    return tuple(hooks)


def parse_providers(items: Any, env: Mapping[str, str]) -> tuple[ProviderConfig, ...]:
    """`[[providers]]`: the provider's own keys pass through, `_env` ones resolved."""
    providers: list[ProviderConfig] = []
    for t in array("providers", items, env):
        name = t.get("name", str, "")
        if not re.fullmatch(r"[a-z0-9_-]{1,40}", name):
            raise ConfigError(t.key("name"), "must be 1-40 chars of [a-z0-9_-]")
        if any(p.name == name for p in providers):
            raise ConfigError(t.key("name"), f"duplicate provider name {name!r}")
        kind = t.get("kind", str, "")
        if not kind:
            raise ConfigError(t.key("kind"), "is required")
        channels = t.str_list("channels", CHANNELS)
        if not channels or not set(channels) <= set(CHANNELS):
            raise ConfigError(t.key("channels"), "must be a non-empty subset of sms, voice")
        providers.append(
            ProviderConfig(name, kind, channels, _resolve_env_secrets(t.data, t.path, env))
        )
    return tuple(providers)


def _resolve_env_secrets(
    options: dict[str, Any], path: str, env: Mapping[str, str]
) -> dict[str, Any]:
    """Turn each `foo_env = "VAR"` into `foo = <value of VAR>` for providers."""
    resolved = {}
    for key, value in options.items():
        if key.endswith("_env") and isinstance(value, str):
            if not env.get(value):
                raise ConfigError(f"{path}.{key}", f"environment variable {value} is not set")
            resolved[key.removesuffix("_env")] = env[value]
        else:
            resolved[key] = value
    return resolved


# The one-table sections, read in this order after [redis] and [server].
SECTIONS: dict[str, Callable[[Table], Any]] = {
    "otp": _otp,
    "rate_limits": _rate_limits,
    "phones": _phones,
    "accounts": _accounts,
    "smtp": _smtp,
    "worker": _worker,
    "logging": _logging,
    "voice": _voice,
    "sms": _sms,
    "console": _console,
}
