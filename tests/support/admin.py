"""Admin and operator calls, step-up tokens, and the two-tenant gateway most admin tests use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.support.config import ADMIN_KEY, OPERATOR_KEY
from tests.support.gateway import Gateway, GatewayFactory, add_account
from tests.support.otp import Reply, call, challenge_and_code, verify
from tests.support.smtp import Inbox

ESTABLISHMENT = "Mairie de Luisant"
OTHER_ESTABLISHMENT = "Clinique du Parc"
BOSS = "06 98 76 54 31"
MANAGE = "account.manage"  # the step-up of destructive admin actions
FAST = {
    "otp": {"resend_cooldown_seconds": 0},
    "rate_limits": {"account": "1000/1m", "number": "1000/1m", "failures": "1000/1m"},
}


async def admin_gateway(make_gateway: GatewayFactory, inbox: Inbox, **sections: Any) -> Gateway:
    """A gateway wired to `inbox`, without cooldowns or tight limits, plus accounts:

    Mairie de Luisant: `boss` (admin, on `BOSS`), `alice` (user, hidden number);
    Clinique du Parc: `other` (admin), `carol` (user).
    """
    merged = {**FAST, "smtp": inbox.config(), **sections}
    gw = await make_gateway(**merged)
    await add_account(gw, account_id="boss", role="admin", email="boss@example.org", phone=BOSS)
    await add_account(gw, account_id="alice", phone_hidden=True)
    other = {"establishment": OTHER_ESTABLISHMENT}
    await add_account(gw, account_id="other", role="admin", email="other@example.org", **other)
    await add_account(gw, account_id="carol", email="carol@example.org", **other)
    return gw


async def step_up(gw: Gateway, account_id: str, purpose: str) -> str:
    """A step-up token: a code to the account's phone for `purpose`, verified."""
    challenge_id, code = await challenge_and_code(gw, account_id, purpose=purpose)
    reply = await verify(gw, challenge_id, code)
    assert reply.status == 200, reply.body
    token: str = reply.body["step_up_token"]
    return token


async def as_admin(
    gw: Gateway,
    method: str,
    path: str,
    body: Any = None,
    *,
    acting: str | None = "boss",
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """A call with the admin key, acting for `acting`, maybe with a step-up token."""
    sent = dict(headers or {})
    if acting is not None:
        sent["X-Acting-Account"] = acting
    if token is not None:
        sent["X-Step-Up-Token"] = token
    return await call(gw, method, path, body, key=ADMIN_KEY, headers=sent)


async def managing(
    gw: Gateway,
    method: str,
    path: str,
    body: Any = None,
    *,
    acting: str = "boss",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """A destructive admin call, with a fresh `account.manage` step-up of `acting`."""
    token = await step_up(gw, acting, MANAGE)
    return await as_admin(gw, method, path, body, acting=acting, token=token, headers=headers)


async def as_operator(gw: Gateway, method: str, path: str, body: Any = None) -> Reply:
    return await call(gw, method, path, body, key=OPERATOR_KEY)


async def mails_after_drain(gw: Gateway) -> int:
    """Deliver the outbox now; how many mails the SMTP server accepted."""
    return await gw.services.account_services.mail.drain()
