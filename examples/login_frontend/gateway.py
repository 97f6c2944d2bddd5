"""The three gateway calls the login front end needs, with the front end's own API key.

Each returns `(status, body)`: the gateway's status and JSON as they are, so the
pages can tell a trusted device (200) from a code sent (202) and pass error codes
to `messages.sentence`. A gateway out of reach, or an answer that is not JSON,
is `(503, {"error": "unavailable"})`: the person is told to try again.
"""

from __future__ import annotations

from typing import Any

import aiohttp

Answer = tuple[int, dict[str, Any]]
TIMEOUT = aiohttp.ClientTimeout(total=10)


class GatewayClient:
    """`POST /challenge`, `POST /verify`, `POST /challenge/{id}/resend`."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}

    async def challenge(
        self, account_id: str, client_ip: str | None, trusted_device_token: str | None
    ) -> Answer:
        """A login code for the account, or none needed on a trusted device (200)."""
        body: dict[str, Any] = {"account_id": account_id, "purpose": "login"}
        if client_ip:
            body["client_ip"] = client_ip
        if trusted_device_token:
            body["trusted_device_token"] = trusted_device_token
        return await self._post("/challenge", body)

    async def verify(
        self, challenge_id: str, code: str, trust_device: bool, device_label: str
    ) -> Answer:
        """The code checked; with `trust_device`, a trusted-device token on success."""
        body: dict[str, Any] = {"challenge_id": challenge_id, "code": code}
        if trust_device:
            body |= {"trust_device": True, "device_label": device_label}
        return await self._post("/verify", body)

    async def resend(self, challenge_id: str, channel: str | None) -> Answer:
        """The same code again, on the same channel or on `channel`."""
        body = {"channel": channel} if channel else {}
        return await self._post(f"/challenge/{challenge_id}/resend", body)

    async def _post(self, path: str, body: dict[str, Any]) -> Answer:
        try:
            async with self._session.post(
                self._base + path, json=body, headers=self._headers, timeout=TIMEOUT
            ) as resp:
                answer = await resp.json(content_type=None)
                if not isinstance(answer, dict):
                    raise ValueError("not a JSON object")
                return resp.status, answer
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return 503, {"error": "unavailable"}
