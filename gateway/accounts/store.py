"""The account store: one Redis hash per account, indexes, and audit streams.

Layout (key names from `gateway.keys`; `tag` is the account's keyed tag,
which also picks its hash-slot group):

- `keys.account(tag)`: the record (`gateway.accounts.codec`: phone sealed). A
  version field `v` is bumped by every change and guards the
  read-modify-write cycle (optimistic concurrency, checked in Lua).
- `keys.account_index(group)`: set of the ids of one group's accounts (16).
- `keys.establishment(tag)`: set of the account ids of one establishment.
- `keys.history(tag)` and `keys.establishment_history(tag)`: audit
  streams (`gateway.accounts.audit`), kept after the account is deleted.
- `keys.logins(group)`: last logins (verify.lua and totp.lua write them).

Every change that touches more than one key is one Lua script
(`gateway/lua/account_*.lua`), so indexes, record and history never disagree.
On a Redis Cluster the establishment's set and history are in another slot
than the account's: they are written by their own script (`establishment.lua`),
the establishment's first on a creation and last on any other change, so that
a process dying in between leaves at worst an id without a record (readers
skip it, the sweep removes it) or a change missing from the establishment's
history (never from the account's); docs/architecture.md lists these races.

**Last admin.** A change that would leave an establishment without an active
admin (delete, demote, suspend, or move the expiry into the past of its last
active admin) is refused with 409 `last_admin`. The write names another active
admin it read and must find that one unchanged (its version), so two admins
demoting each other at once cannot both win. Deleting the last admin is
allowed only when it is the establishment's last account. On a Redis Cluster
that other admin's record is in another slot: every change that may remove an
active admin takes the establishment's lease (`SET NX PX`, released by its
token) and reads the admins again under it, so such changes of one
establishment run one at a time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Final, Literal

import redis.asyncio as aioredis

from gateway import keys
from gateway.accounts.audit import (
    ESTABLISHMENT_HISTORY_MAXLEN,
    HISTORY_MAXLEN,
    Entry,
    Who,
    decode_entry,
)
from gateway.accounts.codec import Codec, as_record, names
from gateway.accounts.records import (
    KEEP,
    MAX_PER_PAGE,
    MAX_SERVICES,
    Account,
    Keep,
    NewAccount,
    Role,
    Status,
    changed,
    check_account_id,
    check_bool,
    check_changes,
    check_email,
    check_expires_at,
    check_extension,
    check_page,
    check_role,
    check_services,
    check_text,
    valid_account_id,
)
from gateway.clock import from_ms, iso, normalize_time, to_ms, utc_now
from gateway.config import AccountsConfig
from gateway.crypto import Keyring
from gateway.errors import (
    Conflict,
    GatewayError,
    NotFound,
    Unavailable,
    Unprocessable,
)
from gateway.luascripts import Lua
from gateway.phones import InvalidPhone, Phone, PhonePolicy, parse_phone

__all__ = [
    "HISTORY_MAXLEN",
    "KEEP",
    "MAX_PER_PAGE",
    "MAX_SERVICES",
    "Account",
    "AccountStore",
    "Keep",
    "NewAccount",
    "Role",
    "Status",
    "Who",
    "from_ms",
    "iso",
    "to_ms",
    "utc_now",
    "valid_account_id",
]

log = logging.getLogger("otp_gateway.accounts")

_MAX_RETRIES: Final = 50
# A Redis Cluster's last-admin lease: held for one read-check-write (a few ms),
# expires on its own if its holder dies; a change waits this long for it.
_LEASE_MS: Final = 5000
_LEASE_WAIT_SECONDS: Final = 5.0

Mode = Literal["update", "revoke", "delete"]
# Aliases: inside AccountStore, `list` is the method.
_ScriptArgs = list[str | bytes | int]
_Entries = list[dict[str, Any]]
_Accounts = list[Account]
_Guard = tuple[str, bytes]  # another active admin's key and version
_Versions = list[tuple[str, bytes, bool]]
_Names = list[str]


class AccountStore:
    """Accounts in Redis: create, read, change, audit."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keyring: Keyring,
        phones: PhonePolicy,
        accounts: AccountsConfig,
        *,
        clock: Callable[[], datetime] = utc_now,
        lua: Lua | None = None,
    ) -> None:
        """`lua`: the process's script loader (the runtime's); by default one
        without settings, which the store's scripts do not read."""
        self._redis = redis
        self._keyring = keyring
        self._codec = Codec(keyring)
        self._policy = phones
        self._validity = timedelta(days=accounts.validity_days)
        self._clock = clock
        lua = lua or Lua(redis)
        self._create_script = lua.script("account_create")
        self._apply_script = lua.script("account_apply")
        self._audit_script = lua.script("account_audit")
        self._expire_script = lua.script("account_expire")
        self._login_script = lua.script("account_login")
        self._establishment_script = lua.script("establishment")
        self._release_script = lua.script("release")
        # On a Redis Cluster the establishment's keys are in another slot than
        # the account's: its writes go apart (establishment.lua), and the
        # last-admin guard is a lease (see the module docstring).
        self._split = lua.split

    def account_tag(self, account_id: str) -> str:
        return self._keyring.tag("account", account_id)

    def _record(self, account_id: str) -> str:
        """The record's key: named from the account's tag (its hash slot)."""
        return keys.account(self.account_tag(account_id))

    def _index(self, account_id: str) -> str:
        return keys.account_index(keys.group_of_tag(self.account_tag(account_id)))

    def _history(self, account_id: str) -> str:
        return keys.history(self.account_tag(account_id))

    def establishment_tag(self, establishment: str) -> str:
        return self._keyring.tag("establishment", establishment)

    def parse_phone(self, raw: str) -> Phone:
        """Parse input under the store's policy; `Unprocessable(invalid_phone)` otherwise."""
        try:
            return parse_phone(raw, self._policy)
        except InvalidPhone as exc:
            raise Unprocessable(str(exc), code="invalid_phone", reason=exc.reason) from None

    def now(self) -> datetime:
        """The store's clock, to the millisecond."""
        return normalize_time(self._clock())

    # --- create --------------------------------------------------------------

    async def create(self, fields: NewAccount, *, who: Who) -> Account:
        return await self.insert(self.prepare(fields), who=who)

    def prepare(self, fields: NewAccount) -> Account:
        """The account `fields` describe, checked (400 or 422), not yet stored."""
        now = self.now()
        expires = fields.expires_at
        account = Account(
            account_id=check_account_id(fields.account_id),
            establishment=check_text("establishment", fields.establishment, 200),
            last_name=check_text("last_name", fields.last_name),
            first_name=check_text("first_name", fields.first_name),
            email=check_email(fields.email),
            role=check_role(fields.role),
            phone=None,
            phone_hidden=check_bool("phone_hidden", fields.phone_hidden),
            phone_extension=check_extension(fields.phone_extension),
            services=check_services(fields.services),
            net_entreprises=check_bool("net_entreprises", fields.net_entreprises),
            expires_at=now + self._validity if expires is None else check_expires_at(expires),
            suspended=False,
            created_at=now,
            last_login_at=None,
        )
        if fields.phone is None:
            return account
        # Parsed last: the other fields' errors come first, whatever the number.
        return dataclasses.replace(account, phone=self.parse_phone(fields.phone))

    async def insert(self, account: Account, *, who: Who) -> Account:
        """Store a prepared account; 409 `account_exists` when the id is taken."""
        record = self._codec.encode(account, sealed=None)
        record["v"] = b"1"
        entry = Entry(
            account.account_id, account.establishment, "create", who, {}, account.audit_view()
        )
        items = entry.items(self.now())
        args: _ScriptArgs = [account.account_id, *self._maxlens(items)]
        for name, value in record.items():
            args += [name, value]
        own = [
            self._record(account.account_id),
            self._index(account.account_id),
            self._history(account.account_id),
        ]
        if self._split:
            created = await self._insert_split(account, own, args, items)
        else:
            establishment = account.establishment
            est = [self._establishment_key(establishment)]
            est.append(self._establishment_history_key(establishment))
            created = await self._create_script(keys=[*own, *est], args=args)
        if int(created) != 1:
            raise Conflict("an account with this id already exists", code="account_exists")
        return account

    async def _insert_split(
        self, account: Account, own: _Names, args: _ScriptArgs, items: _Names
    ) -> int:
        """A Redis Cluster's creation: the id in its establishment's set first,
        then the account, then the establishment's audit entry (or the id taken
        back when the account exists): a process dying in between leaves an id
        without a record, which readers skip and the sweep removes."""
        account_id, establishment = account.account_id, account.establishment
        added = await self._establishment_step(establishment, "reserve", account_id)
        created = int(await self._create_script(keys=own, args=args))
        if created == 1:
            await self._establishment_step(establishment, "settle", account_id, items)
        else:
            await self._establishment_step(establishment, "undo", account_id, flag=added == 1)
        return created

    async def _establishment_step(
        self,
        establishment: str,
        op: str,
        account_id: str,
        items: Sequence[str] = (),
        *,
        flag: bool = False,
    ) -> int:
        """establishment.lua: the establishment's set, history and pending
        creations, in their own slot (a Redis Cluster)."""
        tag = self.establishment_tag(establishment)
        done = await self._establishment_script(
            keys=[
                keys.establishment(tag),
                keys.establishment_history(tag),
                keys.establishment_pending(tag),
            ],
            args=[
                op,
                account_id,
                "1" if flag else "0",
                ESTABLISHMENT_HISTORY_MAXLEN,
                len(items),
                *items,
            ],
        )
        return int(done)

    async def sweep_establishments(self, grace_ms: int) -> int:
        """A Redis Cluster's clean-up of what a process dying between two slots
        left (see `_insert_split`): ids in an establishment's set without a
        record, once their creation is older than `grace_ms`, and pending
        marks of creations done. How many ids it took out; 0 on one instance."""
        if not self._split:
            return 0
        cutoff = to_ms(self.now()) - grace_ms
        removed = 0
        async for key in self._redis.scan_iter(match=keys.PREFIX + "e:*", count=500):
            removed += await self._sweep_establishment(key.decode(), cutoff)
        return removed

    async def _sweep_establishment(self, set_key: str, cutoff: int) -> int:
        tagged = set_key[len(keys.PREFIX + "e:") :]  # `{L}<establishment tag>`
        ids = names(list(await self._redis.smembers(set_key)))
        pending_key = keys.PREFIX + "ep:" + tagged
        marks: Any = await self._redis.hgetall(pending_key)
        pending = {_text(k): int(v) for k, v in marks.items()}
        alive = {a.account_id for a in await self.load(ids, skip_unreadable=True)}
        step = partial(self._establishment_script, keys=[
            set_key, keys.PREFIX + "eh:" + tagged, pending_key,
        ])  # fmt: skip
        removed = 0
        for account_id in ids:
            if account_id in alive:
                if pending.get(account_id, cutoff + 1) <= cutoff:  # settle never ran
                    await step(args=["undo", account_id, "0", 0, 0])
                continue
            if int(await step(args=["sweep", account_id, cutoff, 0, 0])) == 1:
                removed += 1
                if await self._redis.exists(self._record(account_id)):  # created meanwhile
                    await step(args=["readd", account_id, "0", 0, 0])
                    removed -= 1
        return removed

    async def _audit_establishment(self, account: Account, items: Sequence[str]) -> None:
        await self._establishment_step(account.establishment, "audit", account.account_id, items)

    # --- read ----------------------------------------------------------------

    async def get(self, account_id: str) -> Account | None:
        if not valid_account_id(account_id):
            return None
        async with self._redis.pipeline(transaction=False) as pipe:
            tag = self.account_tag(account_id)
            pipe.hgetall(keys.account(tag))
            pipe.hget(keys.logins_of(tag), tag)
            fields, login = await pipe.execute()
        raw = as_record(fields)
        return _with_login(self._codec.decode(account_id, raw), login) if raw else None

    async def require(self, account_id: str) -> Account:
        account = await self.get(account_id)
        if account is None:
            raise NotFound("no such account", code="unknown_account")
        return account

    async def load(self, account_ids: Sequence[str], *, skip_unreadable: bool = False) -> _Accounts:
        """The accounts among `account_ids` that exist, in that order, last logins merged.

        An unreadable record (e.g. sealed under another secret) fails the call,
        or with `skip_unreadable` is logged (by id) and left out.
        """
        if not account_ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for account_id in account_ids:
                pipe.hgetall(self._record(account_id))
            records = await pipe.execute()
        accounts = []
        for account_id, raw in zip(account_ids, records, strict=True):
            if not raw:
                continue
            try:
                accounts.append(self._codec.decode(account_id, as_record(raw)))
            except GatewayError:
                if not skip_unreadable:
                    raise
                log.warning("unreadable account record", extra={"account_id": account_id})
        return await self._with_logins(accounts)

    async def members(self, establishment: str) -> _Names:
        """The ids of an establishment's accounts, sorted."""
        found = await self._redis.smembers(self._establishment_key(establishment))
        return sorted(names(list(found)))

    async def all_in(self, establishment: str) -> _Accounts:
        """Every account of an establishment, sorted by id."""
        return await self.load(await self.members(establishment))

    async def list(self, establishment: str, page: int, per_page: int) -> tuple[_Accounts, int]:
        """One page of an establishment's accounts, sorted by id, and their total."""
        check_page(page, per_page)
        ids = await self.members(establishment)
        chosen = ids[(page - 1) * per_page : page * per_page]
        return await self.load(chosen), len(ids)

    async def scan(self, batch: int = 500) -> AsyncIterator[_Accounts]:
        """Every account, in batches (an id may come twice: SSCAN's guarantee),
        one group's index after the other."""
        for index in keys.ACCOUNT_INDEXES:
            cursor: int = 0
            while True:
                cursor, found = await self._redis.sscan(index, cursor, count=batch)
                yield await self.load(names(list(found)), skip_unreadable=True)
                if int(cursor) == 0:
                    break

    async def active_admins(self, establishment: str, now: datetime | None = None) -> _Accounts:
        """The establishment's admins that can act now."""
        at = now or self.now()
        return [a for a in await self.all_in(establishment) if a.is_active_admin(at)]

    async def _with_logins(self, accounts: _Accounts) -> _Accounts:
        """Merge the last logins that verify.lua writes into its group's hash,
        keyed by account tag (a field on the record would cost verify a write
        the record's readers would race with)."""
        if not accounts:
            return accounts
        tags = [self.account_tag(a.account_id) for a in accounts]
        async with self._redis.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.hget(keys.logins_of(tag), tag)
            logins = await pipe.execute()
        return [_with_login(a, seen) for a, seen in zip(accounts, logins, strict=True)]

    # --- history ---------------------------------------------------------------

    async def history(self, account_id: str, page: int, per_page: int) -> tuple[_Entries, int]:
        """An account's audit entries, newest first, and their total (kept after deletion)."""
        check_page(page, per_page)
        if not valid_account_id(account_id):
            return [], 0
        return await self._entries(self._history(account_id), page, per_page)

    async def establishment_history(
        self, establishment: str, page: int, per_page: int
    ) -> tuple[_Entries, int]:
        """Audit entries of every account of an establishment, newest first."""
        check_page(page, per_page)
        return await self._entries(self._establishment_history_key(establishment), page, per_page)

    async def last_entry(self, account_id: str) -> dict[str, Any] | None:
        """The newest audit entry of an account (its establishment, once deleted)."""
        entries, _ = await self.history(account_id, 1, 1)
        return entries[0] if entries else None

    async def _entries(self, key: str, page: int, per_page: int) -> tuple[_Entries, int]:
        total = int(await self._redis.xlen(key))
        skip = (page - 1) * per_page
        if skip >= total:
            return [], total
        rows = await self._redis.xrevrange(key, count=skip + per_page) or []
        return [decode_entry(entry_id, fields or {}) for entry_id, fields in rows[skip:]], total

    async def record(
        self,
        account: Account,
        action: str,
        *,
        who: Who,
        before: Mapping[str, Any] | None = None,
        after: Mapping[str, Any] | None = None,
    ) -> None:
        """Audit a sensitive action that changes no field of the record."""
        entry = Entry(
            account.account_id, account.establishment, action, who, before or {}, after or {}
        )
        items = entry.items(self.now())
        history = [self._history(account.account_id)]
        if not self._split:
            history.append(self._establishment_history_key(account.establishment))
        await self._audit_script(keys=history, args=self._maxlens(items))
        if self._split:
            await self._establishment_step(
                account.establishment, "audit", account.account_id, items
            )

    @staticmethod
    def _maxlens(items: _Names) -> _ScriptArgs:
        """The scripts' audit arguments: both maxlens, the item count, the items."""
        return [HISTORY_MAXLEN, ESTABLISHMENT_HISTORY_MAXLEN, len(items), *items]

    # --- changes -------------------------------------------------------------

    async def update(self, account_id: str, changes: Mapping[str, Any], *, who: Who) -> Account:
        """PATCH: change the fields in `UPDATABLE`; `status` sets or clears suspension."""
        attrs = check_changes(changes)

        def change(current: Account, now: datetime) -> Account:
            return dataclasses.replace(current, **attrs)

        return await self._mutate(account_id, "update", change, who=who)

    async def set_phone(
        self,
        account_id: str,
        phone: Phone | None,
        *,
        hidden: bool | None = None,
        extension: str | Literal[Keep.KEEP] | None = KEEP,
        who: Who,
        action: str = "phone",
    ) -> Account:
        """Switch the number at once; revokes trusted devices and pending challenges.

        `hidden=None` and `extension=KEEP` leave those fields as they are.
        """
        new_hidden = None if hidden is None else check_bool("phone_hidden", hidden)
        new_extension = extension if extension is KEEP else check_extension(extension)

        def change(current: Account, now: datetime) -> Account:
            return dataclasses.replace(
                current,
                phone=phone,
                phone_hidden=current.phone_hidden if new_hidden is None else new_hidden,
                phone_extension=(
                    current.phone_extension if new_extension is KEEP else new_extension
                ),
            )

        return await self._mutate(account_id, action, change, who=who, mode="revoke")

    async def renew(self, account_id: str, *, who: Who) -> Account:
        """expires_at = max(now, expires_at) + validity; suspension is left alone."""

        def change(current: Account, now: datetime) -> Account:
            return dataclasses.replace(
                current, expires_at=max(now, current.expires_at) + self._validity
            )

        return await self._mutate(account_id, "renew", change, who=who)

    async def extend(self, account_id: str, until: datetime, *, who: Who, action: str) -> Account:
        """Push expires_at to at least `until` (the sweep's reprieve for a last admin)."""

        def change(current: Account, now: datetime) -> Account:
            return dataclasses.replace(
                current, expires_at=max(current.expires_at, normalize_time(until))
            )

        return await self._mutate(account_id, action, change, who=who)

    async def delete(self, account_id: str, *, who: Who) -> None:
        """Remove the record, its index entries, trusted devices, TOTP and runtime state.

        The history streams stay (audit).
        """
        await self._mutate(account_id, "delete", lambda a, _: a, who=who, mode="delete")

    async def mark_expired(self, account: Account, *, who: Who) -> bool:
        """Record once that the account's expiry passed; revokes its trusted devices.

        False when already recorded for this expiry, or renewed since it was read.
        """
        before, after = {"status": Status.ACTIVE.value}, {"status": Status.EXPIRED.value}
        entry = Entry(account.account_id, account.establishment, "expire", who, before, after)
        items = entry.items(self.now())
        own = [
            self._record(account.account_id),
            self._history(account.account_id),
            keys.trusted_devices(self.account_tag(account.account_id)),
        ]
        if not self._split:
            own.append(self._establishment_history_key(account.establishment))
        done = await self._expire_script(
            keys=own, args=[to_ms(account.expires_at), *self._maxlens(items)]
        )
        if int(done) == 1 and self._split:
            await self._establishment_step(
                account.establishment, "audit", account.account_id, items
            )
        return int(done) == 1

    async def record_login(self, account_id: str) -> None:
        if not valid_account_id(account_id):
            raise NotFound("no such account", code="unknown_account")
        done = await self._login_script(keys=[self._record(account_id)], args=[to_ms(self.now())])
        if int(done) != 1:
            raise NotFound("no such account", code="unknown_account")

    async def _mutate(
        self,
        account_id: str,
        action: str,
        change: Callable[[Account, datetime], Account],
        *,
        who: Who,
        mode: Mode = "update",
    ) -> Account:
        """Read, change, write back if nobody wrote in between (else retry)."""
        if not valid_account_id(account_id):
            raise NotFound("no such account", code="unknown_account")
        change_of = _Change(account_id, action, change, who, mode)
        for _ in range(_MAX_RETRIES):
            done = await self._attempt(change_of, leased=False)
            if done is not None:
                return done
        raise Unavailable("the account is being changed by someone else, try again")

    async def _attempt(self, c: _Change, *, leased: bool) -> Account | None:
        """One read-change-write cycle; None when someone wrote in between.
        On a Redis Cluster a change that may remove an active admin runs under
        its establishment's lease (the guard), read again once it is held."""
        raw = as_record(await self._redis.hgetall(self._record(c.account_id)))
        if not raw:
            raise NotFound("no such account", code="unknown_account")
        current = self._codec.decode(c.account_id, raw)
        now = self.now()
        updated = c.change(current, now)
        to_set, to_delete = self._codec.diff(raw, updated)
        if c.mode == "update" and not to_set and not to_delete:
            return (await self._with_logins([current]))[0]
        after = None if c.mode == "delete" else updated
        if self._split and not leased and _removes_admin(current, after, now):
            async with self._lease(current.establishment):
                return await self._attempt(c, leased=True)
        guard = await self._guard(current, after, now)
        items = _entry(c.action, c.who, current, updated, c.mode).items(now)
        if self._split:
            guard = None  # the lease held stands for it
        args = _apply_args(raw, c.mode, items, updated, guard, to_set, to_delete)
        done = int(await self._apply_script(keys=self._apply_keys(current, guard), args=args))
        if done == -1:
            raise NotFound("no such account", code="unknown_account")
        if done != 1:
            return None
        if self._split:
            op = "remove" if c.mode == "delete" else "audit"
            await self._establishment_step(current.establishment, op, c.account_id, items)
        return (await self._with_logins([updated]))[0]

    @asynccontextmanager
    async def _lease(self, establishment: str) -> AsyncIterator[None]:
        """Hold the establishment's last-admin lease (a Redis Cluster): changes
        that may remove one of its active admins run one at a time. Waits for
        it a while (a poll with a deadline), then 503."""
        key = keys.establishment_lease(self.establishment_tag(establishment))
        token = secrets.token_urlsafe(16)
        deadline = asyncio.get_running_loop().time() + _LEASE_WAIT_SECONDS
        while not await self._redis.set(key, token, nx=True, px=_LEASE_MS):
            if asyncio.get_running_loop().time() >= deadline:
                raise Unavailable("the establishment's admins are being changed, try again")
            await asyncio.sleep(random.uniform(0.005, 0.02))
        try:
            yield
        finally:
            await self._release_script(keys=[key], args=[token])

    async def check_last_admin(self, before: Account, after: Account | None) -> None:
        """409 `last_admin` now when a change (None: a deletion) would take the
        establishment's last active admin away; the write checks it again,
        atomically. Lets a caller refuse before it spends a step-up grant."""
        await self._guard(before, after, self.now())

    async def _guard(self, before: Account, after: Account | None, now: datetime) -> _Guard | None:
        """None when no active admin is lost; else another active admin the write
        must find unchanged. 409 `last_admin` when there is none."""
        if not before.is_active_admin(now) or (after is not None and after.is_active_admin(now)):
            return None
        others = [
            a for a in await self._versions(before.establishment) if a[0] != before.account_id
        ]
        admins = [(aid, v) for aid, v, admin in others if admin]
        if admins:
            account_id, version = admins[0]
            return self._record(account_id), version
        if after is None and not others:
            return None  # the establishment's last account: nothing left to manage
        raise Conflict(
            "this is the establishment's last active admin: appoint another admin first",
            code="last_admin",
        )

    async def _versions(self, establishment: str) -> _Versions:
        """(id, version, is an active admin) of every account of an establishment."""
        ids = await self.members(establishment)
        now_ms = to_ms(self.now())
        async with self._redis.pipeline(transaction=False) as pipe:
            for account_id in ids:
                pipe.hmget(self._record(account_id), "v", "role", "suspended", "expires_at")
            rows = await pipe.execute()
        found = []
        for account_id, (version, role, suspended, expires) in zip(ids, rows, strict=True):
            if version is None:
                continue
            admin = role == b"admin" and suspended == b"0" and int(expires) > now_ms
            found.append((account_id, version, admin))
        return found

    def _apply_keys(self, account: Account, guard: _Guard | None) -> Sequence[str]:
        tag = self.account_tag(account.account_id)
        own = [
            keys.account(tag),
            keys.history(tag),
            keys.trusted_devices(tag),
            keys.account_index(keys.group_of_tag(tag)),
            keys.totp(tag),
            keys.reminders(tag),
        ]
        if self._split:
            return own
        return [
            *own,
            self._establishment_key(account.establishment),
            self._establishment_history_key(account.establishment),
            own[0] if guard is None else guard[0],
        ]

    def _establishment_key(self, establishment: str) -> str:
        return keys.establishment(self.establishment_tag(establishment))

    def _establishment_history_key(self, establishment: str) -> str:
        return keys.establishment_history(self.establishment_tag(establishment))


@dataclass(frozen=True, slots=True)
class _Change:
    """One change `_mutate` makes: to which account, what, for whom, how written."""

    account_id: str
    action: str
    change: Callable[[Account, datetime], Account]
    who: Who
    mode: Mode


def _removes_admin(before: Account, after: Account | None, now: datetime) -> bool:
    """The change (None: a deletion) takes an active admin away."""
    return before.is_active_admin(now) and not (after is not None and after.is_active_admin(now))


def _apply_args(
    raw: Mapping[bytes, bytes],
    mode: Mode,
    items: list[str],
    updated: Account,
    guard: _Guard | None,
    to_set: Mapping[str, bytes],
    to_delete: Sequence[str],
) -> _ScriptArgs:
    args: _ScriptArgs = [
        updated.account_id,
        raw[b"v"],
        mode,
        HISTORY_MAXLEN,
        ESTABLISHMENT_HISTORY_MAXLEN,
        b"" if guard is None else guard[1],
        len(items),
        *items,
        len(to_set),
    ]
    for name, value in to_set.items():
        args += [name, value]
    args += list(to_delete)
    return args


def _entry(action: str, who: Who, before: Account, after: Account, mode: Mode) -> Entry:
    old, new = before.audit_view(), after.audit_view()
    account_id, establishment = before.account_id, before.establishment
    if mode == "delete":
        return Entry(account_id, establishment, action, who, old, {})
    changed_before, changed_after = changed(old, new)
    if mode == "revoke":
        # A new number is always recorded, even when its mask looks the same.
        for name in ("phone", "phone_hidden", "phone_extension"):
            changed_before[name], changed_after[name] = old[name], new[name]
    return Entry(account_id, establishment, action, who, changed_before, changed_after)


def _with_login(account: Account, login: Any) -> Account:
    if login is None:
        return account
    seen = from_ms(int(login))
    if account.last_login_at is not None and account.last_login_at >= seen:
        return account
    return replace(account, last_login_at=seen)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
