"""Rotating `[security] secret`: sealed numbers and TOTP secrets follow, tagged keys too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from cryptography.exceptions import InvalidTag

from gateway.accounts.rotate import rotate
from tests.support.admin import ESTABLISHMENT, FAST, admin_gateway, as_admin, step_up
from tests.support.config import SECRET
from tests.support.gateway import GatewayFactory
from tests.support.otp import MOBILE_E164, call, challenge_and_code, code_for, verify
from tests.support.smtp import Inbox

NEW_SECRET = "a-brand-new-secret-of-more-than-32-bytes!"


async def test_rotation_keeps_numbers_apps_devices_and_indexes(
    make_gateway: GatewayFactory, inbox: Inbox
) -> None:
    gw = await admin_gateway(make_gateway, inbox, accounts={"totp": True})
    challenge_id, code = await challenge_and_code(gw, "alice")
    trusted = (await verify(gw, challenge_id, code, trust_device=True)).body
    token = await step_up(gw, "alice", "contact.update")
    enrol = await call(gw, "POST", "/accounts/alice/totp", headers={"X-Step-Up-Token": token})
    secret = parse_qs(urlparse(enrol.body["otpauth_uri"]).query)["secret"][0]
    confirm = {"code": pyotp.TOTP(secret).now()}
    assert (await call(gw, "POST", "/accounts/alice/totp/confirm", confirm)).status == 200
    before = (await as_admin(gw, "GET", "/accounts")).body
    history = (await as_admin(gw, "GET", "/history")).body["total"]
    pending = (await call(gw, "POST", "/challenge", {"account_id": "alice"})).body

    redis = gw.services.redis
    with pytest.raises(InvalidTag):
        await rotate(redis, "not-the-old-secret-but-long-enough-0123", NEW_SECRET)
    done = await rotate(redis, SECRET, NEW_SECRET)
    assert (done.accounts, done.numbers, done.totp, done.establishments) == (4, 4, 1, 2)
    again = await rotate(redis, SECRET, NEW_SECRET)  # a second run finds it all done
    assert (again.numbers, again.totp) == (0, 0)

    new = await make_gateway(**FAST, security={"secret": NEW_SECRET}, accounts={"totp": True})
    after = (await as_admin(new, "GET", "/accounts")).body
    assert after["accounts"] == before["accounts"]
    assert (await as_admin(new, "GET", "/history")).body["total"] == history
    assert (await call(new, "GET", f"/challenge/{pending['challenge_id']}")).status == 404
    spared = await call(
        new,
        "POST",
        "/challenge",
        {
            "account_id": "alice",
            "trusted_device_token": trusted["trusted_device_token"],
        },
    )
    assert spared.body == {"required": False, "reason": "trusted_device"}
    challenge_id, _ = await challenge_and_code(new, "alice", purpose="rncps")
    assert [m["to"] for m in new.sink.received if m["challenge_id"] == challenge_id] == [
        MOBILE_E164
    ]
    assert await code_for(new, challenge_id)
    later = pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30))
    reply = await call(new, "POST", "/accounts/alice/totp/verify", {"code": later})
    assert reply.status == 200, reply.body
    listed = await as_admin(new, "GET", f"/accounts?establishment={ESTABLISHMENT}&role=user")
    assert [a["account_id"] for a in listed.body["accounts"]] == ["alice"]
