"""What the configuration is: frozen values, one dataclass per section.

Defaults live here, on the fields; the checks that read a file into these
values live in `table`, `redis` and `sections`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.messages import BUILTIN, Templates

BUILTIN_PURPOSES = ("login", "account.create", "contact.update", "rncps", "account.manage")
SCOPES = frozenset({"otp", "admin", "operator", "metrics"})
CHANNELS = ("sms", "voice")
# What a challenge tells the application (`[[webhooks]] events`, docs/webhooks.md).
WEBHOOK_EVENTS = ("sent", "delivered", "unreachable", "verified", "expired")
FRANCE_AND_OVERSEAS = ("FR", "GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF", "WF", "PF", "NC")


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
    event_loop: str = "auto"  # auto (uvloop when installed) | uvloop | asyncio

    @property
    def development(self) -> bool:
        return self.mode == "development"


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Where Redis is: one `url`, a primary found through `sentinels`, or a Redis
    Cluster reached through any of `cluster_nodes`; none: the embedded redis-server."""

    url: str | None = None
    timeout_seconds: float = 2.0
    data_dir: str = "var"  # embedded default only
    appendfsync: str = "always"  # embedded default only
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = ""
    sentinel_password: Secret | None = None  # the sentinels' own requirepass
    cluster_nodes: tuple[tuple[str, int], ...] = ()  # any few nodes: the rest is discovered
    username: str = ""  # the data nodes' ACL user (default: "default")
    password: Secret | None = None  # the data nodes' password (a url may carry its own)
    tls: bool = False  # sentinels, cluster and data nodes over TLS (a url says rediss://)
    tls_ca_file: str = ""  # the CA bundle that signed their certificates
    wait_replicas: int = 0  # replicas that must hold a script's writes before it answers

    @property
    def embedded(self) -> bool:
        return self.url is None and not self.sentinels and not self.cluster_nodes


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
class ConsoleConfig:
    """`[console]`: the admin console's pages (docs/console.md)."""

    enabled: bool = True
    idle_minutes: int = 30  # a session unused this long is over
    absolute_hours: int = 12  # a session this old is over, however busy
    per_page: int = 25  # rows of the account list
    # Accounts that sign in as operators: every establishment, no step-up.
    operators: tuple[str, ...] = ()
    device_label: str = "Console d'administration"  # a trusted device's name


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
    webhook_max_deliveries: int = 8  # a webhook POST tried this many times, then dead-lettered
    webhook_retry_seconds: float = 5.0  # the first retry's wait; doubles, at most an hour


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: str = "json"


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    retry_delay_seconds: float = 15.0  # after no answer, a machine, a failed call
    busy_retry_delay_seconds: float = 10.0  # a busy line is free again sooner
    answer_window_seconds: float = 60.0  # a ring plus typing the code: must fit before expiry
    max_calls: int = 10  # an upper bound; the TTL and [otp] max_sends bind first
    language: str = "fr-FR"  # calls and SMS; a [templates] language
    require_keypress: bool = True  # a voicemail or a switchboard never hears the code
    repeat: int = 2  # times the code is read in a call
    service_name: str = ""  # named in the greeting ("" = the language's default)


@dataclass(frozen=True, slots=True)
class SmsConfig:
    fallback_to_voice: bool = True  # an undelivered SMS becomes a call
    webotp_host: str = ""  # adds the Web OTP line "@host #code"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One `[[api_keys]]` table; `establishments` binds an admin key (None: unbound)."""

    name: str
    key: Secret
    scopes: frozenset[str]
    establishments: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One `[[webhooks]]` table: where challenge events are posted, signed with `secret`."""

    name: str
    url: str
    secret: Secret
    events: frozenset[str]
    timeout_seconds: float = 5.0


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
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    templates: Mapping[str, Templates] = field(default_factory=lambda: dict(BUILTIN))
    webhooks: tuple[WebhookConfig, ...] = ()

    @property
    def embedded(self) -> bool:
        """True when the gateway runs its own redis-server child."""
        return self.redis.embedded
