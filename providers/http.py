"""Posts each message as signed JSON to a URL: the generic webhook provider.

Body: {"challenge_id", "channel", "to", "code", "message", "attempt"}; header
`X-Signature-SHA256` is the hex HMAC-SHA256 of the raw body with the
provider's secret, and `Idempotency-Key` is `<challenge_id>:<attempt>` so the
receiver can drop a send that a worker crash made us repeat. Any 2xx is
accepted; 408, 429 and 5xx, timeouts and connection errors are retryable
(the next provider is tried); other 4xx are final.
"""

from __future__ import annotations

import hashlib
import hmac
import json

import aiohttp

from gateway.errors import ConfigError, ProviderRejected, ProviderUnavailable
from gateway.provider import (
    OutboundMessage,
    ProviderConfig,
    ProviderContext,
    SendReceipt,
    option,
    reject_unknown_options,
)

_RETRYABLE = {408, 425, 429}


class HttpProvider:
    """JSON webhook provider (`kind = "http"`)."""

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        where = f"providers.{config.name}"
        reject_unknown_options(config.options, {"url", "secret", "timeout_seconds"}, where)
        self.name = config.name
        self.channels = config.channels
        self.url: str = option(config.options, "url", str, where)
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url", "must be an http(s) URL")
        secret: str = option(config.options, "secret", str, where)
        if len(secret) < 16:
            raise ConfigError(f"{where}.secret", "must be at least 16 characters")
        self._secret = secret.encode()
        timeout = float(option(config.options, "timeout_seconds", float, where, 5.0))
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a session must be made inside the running loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """POST the message; map the answer to accepted, retryable or final."""
        body = json.dumps(
            {
                "challenge_id": message.challenge_id,
                "channel": message.channel,
                "to": message.to,
                "code": message.code,
                "message": message.text,
                "attempt": message.attempt,
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Signature-SHA256": hmac.new(self._secret, body, hashlib.sha256).hexdigest(),
            "Idempotency-Key": message.idempotency_key,
        }
        try:
            async with self._client().post(self.url, data=body, headers=headers) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderUnavailable(f"{self.name}: {type(exc).__name__}") from exc
        if 200 <= status < 300:
            return SendReceipt(provider_ref=message.idempotency_key)
        if status >= 500 or status in _RETRYABLE:
            raise ProviderUnavailable(f"{self.name}: HTTP {status}")
        raise ProviderRejected(f"{self.name}: HTTP {status}")

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
