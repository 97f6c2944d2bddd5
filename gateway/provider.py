"""The provider interface, owned by the core, and the plugin registry.

A provider is a small class with one async `send` and an `aclose`. Providers
are found through the `otp_gateway.providers` entry point group, so another
package can add one without touching this project:

    [project.entry-points."otp_gateway.providers"]
    acme = "acme_otp:AcmeProvider"

Everything a provider needs is here (with `gateway.errors`): its config type,
the messages it is handed, its receipt, and the callback types. The worker
renders every message, SMS text, a call's texts and its TwiML; a provider only
transports it. Timeouts, metrics, error mapping and failover are the
dispatcher's job (`gateway.otp.dispatch`), never a provider's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

import redis.asyncio as aioredis

from gateway.config import ProviderConfig
from gateway.errors import ConfigError

__all__ = [
    "DELIVERY_STATES", "ENTRY_POINT_GROUP", "FINAL_STATES", "MAX_INLINE_TWIML",
    "CallbackProvider", "DeliveryEvent", "OutboundMessage", "Provider", "ProviderConfig",
    "ProviderContext", "ProviderFactory", "ProviderServices", "ReportingProvider", "SendReceipt",
    "VoiceMessage",
    "available_kinds", "build_providers", "callbacks_url", "option", "reject_unknown_options",
]  # fmt: skip

ENTRY_POINT_GROUP = "otp_gateway.providers"
MAX_INLINE_TWIML = 4000  # Twilio's limit for `Twiml` on Calls.json; the worker's calls fit
FINAL_STATES = frozenset({"delivered", "no_answer", "busy", "machine", "failed"})
DELIVERY_STATES = frozenset({"queued", "sent"}) | FINAL_STATES


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """One send of a code. `repr` hides the code and the number."""

    challenge_id: str
    channel: str  # "sms" | "voice"
    to: str  # E.164
    code: str
    text: str  # the rendered message, code included
    attempt: int  # the send number of this challenge, 1-based: an idempotency key
    purpose: str
    language: str = "fr-FR"
    extension: str | None = None  # digits to dial after pick-up

    def __repr__(self) -> str:
        return (
            f"OutboundMessage(challenge_id={self.challenge_id!r}, channel={self.channel!r}, "
            f"attempt={self.attempt})"
        )

    @property
    def idempotency_key(self) -> str:
        return f"{self.challenge_id}:{self.attempt}"


@dataclass(frozen=True, slots=True, repr=False)
class VoiceMessage(OutboundMessage):
    """A call, rendered by the worker for the provider that places it.

    `text` is the whole script as one text, for providers with their own
    speech; `twiml` is the TwiML the call starts with, its "press 1" URL under
    this provider's `callbacks_url`. `repr` hides the code and the number.
    """

    twiml: str = ""


@dataclass(frozen=True, slots=True)
class SendReceipt:
    """What a provider says it did with a message."""

    provider_ref: str = ""  # the provider's own id for the message, if any


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What the composition root hands every provider at construction."""

    development: bool
    public_url: str

    def callbacks_url(self, provider: str) -> str:
        """Where this provider's callbacks reach the gateway (`callbacks_url`)."""
        return callbacks_url(self.public_url, provider)


def callbacks_url(public_url: str, provider: str) -> str:
    """The root of a provider's callbacks: `/status?c=<challenge>&n=<send>` and
    `/twiml?t=<session>` under it, each checked with the provider's signature."""
    return f"{public_url}/callbacks/{provider}"


@runtime_checkable
class Provider(Protocol):
    """Delivers messages on some channels."""

    name: str
    channels: tuple[str, ...]

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Hand one message over, or raise ProviderUnavailable or ProviderRejected."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    """One thing a provider reported about a send."""

    kind: str  # "call" | "message"
    state: str  # one of DELIVERY_STATES

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@runtime_checkable
class CallbackProvider(Protocol):
    """A provider that reports delivery through signed HTTP callbacks."""

    name: str

    def verify_callback(
        self, url: str, params: list[tuple[str, str]], headers: Mapping[str, str]
    ) -> bool:
        """True when the request's signature proves the provider sent `params` to `url`."""
        ...

    def delivery_event(self, params: Mapping[str, str]) -> DeliveryEvent | None:
        """The event a status callback reports, or None when it says nothing new."""
        ...


@dataclass(frozen=True, slots=True)
class ProviderServices:
    """What the runtime hands, once Redis is open, a provider whose delivery reports
    come on its own connection rather than as HTTP callbacks (SMPP receipts)."""

    redis: aioredis.Redis  # single-key commands only: it may be a Redis Cluster
    record: Callable[[str, int, DeliveryEvent], Awaitable[str]]  # (challenge, send, event)
    ttl_seconds: int  # a challenge's lifetime: how long a send's reference is worth keeping


@runtime_checkable
class ReportingProvider(Protocol):
    """A provider that reports delivery itself, through `ProviderServices`."""

    name: str

    def attach(self, services: ProviderServices) -> None:
        """Keep `services`, to record the delivery reports it receives from now on."""
        ...


class ProviderFactory(Protocol):
    """What an entry point names: usually the provider class itself."""

    def __call__(
        self, config: ProviderConfig, context: ProviderContext
    ) -> Provider: ...  # pragma: no cover


def available_kinds() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def build_providers(
    configs: tuple[ProviderConfig, ...], context: ProviderContext
) -> list[Provider]:
    """Instantiate every configured provider, in order (the failover order)."""
    kinds = available_kinds()
    providers: list[Provider] = []
    for i, cfg in enumerate(configs):
        if cfg.kind not in kinds:
            known = ", ".join(sorted(kinds)) or "none"
            raise ConfigError(f"providers[{i}].kind", f"unknown kind {cfg.kind!r} (known: {known})")
        factory: ProviderFactory = kinds[cfg.kind].load()
        providers.append(factory(cfg, context))
    return providers


def option(
    options: Mapping[str, Any], key: str, kind: type, where: str, default: Any = None
) -> Any:
    """Read one provider option, with a ConfigError naming it when it is wrong."""
    if key not in options:
        if default is None:
            raise ConfigError(f"{where}.{key}", "is required")
        return default
    value = options[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{key}", f"must be {kind.__name__}")
    return value


def reject_unknown_options(options: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in options:
        if key not in known:
            raise ConfigError(f"{where}.{key}", "unknown key")
