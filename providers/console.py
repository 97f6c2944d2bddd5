"""Prints each message on standard output: for development only."""

from __future__ import annotations

import sys

from gateway.errors import ConfigError
from gateway.provider import (
    OutboundMessage,
    ProviderConfig,
    ProviderContext,
    SendReceipt,
    reject_unknown_options,
)


class ConsoleProvider:
    """Writes the message, code included, to stdout; refused outside development mode."""

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        where = f"providers.{config.name}"
        if not context.development:
            raise ConfigError(
                f"{where}.kind",
                'the console provider prints codes: only with [server] mode = "development"',
            )
        reject_unknown_options(config.options, set(), where)
        self.name = config.name
        self.channels = config.channels

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Print the message (the whole point in development)."""
        print(
            f"[console {message.channel} to {message.to}] {message.text}",
            file=sys.stdout,
            flush=True,
        )
        return SendReceipt(provider_ref=f"console-{message.idempotency_key}")

    async def aclose(self) -> None:
        """Nothing to release."""
