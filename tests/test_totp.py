"""Authenticator apps (RFC 6238): enrol, confirm, verify once, remove; the deployment switch."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from gateway import keys
from gateway.accounts.totp import matching_step
from tests.support.admin import (
    admin_gateway,
    as_admin,
    as_operator,
    mails_after_drain,
    managing,
    step_up,
)
from tests.support.gateway import Gateway, GatewayFactory
from tests.support.otp import Reply, assert_error, call, everything_in_redis
from tests.support.smtp import Inbox, parts


@pytest.fixture
async def tgw(make_gateway: GatewayFactory, inbox: Inbox) -> Gateway:
    return await admin_gateway(make_gateway, inbox, accounts={"totp": True, "totp_issuer": "PEP's"})


def at(secret: str, offset_steps: int = 0) -> str:
    when = datetime.now(UTC) + timedelta(seconds=30 * offset_steps)
    return pyotp.TOTP(secret).at(when)


async def totp_call(
    gw: Gateway, method: str, path: str, body: Any = None, token: str = ""
) -> Reply:
    headers = {"X-Step-Up-Token": token} if token else {}
    return await call(gw, method, f"/accounts/alice/totp{path}", body, headers=headers)


async def enrolled(gw: Gateway) -> str:
    """Enrol and confirm an app for alice; its secret."""
    token = await step_up(gw, "alice", "contact.update")
    reply = await totp_call(gw, "POST", "", token=token)
    assert reply.status == 201, reply.body
    secret = parse_qs(urlparse(reply.body["otpauth_uri"]).query)["secret"][0]
    assert (await totp_call(gw, "POST", "/confirm", {"code": at(secret)})).status == 200
    return secret


def test_rfc_6238_vectors() -> None:
    secret = base64.b32encode(b"12345678901234567890").decode()
    # RFC 6238 appendix B (SHA-1), last 6 of the 8 digits.
    for unix, code in [
        (59, "287082"),
        (1111111109, "081804"),
        (1234567890, "005924"),
        (2000000000, "279037"),
    ]:
        when = datetime.fromtimestamp(unix, UTC)
        assert matching_step(secret, code, when) == unix // 30
        assert matching_step(secret, code, when + timedelta(seconds=30)) == unix // 30
        assert matching_step(secret, code, when + timedelta(seconds=90)) == -1


async def test_disabled_unless_the_deployment_allows_it(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(make_gateway, inbox)
    status = await totp_call(gw, "GET", "")
    assert status.body == {"allowed": False, "enrolled": False, "pending": False}
    token = await step_up(gw, "alice", "contact.update")
    assert_error(await totp_call(gw, "POST", "", token=token), 403, "totp_disabled")
    assert_error(await totp_call(gw, "POST", "/confirm", {"code": "123456"}), 403, "totp_disabled")
    assert_error(await totp_call(gw, "POST", "/verify", {"code": "123456"}), 403, "totp_disabled")


async def test_enrol_confirm_and_use(tgw: Gateway, inbox: Inbox) -> None:
    assert_error(await totp_call(tgw, "POST", ""), 401, "step_up_required")
    token = await step_up(tgw, "alice", "contact.update")
    reply = await totp_call(tgw, "POST", "", token=token)
    uri = urlparse(reply.body["otpauth_uri"])
    assert uri.scheme == "otpauth" and uri.netloc == "totp"
    query = parse_qs(uri.query)
    assert query["issuer"] == ["PEP's"]
    secret = query["secret"][0]
    assert (await totp_call(tgw, "GET", "")).body == {
        "allowed": True,
        "enrolled": False,
        "pending": True,
    }
    assert_error(
        await totp_call(tgw, "POST", "/verify", {"code": at(secret)}), 409, "totp_not_enrolled"
    )
    assert_error(
        await totp_call(tgw, "POST", "/confirm", {"code": at(secret, 3)}), 422, "invalid_code"
    )
    assert (await totp_call(tgw, "POST", "/confirm", {"code": at(secret)})).status == 200
    assert (await totp_call(tgw, "GET", "")).body["enrolled"] is True

    # The secret is sealed at rest.
    blobs = b"\x00".join(await everything_in_redis(tgw.services.redis))
    assert secret.encode() not in blobs
    assert base64.b32decode(secret) not in blobs

    assert await mails_after_drain(tgw) == 1
    text, _ = parts(inbox.messages[0])
    assert "application d'authentification a été associée" in text


async def test_login_with_the_app_once_per_code(tgw: Gateway) -> None:
    secret = await enrolled(tgw)
    code = at(secret, 1)  # the next step: clock drift is tolerated
    reply = await totp_call(
        tgw, "POST", "/verify", {"code": code, "trust_device": True, "device_label": "home"}
    )
    assert reply.status == 200, reply.body
    assert reply.body["verified"] is True and reply.body["purpose"] == "login"
    replay = await totp_call(tgw, "POST", "/verify", {"code": code})
    body = assert_error(replay, 410, "already_used")
    assert body["verified"] is False
    # Nor an older step than the last one accepted.
    assert_error(await totp_call(tgw, "POST", "/verify", {"code": at(secret)}), 410, "already_used")
    spared = await call(
        tgw,
        "POST",
        "/challenge",
        {
            "account_id": "alice",
            "trusted_device_token": reply.body["trusted_device_token"],
        },
    )
    assert spared.body == {"required": False, "reason": "trusted_device"}
    last_login = (await as_operator(tgw, "GET", "/accounts/alice")).body["last_login_at"]
    assert last_login is not None


async def test_the_app_gives_step_up_tokens(tgw: Gateway) -> None:
    secret = await enrolled(tgw)  # confirmed with the current step's code: take the next
    reply = await totp_call(
        tgw, "POST", "/verify", {"code": at(secret, 1), "purpose": "contact.update"}
    )
    assert reply.body["purpose"] == "contact.update"
    token = reply.body["step_up_token"]
    change = await call(
        tgw,
        "PUT",
        "/accounts/alice/email",
        {"email": "a2@example.org"},
        headers={"X-Step-Up-Token": token},
    )
    assert change.status == 200
    assert_error(
        await totp_call(tgw, "POST", "/verify", {"code": "123456", "purpose": "nope"}),
        400,
        "invalid_request",
    )


async def test_wrong_codes_spend_the_failure_budget(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(
        make_gateway,
        inbox,
        accounts={"totp": True},
        rate_limits={"failures": "3/1h", "account": "100/1m"},
    )
    secret = await enrolled(gw)
    bad = str((int(at(secret)) + 500_000) % 1_000_000).zfill(6)
    for _ in range(3):
        assert_error(await totp_call(gw, "POST", "/verify", {"code": bad}), 422, "invalid_code")
    reply = await totp_call(gw, "POST", "/verify", {"code": at(secret)})
    assert_error(reply, 429, "rate_limited")
    assert reply.headers["Retry-After"]
    assert_error(await totp_call(gw, "POST", "/verify", {"code": "12345"}), 400, "invalid_request")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"status": "suspended"}, "account_suspended"),
        ({"expires_at": "2020-01-01T00:00:00Z"}, "account_expired"),
    ],
)
async def test_inactive_accounts_cannot_use_the_app(
    tgw: Gateway, change: dict[str, str], code: str
) -> None:
    secret = await enrolled(tgw)
    await as_operator(tgw, "PATCH", "/accounts/alice", change)
    assert_error(await totp_call(tgw, "POST", "/verify", {"code": at(secret)}), 403, code)


async def test_remove(tgw: Gateway, inbox: Inbox) -> None:
    await enrolled(tgw)
    assert_error(await totp_call(tgw, "DELETE", ""), 401, "step_up_required")
    token = await step_up(tgw, "alice", "contact.update")
    assert (await totp_call(tgw, "DELETE", "", token=token)).status == 204
    assert_error(await as_admin(tgw, "DELETE", "/accounts/alice/totp"), 404, "not_found")
    await enrolled(tgw)
    assert (await as_admin(tgw, "GET", "/accounts/alice/totp")).body["enrolled"] is True
    body = assert_error(
        await as_admin(tgw, "DELETE", "/accounts/alice/totp"), 401, "step_up_required"
    )
    assert body["purpose"] == "account.manage"
    assert (await managing(tgw, "DELETE", "/accounts/alice/totp")).status == 204
    await enrolled(tgw)
    assert (await as_operator(tgw, "DELETE", "/accounts/alice/totp")).status == 204
    actions = [
        e["action"]
        for e in (await as_operator(tgw, "GET", "/accounts/alice/history")).body["entries"]
    ]
    assert actions.count("totp.remove") == 3 and actions.count("totp.confirm") == 3
    await mails_after_drain(tgw)
    removed = [m for m in inbox.messages if "retirée" in parts(m)[0]]
    assert len(removed) == 3


async def test_deleting_the_account_forgets_the_app(tgw: Gateway) -> None:
    await enrolled(tgw)
    tag = tgw.services.accounts.account_tag("alice")
    assert await tgw.services.redis.exists(keys.totp(tag)) == 1
    assert (await managing(tgw, "DELETE", "/accounts/alice")).status == 204
    assert await tgw.services.redis.exists(keys.totp(tag)) == 0


async def test_confirm_without_enrolment(tgw: Gateway) -> None:
    assert_error(
        await totp_call(tgw, "POST", "/confirm", {"code": "123456"}), 409, "totp_not_enrolled"
    )
