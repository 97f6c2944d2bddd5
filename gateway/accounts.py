"""The account store: one Redis hash per account, indexes, and an audit stream.

Layout (key names from `gateway.keys`):

- `keys.account(id)`: hash of plain string fields. The phone number is kept only
  sealed (AES-GCM, bound to the account id); its region, line type and keyed
  fingerprint (`number_tag`) are kept in clear, they are not the number. Times
  are integer unix milliseconds. A version field `v` is bumped by every change
  and guards the read-modify-write cycle (optimistic concurrency, checked in Lua).
- `keys.ACCOUNT_INDEX`: set of every account id.
- `keys.establishment(tag)`: set of the account ids of one establishment.
- `keys.history(id)`: a stream of audit entries, capped near 1000 entries and
  kept after the account is deleted. Entries show a phone only masked.

Every change that touches more than one key is one Lua script, so indexes,
record and history never disagree.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Final, Literal

import redis.asyncio as aioredis

from gateway import keys
from gateway.config import AccountsConfig, Config
from gateway.crypto import Keyring
from gateway.errors import (
    Conflict,
    GatewayError,
    InvalidRequest,
    NotFound,
    Unavailable,
    Unprocessable,
)
from gateway.phones import InvalidPhone, LineType, Phone, PhonePolicy, parse_phone

HISTORY_MAXLEN: Final = 1000
MAX_PER_PAGE: Final = 1000
MAX_SERVICES: Final = 50
_MAX_RETRIES: Final = 50

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9._@-]{1,128}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_SERVICE = re.compile(r"[A-Za-z0-9 ._-]{1,64}")
_EXTENSION = re.compile(r"[0-9]{1,10}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 1, 1, tzinfo=UTC)

# Effects replication (Redis 6.2): XADD '*' is non-deterministic.
_PRELUDE = "if redis.replicate_commands then redis.replicate_commands() end\n"

_CREATE_LUA = (
    _PRELUDE
    + """
-- KEYS: 1 account hash, 2 account index, 3 establishment set, 4 history stream
-- ARGV: 1 account id, 2 history maxlen, 3..8 at/actor/action/request_id/before/after,
--       9.. field, value pairs of the record
-- Returns 1 when created, 0 when the account already exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local pairs = {}
for i = 9, #ARGV do pairs[#pairs + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(pairs))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*',
  'at', ARGV[3], 'actor', ARGV[4], 'action', ARGV[5], 'request_id', ARGV[6],
  'before', ARGV[7], 'after', ARGV[8])
return 1
"""
)

_APPLY_LUA = (
    _PRELUDE
    + """
-- KEYS: 1 account hash, 2 history stream, 3 trusted devices, 4 runtime hash,
--       5 account index, 6 establishment set
-- ARGV: 1 account id, 2 expected version, 3 mode (update|revoke|delete),
--       4 history maxlen, 5..10 at/actor/action/request_id/before/after,
--       11 suspended ('1'/'0'), 12 expires_at ms,
--       13 number of field/value pairs to set, then the pairs, then fields to delete
-- Returns 1 when applied, 0 when the record changed since it was read, -1 when gone.
local version = redis.call('HGET', KEYS[1], 'v')
if not version then return -1 end
if version ~= ARGV[2] then return 0 end
local mode = ARGV[3]
if mode == 'delete' then
  redis.call('DEL', KEYS[1], KEYS[3], KEYS[4])
  redis.call('SREM', KEYS[5], ARGV[1])
  redis.call('SREM', KEYS[6], ARGV[1])
else
  local nset = tonumber(ARGV[13])
  local first_del = 14 + 2 * nset
  if nset > 0 then
    local sets = {}
    for i = 14, first_del - 1 do sets[#sets + 1] = ARGV[i] end
    redis.call('HSET', KEYS[1], unpack(sets))
  end
  local dels = {}
  for i = first_del, #ARGV do dels[#dels + 1] = ARGV[i] end
  if #dels > 0 then redis.call('HDEL', KEYS[1], unpack(dels)) end
  redis.call('HINCRBY', KEYS[1], 'v', 1)
  -- verify.lua and resend.lua read these from the runtime hash: a pending
  -- code dies with a suspension or an expiry and lives again on reactivation.
  if redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('HSET', KEYS[4], 'sus', ARGV[11], 'ax', ARGV[12])
  end
  if mode == 'revoke' then
    -- A new number: trusted devices and pending challenges to the old one die.
    redis.call('DEL', KEYS[3])
    local fields = redis.call('HKEYS', KEYS[4])
    for _, f in ipairs(fields) do
      if string.sub(f, 1, 2) == 'c:' then redis.call('HDEL', KEYS[4], f) end
    end
  end
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
  'at', ARGV[5], 'actor', ARGV[6], 'action', ARGV[7], 'request_id', ARGV[8],
  'before', ARGV[9], 'after', ARGV[10])
return 1
"""
)

_LOGIN_LUA = """
-- KEYS: 1 account hash. ARGV: 1 now (ms). Returns 0 when the account is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_login_at', ARGV[1])
return 1
"""


class Status(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    SUSPENDED = "suspended"


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


class Keep(Enum):
    """Sentinel type: "leave this field as it is"."""

    KEEP = "keep"


KEEP: Final = Keep.KEEP


# --- times -------------------------------------------------------------------


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_ms(value: datetime) -> int:
    """Unix milliseconds; a naive datetime is taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def iso(value: datetime) -> str:
    """ISO 8601 UTC to the second: "2026-11-26T18:00:00Z"."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _normalize_time(value: datetime) -> datetime:
    """What survives a round trip through Redis: UTC, millisecond precision."""
    return from_ms(to_ms(value))


# --- records -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class NewAccount:
    """The fields of POST /accounts, type-checked by the HTTP layer.

    `phone` is the raw input; the store parses it.
    """

    account_id: str
    establishment: str
    last_name: str
    first_name: str
    email: str
    role: str
    phone: str | None = None
    phone_hidden: bool = False
    phone_extension: str | None = None
    services: Sequence[str] = ()
    net_entreprises: bool = False
    expires_at: datetime | None = None

    def __repr__(self) -> str:
        # The raw number never goes to logs or tracebacks.
        shown = "None" if self.phone is None else "'<redacted>'"
        return f"NewAccount(account_id={self.account_id!r}, phone={shown})"


@dataclass(frozen=True, slots=True, repr=False)
class Account:
    account_id: str
    establishment: str
    last_name: str
    first_name: str
    email: str
    role: Role
    phone: Phone | None
    phone_hidden: bool
    phone_extension: str | None
    services: tuple[str, ...]
    net_entreprises: bool
    expires_at: datetime
    suspended: bool
    created_at: datetime
    last_login_at: datetime | None

    def status(self, now: datetime) -> Status:
        if self.suspended:
            return Status.SUSPENDED
        if self.expires_at <= now:
            return Status.EXPIRED
        return Status.ACTIVE

    def masked_phone(self) -> str | None:
        """The number as audit entries and logs may show it."""
        return None if self.phone is None else self.phone.masked(hide_all=self.phone_hidden)

    def to_json(self, now: datetime) -> dict[str, Any]:
        """The contract's view: a hidden number is null for every caller."""
        shown = None if self.phone is None or self.phone_hidden else self.phone.e164
        return {
            "account_id": self.account_id,
            "establishment": self.establishment,
            "last_name": self.last_name,
            "first_name": self.first_name,
            "email": self.email,
            "role": self.role.value,
            "phone": shown,
            "phone_hidden": self.phone_hidden,
            "phone_extension": self.phone_extension,
            "phone_set": self.phone is not None,
            "services": list(self.services),
            "net_entreprises": self.net_entreprises,
            "expires_at": iso(self.expires_at),
            "status": self.status(now).value,
            "created_at": iso(self.created_at),
            "last_login_at": None if self.last_login_at is None else iso(self.last_login_at),
        }

    def audit_view(self) -> dict[str, Any]:
        """The changeable fields as history entries record them (phone masked)."""
        return {
            "establishment": self.establishment,
            "last_name": self.last_name,
            "first_name": self.first_name,
            "email": self.email,
            "role": self.role.value,
            "phone": self.masked_phone(),
            "phone_hidden": self.phone_hidden,
            "phone_extension": self.phone_extension,
            "services": list(self.services),
            "net_entreprises": self.net_entreprises,
            "expires_at": iso(self.expires_at),
            "suspended": self.suspended,
        }

    def __repr__(self) -> str:
        return (
            f"Account(account_id={self.account_id!r}, role={self.role.value!r}, "
            f"phone={self.masked_phone()!r}, suspended={self.suspended!r})"
        )


# --- validation --------------------------------------------------------------


def valid_account_id(value: object) -> bool:
    return isinstance(value, str) and _ACCOUNT_ID.fullmatch(value) is not None


def _check_account_id(value: object) -> str:
    if not valid_account_id(value):
        raise InvalidRequest("account_id must be 1-128 characters of A-Z a-z 0-9 . _ @ -")
    assert isinstance(value, str)
    return value


def _check_text(field: str, value: object, max_length: int = 100) -> str:
    if (
        not isinstance(value, str)
        or not 1 <= len(value) <= max_length
        or not value.strip()
        or _CONTROL.search(value)
    ):
        raise InvalidRequest(
            f"{field} must be 1-{max_length} characters without control characters"
        )
    return value


def _check_email(value: object) -> str:
    if (
        not isinstance(value, str)
        or len(value) > 254
        or _EMAIL.fullmatch(value) is None
        or _CONTROL.search(value)
    ):
        raise InvalidRequest("email must be an e-mail address of at most 254 characters")
    return value


def _check_role(value: object) -> Role:
    if not isinstance(value, str) or value not in Role.__members__.values():
        raise InvalidRequest("role must be admin or user")
    return Role(value)


def _check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{field} must be a boolean")
    return value


def _check_extension(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or _EXTENSION.fullmatch(value) is None:
        raise InvalidRequest("phone_extension must be 1-10 digits")
    return value


def _check_services(value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidRequest("services must be a list of strings")
    if len(value) > MAX_SERVICES:
        raise InvalidRequest(f"services must hold at most {MAX_SERVICES} entries")
    for item in value:
        if not isinstance(item, str) or _SERVICE.fullmatch(item) is None:
            raise InvalidRequest("services entries must be 1-64 characters of A-Z a-z 0-9 . _ - ")
    return tuple(dict.fromkeys(value))


def _check_expires_at(value: object) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidRequest("expires_at must be an ISO 8601 time") from None
    if not isinstance(value, datetime):
        raise InvalidRequest("expires_at must be an ISO 8601 time")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if not _EPOCH <= value < _LATEST:
        raise InvalidRequest("expires_at is out of range")
    return _normalize_time(value)


def _check_status(value: object) -> bool:
    """PATCH status: returns the new `suspended` flag."""
    if value == Status.SUSPENDED.value:
        return True
    if value == Status.ACTIVE.value:
        return False
    raise InvalidRequest("status can only be set to active or suspended")


# PATCH field -> (Account attribute, checker)
_UPDATABLE: dict[str, tuple[str, Callable[[object], Any]]] = {
    "last_name": ("last_name", lambda v: _check_text("last_name", v)),
    "first_name": ("first_name", lambda v: _check_text("first_name", v)),
    "email": ("email", _check_email),
    "role": ("role", _check_role),
    "services": ("services", _check_services),
    "net_entreprises": ("net_entreprises", lambda v: _check_bool("net_entreprises", v)),
    "expires_at": ("expires_at", _check_expires_at),
    "status": ("suspended", _check_status),
    "phone_extension": ("phone_extension", _check_extension),
}


def _check_page(page: int, per_page: int) -> None:
    if page < 1:
        raise InvalidRequest("page counts from 1")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidRequest(f"per_page must be between 1 and {MAX_PER_PAGE}")


def _changed(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    names = [k for k in after if before.get(k) != after[k]]
    return {k: before.get(k) for k in names}, {k: after[k] for k in names}


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class _Audit:
    """One history entry to append (the stream gives it its id)."""

    account_id: str
    action: str
    actor: str
    request_id: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]

    def payload(self, at: datetime) -> list[str]:
        """at, actor, action, request_id, before, after: the order the scripts expect."""
        return [
            iso(at),
            self.actor,
            self.action,
            self.request_id,
            _json(self.before),
            _json(self.after),
        ]


Mode = Literal["update", "revoke", "delete"]
# Aliases: inside AccountStore, `list` is the method.
_ScriptArgs = list[str | bytes | int]
_Entries = list[dict[str, Any]]
_Accounts = list[Account]
_Record = dict[bytes, bytes]


def _record(raw: Mapping[Any, Any]) -> _Record:
    """HGETALL's answer as bytes, whatever the client's decode_responses."""

    def raw_bytes(value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    return {raw_bytes(k): raw_bytes(v) for k, v in raw.items()}


# --- the store ---------------------------------------------------------------


class AccountStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        keyring: Keyring,
        phones: PhonePolicy,
        accounts: AccountsConfig,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._redis = redis
        self._keyring = keyring
        self._policy = phones
        self._validity = timedelta(days=accounts.validity_days)
        self._clock = clock
        self._create_script = redis.register_script(_CREATE_LUA)
        self._apply_script = redis.register_script(_APPLY_LUA)
        self._login_script = redis.register_script(_LOGIN_LUA)

    @classmethod
    def from_config(cls, redis: aioredis.Redis, keyring: Keyring, config: Config) -> AccountStore:
        policy = PhonePolicy(
            default_region=config.phones.default_region,
            allowed_regions=frozenset(config.phones.allowed_regions),
            allow_voip=config.phones.allow_voip,
        )
        return cls(redis, keyring, policy, config.accounts)

    def account_tag(self, account_id: str) -> str:
        return self._keyring.tag("account", account_id)

    def parse_phone(self, raw: str) -> Phone:
        """Parse input under the store's policy; `Unprocessable(invalid_phone)` otherwise."""
        try:
            return parse_phone(raw, self._policy)
        except InvalidPhone as exc:
            raise Unprocessable(str(exc), code="invalid_phone", reason=exc.reason) from None

    def _now(self) -> datetime:
        return _normalize_time(self._clock())

    # --- create / read -----------------------------------------------------

    async def create(self, fields: NewAccount, *, actor: str, request_id: str) -> Account:
        now = self._now()
        account = self._validate_new(fields, now)
        record = self._encode(account, sealed=None)
        record["v"] = b"1"
        audit = _Audit(account.account_id, "create", actor, request_id, {}, account.audit_view())
        args: _ScriptArgs = [account.account_id, HISTORY_MAXLEN, *audit.payload(now)]
        for name, value in record.items():
            args += [name, value]
        created = await self._create_script(
            keys=[
                keys.account(account.account_id),
                keys.ACCOUNT_INDEX,
                self._establishment_key(account.establishment),
                keys.history(account.account_id),
            ],
            args=args,
        )
        if int(created) != 1:
            raise Conflict("an account with this id already exists", code="account_exists")
        return account

    def _validate_new(self, fields: NewAccount, now: datetime) -> Account:
        account_id = _check_account_id(fields.account_id)
        expires = fields.expires_at
        account = Account(
            account_id=account_id,
            establishment=_check_text("establishment", fields.establishment, 200),
            last_name=_check_text("last_name", fields.last_name),
            first_name=_check_text("first_name", fields.first_name),
            email=_check_email(fields.email),
            role=_check_role(fields.role),
            phone=None,
            phone_hidden=_check_bool("phone_hidden", fields.phone_hidden),
            phone_extension=_check_extension(fields.phone_extension),
            services=_check_services(fields.services),
            net_entreprises=_check_bool("net_entreprises", fields.net_entreprises),
            expires_at=now + self._validity if expires is None else _check_expires_at(expires),
            suspended=False,
            created_at=now,
            last_login_at=None,
        )
        if fields.phone is None:
            return account
        # Parsed last: the other fields' errors come first, whatever the number.
        return dataclasses.replace(account, phone=self.parse_phone(fields.phone))

    async def get(self, account_id: str) -> Account | None:
        if not valid_account_id(account_id):
            return None
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.account(account_id))
            pipe.hget(keys.LOGINS, self.account_tag(account_id))
            fields, login = await pipe.execute()
        raw = _record(fields)
        return _with_login(self._decode(account_id, raw), login) if raw else None

    async def _with_logins(self, accounts: list[Account]) -> list[Account]:
        """Merge the last logins that verify.lua writes into one hash keyed by
        account tag (verify cannot name the account's key up front)."""
        if not accounts:
            return accounts
        tags = [self.account_tag(a.account_id) for a in accounts]
        logins = await self._redis.hmget(keys.LOGINS, tags)
        return [_with_login(a, seen) for a, seen in zip(accounts, logins, strict=True)]

    async def require(self, account_id: str) -> Account:
        account = await self.get(account_id)
        if account is None:
            raise NotFound("no such account", code="unknown_account")
        return account

    async def list(self, establishment: str, page: int, per_page: int) -> tuple[_Accounts, int]:
        """One page of an establishment's accounts, sorted by id, and their total."""
        _check_page(page, per_page)
        members = await self._redis.smembers(self._establishment_key(establishment))
        ids = sorted(m.decode() if isinstance(m, bytes) else m for m in members)
        chosen = ids[(page - 1) * per_page : page * per_page]
        if not chosen:
            return [], len(ids)
        async with self._redis.pipeline(transaction=False) as pipe:
            for account_id in chosen:
                pipe.hgetall(keys.account(account_id))
            records = await pipe.execute()
        accounts = [
            self._decode(account_id, _record(raw))
            for account_id, raw in zip(chosen, records, strict=True)
            if raw
        ]
        return await self._with_logins(accounts), len(ids)

    async def history(self, account_id: str, page: int, per_page: int) -> tuple[_Entries, int]:
        """Audit entries, newest first, and their total (kept after deletion)."""
        _check_page(page, per_page)
        if not valid_account_id(account_id):
            return [], 0
        key = keys.history(account_id)
        total = await self._redis.xlen(key)
        skip = (page - 1) * per_page
        if skip >= total:
            return [], total
        rows = await self._redis.xrevrange(key, count=skip + per_page) or []
        entries = [_history_entry(entry_id, fields or {}) for entry_id, fields in rows[skip:]]
        return entries, total

    # --- changes -------------------------------------------------------------

    async def update(
        self,
        account_id: str,
        changes: Mapping[str, Any],
        *,
        actor: str,
        request_id: str,
    ) -> Account:
        """PATCH: change the fields in `_UPDATABLE`; `status` sets or clears suspension."""
        unknown = sorted(set(changes) - set(_UPDATABLE))
        if unknown:
            raise InvalidRequest(f"{unknown[0]} cannot be changed here")
        attrs: dict[str, Any] = {}
        for name, value in changes.items():
            attr, check = _UPDATABLE[name]
            attrs[attr] = check(value)

        def change(current: Account, now: datetime) -> Account:
            return dataclasses.replace(current, **attrs)

        return await self._mutate(account_id, "update", change, actor=actor, request_id=request_id)

    async def set_phone(
        self,
        account_id: str,
        phone: Phone | None,
        *,
        hidden: bool | None = None,
        extension: str | Literal[Keep.KEEP] | None = KEEP,
        actor: str,
        request_id: str,
    ) -> Account:
        """Switch the number at once; revokes trusted devices and pending challenges.

        `hidden=None` and `extension=KEEP` leave those fields as they are.
        """
        new_hidden = None if hidden is None else _check_bool("phone_hidden", hidden)
        new_extension = extension if extension is KEEP else _check_extension(extension)

        def change(current: Account, now: datetime) -> Account:
            return dataclasses.replace(
                current,
                phone=phone,
                phone_hidden=current.phone_hidden if new_hidden is None else new_hidden,
                phone_extension=(
                    current.phone_extension if new_extension is KEEP else new_extension
                ),
            )

        return await self._mutate(
            account_id, "phone", change, actor=actor, request_id=request_id, mode="revoke"
        )

    async def renew(self, account_id: str, *, actor: str, request_id: str) -> Account:
        """expires_at = max(now, expires_at) + validity; suspension is left alone."""

        def change(current: Account, now: datetime) -> Account:
            return dataclasses.replace(
                current, expires_at=max(now, current.expires_at) + self._validity
            )

        return await self._mutate(account_id, "renew", change, actor=actor, request_id=request_id)

    async def delete(self, account_id: str, *, actor: str, request_id: str) -> None:
        """Remove the record, its index entries, trusted devices and runtime state.

        The history stream stays (audit).
        """
        await self._mutate(
            account_id, "delete", lambda a, _: a, actor=actor, request_id=request_id, mode="delete"
        )

    async def record_login(self, account_id: str) -> None:
        if not valid_account_id(account_id):
            raise NotFound("no such account", code="unknown_account")
        done = await self._login_script(keys=[keys.account(account_id)], args=[to_ms(self._now())])
        if int(done) != 1:
            raise NotFound("no such account", code="unknown_account")

    async def _mutate(
        self,
        account_id: str,
        action: str,
        change: Callable[[Account, datetime], Account],
        *,
        actor: str,
        request_id: str,
        mode: Mode = "update",
    ) -> Account:
        """Read, change, write back if nobody wrote in between (else retry)."""
        if not valid_account_id(account_id):
            raise NotFound("no such account", code="unknown_account")
        key = keys.account(account_id)
        for _ in range(_MAX_RETRIES):
            raw = _record(await self._redis.hgetall(key))
            if not raw:
                raise NotFound("no such account", code="unknown_account")
            current = self._decode(account_id, raw)
            now = self._now()
            updated = change(current, now)
            to_set, to_delete = self._diff(raw, updated)
            if mode == "update" and not to_set and not to_delete:
                return (await self._with_logins([current]))[0]
            audit = self._audit(action, actor, request_id, current, updated, mode)
            done = int(
                await self._apply_script(
                    keys=self._apply_keys(current),
                    args=self._apply_args(raw, mode, audit, now, updated, to_set, to_delete),
                )
            )
            if done == 1:
                return (await self._with_logins([updated]))[0]
            if done == -1:
                raise NotFound("no such account", code="unknown_account")
        raise Unavailable("the account is being changed by someone else, try again")

    def _apply_keys(self, account: Account) -> Sequence[str]:
        tag = self.account_tag(account.account_id)
        return [
            keys.account(account.account_id),
            keys.history(account.account_id),
            keys.trusted_devices(tag),
            keys.runtime(tag),
            keys.ACCOUNT_INDEX,
            self._establishment_key(account.establishment),
        ]

    @staticmethod
    def _apply_args(
        raw: Mapping[bytes, bytes],
        mode: Mode,
        audit: _Audit,
        now: datetime,
        updated: Account,
        to_set: Mapping[str, bytes],
        to_delete: Sequence[str],
    ) -> _ScriptArgs:
        args: _ScriptArgs = [
            audit.account_id,
            raw[b"v"],
            mode,
            HISTORY_MAXLEN,
            *audit.payload(now),
            "1" if updated.suspended else "0",
            to_ms(updated.expires_at),
            len(to_set),
        ]
        for name, value in to_set.items():
            args += [name, value]
        args += list(to_delete)
        return args

    @staticmethod
    def _audit(
        action: str, actor: str, request_id: str, before: Account, after: Account, mode: Mode
    ) -> _Audit:
        account_id = before.account_id
        old, new = before.audit_view(), after.audit_view()
        if mode == "delete":
            return _Audit(account_id, action, actor, request_id, old, {})
        changed_before, changed_after = _changed(old, new)
        if mode == "revoke":
            # A new number is always recorded, even when its mask looks the same.
            for name in ("phone", "phone_hidden", "phone_extension"):
                changed_before[name], changed_after[name] = old[name], new[name]
        return _Audit(account_id, action, actor, request_id, changed_before, changed_after)

    # --- encoding ------------------------------------------------------------

    def _establishment_key(self, establishment: str) -> str:
        return keys.establishment(self._keyring.tag("establishment", establishment))

    def _seal(self, account_id: str, phone: Phone) -> bytes:
        return self._keyring.phones.seal(phone.e164.encode(), aad=account_id.encode())

    def _encode(self, account: Account, *, sealed: bytes | None) -> dict[str, bytes]:
        """The hash fields of a record; `sealed` reuses the stored ciphertext."""
        record: dict[str, str | bytes] = {
            "establishment": account.establishment,
            "last_name": account.last_name,
            "first_name": account.first_name,
            "email": account.email,
            "role": account.role.value,
            "phone_hidden": "1" if account.phone_hidden else "0",
            "services": json.dumps(list(account.services)),
            "net_entreprises": "1" if account.net_entreprises else "0",
            "expires_at": str(to_ms(account.expires_at)),
            "suspended": "1" if account.suspended else "0",
            "created_at": str(to_ms(account.created_at)),
        }
        if account.phone is not None:
            record["phone"] = sealed or self._seal(account.account_id, account.phone)
            record["region"] = account.phone.region
            record["line_type"] = account.phone.line_type.value
            record["number_tag"] = self._keyring.tag("number", account.phone.e164)
        if account.phone_extension is not None:
            record["phone_extension"] = account.phone_extension
        if account.last_login_at is not None:
            record["last_login_at"] = str(to_ms(account.last_login_at))
        return {k: v.encode() if isinstance(v, str) else v for k, v in record.items()}

    def _diff(
        self, raw: Mapping[bytes, bytes], updated: Account
    ) -> tuple[dict[str, bytes], Sequence[str]]:
        """Fields to write and fields to remove to turn `raw` into `updated`."""
        sealed = None
        if updated.phone is not None and b"phone" in raw:
            stored = self._open(updated.account_id, raw[b"phone"])
            if stored == updated.phone.e164:
                sealed = raw[b"phone"]
        record = self._encode(updated, sealed=sealed)
        to_set = {k: v for k, v in record.items() if raw.get(k.encode()) != v}
        to_delete = [
            name.decode()
            for name in raw
            if name != b"v" and name.decode() not in record and name != b"last_login_at"
        ]
        return to_set, to_delete

    def _open(self, account_id: str, sealed: bytes) -> str:
        return self._keyring.phones.open(sealed, aad=account_id.encode()).decode()

    def _decode(self, account_id: str, raw: Mapping[bytes, bytes]) -> Account:
        try:
            return self._decode_fields(account_id, {k.decode(): v for k, v in raw.items()})
        except Exception as exc:
            # Never chained: the cause may quote record data.
            raise GatewayError(f"account record is unreadable ({type(exc).__name__})") from None

    def _decode_fields(self, account_id: str, f: Mapping[str, bytes]) -> Account:
        def text(name: str) -> str:
            return f[name].decode()

        phone = None
        if "phone" in f:
            phone = Phone(
                self._open(account_id, f["phone"]), text("region"), LineType(text("line_type"))
            )
        login = f.get("last_login_at")
        extension = f.get("phone_extension")
        return Account(
            account_id=account_id,
            establishment=text("establishment"),
            last_name=text("last_name"),
            first_name=text("first_name"),
            email=text("email"),
            role=Role(text("role")),
            phone=phone,
            phone_hidden=f["phone_hidden"] == b"1",
            phone_extension=None if extension is None else extension.decode(),
            services=tuple(json.loads(f["services"])),
            net_entreprises=f["net_entreprises"] == b"1",
            expires_at=from_ms(int(f["expires_at"])),
            suspended=f["suspended"] == b"1",
            created_at=from_ms(int(f["created_at"])),
            last_login_at=None if login is None else from_ms(int(login)),
        )


def _history_entry(entry_id: Any, fields: Mapping[Any, Any]) -> dict[str, Any]:
    def text(value: Any) -> str:
        return value.decode() if isinstance(value, bytes) else str(value)

    f = {text(k): text(v) for k, v in fields.items()}
    return {
        "id": text(entry_id),
        "at": f.get("at"),
        "actor": f.get("actor"),
        "action": f.get("action"),
        "request_id": f.get("request_id"),
        "before": json.loads(f.get("before") or "{}"),
        "after": json.loads(f.get("after") or "{}"),
    }


def _with_login(account: Account, login: Any) -> Account:
    if login is None:
        return account
    seen = from_ms(int(login))
    if account.last_login_at is not None and account.last_login_at >= seen:
        return account
    return replace(account, last_login_at=seen)
