"""Tenant isolation beyond the header: keys bound to establishments, step-up
(`account.manage`) for destructive admin actions."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.support.admin import (
    ESTABLISHMENT,
    MANAGE,
    OTHER_ESTABLISHMENT,
    admin_gateway,
    as_admin,
    as_operator,
    managing,
    step_up,
)
from tests.support.config import ADMIN_KEY, OPERATOR_KEY, OTP_KEY
from tests.support.dates import iso_in
from tests.support.gateway import Gateway, GatewayFactory
from tests.support.otp import Reply, assert_error, call, challenge_and_code, verify
from tests.support.smtp import Inbox

BOUND_KEY = "mairie-key-0123456789abcdef"
KEYS = [
    {"name": "front", "key": OTP_KEY, "scopes": ["otp"]},
    {"name": "admin", "key": ADMIN_KEY, "scopes": ["admin"]},
    {"name": "mairie", "key": BOUND_KEY, "scopes": ["admin"], "establishments": [ESTABLISHMENT]},
    {"name": "ops", "key": OPERATOR_KEY, "scopes": ["operator"]},
]


@pytest.fixture
async def bgw(make_gateway: GatewayFactory, inbox: Inbox) -> Gateway:
    """`agw` plus an admin key bound to the Mairie."""
    return await admin_gateway(make_gateway, inbox, api_keys=KEYS)


async def as_bound(
    gw: Gateway, method: str, path: str, body: Any = None, *, acting: str, token: str = ""
) -> Reply:
    headers = {"X-Acting-Account": acting}
    if token:
        headers["X-Step-Up-Token"] = token
    return await call(gw, method, path, body, key=BOUND_KEY, headers=headers)


async def trusted_login(gw: Gateway, account_id: str) -> None:
    challenge_id, code = await challenge_and_code(gw, account_id)
    assert (await verify(gw, challenge_id, code, trust_device=True)).status == 200


# --- keys bound to establishments -------------------------------------------------

OUTSIDE: list[tuple[str, str, Any]] = [
    ("GET", "/accounts/carol", None),
    ("PATCH", "/accounts/carol", {"status": "suspended"}),
    ("DELETE", "/accounts/carol", None),
    ("GET", "/accounts/carol/history", None),
    ("GET", "/accounts/carol/devices", None),
    ("DELETE", "/accounts/carol/devices", None),
    ("GET", "/accounts", None),
    ("GET", "/history", None),
]


@pytest.mark.parametrize(("method", "path", "body"), OUTSIDE)
async def test_a_bound_key_cannot_act_for_another_establishments_admin(
    bgw: Gateway, method: str, path: str, body: Any
) -> None:
    await trusted_login(bgw, "carol")
    token = await step_up(bgw, "other", MANAGE)  # even a good grant opens nothing
    before = await as_operator(bgw, "GET", "/accounts/carol")
    history = await as_operator(bgw, "GET", "/accounts/carol/history")
    replies = [
        await as_bound(bgw, method, path, body, acting=acting, token=token)
        for acting in ("other", "carol", "nobody")
    ]
    for reply in replies:
        assert_error(reply, 404, "unknown_account")
        assert reply.body == replies[-1].body  # like an account that does not exist
    assert (await as_operator(bgw, "GET", "/accounts/carol")).body == before.body
    assert (await as_operator(bgw, "GET", "/accounts/carol/history")).body == history.body
    assert len(await bgw.services.trusted.list("carol")) == 1
    # The grant was not spent: the unbound key, acting for its owner, still may.
    reply = await as_admin(bgw, method, path, body, acting="other", token=token)
    assert reply.status in (200, 204), reply.body


async def test_a_bound_key_works_inside_its_establishments(bgw: Gateway) -> None:
    assert (await as_bound(bgw, "GET", "/accounts/alice", acting="boss")).status == 200
    listed = await as_bound(bgw, "GET", "/accounts", acting="boss")
    assert {a["account_id"] for a in listed.body["accounts"]} == {"boss", "alice"}
    token = await step_up(bgw, "boss", MANAGE)
    reply = await as_bound(
        bgw, "PATCH", "/accounts/alice", {"status": "suspended"}, acting="boss", token=token
    )
    assert reply.status == 200 and reply.body["status"] == "suspended"
    # Inside, the usual rules: a user cannot be acted for.
    assert_error(await as_bound(bgw, "GET", "/accounts/boss", acting="alice"), 403, "forbidden")
    # Its own establishment's list only, even when it names another.
    reply = await as_bound(
        bgw, "GET", f"/accounts?establishment={OTHER_ESTABLISHMENT}", acting="boss"
    )
    assert_error(reply, 404, "not_found")


async def test_an_unbound_admin_key_still_reaches_every_establishment(bgw: Gateway) -> None:
    reply = await as_admin(bgw, "GET", "/accounts/carol", acting="other")
    assert reply.status == 200 and reply.body["establishment"] == OTHER_ESTABLISHMENT


async def test_start_up_warns_once_about_each_unbound_admin_key(
    make_gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="otp_gateway")
    await make_gateway(api_keys=KEYS)
    warned = [r for r in caplog.records if r.name == "otp_gateway.auth"]
    assert len(warned) == 1
    assert warned[0].levelno == logging.WARNING
    assert "'admin'" in warned[0].getMessage()
    assert "mairie" not in warned[0].getMessage()  # the bound key is fine
    assert ADMIN_KEY not in caplog.text and BOUND_KEY not in caplog.text


# --- step-up for destructive actions -----------------------------------------------

DESTRUCTIVE: list[tuple[str, str, Any]] = [
    ("PATCH", "/accounts/alice", {"status": "suspended"}),
    ("PATCH", "/accounts/alice", {"role": "user"}),  # alice is promoted first
    ("PATCH", "/accounts/alice", {"expires_at": iso_in(30)}),  # brought forward
    ("DELETE", "/accounts/alice", None),
    ("DELETE", "/accounts/alice/devices", None),
    ("DELETE", "/accounts/alice/devices/{device}", None),
]


@pytest.mark.parametrize(("method", "path", "body"), DESTRUCTIVE)
async def test_destructive_actions_need_an_account_manage_step_up(
    agw: Gateway, method: str, path: str, body: Any
) -> None:
    await as_operator(agw, "PATCH", "/accounts/alice", {"role": "admin"})
    await trusted_login(agw, "alice")
    device = (await agw.services.trusted.list("alice"))[0].device_id
    path = path.format(device=device)
    before = await as_operator(agw, "GET", "/accounts/alice")
    history = await as_operator(agw, "GET", "/accounts/alice/history")

    refused = assert_error(await as_admin(agw, method, path, body), 401, "step_up_required")
    assert refused["purpose"] == MANAGE
    for token in (
        await step_up(agw, "boss", "contact.update"),  # another purpose
        await step_up(agw, "alice", MANAGE),  # another account's
        "su_" + "A" * 43,
    ):
        reply = await as_admin(agw, method, path, body, token=token)
        assert_error(reply, 401, "step_up_required")
    assert (await as_operator(agw, "GET", "/accounts/alice")).body == before.body
    assert (await as_operator(agw, "GET", "/accounts/alice/history")).body == history.body
    assert len(await agw.services.trusted.list("alice")) == 1

    good = await step_up(agw, "boss", MANAGE)
    reply = await as_admin(agw, method, path, body, token=good)
    assert reply.status in (200, 204), reply.body
    entry = (await as_operator(agw, "GET", "/accounts/alice/history")).body["entries"][0]
    assert (entry["acting_for"], entry["step_up"]) == ("boss", "verified")
    # Good once: spent, it opens no other destructive action.
    again = await as_admin(agw, "DELETE", "/accounts/boss/devices", token=good)
    assert_error(again, 401, "step_up_required")


async def test_harmless_changes_need_no_step_up(agw: Gateway) -> None:
    for change in (
        {"first_name": "Alicia"},
        {"status": "active"},
        {"expires_at": iso_in(400)},  # pushed back
        {"role": "admin"},
    ):
        assert (await as_admin(agw, "PATCH", "/accounts/alice", change)).status == 200, change
    assert (await as_admin(agw, "POST", "/accounts/alice/renew")).status == 200


async def test_a_refused_destructive_action_keeps_the_grant(agw: Gateway) -> None:
    token = await step_up(agw, "boss", MANAGE)
    # The last admin (409), an unknown device (404), a bad change (400): not spent.
    reply = await as_admin(agw, "PATCH", "/accounts/boss", {"status": "suspended"}, token=token)
    assert_error(reply, 409, "last_admin")
    reply = await as_admin(agw, "DELETE", "/accounts/alice/devices/nope", token=token)
    assert_error(reply, 404, "not_found")
    reply = await as_admin(agw, "PATCH", "/accounts/alice", {"status": "gone"}, token=token)
    assert_error(reply, 400, "invalid_request")
    reply = await as_admin(agw, "DELETE", "/accounts/alice", token=token)
    assert reply.status == 204


async def test_an_email_change_and_a_suspension_go_apart(agw: Gateway) -> None:
    both = {"email": "new@example.org", "status": "suspended"}
    token = await step_up(agw, "boss", MANAGE)
    assert_error(
        await as_admin(agw, "PATCH", "/accounts/alice", both, token=token), 422, "step_up_conflict"
    )
    # The token was not spent: the suspension alone goes through with it.
    reply = await as_admin(agw, "PATCH", "/accounts/alice", {"status": "suspended"}, token=token)
    assert reply.status == 200, reply.body
    await as_operator(agw, "PATCH", "/accounts/alice", {"status": "active"})
    assert (await managing(agw, "PATCH", "/accounts/alice", {"status": "suspended"})).status == 200
    assert (await as_operator(agw, "PATCH", "/accounts/alice", both)).status == 200  # exempt


async def test_operators_need_no_step_up_for_destructive_actions(agw: Gateway) -> None:
    await trusted_login(agw, "alice")
    for method, path, body in [
        ("DELETE", "/accounts/alice/devices", None),
        ("PATCH", "/accounts/alice", {"status": "suspended"}),
        ("DELETE", "/accounts/alice", None),
    ]:
        reply = await as_operator(agw, method, path, body)
        assert reply.status in (200, 204), reply.body
    entries = (await as_operator(agw, "GET", "/accounts/alice/history")).body["entries"]
    assert [(e["action"], e["step_up"]) for e in entries[:3]] == [
        ("delete", "exempt"),
        ("update", "exempt"),
        ("devices.revoke_all", "exempt"),
    ]


async def test_admins_still_cannot_blank_numbers(agw: Gateway) -> None:
    token = await step_up(agw, "boss", MANAGE)
    body = {"establishment": ESTABLISHMENT}
    assert_error(await as_admin(agw, "POST", "/phones/blank", body, token=token), 403, "forbidden")
    assert (await as_operator(agw, "GET", "/accounts/alice")).body["phone_set"] is True
