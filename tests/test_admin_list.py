"""The admin's account list: filters, sort, pagination, groups, review flags."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.accounts import AccountStore, NewAccount, Who
from gateway.config import AccountsConfig
from gateway.phones import PhonePolicy
from tests.support.admin import ESTABLISHMENT, admin_gateway, as_admin, as_operator
from tests.support.dates import iso_in
from tests.support.gateway import ACCOUNT, Gateway, GatewayFactory
from tests.support.otp import assert_error, challenge_and_code, verify
from tests.support.smtp import Inbox

LONG_AGO = datetime.now(UTC) - timedelta(days=200)
# An admin whose account ends in three weeks: still active, soon to expire.
ZOE_EXPIRES = iso_in(21)


async def add(gw: Gateway, account_id: str, **fields: Any) -> None:
    body = {**ACCOUNT, "account_id": account_id, "email": f"{account_id}@example.org", **fields}
    reply = await as_operator(gw, "POST", "/accounts", body)
    assert reply.status == 201, reply.body


@pytest.fixture
async def lgw(make_gateway: GatewayFactory, inbox: Inbox) -> Gateway:
    """boss (admin), alice (user) plus a varied staff, and one account made long ago."""
    gw = await admin_gateway(make_gateway, inbox)
    await add(gw, "accueil", first_name="Accueil", last_name="Mairie", services=["etat-civil"])
    await add(
        gw,
        "paul",
        first_name="Paul",
        last_name="Écrivain",
        services=["paie", "rh"],
        net_entreprises=True,
    )
    await add(
        gw,
        "jd1",
        first_name="Jean",
        last_name="Dupont",
        email="j.dupont@example.org",
        services=["paie"],
    )
    await add(
        gw,
        "jd2",
        first_name="Julie",
        last_name="Dupont",
        email="J.Dupont@example.org",
        services=["carrieres"],
    )
    await add(
        gw,
        "zoe",
        first_name="Zoé",
        last_name="Secrétariat-Général",
        role="admin",
        expires_at=ZOE_EXPIRES,
    )
    await as_operator(gw, "PATCH", "/accounts/paul", {"status": "suspended"})
    old = AccountStore(
        gw.services.redis,
        gw.services.keyring,
        PhonePolicy(),
        AccountsConfig(),
        clock=lambda: LONG_AGO,
    )
    fields = {
        **ACCOUNT,
        "account_id": "old",
        "first_name": "Odile",
        "last_name": "Ancienne",
        "email": "odile@example.org",
        "expires_at": datetime.now(UTC) + timedelta(days=90),
    }
    await old.create(NewAccount(**fields), who=Who("test", "t"))
    challenge_id, code = await challenge_and_code(gw, "alice")
    assert (await verify(gw, challenge_id, code)).status == 200  # alice logs in
    return gw


async def ids(gw: Gateway, query: str) -> list[str]:
    reply = await as_admin(gw, "GET", f"/accounts?{query}")
    assert reply.status == 200, reply.body
    return [a["account_id"] for a in reply.body["accounts"]]


async def test_default_list_is_by_id_with_expiry_login_and_flags(lgw: Gateway) -> None:
    reply = await as_admin(lgw, "GET", "/accounts")
    body = reply.body
    assert [a["account_id"] for a in body["accounts"]] == [
        "accueil",
        "alice",
        "boss",
        "jd1",
        "jd2",
        "old",
        "paul",
        "zoe",
    ]
    assert body["total"] == 8 and body["page"] == 1 and body["per_page"] == 50
    assert body["active_admins"] == 2 and body["warnings"] == []
    rows = {a["account_id"]: a for a in body["accounts"]}
    assert rows["alice"]["last_login_at"] is not None
    assert rows["boss"]["last_login_at"] is None
    assert rows["zoe"]["expires_at"] == ZOE_EXPIRES
    assert rows["old"]["expires_in_days"] in (89, 90)
    assert rows["alice"]["phone"] is None  # hidden
    assert rows["old"]["flags"] == ["inactive"]
    for generic in ("accueil", "jd1", "jd2", "zoe"):  # a word, a shared address, a word
        assert "generic" in rows[generic]["flags"], generic
    for personal in ("alice", "boss", "paul"):
        assert rows[personal]["flags"] == [], personal


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=suspended", ["paul"]),
        ("status=active&role=admin", ["boss", "zoe"]),
        ("role=user&service=PAIE", ["jd1", "paul"]),
        ("net_entreprises=true", ["paul"]),
        ("net_entreprises=false&service=carrieres", ["jd2"]),
        ("q=secretariat", ["zoe"]),  # accents and case folded
        ("q=dupont julie", ["jd2"]),  # every word must match
        ("q=etat-civil", ["accueil"]),  # services too
        ("q=nothing-like-this", []),
        ("flag=inactive", ["old"]),
        ("flag=generic&role=user", ["accueil", "jd1", "jd2"]),
        ("inactive_days=1&flag=inactive", ["old"]),
    ],
)
async def test_filters(lgw: Gateway, query: str, expected: list[str]) -> None:
    assert await ids(lgw, query) == expected


async def test_sorts(lgw: Gateway) -> None:
    assert (await ids(lgw, "sort=-last_name"))[:4] == ["zoe", "alice", "boss", "accueil"]
    assert (await ids(lgw, "sort=expires_at"))[:2] == ["zoe", "old"]
    by_login = await ids(lgw, "sort=-last_login_at")
    assert by_login[0] == "alice"  # the only login; accounts never seen come last
    assert (await ids(lgw, "sort=created_at"))[0] == "old"
    assert (await ids(lgw, "sort=status"))[-1] == "paul"


async def test_pagination_keeps_the_total(lgw: Gateway) -> None:
    pages = [await as_admin(lgw, "GET", f"/accounts?per_page=3&page={n}") for n in (1, 2, 3, 4)]
    assert [len(p.body["accounts"]) for p in pages] == [3, 3, 2, 0]
    assert {p.body["total"] for p in pages} == {8}
    seen = [a["account_id"] for p in pages for a in p.body["accounts"]]
    assert seen == sorted(seen) and len(set(seen)) == 8


async def test_group_by(lgw: Gateway) -> None:
    reply = await as_admin(lgw, "GET", "/accounts?group_by=service&sort=last_name")
    body = reply.body
    assert body["groups"] == [
        {"key": "", "total": 4},
        {"key": "carrieres", "total": 1},
        {"key": "etat-civil", "total": 1},
        {"key": "paie", "total": 2},
    ]
    assert [a["group"] for a in body["accounts"]] == [
        "",
        "",
        "",
        "",
        "carrieres",
        "etat-civil",
        "paie",
        "paie",
    ]
    assert [a["account_id"] for a in body["accounts"][-2:]] == ["jd1", "paul"]  # by last name
    roles = (await as_admin(lgw, "GET", "/accounts?group_by=role")).body["groups"]
    assert roles == [{"key": "admin", "total": 2}, {"key": "user", "total": 6}]
    statuses = (await as_admin(lgw, "GET", "/accounts?group_by=status")).body["groups"]
    assert statuses == [{"key": "active", "total": 7}, {"key": "suspended", "total": 1}]


@pytest.mark.parametrize(
    "query",
    [
        "status=gone",
        "role=root",
        "sort=phone",
        "sort=--last_name",
        "per_page=0",
        "per_page=201",
        "page=0",
        "page=x",
        "net_entreprises=yes",
        "group_by=email",
        "flag=old",
        "inactive_days=0",
        "q=" + "x" * 101,
    ],
)
async def test_bad_parameters_are_400(lgw: Gateway, query: str) -> None:
    assert_error(await as_admin(lgw, "GET", f"/accounts?{query}"), 400, "invalid_request")


async def test_operators_name_the_establishment(lgw: Gateway) -> None:
    assert_error(await as_operator(lgw, "GET", "/accounts"), 400, "invalid_request")
    reply = await as_operator(lgw, "GET", f"/accounts?establishment={ESTABLISHMENT}&role=admin")
    assert [a["account_id"] for a in reply.body["accounts"]] == ["boss", "zoe"]
    reply = await as_admin(lgw, "GET", f"/accounts?establishment={ESTABLISHMENT}")
    assert reply.body["total"] == 8  # an admin may name its own
