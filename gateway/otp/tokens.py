"""Trusted-device tokens and step-up grants.

Both are 256-bit random bearer tokens that Redis keeps only as digests. A
trusted-device token spares an account the code at login on one device for
`trusted_device_days`; it lives in the account's `td:` hash (one field per
device), so it can be revoked one by one or all at once. A step-up grant is
single use: `consume` reads and deletes it in one command (GETDEL). Its key
must be in the account's hash slot (verify.lua and totp.lua write it with the
account's keys) yet be named from the token alone: `new_step_up` draws the
token again until its digest falls in the account's slot group.

`DeviceService` is the one set of trusted-device methods. The login front end
(scope `otp`, `/accounts/{id}/trusted-devices`) uses `TrustedDevices` as it
is; admins and operators (`/accounts/{id}/devices`) use the same methods
behind the admin rules (`gateway.accounts.policy.CallerDevices`). Both show a
device as `TrustedDevice.view()`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis

from gateway import keys
from gateway.clock import iso_ms
from gateway.crypto import (
    Keyring,
    constant_time_equal,
    is_device_token,
    new_token,
    token_digest,
)
from gateway.errors import NotFound


@dataclass(frozen=True, slots=True)
class TrustedDevice:
    """One trusted device of an account (never its token)."""

    device_id: str  # the token's digest: lets a device be revoked, cannot be used as one
    label: str
    created_ms: int
    until_ms: int

    def view(self) -> dict[str, str]:
        """The device in JSON (`TrustedDevice` in the OpenAPI document), for every route."""
        return {
            "device_id": self.device_id,
            "label": self.label,
            "created_at": iso_ms(self.created_ms),
            "trusted_until": iso_ms(self.until_ms),
        }


class DeviceService(Protocol):
    """The trusted-device methods every device route calls."""

    async def list(self, account_id: str) -> list[TrustedDevice]:
        """The account's live devices, newest first."""
        ...

    async def revoke(self, account_id: str, device_id: str) -> None:
        """Forget one device; 404 `not_found` when the account has no such device."""
        ...

    async def revoke_all(self, account_id: str) -> int:
        """Forget every device of the account; returns how many there were."""
        ...


def new_step_up(account_tag: str) -> tuple[str, str]:
    """A step-up token and its digest, in the account's slot group: drawn again
    until the digest's group is the account's (16 draws on average; the token
    keeps 252 of its 256 random bits: docs/security.md)."""
    group = keys.group_of_tag(account_tag)
    while True:
        token, digest = new_token("su")
        if keys.group_of_tag(digest) == group:
            return token, digest


def _no_such_device() -> NotFound:
    return NotFound("no such trusted device", code="not_found")


def _parse(device_id: str, raw: bytes) -> TrustedDevice:
    until, created, label = raw.decode().split("|", 2)
    return TrustedDevice(device_id, label, int(created), int(until))


class TrustedDevices:
    """Lookup, listing and revocation of an account's trusted devices."""

    def __init__(self, redis: aioredis.Redis, keyring: Keyring) -> None:
        self.redis = redis
        self.keyring = keyring

    def _key(self, account_id: str) -> str:
        return keys.trusted_devices(self.keyring.tag("account", account_id))

    async def check(self, account_id: str, token: str) -> bool:
        """True when `token` is a live trusted-device token of this account."""
        if not is_device_token(token):
            return False
        raw: Any = await self.redis.hget(self._key(account_id), token_digest(token))
        return raw is not None and _parse("", raw).until_ms > time.time() * 1000

    async def list(self, account_id: str) -> list[TrustedDevice]:
        """The account's live devices, newest first."""
        now = time.time() * 1000
        entries: dict[Any, Any] = await self.redis.hgetall(self._key(account_id))
        devices = [_parse(k.decode(), v) for k, v in entries.items()]
        return sorted((d for d in devices if d.until_ms > now), key=lambda d: -d.created_ms)

    async def ensure(self, account_id: str, device_id: str) -> None:
        """404 `not_found` unless the account has this device."""
        if not await self.redis.hexists(self._key(account_id), device_id):
            raise _no_such_device()

    async def revoke(self, account_id: str, device_id: str) -> None:
        """Forget one device; 404 `not_found` when the account has no such device."""
        if not await self.redis.hdel(self._key(account_id), device_id):
            raise _no_such_device()

    async def revoke_all(self, account_id: str) -> int:
        """Forget every device of the account; returns how many there were."""
        key = self._key(account_id)
        count = int(await self.redis.hlen(key))
        await self.redis.delete(key)
        return count


class StepUps:
    """Single-use grants from a `/verify` of a sensitive purpose."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def consume(self, token: str, account_id: str, purpose: str) -> bool:
        """True once for a live grant of exactly this account and purpose."""
        if not token.startswith("su_") or len(token) > 100:
            return False
        raw = await self.redis.getdel(keys.step_up(token_digest(token)))
        return raw is not None and constant_time_equal(raw, f"{account_id}|{purpose}".encode())
