"""Account management with its rules: who may act on which account, step-up, audit, notices.

Three kinds of caller (`Caller.scope`):

- `operator`: support staff. Every establishment. Exempt from step-up, and
  audited as such (`step_up: "exempt"`).
- `admin`: the admin back end, acting for the admin account named in
  `X-Acting-Account`. That account must be an admin (else 403 `forbidden`)
  that can act (403 `account_expired` / `account_suspended`): so when an
  establishment's only admin is expired or suspended, only an operator can
  unblock it. An admin reaches its own establishment only: any other account
  answers 404 `unknown_account`, exactly as if it did not exist. A key bound
  to establishments (`[[api_keys]] establishments`) acts only for admins of
  those: any other acting account, existing or not, is 404 `unknown_account`
  before its role or state is looked at.
- `otp`: the login front end acting for the signed-in user (self-service).

Sensitive actions need `X-Step-Up-Token`, a single-use grant from a `/verify`
of the acting account for exactly that purpose: creating an account
(`account.create`); changing a phone number or an e-mail address
(`contact.update`); a destructive change (`account.manage`): suspending,
deleting, demoting an admin, bringing an expiry forward, revoking trusted
devices or an authenticator app. Without it: 401 `step_up_required` naming
the purpose. The token is spent only once the request is otherwise valid
(400, 404, 409 `last_admin` leave it usable).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from gateway.accounts.audit import Who
from gateway.accounts.notices import Notifier
from gateway.accounts.records import (
    KEEP,
    Account,
    Keep,
    NewAccount,
    Role,
    check_bool,
    check_changes,
    check_extension,
)
from gateway.accounts.store import AccountStore
from gateway.errors import Forbidden, InvalidRequest, NotFound, StepUpRequired, Unprocessable
from gateway.otp.tokens import StepUps, TrustedDevice, TrustedDevices

ACCOUNT_CREATE: Final = "account.create"
CONTACT_UPDATE: Final = "contact.update"
ACCOUNT_MANAGE: Final = "account.manage"
_BLANK_CONCURRENCY: Final = 32


def destructive(before: Account, after: Account) -> bool:
    """Whether a change takes access away: suspends, demotes, or brings the expiry forward."""
    return (
        (after.suspended and not before.suspended)
        or (before.role is Role.ADMIN and after.role is not Role.ADMIN)
        or after.expires_at < before.expires_at
    )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the key's scope and name, and the account it acts for."""

    scope: Literal["operator", "admin", "otp"]
    key_name: str
    request_id: str
    acting: Account | None = None

    def who(self, step_up: str | None = None) -> Who:
        acting_for = None if self.acting is None else self.acting.account_id
        return Who(f"{self.scope}:{self.key_name}", self.request_id, acting_for, step_up)

    def sees(self, account: Account) -> bool:
        """Whether `account` exists for this caller (tenant isolation)."""
        if self.acting is None:
            return True
        if self.scope == "admin":
            return account.establishment == self.acting.establishment
        return account.account_id == self.acting.account_id

    def by(self, account: Account) -> str:
        """Who made a change, as a change notice tells the account."""
        if self.acting is not None and self.acting.account_id == account.account_id:
            return "self"
        return "admin" if self.scope == "admin" else "operator"


@dataclass(frozen=True, slots=True)
class Blanked:
    """The outcome of the deployment-day reset."""

    accounts: int
    blanked: int


class AccountAdmin:
    """The account changes admins and operators make, with their rules."""

    def __init__(
        self,
        store: AccountStore,
        step_ups: StepUps,
        trusted: TrustedDevices,
        notifier: Notifier,
    ) -> None:
        self.store = store
        self.step_ups = step_ups
        self.trusted = trusted
        self.notifier = notifier

    # --- callers ----------------------------------------------------------------

    async def acting_admin(
        self, account_id: str, bound_to: frozenset[str] | None = None
    ) -> Account:
        """The admin account an `admin` key acts for; 403 when it cannot act.

        With `bound_to` (the key's establishments), an account elsewhere is
        404 like one that does not exist: the key learns nothing about it.
        """
        account = await self.store.get(account_id)
        if bound_to is not None and (account is None or account.establishment not in bound_to):
            raise NotFound("no such account", code="unknown_account")
        if account is None or account.role is not Role.ADMIN:
            raise Forbidden("X-Acting-Account must name an admin account")
        account.require_active(self.store.now())
        return account

    async def target(self, caller: Caller, account_id: str) -> Account:
        """The account a call is about; 404 when it is not the caller's to see."""
        account = await self.store.get(account_id)
        if account is None or not caller.sees(account):
            raise NotFound("no such account", code="unknown_account")
        return account

    async def step_up(self, caller: Caller, purpose: str, token: str | None) -> Who:
        """Spend the caller's step-up grant for `purpose` (operators are exempt)."""
        if caller.scope == "operator":
            return caller.who("exempt")
        assert caller.acting is not None
        acting = caller.acting.account_id
        if token and await self.step_ups.consume(token, acting, purpose):
            return caller.who("verified")
        raise StepUpRequired(
            f"this action needs X-Step-Up-Token from a /verify of {acting} for {purpose}",
            purpose=purpose,
        )

    def establishment_of(self, caller: Caller, requested: str | None) -> str:
        """The establishment a call lists: an admin's own, or the operator's choice."""
        if caller.scope == "admin":
            assert caller.acting is not None
            if requested not in (None, caller.acting.establishment):
                raise NotFound("no such establishment", code="not_found")
            return caller.acting.establishment
        if not requested or len(requested) > 200:
            raise InvalidRequest("establishment is required (query parameter)")
        return requested

    async def admin_count(self, establishment: str) -> int:
        return len(await self.store.active_admins(establishment))

    # --- changes ----------------------------------------------------------------

    async def create(self, caller: Caller, fields: NewAccount, token: str | None) -> Account:
        """Create an account (step-up `account.create`)."""
        account = self.store.prepare(fields)  # 400 and 422 before the grant is spent
        if caller.scope == "admin" and not caller.sees(account):
            raise Forbidden("an admin creates accounts in its own establishment only")
        who = await self.step_up(caller, ACCOUNT_CREATE, token)
        return await self.store.insert(account, who=who)

    async def update(
        self, caller: Caller, account_id: str, changes: Mapping[str, Any], token: str | None
    ) -> Account:
        """PATCH; a new e-mail address needs step-up `contact.update` and is
        announced; a destructive change needs `account.manage`."""
        before = await self.target(caller, account_id)
        changed = dataclasses.replace(before, **check_changes(changes))
        purpose = _update_purpose(caller, before, changed)
        who = caller.who()
        if purpose is not None:
            await self.store.check_last_admin(before, changed)
            who = await self.step_up(caller, purpose, token)
        after = await self.store.update(account_id, changes, who=who)
        if after.email != before.email:
            await self.notify(caller, after, "email", old_email=before.email)
        return after

    async def set_phone(
        self,
        caller: Caller,
        account_id: str,
        raw_phone: str,
        hidden: bool | None,
        extension: str | Keep | None,
        token: str | None,
    ) -> Account:
        """Switch the number at once (step-up `contact.update`); announced by e-mail."""
        await self.target(caller, account_id)
        phone = self.store.parse_phone(raw_phone)
        if hidden is not None:
            check_bool("phone_hidden", hidden)
        if extension is not KEEP:
            check_extension(extension)
        who = await self.step_up(caller, CONTACT_UPDATE, token)
        after = await self.store.set_phone(
            account_id, phone, hidden=hidden, extension=extension, who=who
        )
        await self.notify(caller, after, "phone")
        return after

    async def delete(self, caller: Caller, account_id: str, token: str | None) -> Account:
        """Delete an account (step-up `account.manage`)."""
        before = await self.target(caller, account_id)
        await self.store.check_last_admin(before, None)
        who = await self.step_up(caller, ACCOUNT_MANAGE, token)
        await self.store.delete(account_id, who=who)
        return before

    async def renew(self, caller: Caller, account_id: str) -> Account:
        await self.target(caller, account_id)
        return await self.store.renew(account_id, who=caller.who())

    async def notify(
        self, caller: Caller, account: Account, event: str, old_email: str | None = None
    ) -> None:
        await self.notifier.changed(
            account, event, caller.by(account), self.store.now(), old_email=old_email
        )

    # --- history ------------------------------------------------------------------

    async def history(
        self, caller: Caller, account_id: str, page: int, per_page: int
    ) -> tuple[list[dict[str, Any]], int]:
        """An account's history; a deleted account's for its last establishment's admins."""
        account = await self.store.get(account_id)
        if account is not None:
            visible = caller.sees(account)
        else:
            last = await self.store.last_entry(account_id)
            visible = last is not None and (
                caller.acting is None or last["establishment"] == caller.acting.establishment
            )
        if not visible:
            raise NotFound("no such account", code="unknown_account")
        return await self.store.history(account_id, page, per_page)

    # --- trusted devices ------------------------------------------------------------

    def devices(self, caller: Caller, token: str | None) -> CallerDevices:
        """The trusted-device service as this caller may use it."""
        return CallerDevices(self, caller, token)

    # --- deployment day -------------------------------------------------------------

    async def blank_phones(self, caller: Caller, establishment: str | None) -> Blanked:
        """Blank every number (of one establishment, or all), revoking trusted devices.

        The next `/challenge` of each account answers 409 `phone_required`; the
        account then enrols a number, proven by a code (`gateway.accounts.phone_change`).
        """
        if establishment is not None:
            batches = [await self.store.all_in(establishment)]
        else:
            batches = [batch async for batch in self.store.scan()]
        seen: set[str] = set()
        blanked = 0
        for batch in batches:
            todo = [a for a in batch if a.account_id not in seen]
            seen.update(a.account_id for a in todo)
            blanked += await self._blank(caller, todo)
        return Blanked(accounts=len(seen), blanked=blanked)

    async def _blank(self, caller: Caller, accounts: list[Account]) -> int:
        slots = asyncio.Semaphore(_BLANK_CONCURRENCY)

        async def one(account: Account) -> None:
            async with slots:
                with contextlib.suppress(NotFound):  # deleted meanwhile
                    await self.store.set_phone(
                        account.account_id, None, extension=None, who=caller.who("exempt"),
                        action="phone.blank",
                    )  # fmt: skip

        await asyncio.gather(*(one(a) for a in accounts))
        return sum(1 for a in accounts if a.phone is not None)


def _update_purpose(caller: Caller, before: Account, after: Account) -> str | None:
    """The step-up a PATCH needs, if any; one token covers one purpose."""
    contact = after.email != before.email
    manage = destructive(before, after)
    if contact and manage and caller.scope != "operator":
        # Well-formed, but one step-up token proves one purpose: 422, not 400.
        raise Unprocessable(
            "change the e-mail address in a request of its own: it needs another step-up",
            code="step_up_conflict",
        )
    if manage:
        return ACCOUNT_MANAGE
    return CONTACT_UPDATE if contact else None


@dataclass(frozen=True, slots=True)
class CallerDevices:
    """`TrustedDevices`' methods (a `DeviceService`) under the admin rules: the
    caller must reach the account (else 404 `unknown_account`); a revocation
    needs step-up `account.manage` and goes into the account's history."""

    admin: AccountAdmin
    caller: Caller
    token: str | None  # the step-up token presented, if any

    async def list(self, account_id: str) -> list[TrustedDevice]:
        """The account's live devices, newest first."""
        await self.admin.target(self.caller, account_id)
        return await self.admin.trusted.list(account_id)

    async def revoke(self, account_id: str, device_id: str) -> None:
        """Revoke one device (step-up `account.manage`); 404 before asking for it."""
        account = await self.admin.target(self.caller, account_id)
        await self.admin.trusted.ensure(account_id, device_id)
        who = await self.admin.step_up(self.caller, ACCOUNT_MANAGE, self.token)
        await self.admin.trusted.revoke(account_id, device_id)
        after = {"device_id": device_id}
        await self.admin.store.record(account, "devices.revoke", who=who, after=after)

    async def revoke_all(self, account_id: str) -> int:
        """Revoke every device (step-up `account.manage`)."""
        account = await self.admin.target(self.caller, account_id)
        who = await self.admin.step_up(self.caller, ACCOUNT_MANAGE, self.token)
        revoked = await self.admin.trusted.revoke_all(account_id)
        after = {"revoked": revoked}
        await self.admin.store.record(account, "devices.revoke_all", who=who, after=after)
        return revoked
