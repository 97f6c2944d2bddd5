"""Configuration: one TOML file parsed once into frozen dataclasses.

Every key is checked at start-up; an unknown or bad key stops the process with
one line naming it (`ConfigError`). This is the only module that reads the
environment: `OTPGW_CONFIG`, `OTPGW_REDIS_URL`, `OTPGW_PORT`, and any
`<name>_env = "VAR"` that stands for a secret `<name>`.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from gateway.errors import ConfigError
from gateway.messages import BUILTIN, Templates, check_sms_fits, parse_templates

T = TypeVar("T")

BUILTIN_PURPOSES = ("login", "account.create", "contact.update", "rncps", "account.manage")
SCOPES = frozenset({"otp", "admin", "operator", "metrics"})
CHANNELS = ("sms", "voice")
FRANCE_AND_OVERSEAS = ("FR", "GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF", "WF", "PF", "NC")
_PURPOSE_RE = re.compile(r"[a-z][a-z0-9_.-]{0,39}")
_RATE_RE = re.compile(r"([0-9]{1,9})/([0-9]{0,6})([smhd])")
_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Secret:
    """A secret string whose repr never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class Rate:
    """`count` events per `period` seconds ("5/15m")."""

    count: int
    period: int

    def __str__(self) -> str:
        return f"{self.count}/{self.period}s"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    mode: str = "production"  # production | development (console provider allowed)
    metrics_auth: bool = False
    body_timeout_seconds: float = 10.0  # a request body not in by then is cut (408)

    @property
    def development(self) -> bool:
        return self.mode == "development"


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where Redis is: one `url`, or a primary found through `sentinels`; neither:
    the embedded redis-server."""

    url: str | None = None
    timeout_seconds: float = 2.0
    data_dir: str = "var"  # embedded default only
    appendfsync: str = "always"  # embedded default only
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = ""
    sentinel_password: Secret | None = None  # the sentinels' own requirepass
    username: str = ""  # the data nodes' ACL user (default: "default")
    password: Secret | None = None  # the data nodes' password (a url may carry its own)
    tls: bool = False  # sentinels and data nodes over TLS (a url says rediss://)
    tls_ca_file: str = ""  # the CA bundle that signed their certificates
    wait_replicas: int = 0  # replicas that must hold a script's writes before it answers

    @property
    def embedded(self) -> bool:
        return self.url is None and not self.sentinels


@dataclass(frozen=True, slots=True)
class OtpConfig:
    code_length: int = 6
    ttl_seconds: int = 300
    max_attempts: int = 5
    resend_cooldown_seconds: int = 30
    trusted_device_days: int = 7
    max_sends: int = 5
    step_up_ttl_seconds: int = 300
    tombstone_seconds: int = 900
    purposes: tuple[str, ...] = BUILTIN_PURPOSES


@dataclass(frozen=True, slots=True)
class RateLimits:
    account: Rate = Rate(5, 900)
    number: Rate = Rate(10, 3600)
    ip: Rate = Rate(30, 60)
    country: Rate = Rate(1000, 3600)
    global_: Rate = Rate(600, 60)
    failures: Rate = Rate(20, 3600)
    establishment: Rate | None = None  # sends per establishment; None: no such budget


@dataclass(frozen=True, slots=True)
class PhoneConfig:
    default_region: str = "FR"
    allowed_regions: tuple[str, ...] = FRANCE_AND_OVERSEAS
    allow_voip: bool = True


@dataclass(frozen=True, slots=True)
class AccountsConfig:
    validity_days: int = 365
    reminder_days: tuple[int, ...] = (30, 7)
    sweep_interval_seconds: int = 3600
    inactive_days: int = 90  # the account list flags accounts unused this long
    language: str = "fr"  # reminder and notice e-mails: fr | en
    last_admin_grace_days: int = 7  # the sweep's reprieve for a last admin about to lapse
    totp: bool = False  # whether accounts may enrol an authenticator app
    totp_issuer: str = "otp-gateway"  # the issuer an authenticator app shows


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    security: str = "none"
    username: str = ""
    password: Secret | None = None
    sender: str = "otp-gateway@example.org"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    metrics_port: int = 9101
    concurrency: int = 32
    claim_idle_seconds: float = 30.0
    max_deliveries: int = 5
    dead_letters_max: int = 10_000  # the dead-letter stream keeps the newest this many
    send_timeout_seconds: float = 10.0
    breaker_threshold: int = 5  # consecutive failures that open a provider's breaker
    breaker_open_seconds: float = 30.0  # then one probe; doubles while probes fail


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    retry_delay_seconds: float = 30.0
    max_calls: int = 3
    language: str = "fr-FR"  # calls and SMS; a [templates] language
    require_keypress: bool = False
    repeat: int = 2  # times the code is read in a call
    service_name: str = ""  # named in the greeting ("" = the language's default)


@dataclass(frozen=True, slots=True)
class SmsConfig:
    fallback_to_voice: bool = False  # an undelivered SMS becomes a call
    webotp_host: str = ""  # adds the Web OTP line "@host #code"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One `[[api_keys]]` table; `establishments` binds an admin key (None: unbound)."""

    name: str
    key: Secret
    scopes: frozenset[str]
    establishments: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One `[[providers]]` table; `options` holds the provider's own keys."""

    name: str
    kind: str
    channels: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig
    redis: RedisConfig
    otp: OtpConfig
    security_secret: Secret | None
    rate_limits: RateLimits
    phones: PhoneConfig
    accounts: AccountsConfig
    smtp: SmtpConfig
    worker: WorkerConfig
    logging: LoggingConfig
    voice: VoiceConfig
    api_keys: tuple[ApiKey, ...]
    providers: tuple[ProviderConfig, ...]
    source: str = "<embedded default>"
    sms: SmsConfig = field(default_factory=SmsConfig)
    templates: Mapping[str, Templates] = field(default_factory=lambda: dict(BUILTIN))

    @property
    def embedded(self) -> bool:
        """True when the gateway runs its own redis-server child."""
        return self.redis.embedded


# --- reading tables -------------------------------------------------------


class _Table:
    """A TOML table read key by key; leftovers are unknown keys and an error."""

    def __init__(self, data: Any, path: str, env: Mapping[str, str]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, "must be a table")
        self.data: dict[str, Any] = dict(data)
        self.path = path
        self.env = env

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type[T], default: T) -> T:
        if name not in self.data:
            return default
        value = self.data.pop(name)
        # bool is an int in Python; a port of `true` is still wrong.
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self.key(name), f"must be {kind.__name__}")
        return value

    def int_in(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name, int, default)
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be between {low} and {high}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.get(name, str, default)
        if value not in allowed:
            raise ConfigError(self.key(name), f"must be one of {', '.join(allowed)}")
        return value

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, list, list(default))
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), "must be a list of strings")
        return tuple(value)

    def secret(self, name: str, *, required: bool) -> Secret | None:
        """`name = "..."` or `name_env = "VAR"`, exactly one of them."""
        direct = self.get(name, str, "")
        var = self.get(f"{name}_env", str, "")
        if direct and var:
            raise ConfigError(self.key(name), f"give {name} or {name}_env, not both")
        if var:
            if var not in self.env or not self.env[var]:
                raise ConfigError(self.key(f"{name}_env"), f"environment variable {var} is not set")
            return Secret(self.env[var])
        if direct:
            return Secret(direct)
        if required:
            raise ConfigError(self.key(name), "is required")
        return None

    def sub(self, name: str) -> _Table:
        return _Table(self.data.pop(name, {}), self.key(name), self.env)

    def done(self) -> None:
        for name in self.data:
            raise ConfigError(self.key(name), "unknown key")


def parse_rate(text: str, key: str) -> Rate:
    """Parse "N/period" where period is e.g. 15m, 1h, 30s or d."""
    match = _RATE_RE.fullmatch(text)
    if not match or int(match[1]) < 1:
        raise ConfigError(key, 'must look like "5/15m" (count/period, period in s, m, h or d)')
    multiplier = int(match[2]) if match[2] else 1
    period = multiplier * _PERIOD_SECONDS[match[3]]
    if period < 1:
        raise ConfigError(key, "period must be at least 1s")
    return Rate(int(match[1]), period)


# --- sections --------------------------------------------------------------


def _server(t: _Table, env: Mapping[str, str]) -> ServerConfig:
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
    )
    if not 0.05 <= server.body_timeout_seconds <= 300:
        raise ConfigError(t.key("body_timeout_seconds"), "must be between 0.05 and 300")
    t.done()
    return server


def _redis(t: _Table, env: Mapping[str, str]) -> RedisConfig:
    url: str | None = t.get("url", str, "") or None
    if env.get("OTPGW_REDIS_URL"):
        url = env["OTPGW_REDIS_URL"]
    if url is not None and not re.fullmatch(r"(rediss?|unix)://\S+", url):
        raise ConfigError("redis.url", "must be a redis://, rediss:// or unix:// URL")
    sentinels = tuple(_address(a, t.key("sentinels")) for a in t.str_list("sentinels", ()))
    _one_topology(t, url, sentinels)
    timeout = t.get("timeout_seconds", float, 2.0)
    if not 0.05 <= timeout <= 60:
        raise ConfigError(t.key("timeout_seconds"), "must be between 0.05 and 60")
    cfg = RedisConfig(
        url=url,
        timeout_seconds=timeout,
        data_dir=t.get("data_dir", str, "var"),
        appendfsync=t.choice("appendfsync", "always", ("always", "everysec", "no")),
        sentinels=sentinels,
        sentinel_master=t.get("sentinel_master", str, ""),
        sentinel_password=t.secret("sentinel_password", required=False),
        username=t.get("username", str, ""),
        password=t.secret("password", required=False),
        tls=t.get("tls", bool, False),
        tls_ca_file=t.get("tls_ca_file", str, ""),
        wait_replicas=t.int_in("wait_replicas", 0, 0, 16),
    )
    _check_redis(t, cfg)
    t.done()
    return cfg


def _address(text: str, key: str) -> tuple[str, int]:
    """ "host:port" (an IPv6 host in brackets) as (host, port)."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})", text)
    if not match or not 0 < int(match[2]) <= 65535:
        raise ConfigError(key, f'{text!r} is not "host:port"')
    return match[1].strip("[]"), int(match[2])


def _one_topology(t: _Table, url: str | None, sentinels: tuple[tuple[str, int], ...]) -> None:
    """At most one of url, sentinels, cluster_nodes (none: the embedded default)."""
    cluster = t.str_list("cluster_nodes", ())
    given = [name for name, value in (("url", url), ("sentinels", sentinels)) if value]
    if cluster:
        given.append("cluster_nodes")
    if len(given) > 1:
        raise ConfigError(
            t.key(given[1]), f"give one of url, sentinels, cluster_nodes, not {given[0]} too"
        )
    if cluster:
        raise ConfigError(t.key("cluster_nodes"), "Redis Cluster is not supported yet")


def _check_redis(t: _Table, cfg: RedisConfig) -> None:
    sentinel_only = {
        "sentinel_master": cfg.sentinel_master,
        "sentinel_password": cfg.sentinel_password,
        "tls": cfg.tls,
        "tls_ca_file": cfg.tls_ca_file,
    }
    if not cfg.sentinels:
        for name, value in sentinel_only.items():
            if value:
                raise ConfigError(t.key(name), "only goes with sentinels")
    elif not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", cfg.sentinel_master):
        raise ConfigError(t.key("sentinel_master"), "the master's name is required with sentinels")
    if cfg.tls_ca_file and not cfg.tls:
        raise ConfigError(t.key("tls_ca_file"), "only goes with tls = true")
    if cfg.url is not None and (cfg.password or cfg.username) and _url_has_credentials(cfg.url):
        raise ConfigError(t.key("password"), "the url carries credentials already: give one")
    if cfg.embedded and (cfg.password or cfg.username or cfg.wait_replicas):
        raise ConfigError(
            t.key("url"), "username, password and wait_replicas need a url or sentinels"
        )


def _url_has_credentials(url: str) -> bool:
    return bool(re.match(r"[a-z]+://[^/@]*@", url))


def _otp(t: _Table) -> OtpConfig:
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


def _rate_limits(t: _Table) -> RateLimits:
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


def _phones(t: _Table) -> PhoneConfig:
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


def _accounts(t: _Table) -> AccountsConfig:
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


def _smtp(t: _Table) -> SmtpConfig:
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


def _worker(t: _Table) -> WorkerConfig:
    cfg = WorkerConfig(
        metrics_port=t.int_in("metrics_port", 9101, 0, 65535),
        concurrency=t.int_in("concurrency", 32, 1, 1024),
        claim_idle_seconds=t.get("claim_idle_seconds", float, 30.0),
        max_deliveries=t.int_in("max_deliveries", 5, 1, 100),
        dead_letters_max=t.int_in("dead_letters_max", 10_000, 1, 10_000_000),
        send_timeout_seconds=t.get("send_timeout_seconds", float, 10.0),
        breaker_threshold=t.int_in("breaker_threshold", 5, 1, 1000),
        breaker_open_seconds=t.get("breaker_open_seconds", float, 30.0),
    )
    if not 0.01 <= cfg.breaker_open_seconds <= 3600:
        raise ConfigError(t.key("breaker_open_seconds"), "must be between 0.01 and 3600")
    if not 0.1 <= cfg.claim_idle_seconds <= 3600:
        raise ConfigError(t.key("claim_idle_seconds"), "must be between 0.1 and 3600")
    if not 0.1 <= cfg.send_timeout_seconds <= 120:
        raise ConfigError(t.key("send_timeout_seconds"), "must be between 0.1 and 120")
    t.done()
    return cfg


def _logging(t: _Table) -> LoggingConfig:
    cfg = LoggingConfig(
        level=t.choice("level", "info", ("debug", "info", "warning", "error")),
        format=t.choice("format", "json", ("json", "text")),
    )
    t.done()
    return cfg


def _voice(t: _Table) -> VoiceConfig:
    cfg = VoiceConfig(
        retry_delay_seconds=t.get("retry_delay_seconds", float, 30.0),
        max_calls=t.int_in("max_calls", 3, 1, 10),
        language=t.get("language", str, "fr-FR"),
        require_keypress=t.get("require_keypress", bool, False),
        repeat=t.int_in("repeat", 2, 1, 3),
        service_name=t.get("service_name", str, ""),
    )
    if not 0 <= cfg.retry_delay_seconds <= 600:
        raise ConfigError(t.key("retry_delay_seconds"), "must be between 0 and 600")
    t.done()
    return cfg


def _sms(t: _Table) -> SmsConfig:
    cfg = SmsConfig(
        fallback_to_voice=t.get("fallback_to_voice", bool, False),
        webotp_host=t.get("webotp_host", str, ""),
    )
    host_re = r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?"
    if cfg.webotp_host and not re.fullmatch(host_re, cfg.webotp_host):
        raise ConfigError(t.key("webotp_host"), "must be a lowercase host name (login.example.org)")
    t.done()
    return cfg


def _security(t: _Table, embedded: bool) -> Secret | None:
    secret = t.secret("secret", required=not embedded)
    if secret is not None and len(secret.reveal().encode()) < 32:
        raise ConfigError(t.key("secret"), "must be at least 32 bytes")
    t.done()
    return secret


def _api_keys(items: Any, env: Mapping[str, str]) -> tuple[ApiKey, ...]:
    keys = []
    for i, t in enumerate(_array("api_keys", items, env)):
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


def _bound_to(t: _Table, scopes: frozenset[str]) -> frozenset[str] | None:
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


def _providers(items: Any, env: Mapping[str, str]) -> tuple[ProviderConfig, ...]:
    providers: list[ProviderConfig] = []
    for t in _array("providers", items, env):
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


def _array(name: str, items: Any, env: Mapping[str, str]) -> Iterator[_Table]:
    if not isinstance(items, list):
        raise ConfigError(name, f"must be an array of tables ([[{name}]])")
    for i, item in enumerate(items):
        yield _Table(item, f"{name}[{i}]", env)


# --- entry point -------------------------------------------------------------


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
    top = _Table(raw, "", env)
    redis = _redis(top.sub("redis"), env)
    server = _server(top.sub("server"), env)
    if not has_file and redis.embedded:
        # The embedded default is a development sandbox: console provider allowed.
        server = replace(server, mode="development")
    sections: dict[str, Callable[[_Table], Any]] = {
        "otp": _otp,
        "rate_limits": _rate_limits,
        "phones": _phones,
        "accounts": _accounts,
        "smtp": _smtp,
        "worker": _worker,
        "logging": _logging,
        "voice": _voice,
        "sms": _sms,
    }
    parsed = {name: fn(top.sub(name)) for name, fn in sections.items()}
    cfg = Config(
        server=server,
        redis=redis,
        security_secret=_security(top.sub("security"), embedded=redis.embedded),
        api_keys=_api_keys(top.data.pop("api_keys", []), env),
        providers=_providers(top.data.pop("providers", []), env),
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
