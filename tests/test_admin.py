"""Admin calls over HTTP: acting accounts, tenant isolation, step-up, changes, history."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.support.admin import (
    ESTABLISHMENT,
    OTHER_ESTABLISHMENT,
    admin_gateway,
    as_admin,
    as_operator,
    mails_after_drain,
    managing,
    step_up,
)
from tests.support.config import METRICS_KEY, OTP_KEY
from tests.support.gateway import ACCOUNT, Gateway, GatewayFactory
from tests.support.otp import (
    MOBILE_DIGITS,
    OTHER_DIGITS,
    OTHER_MOBILE,
    assert_error,
    call,
    challenge_and_code,
    verify,
)
from tests.support.smtp import Inbox, parts

NEW_USER = {**ACCOUNT, "account_id": "dave", "email": "dave@example.org", "phone": OTHER_MOBILE}


async def trusted_login(gw: Gateway, account_id: str, label: str) -> str:
    challenge_id, code = await challenge_and_code(gw, account_id)
    reply = await verify(gw, challenge_id, code, trust_device=True, device_label=label)
    token: str = reply.body["trusted_device_token"]
    return token


# --- who may call ---------------------------------------------------------------


async def test_admin_key_needs_an_acting_account(agw: Gateway) -> None:
    assert_error(await as_admin(agw, "GET", "/accounts/alice", acting=None), 400, "invalid_request")
    reply = await as_admin(agw, "GET", "/accounts/alice", acting="not an id!")
    assert_error(reply, 400, "invalid_request")


@pytest.mark.parametrize("acting", ["alice", "nobody"])
async def test_acting_account_must_be_an_admin(agw: Gateway, acting: str) -> None:
    for method, path in [("GET", "/accounts/alice"), ("GET", "/accounts"), ("GET", "/history")]:
        assert_error(await as_admin(agw, method, path, acting=acting), 403, "forbidden")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"expires_at": "2020-01-01T00:00:00Z"}, "account_expired"),
        ({"status": "suspended"}, "account_suspended"),
    ],
)
async def test_an_admin_that_cannot_act_gets_403(
    agw: Gateway, change: dict[str, str], code: str
) -> None:
    await as_operator(
        agw, "POST", "/accounts", {**NEW_USER, "account_id": "boss2", "role": "admin"}
    )
    assert (await as_operator(agw, "PATCH", "/accounts/boss", change)).status == 200
    for method, path, body in [
        ("GET", "/accounts/alice", None),
        ("POST", "/accounts/alice/renew", None),
        ("POST", "/accounts/boss/renew", None),  # nor unblock itself
        ("PATCH", "/accounts/boss", {"status": "active"}),
    ]:
        assert_error(await as_admin(agw, method, path, body), 403, code)
    # The other admin can unblock it.
    fix = {"status": "active"} if code == "account_suspended" else None
    path = "/accounts/boss" if fix else "/accounts/boss/renew"
    reply = await as_admin(agw, "PATCH" if fix else "POST", path, fix, acting="boss2")
    assert reply.status == 200, reply.body
    assert (await as_admin(agw, "GET", "/accounts/alice")).status == 200


@pytest.mark.parametrize("key", [OTP_KEY, METRICS_KEY])
async def test_other_scopes_cannot_manage_accounts(agw: Gateway, key: str) -> None:
    reply = await call(agw, "GET", "/accounts/alice", key=key, headers={"X-Acting-Account": "boss"})
    assert_error(reply, 403, "forbidden")
    reply = await call(agw, "POST", "/phones/blank", {"all": True}, key=key)
    assert_error(reply, 403, "forbidden")


# --- tenant isolation -------------------------------------------------------------

PROBES: list[tuple[str, str, Any]] = [
    ("GET", "/accounts/{id}", None),
    ("PATCH", "/accounts/{id}", {"first_name": "X"}),
    ("PATCH", "/accounts/{id}", {"status": "suspended"}),
    ("DELETE", "/accounts/{id}", None),
    ("POST", "/accounts/{id}/renew", None),
    ("PUT", "/accounts/{id}/phone", {"phone": OTHER_MOBILE}),
    ("GET", "/accounts/{id}/history", None),
    ("GET", "/accounts/{id}/devices", None),
    ("DELETE", "/accounts/{id}/devices", None),
    ("DELETE", "/accounts/{id}/devices/abc", None),
    ("GET", "/accounts/{id}/totp", None),
    ("DELETE", "/accounts/{id}/totp", None),
]


@pytest.mark.parametrize(("method", "path", "body"), PROBES)
async def test_another_establishment_is_404_like_nothing(
    agw: Gateway, method: str, path: str, body: Any
) -> None:
    token = await step_up(agw, "boss", "contact.update")
    before = await as_operator(agw, "GET", "/accounts/carol")
    history = await as_operator(agw, "GET", "/accounts/carol/history")
    for target in ("carol", "other"):
        probe = await as_admin(agw, method, path.format(id=target), body, token=token)
        ghost = await as_admin(agw, method, path.format(id="ghost"), body, token=token)
        assert_error(probe, 404, "unknown_account")
        assert probe.body == ghost.body  # nothing tells that it exists
    assert (await as_operator(agw, "GET", "/accounts/carol")).body == before.body
    assert (await as_operator(agw, "GET", "/accounts/carol/history")).body == history.body


async def test_another_establishment_in_lists_and_creation(agw: Gateway) -> None:
    reply = await as_admin(agw, "GET", f"/accounts?establishment={OTHER_ESTABLISHMENT}")
    assert_error(reply, 404, "not_found")
    reply = await as_admin(agw, "GET", f"/history?establishment={OTHER_ESTABLISHMENT}")
    assert_error(reply, 404, "not_found")
    token = await step_up(agw, "boss", "account.create")
    elsewhere = {**NEW_USER, "establishment": OTHER_ESTABLISHMENT}
    assert_error(await as_admin(agw, "POST", "/accounts", elsewhere, token=token), 403, "forbidden")
    listed = await as_admin(agw, "GET", "/accounts")
    assert {a["account_id"] for a in listed.body["accounts"]} == {"boss", "alice"}
    assert "carol" not in json.dumps((await as_admin(agw, "GET", "/history")).body)


async def test_deleted_account_history_stays_with_its_establishment(agw: Gateway) -> None:
    assert (await managing(agw, "DELETE", "/accounts/alice")).status == 204
    reply = await as_admin(agw, "GET", "/accounts/alice/history")
    assert reply.status == 200
    assert [e["action"] for e in reply.body["entries"]] == ["delete", "create"]
    assert_error(
        await as_admin(agw, "GET", "/accounts/alice/history", acting="other"),
        404,
        "unknown_account",
    )
    assert_error(await as_admin(agw, "GET", "/accounts/alice"), 404, "unknown_account")


# --- step-up ---------------------------------------------------------------------


async def test_creating_an_account_needs_an_account_create_step_up(agw: Gateway) -> None:
    reply = await as_admin(agw, "POST", "/accounts", NEW_USER)
    body = assert_error(reply, 401, "step_up_required")
    assert body["purpose"] == "account.create"
    wrong_purpose = await step_up(agw, "boss", "contact.update")
    someone_else = await step_up(agw, "alice", "account.create")
    for token in (wrong_purpose, someone_else, "su_" + "A" * 43, "garbage"):
        reply = await as_admin(agw, "POST", "/accounts", NEW_USER, token=token)
        assert_error(reply, 401, "step_up_required")
    good = await step_up(agw, "boss", "account.create")
    reply = await as_admin(agw, "POST", "/accounts", NEW_USER, token=good)
    assert reply.status == 201, reply.body
    again = await as_admin(agw, "POST", "/accounts", {**NEW_USER, "account_id": "eve"}, token=good)
    assert_error(again, 401, "step_up_required")  # good once
    entry = (await as_admin(agw, "GET", "/accounts/dave/history")).body["entries"][0]
    assert entry["action"] == "create"
    assert entry["actor"] == "admin:admin"
    assert entry["acting_for"] == "boss"
    assert entry["step_up"] == "verified"


async def test_a_refused_request_does_not_spend_the_token(agw: Gateway) -> None:
    token = await step_up(agw, "boss", "account.create")
    bad = await as_admin(agw, "POST", "/accounts", {**NEW_USER, "email": "nope"}, token=token)
    assert_error(bad, 400, "invalid_request")
    bad = await as_admin(
        agw, "POST", "/accounts", {**NEW_USER, "phone": "0891 12 34 56"}, token=token
    )
    assert_error(bad, 422, "invalid_phone")
    assert (await as_admin(agw, "POST", "/accounts", NEW_USER, token=token)).status == 201


async def test_contact_changes_need_a_contact_update_step_up(agw: Gateway) -> None:
    body = assert_error(
        await as_admin(agw, "PUT", "/accounts/alice/phone", {"phone": OTHER_MOBILE}),
        401,
        "step_up_required",
    )
    assert body["purpose"] == "contact.update"
    body = assert_error(
        await as_admin(agw, "PATCH", "/accounts/alice", {"email": "new@example.org"}),
        401,
        "step_up_required",
    )
    assert body["purpose"] == "contact.update"
    # Names, the same address, services: no step-up.
    same = {"first_name": "Alicia", "email": ACCOUNT["email"], "services": ["paie"]}
    assert (await as_admin(agw, "PATCH", "/accounts/alice", same)).status == 200
    token = await step_up(agw, "boss", "contact.update")
    reply = await as_admin(
        agw, "PUT", "/accounts/alice/phone", {"phone": OTHER_MOBILE}, token=token
    )
    assert reply.status == 200, reply.body
    token = await step_up(agw, "boss", "contact.update")
    reply = await as_admin(
        agw, "PATCH", "/accounts/alice", {"email": "new@example.org"}, token=token
    )
    assert reply.status == 200 and reply.body["email"] == "new@example.org"


async def test_operators_are_exempt_but_audited(agw: Gateway) -> None:
    assert (await as_operator(agw, "POST", "/accounts", NEW_USER)).status == 201
    assert (
        await as_operator(agw, "PUT", "/accounts/dave/phone", {"phone": "0612345678"})
    ).status == 200
    reply = await as_operator(agw, "PATCH", "/accounts/dave", {"email": "d2@example.org"})
    assert reply.status == 200
    entries = (await as_operator(agw, "GET", "/accounts/dave/history")).body["entries"]
    assert [(e["action"], e["step_up"], e["actor"]) for e in entries] == [
        ("update", "exempt", "operator:ops"),
        ("phone", "exempt", "operator:ops"),
        ("create", "exempt", "operator:ops"),
    ]
    assert all(e["acting_for"] is None for e in entries)


# --- changes ---------------------------------------------------------------------


async def test_admin_changes_and_their_history(agw: Gateway) -> None:
    reply = await as_admin(
        agw,
        "PATCH",
        "/accounts/alice",
        {
            "last_name": "Durand",
            "services": ["etat-civil"],
            "net_entreprises": True,
            "role": "admin",
            "phone_extension": "214",
        },
        headers={"X-Request-ID": "req-patch"},
    )
    assert reply.status == 200, reply.body
    assert reply.body["role"] == "admin" and reply.body["phone_extension"] == "214"
    assert reply.body["warnings"] == []  # two admins now
    assert reply.headers["X-Establishment-Admins"] == "2"
    suspended = await managing(agw, "PATCH", "/accounts/alice", {"status": "suspended"})
    assert suspended.body["status"] == "suspended"
    assert suspended.body["warnings"] == ["single_admin"]
    active = await as_admin(agw, "PATCH", "/accounts/alice", {"status": "active"})
    assert active.body["status"] == "active"
    renewed = await as_admin(agw, "POST", "/accounts/alice/renew")
    assert renewed.body["expires_at"] > active.body["expires_at"]

    entries = (await as_admin(agw, "GET", "/accounts/alice/history?per_page=2")).body
    assert entries["total"] == 5 and len(entries["entries"]) == 2
    assert [e["action"] for e in entries["entries"]] == ["renew", "update"]
    page3 = (await as_admin(agw, "GET", "/accounts/alice/history?per_page=2&page=3")).body
    first = page3["entries"][0]
    assert first["action"] == "create"
    full = (await as_admin(agw, "GET", "/accounts/alice/history")).body["entries"]
    patch = full[3]
    assert patch["request_id"] == "req-patch"
    assert patch["before"]["last_name"] == "Martin" and patch["after"]["last_name"] == "Durand"
    assert patch["account_id"] == "alice" and patch["establishment"] == ESTABLISHMENT


async def test_admin_deletes_and_the_id_is_gone(agw: Gateway) -> None:
    reply = await managing(agw, "DELETE", "/accounts/alice")
    assert reply.status == 204
    assert reply.headers["X-Establishment-Admins"] == "1"
    assert_error(await as_admin(agw, "GET", "/accounts/alice"), 404, "unknown_account")
    assert_error(await as_admin(agw, "DELETE", "/accounts/alice"), 404, "unknown_account")


async def test_establishment_history_newest_first(agw: Gateway) -> None:
    await as_admin(agw, "PATCH", "/accounts/alice", {"first_name": "A2"})
    await as_operator(agw, "PATCH", "/accounts/carol", {"first_name": "C2"})
    reply = await as_admin(agw, "GET", "/history?per_page=2")
    assert reply.body["total"] == 3  # boss, alice created; alice changed
    assert [(e["account_id"], e["action"]) for e in reply.body["entries"]] == [
        ("alice", "update"),
        ("alice", "create"),
    ]
    ops = await as_operator(agw, "GET", f"/history?establishment={OTHER_ESTABLISHMENT}")
    assert [(e["account_id"], e["action"]) for e in ops.body["entries"]] == [
        ("carol", "update"),
        ("carol", "create"),
        ("other", "create"),
    ]
    assert_error(await as_operator(agw, "GET", "/history"), 400, "invalid_request")


# --- trusted devices -----------------------------------------------------------------


async def test_a_device_looks_the_same_through_both_device_routes(agw: Gateway) -> None:
    """`/trusted-devices` (scope otp) and `/devices` (admins, operators) are one API."""
    await trusted_login(agw, "alice", "laptop")
    await trusted_login(agw, "alice", "desktop")
    otp = await call(agw, "GET", "/accounts/alice/trusted-devices")
    admin = await as_admin(agw, "GET", "/accounts/alice/devices")
    operator = await as_operator(agw, "GET", "/accounts/alice/devices")
    assert otp.status == admin.status == operator.status == 200
    assert otp.body == admin.body == operator.body
    assert sorted(d["label"] for d in otp.body["devices"]) == ["desktop", "laptop"]
    for device in otp.body["devices"]:
        assert set(device) == {"device_id", "label", "created_at", "trusted_until"}
    # Revoked through one, gone through the other, with the same 404.
    [laptop_id] = [d["device_id"] for d in otp.body["devices"] if d["label"] == "laptop"]
    gone = await call(agw, "DELETE", f"/accounts/alice/trusted-devices/{laptop_id}")
    assert gone.status == 204
    again = await as_operator(agw, "DELETE", f"/accounts/alice/devices/{laptop_id}")
    twice = await call(agw, "DELETE", f"/accounts/alice/trusted-devices/{laptop_id}")
    assert_error(again, 404, "not_found")
    assert again.body == twice.body
    left = (await as_admin(agw, "GET", "/accounts/alice/devices")).body["devices"]
    assert [d["label"] for d in left] == ["desktop"]


async def test_admin_lists_and_revokes_trusted_devices(agw: Gateway) -> None:
    laptop = await trusted_login(agw, "alice", "laptop")
    await trusted_login(agw, "alice", "desktop")
    devices = (await as_admin(agw, "GET", "/accounts/alice/devices")).body["devices"]
    assert sorted(d["label"] for d in devices) == ["desktop", "laptop"]
    desktop_id = next(d["device_id"] for d in devices if d["label"] == "desktop")
    assert (await managing(agw, "DELETE", f"/accounts/alice/devices/{desktop_id}")).status == 204
    reply = await as_admin(agw, "DELETE", f"/accounts/alice/devices/{desktop_id}")
    assert_error(reply, 404, "not_found")
    assert (await managing(agw, "DELETE", "/accounts/alice/devices")).body == {"revoked": 1}
    challenge = await call(
        agw, "POST", "/challenge", {"account_id": "alice", "trusted_device_token": laptop}
    )
    assert challenge.status == 202  # the device no longer spares the code
    actions = [e["action"] for e in (await as_admin(agw, "GET", "/history")).body["entries"]]
    assert actions[:2] == ["devices.revoke_all", "devices.revoke"]


# --- hidden numbers and notices ----------------------------------------------------


async def test_hidden_number_shown_to_nobody(
    agw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = await step_up(agw, "boss", "contact.update")
    await as_admin(agw, "PUT", "/accounts/alice/phone", {"phone": OTHER_MOBILE}, token=token)
    seen = [
        await as_admin(agw, "GET", "/accounts/alice"),
        await as_admin(agw, "GET", "/accounts"),
        await as_admin(agw, "GET", "/accounts/alice/history"),
        await as_admin(agw, "GET", "/history"),
        await as_operator(agw, "GET", "/accounts/alice"),
        await as_operator(agw, "GET", f"/accounts?establishment={ESTABLISHMENT}"),
        await as_operator(agw, "GET", "/accounts/alice/history"),
    ]
    assert seen[0].body["phone"] is None and seen[0].body["phone_set"] is True
    await mails_after_drain(agw)
    for text in [json.dumps(r.body) for r in seen] + [caplog.text]:
        assert MOBILE_DIGITS not in text and OTHER_DIGITS not in text
    for history in (seen[2], seen[3], seen[6]):
        assert "+33 * ** ** ** **" in json.dumps(history.body)


async def test_contact_changes_are_announced_by_email(agw: Gateway, inbox: Inbox) -> None:
    token = await step_up(agw, "boss", "contact.update")
    await as_admin(agw, "PATCH", "/accounts/alice", {"email": "alice2@example.org"}, token=token)
    token = await step_up(agw, "boss", "contact.update")
    await as_admin(agw, "PUT", "/accounts/alice/phone", {"phone": OTHER_MOBILE}, token=token)
    assert await mails_after_drain(agw) == 2
    email_notice, phone_notice = inbox.messages
    assert set(inbox.recipients[0]) == {"alice@example.org", "alice2@example.org"}
    assert inbox.recipients[1] == ["alice2@example.org"]
    text, html = parts(phone_notice)
    assert "numéro de téléphone" in text and "un administrateur" in text
    assert "<p>" in html and OTHER_DIGITS not in text + html
    assert email_notice["Subject"] == "Modification de votre compte alice"
    assert email_notice["From"] == "pep@example.org"


async def test_notices_in_english(make_gateway: GatewayFactory, inbox: Inbox) -> None:
    gw = await admin_gateway(make_gateway, inbox, accounts={"language": "en"})
    await as_operator(gw, "PATCH", "/accounts/alice", {"email": "alice2@example.org"})
    assert await mails_after_drain(gw) == 1
    text, _ = parts(inbox.messages[0])
    assert "The e-mail address of your account alice was changed" in text
    assert "the support team" in text


# --- deployment day --------------------------------------------------------------------


async def test_operator_blanks_one_establishment(agw: Gateway) -> None:
    laptop = await trusted_login(agw, "alice", "laptop")
    reply = await as_operator(agw, "POST", "/phones/blank", {"establishment": ESTABLISHMENT})
    assert reply.status == 200 and reply.body == {"accounts": 2, "blanked": 2}
    for account_id in ("alice", "boss"):
        account = (await as_operator(agw, "GET", f"/accounts/{account_id}")).body
        assert account["phone_set"] is False and account["phone"] is None
        reply = await call(agw, "POST", "/challenge", {"account_id": account_id})
        assert_error(reply, 409, "phone_required")
    reply = await call(
        agw, "POST", "/challenge", {"account_id": "alice", "trusted_device_token": laptop}
    )
    assert_error(reply, 409, "phone_required")  # the trusted device went too
    assert (await as_operator(agw, "GET", "/accounts/carol")).body["phone_set"] is True
    entry = (await as_operator(agw, "GET", "/accounts/alice/history")).body["entries"][0]
    assert entry["action"] == "phone.blank" and entry["after"]["phone"] is None


async def test_operator_blanks_everything(agw: Gateway) -> None:
    reply = await as_operator(agw, "POST", "/phones/blank", {"all": True})
    assert reply.body == {"accounts": 4, "blanked": 4}
    again = await as_operator(agw, "POST", "/phones/blank", {"all": True})
    assert again.body == {"accounts": 4, "blanked": 0}
    assert (await as_operator(agw, "GET", "/accounts/carol")).body["phone_set"] is False


@pytest.mark.parametrize(
    "body",
    [{}, {"all": False}, {"all": True, "establishment": "X"}, {"establishment": "", "all": False}],
)
async def test_blank_needs_one_scope(agw: Gateway, body: dict[str, Any]) -> None:
    assert_error(await as_operator(agw, "POST", "/phones/blank", body), 400, "invalid_request")


async def test_admins_cannot_blank(agw: Gateway) -> None:
    reply = await as_admin(agw, "POST", "/phones/blank", {"establishment": ESTABLISHMENT})
    assert_error(reply, 403, "forbidden")
