"""A user's own new number, proven by a code before it replaces the old one.

1. `start`: the account asks for `phone` (and maybe `phone_hidden`,
   `phone_extension`). An account that has a number needs a `contact.update`
   step-up (a code to its current number, or its authenticator app); an
   account without one (new, or blanked on deployment day) enrols without:
   it has no other factor to prove. A code goes to the *new* number (challenge
   purpose `phone.change`), and the wanted settings wait in
   `keys.phone_change(challenge_id)` as long as the challenge lives.
2. `finish`: the code from the new number. `ChallengeService.verify` checks it
   and hands back the number it was sent to (`Verified.destination`); only
   then does that number replace the old one (trusted devices and pending
   challenges revoked), and the change is announced by e-mail. An enrolment
   that finds a number set meanwhile is refused with 409 `phone_already_set`:
   it would otherwise replace that number without a step-up.

Several accounts may share a number: nothing here checks uniqueness.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis

from gateway import keys
from gateway.accounts.policy import CONTACT_UPDATE, AccountAdmin, Caller
from gateway.accounts.records import KEEP, Account, check_bool, check_extension
from gateway.accounts.store import AccountStore
from gateway.crypto import account_tag_of
from gateway.errors import Conflict, NotFound, Unprocessable
from gateway.otp.challenges import ChallengeService, Created
from gateway.otp.tokens import StepUps
from gateway.phones import Phone

PURPOSE: Final = "phone.change"


@dataclass(frozen=True, slots=True)
class Started:
    """The challenge sent to the new number, and whether this is an enrolment."""

    created: Created
    destination: str  # the new number, masked (all digits when it is to be hidden)
    enrolment: bool


class PhoneChanges:
    """Start and finish the proof of a new number."""

    def __init__(
        self,
        redis: aioredis.Redis,
        store: AccountStore,
        challenges: ChallengeService,
        step_ups: StepUps,
        admin: AccountAdmin,
        ttl_seconds: int,
    ) -> None:
        self.redis = redis
        self.store = store
        self.challenges = challenges
        self.step_ups = step_ups
        self.admin = admin
        self.ttl_ms = (ttl_seconds + 60) * 1000

    async def start(
        self,
        caller: Caller,
        account: Account,
        phone: Phone,
        options: dict[str, Any],
        token: str | None,
    ) -> Started:
        """Send a code to `phone`; `options`: phone_hidden, phone_extension, channel,
        client_ip (already type-checked)."""
        hidden = options.get("phone_hidden")
        if hidden is not None:
            check_bool("phone_hidden", hidden)
        extension = options.get("phone_extension", KEEP)
        if extension is not KEEP:
            check_extension(extension)
        channel = options.get("channel") or phone.default_channel
        if channel not in phone.channels or channel not in self.challenges.channels:
            raise Unprocessable(f"no {channel} delivery to this number", code="channel_unavailable")
        enrolment = account.phone is None
        who = caller.who() if enrolment else await self.admin.step_up(caller, CONTACT_UPDATE, token)
        created = await self.challenges.create(
            account, PURPOSE, channel, options.get("client_ip"), destination=phone
        )
        pending = {"hidden": hidden, "extension": extension, "enrolment": enrolment}
        if extension is KEEP:
            pending["extension"] = "keep"
        key = keys.phone_change(created.challenge_id)
        await self.redis.set(key, json.dumps(pending), px=self.ttl_ms)
        masked = phone.masked(hide_all=account.phone_hidden if hidden is None else hidden)
        action = "phone.enrol.start" if enrolment else "phone.change.start"
        await self.store.record(account, action, who=who, after={"phone": masked})
        return Started(created, masked, enrolment)

    async def finish(
        self, caller: Caller, account_id: str, challenge_id: str, code: str
    ) -> Account:
        """Verify the code sent to the new number; then, and only then, switch to it."""
        if account_tag_of(challenge_id) != self.store.account_tag(account_id):
            raise NotFound("no such challenge", code="challenge_not_found")
        raw: Any = await self.redis.get(keys.phone_change(challenge_id))
        if raw is None:
            raise NotFound("no such challenge", code="challenge_not_found")
        pending = json.loads(raw)
        result = await self.challenges.verify(challenge_id, code, False, "")
        if result.token:  # verify grants a step-up for any purpose but login: unused here
            await self.step_ups.consume(result.token, result.account_id, result.purpose)
        if result.destination is None or result.purpose != PURPOSE:
            raise NotFound("no such challenge", code="challenge_not_found")
        await self.redis.delete(keys.phone_change(challenge_id))
        current = await self.admin.target(caller, account_id)
        if pending["enrolment"] and current.phone is not None:
            raise Conflict("this account already has a number", code="phone_already_set")
        extension = KEEP if pending["extension"] == "keep" else pending["extension"]
        after = await self.store.set_phone(
            account_id, self.store.parse_phone(result.destination), hidden=pending["hidden"],
            extension=extension, who=caller.who("verified"),
            action="phone.enrol" if pending["enrolment"] else "phone.change",
        )  # fmt: skip
        await self.admin.notify(caller, after, "phone")
        return after
