"""Hands a message to the providers of its channel, in order, with failover.

The one choke point for every send: the timeout, the metrics and the mapping
of a provider's failure to "try the next one" or "stop" live here, not in
providers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.errors import ProviderRejected, ProviderUnavailable
from gateway.metrics import Metrics
from gateway.provider import OutboundMessage, Provider

log = logging.getLogger("otp_gateway.dispatch")


class Dispatcher:
    """Tries each provider of a channel until one accepts."""

    def __init__(self, providers: list[Provider], timeout: float, metrics: Metrics) -> None:
        self.providers = providers
        self.timeout = timeout
        self.metrics = metrics
        for provider in providers:
            metrics.provider_up.labels(provider.name).set(1)

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(ch for p in self.providers for ch in p.channels)

    async def send(self, message: OutboundMessage, created_ms: int | None = None) -> str:
        """Send; returns the accepting provider's name.

        Raises ProviderRejected when a provider refused the message for good,
        ProviderUnavailable when every provider of the channel failed.
        """
        for provider in self.providers:
            if message.channel not in provider.channels:
                continue
            if await self._try(provider, message):
                if created_ms is not None:
                    self.metrics.delivery_seconds.labels(provider.name, message.channel).observe(
                        max(0.0, time.time() - created_ms / 1000)
                    )
                return provider.name
        raise ProviderUnavailable(f"every {message.channel} provider failed")

    async def _try(self, provider: Provider, message: OutboundMessage) -> bool:
        outcome = "accepted"
        try:
            async with asyncio.timeout(self.timeout):
                await provider.send(message)
            return True
        except ProviderRejected:
            outcome = "rejected"
            raise
        except (ProviderUnavailable, TimeoutError) as exc:
            outcome = "unavailable"
            log.warning("provider failed", extra={"provider": provider.name, "error": str(exc)})
            return False
        except Exception:
            # A provider bug must not stop failover to the next one.
            outcome = "error"
            log.exception("provider raised", extra={"provider": provider.name})
            return False
        finally:
            self.metrics.deliveries.labels(provider.name, message.channel, outcome).inc()

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()
