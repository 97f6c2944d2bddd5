"""Challenges: create, verify, look up and resend one-time codes.

The writes are single Lua scripts (gateway/lua) that check and write
atomically: rate limits, the one-live-code-per-purpose rule, attempt counting
and single use cannot race. POST /challenge and POST /verify are one round
trip each: `create.lua` reads the account record itself; a challenge id
carries the account's tag, which names every key of the account (its record,
failures, devices: one hash slot), so `verify.lua` declares them all up front.
The record also holds the account's runtime state (`c:<purpose>`,
`s:<purpose>`, `g`), so a suspended or expired account can neither verify
nor resend a code it was sent before. A resend reads the challenge, then the
account, then runs its script.

On a Redis Cluster the send limits live in another slot than the account:
create and resend then run as single-slot steps (check, spend, write, refund
on refusal: gateway/otp/spending.py), through the same scripts.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import redis.asyncio as aioredis

from gateway import keys
from gateway.accounts import Account, AccountStore
from gateway.clock import iso_ms, now_ms
from gateway.config import Config
from gateway.crypto import (
    CHALLENGE_ID_LENGTH,
    Keyring,
    destination_aad,
    is_device_token,
    new_challenge_id,
    new_token,
    points_to,
    seal_code,
    token_digest,
)
from gateway.errors import (
    AccountExpired,
    AccountSuspended,
    Conflict,
    Forbidden,
    GatewayError,
    Gone,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unavailable,
    Unprocessable,
)
from gateway.otp import codes
from gateway.otp.scripts import Scripts
from gateway.otp.spending import Reply, Spend, paid
from gateway.otp.tokens import new_step_up
from gateway.otp.webhooks import Webhooks
from gateway.phones import Phone

_ID_RE = re.compile(f"[A-Za-z0-9_-]{{{CHALLENGE_ID_LENGTH}}}")
_LABEL_RE = re.compile(r"[^\x00-\x1f\x7f|]{0,64}")
# A cluster's send runs again from its check when the account's number or
# establishment changed between the check and the write; this many times.
_SPLIT_TRIES = 3

RATE_MESSAGES = {
    "cooldown": "a code was sent moments ago; wait before asking again",
    "account": "too many codes requested for this account",
    "number": "too many codes sent to this number",
    "ip": "too many codes requested from this address",
    "country": "too many codes sent to this country",
    "global": "the gateway's sending budget is exhausted",
    "establishment": "this establishment's sending budget is exhausted",
    "failures": "too many failed verifications for this account",
    "sends": "this challenge was sent the maximum number of times",
}


@dataclass(frozen=True, slots=True)
class Created:
    challenge_id: str
    channel: str
    destination: str
    expires_at_ms: int
    resend_after_ms: int
    region: str = ""  # the destination's region code (FR, RE...): for metrics
    answered_ms: int = 0  # Redis's clock when the answer was made (0: not known)
    replayed: bool = False  # the first answer to this Idempotency-Key, given again


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An `Idempotency-Key` on POST /challenge: which key (per API key, within the
    account's keys) and what the request asked, as digests (the request may hold
    a trusted-device token: only its hash is kept)."""

    key_digest: str
    fingerprint: str

    @classmethod
    def of(cls, api_key: str, header: str, request: dict[str, object]) -> Idempotency:
        """From the caller's API key name, the header's value and the request's meaning."""
        key = hashlib.sha256(f"{api_key}\0{header}".encode()).hexdigest()[:32]
        meaning = json.dumps(request, sort_keys=True, separators=(",", ":"))
        return cls(key, hashlib.sha256(meaning.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class Verified:
    account_id: str
    purpose: str
    token_kind: str  # "none" | "trusted_device" | "step_up"
    token: str | None
    until_ms: int
    destination: str | None = None  # E.164 of a number proven by this verification


def ended(
    state: bytes | None,
    expires_ms: int,
    now: int,
    pointer: Callable[[], bytes | None] | None = None,
    challenge_id: str = "",
) -> str | None:
    """Is the challenge live? `ended` of gateway/lua/lib.lua, for what Python
    reads without a script: None while live, else why not: the recorded state
    (verified, burnt, expired), "expired" past its expiry, or "replaced" when
    `pointer()` (the account's `c:<purpose>`, asked last) no longer names it."""
    if state is not None:
        return state.decode()
    if now >= expires_ms:
        return "expired"
    if pointer is not None and not points_to(pointer(), challenge_id):
        return "replaced"
    return None


def _ip_key(keyring: Keyring, client_ip: str | None) -> str:
    if client_ip is None:
        return keys.ip_rate("none")
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(client_ip)
    # A dual-stack front end reports IPv4 clients as ::ffff:a.b.c.d: these are
    # IPv4 clients, not one IPv6 /64 (which would put them all in one bucket).
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    # One IPv6 subscriber usually owns a whole /64: limit the prefix, not the address.
    subject = (
        str(ipaddress.ip_network(f"{addr}/64", strict=False)) if addr.version == 6 else str(addr)
    )
    return keys.ip_rate(keyring.tag("ip", subject))


def _rate_error(scope: bytes, wait_ms: int) -> RateLimited:
    name = scope.decode()
    return RateLimited(RATE_MESSAGES[name], retry_after=-(-int(wait_ms) // 1000), scope=name)


def _refusal(code: str, channel: str) -> GatewayError:
    """create.lua's refusals, before any limit is consumed."""
    match code:
        case "unknown_account":
            return NotFound("no such account", code="unknown_account")
        case "phone_required":
            return Conflict("this account has no phone number yet", code="phone_required")
        case "channel_unavailable":
            return Unprocessable(f"no {channel} delivery to this number", code=code)
        case "idempotency_conflict":
            return Unprocessable(
                "this Idempotency-Key was already used with another request",
                code="idempotency_conflict",
            )
        case _:
            return _dead_error(code.encode())


def _dead_error(state: bytes) -> Gone | NotFound | Forbidden:
    match state:
        case b"account_suspended":
            return AccountSuspended()
        case b"account_expired":
            return AccountExpired()
        case b"challenge_not_found":
            return NotFound("no such challenge", code="challenge_not_found")
        case b"already_used":
            return Gone("this code was already used", code="already_used")
        case b"too_many_attempts":
            return Gone("too many wrong codes: ask for a new one", code="too_many_attempts")
        case _:
            return Gone("this code has expired: ask for a new one", code="expired")


def _failure_reason(
    delivery: str, sends: bytes | None, reason: bytes | None, send: bytes | None
) -> str | None:
    """Why the latest send failed, when the gateway knows (queue.py's drops and
    dead letters, a provider's refusal): `fr`, recorded for send `fn`."""
    if delivery not in ("failed", "unreachable") or reason is None or send != (sends or b"1"):
        return None
    return reason.decode()


class ChallengeService:
    """The OTP core, shared by the HTTP handlers."""

    def __init__(
        self,
        redis: aioredis.Redis,
        scripts: Scripts,
        keyring: Keyring,
        accounts: AccountStore,
        config: Config,
        channels: frozenset[str],
        hooks: Webhooks | None = None,
    ) -> None:
        self.redis = redis
        self.hooks = hooks  # challenge events to the application
        self.scripts = scripts
        self.keyring = keyring
        self.accounts = accounts
        self.otp = config.otp
        self.channels = channels  # channels that have at least one provider

    def account_tag(self, account_id: str) -> str:
        return self.keyring.tag("account", account_id)

    # --- POST /challenge ------------------------------------------------------

    async def request(
        self,
        account_id: str,
        purpose: str,
        channel: str | None,
        client_ip: str | None,
        trusted_device_token: str | None = None,
        idempotency: Idempotency | None = None,
    ) -> Created | None:
        """POST /challenge: queue a code for the account's own number, in one
        round trip; None when a live trusted-device token spares the login.
        Under an `Idempotency-Key`, a repeat gets the first answer (`replayed`)."""
        digest = ""
        if purpose == "login" and trusted_device_token and is_device_token(trusted_device_token):
            digest = token_digest(trusted_device_token)
        return await self._create(
            account_id, purpose, channel, client_ip, digest, None, idempotency
        )

    async def create(
        self,
        account: Account,
        purpose: str,
        channel: str | None,
        client_ip: str | None,
        *,
        destination: Phone | None = None,
    ) -> Created:
        """Queue a code for the account's phone, or for `destination`: a number
        the account wants to switch to, which must prove itself first."""
        created = await self._create(
            account.account_id, purpose, channel, client_ip, "", destination
        )
        if created is None:  # pragma: no cover - no token was given
            raise RuntimeError("a challenge without a trusted-device token was spared")
        if destination is not None:
            masked = destination.masked(hide_all=account.phone_hidden)
            created = replace(created, destination=masked)
        return created

    async def _create(
        self,
        account_id: str,
        purpose: str,
        channel: str | None,
        client_ip: str | None,
        device_digest: str,
        destination: Phone | None,
        idempotency: Idempotency | None = None,
    ) -> Created | None:
        tag = self.account_tag(account_id)
        challenge_id = new_challenge_id(tag)
        code = codes.generate(self.otp.code_length)
        override: list[str | bytes] = ["", "", "", ""]  # the account's own number
        if destination is not None:
            override = [
                self._seal_destination(challenge_id, destination),
                self.keyring.tag("number", destination.e164),
                destination.region,
                destination.line_type.value,
            ]
        own_keys = [
            keys.account(tag),
            keys.challenge(challenge_id),
            keys.failures(tag),
            keys.stream_of(challenge_id),
            keys.trusted_devices(tag),
            keys.idempotency(tag, idempotency.key_digest if idempotency else ""),
        ]
        fingerprint = idempotency.fingerprint if idempotency else ""
        args: list[str | bytes] = [
            purpose,
            challenge_id,
            account_id,
            self.keyring.code_digest(challenge_id, code),
            seal_code(self.keyring, challenge_id, code),
            channel or "",
            device_digest,
            "1" if client_ip else "0",
            *override,
        ]
        ip_key = _ip_key(self.keyring, client_ip)
        if self.scripts.split:
            result = await self._create_split(
                own_keys, args, fingerprint, ip_key, client_ip is not None
            )
        else:
            all_keys = [*own_keys, keys.GLOBAL_RATE, ip_key]
            result = await self.scripts.create(
                keys=all_keys, args=[*args, "all", "", "", fingerprint]
            )
        outcome = result[0]
        if outcome == b"trusted" or (outcome == b"replay" and result[1] == b"trusted"):
            return None
        if outcome == b"rate":
            raise _rate_error(result[1], result[2])
        if outcome == b"refused":
            raise _refusal(result[1].decode(), result[2].decode())
        if outcome == b"replay":  # {'replay', 'ok', id, then as 'ok'}
            challenge_id, result = result[2].decode(), [b"ok", *result[3:]]
        masked = result[5].decode()
        if not masked and destination is None:
            masked = await self._masked_from_record(account_id)
        if self.hooks is not None and outcome == b"ok":
            await self.hooks.watch_expiry(challenge_id, int(result[1]))
        return Created(
            challenge_id=challenge_id,
            channel=result[3].decode(),
            destination=masked,
            expires_at_ms=int(result[1]),
            resend_after_ms=int(result[2]),
            region=result[4].decode(),
            answered_ms=int(result[6]),
            replayed=outcome == b"replay",
        )

    async def _create_split(
        self,
        own_keys: list[str],
        args: list[str | bytes],
        fingerprint: str,
        ip_key: str,
        has_ip: bool,
    ) -> Reply:
        """create.lua on a Redis Cluster: check, spend the limits, create
        (gateway/otp/spending.py); again when the account's number or
        establishment changed in between. A duplicate of an Idempotency-Key
        that won between the check and the write is a `replay`, refunded."""
        for _ in range(_SPLIT_TRIES):
            checked: Reply = await self.scripts.create(
                keys=own_keys, args=[*args, "check", "", "", fingerprint]
            )
            if checked[0] != b"check":
                return checked
            number_tag, region, establishment = (v.decode() for v in checked[1:4])
            spend = Spend(number_tag, region, establishment, ip_key, has_ip)
            spent = [*args, "spent", number_tag, establishment, fingerprint]
            result = await paid(
                self.scripts.limits,
                self.scripts.refund,
                spend,
                partial(self.scripts.create, keys=own_keys, args=spent),
            )
            if result[0] != b"moved":
                return result
        raise Unavailable("the account changed while its code was being sent; try again")

    async def _masked_from_record(self, account_id: str) -> str:
        """The masked number of a record written before records kept it."""
        account = await self.accounts.get(account_id)
        return "" if account is None else account.masked_phone() or ""

    def _seal_destination(self, challenge_id: str, phone: Phone) -> bytes:
        return self.keyring.phones.seal(phone.e164.encode(), destination_aad(challenge_id))

    # --- POST /verify ---------------------------------------------------------

    async def verify(
        self, challenge_id: str, code: str, trust_device: bool, device_label: str
    ) -> Verified:
        if not codes.is_well_formed(code, self.otp.code_length):
            raise InvalidRequest(f"code must be {self.otp.code_length} ASCII digits")
        if not _LABEL_RE.fullmatch(device_label):
            raise InvalidRequest("device_label: at most 64 printable characters, no '|'")
        if not _ID_RE.fullmatch(challenge_id):
            raise NotFound("no such challenge", code="challenge_not_found")
        tag = challenge_id[16:]
        # A device token only when one may be granted; a step-up token always
        # (the purpose, which decides, is the challenge's: only the script knows it).
        device_token, device_digest = new_token("td") if trust_device else ("", "")
        step_up_token, step_up_digest = new_step_up(tag)
        result = await self.scripts.verify(
            keys=[
                keys.challenge(challenge_id),
                keys.failures(tag),
                keys.trusted_devices(tag),
                keys.step_up(step_up_digest),
                keys.logins_of(tag),
                keys.account(tag),
            ],
            args=[
                self.keyring.code_digest(challenge_id, code),
                "1" if trust_device else "0",
                device_digest,
                device_label,
                challenge_id,
                tag,
            ],
        )
        verified = self._verify_outcome(challenge_id, result, device_token, step_up_token)
        if self.hooks is not None:
            await self.hooks.emit("verified", challenge_id)
        return verified

    def _verify_outcome(
        self, challenge_id: str, result: list[Any], device_token: str, step_up_token: str
    ) -> Verified:
        outcome = result[0]
        if outcome == b"verified":
            kind = result[3].decode()
            token = {"trusted_device": device_token, "step_up": step_up_token}.get(kind)
            destination = None
            if result[5]:
                opened = self.keyring.phones.open(result[5], destination_aad(challenge_id))
                destination = opened.decode()
            return Verified(
                result[1].decode(), result[2].decode(), kind, token, int(result[4]), destination
            )
        error: GatewayError
        if outcome == b"invalid_code":
            error = Unprocessable("wrong code", code="invalid_code", attempts_left=int(result[1]))
            error.purpose = result[2].decode()
        elif outcome == b"rate":
            error = _rate_error(result[1], result[2])
        else:
            error = _dead_error(outcome)
            if len(result) > 1:  # the attempt that burnt the challenge names its purpose
                error.purpose = result[1].decode()
        raise error

    # --- GET /challenge/{id} --------------------------------------------------

    async def status(self, challenge_id: str) -> dict[str, Any]:
        if not _ID_RE.fullmatch(challenge_id):
            raise NotFound("no such challenge", code="challenge_not_found")
        fields: list[Any] = await self.redis.hmget(
            keys.challenge(challenge_id), "v", "x", "c", "d", "n", "p", "a", "s", "fr", "fn"
        )
        state, expires, channel, delivery, attempts, purpose, account_id = fields[:7]
        if expires is None or account_id is None:
            raise NotFound("no such challenge", code="challenge_not_found")
        pointer: Any = await self.redis.hget(keys.account(challenge_id[16:]), b"c:" + purpose)
        why = ended(state, int(expires), now_ms(), lambda: pointer, challenge_id)
        status = "pending" if why is None else why if why in ("verified", "burnt") else "expired"
        body: dict[str, Any] = {
            "challenge_id": challenge_id,
            "status": status,
            "channel": channel.decode() if channel is not None else "sms",
            "delivery": delivery.decode() if delivery is not None else "queued",
            "attempts": int(attempts or 0),
            "purpose": purpose.decode(),
            "expires_at": iso_ms(int(expires)),
        }
        reason = _failure_reason(body["delivery"], *fields[7:])
        if reason is not None:
            body["reason"] = reason
        body["delivery_attempts"] = await self._attempts(challenge_id, fields[7])
        return body

    async def _attempts(self, challenge_id: str, sends: bytes | None) -> list[dict[str, str]]:
        """Each send with an outcome: channel, outcome, when; bounded by max_sends."""
        count = min(int(sends or 1), self.otp.max_sends)
        names = [f"{k}:{n}" for n in range(1, count + 1) for k in ("ch", "d", "t")]
        raw: list[Any] = await self.redis.hmget(keys.challenge(challenge_id), names)
        return [
            {"channel": ch.decode(), "outcome": d.decode(), "at": iso_ms(int(t))}
            for ch, d, t in zip(raw[0::3], raw[1::3], raw[2::3], strict=True)
            if ch is not None and d is not None and t is not None
        ]

    # --- POST /challenge/{id}/resend -----------------------------------------

    async def resend(
        self, challenge_id: str, channel: str | None, client_ip: str | None
    ) -> Created:
        if not _ID_RE.fullmatch(challenge_id):
            raise NotFound("no such challenge", code="challenge_not_found")
        fields: list[Any] = await self.redis.hmget(
            keys.challenge(challenge_id), "a", "c", "nh", "to"
        )
        account_id, current, number_tag, sealed_to = fields
        if account_id is None:
            raise NotFound("no such challenge", code="challenge_not_found")
        account = await self.accounts.get(account_id.decode())
        if account is not None:  # a deleted account's challenges are dead: the script says so
            account.require_active(datetime.now(UTC))
        # The number the code goes to: the one being proven, else the account's
        # (a number change since revoked the challenge: the script says so).
        phone = self._challenge_phone(challenge_id, account, sealed_to)
        accepted = phone.channels if phone is not None else ("sms", "voice")
        region = phone.region if phone is not None else ""
        channel = channel or (current.decode() if current is not None else "sms")
        if channel not in accepted or channel not in self.channels:
            raise Unprocessable(f"no {channel} delivery to this number", code="channel_unavailable")
        own_keys = [
            keys.challenge(challenge_id),
            keys.account(challenge_id[16:]),
            keys.stream_of(challenge_id),
        ]
        args = [challenge_id, channel, "1" if client_ip else "0"]
        spend = Spend(
            number_tag.decode(), region, "", _ip_key(self.keyring, client_ip), bool(client_ip)
        )
        if self.scripts.split:
            result = await self._resend_split(own_keys, args, spend)
        else:
            all_keys = [*own_keys, *spend.keys()]
            result = await self.scripts.resend(keys=all_keys, args=[*args, "all"])
        if result[0] == b"rate":
            raise _rate_error(result[1], result[2])
        if result[0] != b"ok":
            raise _dead_error(result[0])
        destination = (
            account.phone.masked(hide_all=account.phone_hidden)
            if account is not None and account.phone is not None
            else ""
        )
        return Created(challenge_id, channel, destination, int(result[2]), int(result[3]), region)

    async def _resend_split(self, own_keys: list[str], args: list[str], spend: Spend) -> Reply:
        """resend.lua on a Redis Cluster, as `_create_split`: check, spend, resend."""
        for _ in range(_SPLIT_TRIES):
            checked: Reply = await self.scripts.resend(keys=own_keys, args=[*args, "check"])
            if checked[0] != b"check":
                return checked
            spend = replace(spend, establishment=checked[1].decode())
            spent = [*args, "spent", spend.establishment]
            result = await paid(
                self.scripts.limits,
                self.scripts.refund,
                spend,
                partial(self.scripts.resend, keys=own_keys, args=spent),
            )
            if result[0] != b"moved":
                return result
        raise Unavailable("the account changed while its code was being sent; try again")

    def _challenge_phone(
        self, challenge_id: str, account: Account | None, sealed_to: bytes | None
    ) -> Phone | None:
        if sealed_to is not None:
            e164 = self.keyring.phones.open(sealed_to, destination_aad(challenge_id)).decode()
            return self.accounts.parse_phone(e164)
        return account.phone if account is not None else None
