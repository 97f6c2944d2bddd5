"""An authenticator app (RFC 6238 TOTP, pyotp) as a factor next to the phone.

Allowed when the deployment sets `[accounts] totp = true` (else 403
`totp_disabled`). An account enrols (a random 160-bit secret, returned once
inside an `otpauth://` URI for the app to scan), then confirms with a first
code from the app. From then on `verify` takes an app code where a phone code
would do (login, with an optional trusted device; or a sensitive purpose,
giving a step-up token): for the remote worker whose office line is out of
reach.

Storage, `keys.totp(tag)`: `pending` and `secret`, each sealed with
AES-GCM under a key derived from `[security] secret` (HKDF label
`otp-gateway/totp-seal/v1`) and bound to the account id; `last`, the last time
step accepted. A code matches the current 30-second step or one either side
(clock drift), and only a step later than `last` passes: a code cannot be
replayed within its window. Wrong codes spend the account's `failures` budget
like wrong phone codes. The checks and grants are one Lua script
(`lua/totp.lua`); the secret itself never leaves Python.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

import pyotp
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway import keys
from gateway.accounts.audit import Who
from gateway.accounts.records import Account
from gateway.accounts.store import AccountStore
from gateway.config import AccountsConfig
from gateway.crypto import Keyring, Sealer, constant_time_equal, new_token
from gateway.errors import (
    AccountExpired,
    AccountSuspended,
    Conflict,
    Forbidden,
    Gone,
    InvalidRequest,
    RateLimited,
    Unprocessable,
)
from gateway.luascripts import Lua
from gateway.otp.challenges import Verified  # the port: what a verified code grants
from gateway.otp.tokens import new_step_up

DIGITS: Final = 6
_CODE = re.compile(r"[0-9]{6}")
_LABEL = re.compile(r"[^\x00-\x1f\x7f|]{0,64}")


def totp_sealer(secret: str) -> Sealer:
    """The AES-GCM key for TOTP secrets, derived from `[security] secret`."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"otp-gateway/totp-seal/v1")
    return Sealer(hkdf.derive(secret.encode()))


def matching_step(secret: str, code: str, at: datetime) -> int:
    """The time step (current, or one either side) whose code is `code`, or -1."""
    totp = pyotp.TOTP(secret, digits=DIGITS)
    now = totp.timecode(at)
    found = -1
    for step in (now - 1, now, now + 1):  # no early exit: constant work
        if constant_time_equal(totp.generate_otp(step), code):
            found = step
    return found


class TotpService:
    """Enrol, confirm, verify and remove an account's authenticator app."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keyring: Keyring,
        sealer: Sealer,
        store: AccountStore,
        accounts: AccountsConfig,
        lua: Lua,
    ) -> None:
        self.redis = redis
        self.keyring = keyring
        self.sealer = sealer
        self.store = store
        self.allowed = accounts.totp
        self.issuer = accounts.totp_issuer
        self._verify_script = lua.script("totp")
        self._confirm_script = lua.script("totp_confirm")

    def _key(self, account_id: str) -> str:
        return keys.totp(self.store.account_tag(account_id))

    def require_allowed(self) -> None:
        if not self.allowed:
            raise Forbidden("authenticator apps are not enabled here", code="totp_disabled")

    async def status(self, account_id: str) -> dict[str, bool]:
        pending, secret = await self.redis.hmget(self._key(account_id), "pending", "secret")
        return {"allowed": self.allowed, "enrolled": secret is not None, "pending": bool(pending)}

    async def enrol(self, account: Account, who: Who) -> str:
        """A new pending secret; its otpauth:// URI, shown once (to scan)."""
        self.require_allowed()
        secret = pyotp.random_base32()
        sealed = self.sealer.seal(secret.encode(), self._aad(account.account_id))
        await self.redis.hset(self._key(account.account_id), "pending", sealed)
        await self.store.record(account, "totp.enrol", who=who)
        return pyotp.TOTP(secret, digits=DIGITS).provisioning_uri(
            name=account.account_id, issuer_name=self.issuer
        )

    async def confirm(self, account: Account, code: str, who: Who) -> None:
        """The app's first code makes the pending secret the account's."""
        self.require_allowed()
        _check_code(code)
        key = self._key(account.account_id)
        sealed: Any = await self.redis.hget(key, "pending")
        if sealed is None:
            raise Conflict("no authenticator app is being enrolled", code="totp_not_enrolled")
        secret = self.sealer.open(sealed, self._aad(account.account_id)).decode()
        step = matching_step(secret, code, self.store.now())
        if step < 0:
            raise Unprocessable("wrong code", code="invalid_code")
        if int(await self._confirm_script(keys=[key], args=[sealed, step])) != 1:
            raise Conflict("no authenticator app is being enrolled", code="totp_not_enrolled")
        await self.store.record(account, "totp.confirm", who=who)

    async def remove(self, account: Account, who: Who) -> bool:
        """Forget the app (and any pending enrolment); False when there was none."""
        removed = bool(await self.redis.delete(self._key(account.account_id)))
        if removed:
            await self.store.record(account, "totp.remove", who=who)
        return removed

    async def verify(
        self, account: Account, code: str, purpose: str, trust_device: bool, label: str
    ) -> Verified:
        """Check an app code; on success the grants `/verify` gives."""
        self.require_allowed()
        _check_code(code)
        if not _LABEL.fullmatch(label):
            raise InvalidRequest("device_label: at most 64 printable characters, no '|'")
        key = self._key(account.account_id)
        sealed: Any = await self.redis.hget(key, "secret")
        step = -1
        if sealed is not None:
            secret = self.sealer.open(sealed, self._aad(account.account_id)).decode()
            step = matching_step(secret, code, self.store.now())
        tag = self.store.account_tag(account.account_id)
        device_token, device_digest = new_token("td")
        step_up_token, step_up_digest = new_step_up(tag)  # in the account's slot
        result = await self._verify_script(
            keys=[key, keys.account(tag), keys.failures(tag),
                  keys.trusted_devices(tag), keys.step_up(step_up_digest), keys.logins_of(tag)],
            args=[step, "1" if trust_device else "0", device_digest, label, purpose,
                  account.account_id, tag],
        )  # fmt: skip
        outcome = result[0].decode()
        if outcome != "verified":
            raise _refusal(outcome, result)
        kind = result[1].decode()
        token = {"trusted_device": device_token, "step_up": step_up_token}.get(kind)
        return Verified(account.account_id, purpose, kind, token, int(result[2]))

    @staticmethod
    def _aad(account_id: str) -> bytes:
        return f"totp:{account_id}".encode()


def _check_code(code: str) -> None:
    if not _CODE.fullmatch(code):
        raise InvalidRequest(f"code must be {DIGITS} ASCII digits")


def _refusal(outcome: str, result: list[Any]) -> Exception:
    if outcome == "rate":
        wait = -(-int(result[2]) // 1000)
        return RateLimited(
            "too many failed verifications for this account", retry_after=wait, scope="failures"
        )
    if outcome == "invalid_code":
        return Unprocessable("wrong code", code="invalid_code")
    if outcome == "already_used":
        return Gone("this code was already used: wait for the next one", code="already_used")
    if outcome == "totp_not_enrolled":
        return Conflict("this account has no authenticator app", code="totp_not_enrolled")
    if outcome == "account_suspended":
        return AccountSuspended()
    return AccountExpired()
