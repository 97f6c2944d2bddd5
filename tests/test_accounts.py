"""Tests for gateway.accounts, on a real redis-server."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway import keys
from gateway.accounts import (
    KEEP,
    Account,
    AccountStore,
    NewAccount,
    Role,
    Status,
    Who,
)
from gateway.clock import iso
from gateway.config import AccountsConfig, config_from_dict
from gateway.crypto import Keyring
from gateway.errors import ConfigError, Conflict, InvalidRequest, NotFound, Unprocessable
from gateway.phones import LineType, PhonePolicy
from tests.support.config import SECRET
from tests.support.dates import iso_in, midnight_in
from tests.support.queues import history, indexed, record

KEYRING = Keyring.from_secret(SECRET)
MOBILE = "06 12 34 56 78"
MOBILE_E164 = "+33612345678"
MOBILE_NATIONAL = "612345678"
OTHER = "+33 7 98 76 54 32"
OTHER_NATIONAL = "798765432"
ACTOR = "ops"


@pytest.fixture
def store(redis: aioredis.Redis) -> AccountStore:
    return AccountStore(redis, KEYRING, PhonePolicy(), AccountsConfig(validity_days=365))


def new(account_id: str = "alice", **overrides: Any) -> NewAccount:
    fields: dict[str, Any] = {
        "account_id": account_id,
        "establishment": "Clinique du Parc",
        "last_name": "Martin",
        "first_name": "Alice",
        "email": "alice@example.org",
        "role": "user",
        "phone": MOBILE,
    }
    fields.update(overrides)
    return NewAccount(**fields)


async def create(store: AccountStore, account_id: str = "alice", **overrides: Any) -> Account:
    return await store.create(new(account_id, **overrides), who=Who(ACTOR, "req-1"))


def tag(account_id: str) -> str:
    return KEYRING.tag("account", account_id)


async def everything_in_redis(redis: aioredis.Redis) -> list[bytes]:
    """Every key name, DUMP payload and raw value Redis holds."""
    found: list[Any] = []
    async for key in redis.scan_iter():
        found += [key, await redis.dump(key)]
        kind = await redis.type(key)
        if kind == b"hash":
            for field, value in (await redis.hgetall(key)).items():
                found += [field, value]
        elif kind == b"stream":
            for _, fields in await redis.xrange(key) or []:
                for field, value in (fields or {}).items():
                    found += [field, value]
        elif kind == b"set":
            found += list(await redis.smembers(key))
        elif kind == b"string":
            found.append(await redis.get(key))
    assert all(isinstance(blob, bytes) for blob in found)
    return found


# --- create / get ------------------------------------------------------------


async def test_create_then_get_round_trip(store: AccountStore) -> None:
    before = datetime.now(UTC)
    created = await create(
        store,
        services=["rncps", "paie"],
        net_entreprises=True,
        phone_extension="123",
        role="admin",
    )
    fetched = await store.get("alice")
    assert fetched == created
    assert fetched.role is Role.ADMIN
    assert fetched.phone is not None
    assert fetched.phone.e164 == MOBILE_E164
    assert fetched.phone.region == "FR"
    assert fetched.phone.line_type is LineType.MOBILE
    assert fetched.services == ("rncps", "paie")
    assert fetched.net_entreprises is True
    assert fetched.phone_extension == "123"
    assert fetched.suspended is False
    assert fetched.last_login_at is None
    assert before - timedelta(seconds=1) <= fetched.created_at <= datetime.now(UTC)
    assert fetched.expires_at == fetched.created_at + timedelta(days=365)

    now = datetime.now(UTC)
    body = fetched.to_json(now)
    assert body == {
        "account_id": "alice",
        "establishment": "Clinique du Parc",
        "last_name": "Martin",
        "first_name": "Alice",
        "email": "alice@example.org",
        "role": "admin",
        "phone": MOBILE_E164,
        "phone_hidden": False,
        "phone_extension": "123",
        "phone_set": True,
        "services": ["rncps", "paie"],
        "net_entreprises": True,
        "expires_at": iso(fetched.expires_at),
        "status": "active",
        "created_at": iso(fetched.created_at),
        "last_login_at": None,
    }
    assert body["created_at"].endswith("Z")
    assert datetime.fromisoformat(body["created_at"]) <= now
    json.dumps(body)  # serializable as is


async def test_create_without_phone(store: AccountStore) -> None:
    created = await create(store, phone=None)
    assert created.phone is None
    assert created.to_json(datetime.now(UTC))["phone_set"] is False
    assert await store.get("alice") == created


async def test_create_with_explicit_expiry(store: AccountStore) -> None:
    when = midnight_in(1600) + timedelta(hours=12, minutes=30)
    created = await create(store, expires_at=when)
    assert created.expires_at == when
    assert created.to_json(datetime.now(UTC))["expires_at"] == iso_in(1600)[:11] + "12:30:00Z"


async def test_get_unknown_and_require(store: AccountStore) -> None:
    assert await store.get("nobody") is None
    assert await store.get("not a valid id!") is None
    with pytest.raises(NotFound) as caught:
        await store.require("nobody")
    assert caught.value.code == "unknown_account"


async def test_indexes_after_create(store: AccountStore, redis: aioredis.Redis) -> None:
    await create(store)
    assert await indexed(redis) == {b"alice"}
    est_key = keys.establishment(KEYRING.tag("establishment", "Clinique du Parc"))
    assert await redis.smembers(est_key) == {b"alice"}


async def test_duplicate_id_conflicts(store: AccountStore) -> None:
    await create(store)
    with pytest.raises(Conflict) as caught:
        await create(store, first_name="Other")
    assert caught.value.code == "account_exists"
    assert caught.value.status == 409
    account = await store.require("alice")
    assert account.first_name == "Alice"


async def test_concurrent_creates_exactly_one_wins(
    store: AccountStore, redis: aioredis.Redis
) -> None:
    results = await asyncio.gather(
        *(create(store, first_name=f"N{i}") for i in range(10)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, Account)]
    losers = [r for r in results if isinstance(r, Conflict)]
    assert len(winners) == 1
    assert len(losers) == 9
    assert all(r.code == "account_exists" for r in losers)
    assert (await store.require("alice")).first_name == winners[0].first_name
    assert await redis.xlen(history("alice")) == 1


async def test_invalid_phone(store: AccountStore, redis: aioredis.Redis) -> None:
    with pytest.raises(Unprocessable) as caught:
        await create(store, phone="0891 12 34 56")
    assert caught.value.code == "invalid_phone"
    assert caught.value.status == 422
    assert caught.value.extra["reason"] == "premium_rate"
    assert "891" not in str(caught.value)
    with pytest.raises(Unprocessable) as caught:
        await create(store, phone="not a phone")
    assert caught.value.body()["reason"] == "not_a_number"
    assert await redis.exists(record("alice")) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("account_id", "has space"),
        ("account_id", ""),
        ("account_id", "x" * 129),
        ("account_id", "caf\u00e9"),
        ("role", "root"),
        ("email", "not-an-email"),
        ("email", "a@b"),
        ("email", "a" * 250 + "@b.fr"),
        ("last_name", ""),
        ("last_name", "x" * 101),
        ("first_name", "Al\nice"),
        ("first_name", "   "),
        ("establishment", ""),
        ("phone_extension", "12a"),
        ("phone_extension", ""),
        ("phone_extension", "12345678901"),
        ("services", ["ok", "b@d"]),
        ("services", ["x" * 65]),
        ("services", [f"s{i}" for i in range(51)]),
        ("services", "rncps"),
    ],
)
async def test_invalid_fields(store: AccountStore, field: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await create(store, **{field: value})
    assert caught.value.code == "invalid_request"
    assert field in caught.value.message


async def test_accepted_edge_values(store: AccountStore) -> None:
    account = await create(
        store,
        "a.b_c-d@e",
        last_name="x" * 100,
        services=[f"s{i}" for i in range(50)],
        phone_extension="1234567890",
        phone="+33 1 23 45 67 89",
    )
    assert account.phone is not None
    assert account.phone.line_type is LineType.FIXED
    assert await store.get("a.b_c-d@e") == account


# --- hidden numbers ------------------------------------------------------------


async def test_hidden_number_never_in_clear(store: AccountStore, redis: aioredis.Redis) -> None:
    created = await create(store, phone_hidden=True, phone_extension="42")
    assert created.to_json(datetime.now(UTC))["phone"] is None
    assert created.to_json(datetime.now(UTC))["phone_set"] is True
    assert created.phone is not None
    assert created.phone.e164 == MOBILE_E164  # usable for sending

    await store.update("alice", {"first_name": "Alicia"}, who=Who(ACTOR, "r2"))
    await store.renew("alice", who=Who(ACTOR, "r3"))
    await store.set_phone("alice", store.parse_phone(OTHER), hidden=True, who=Who(ACTOR, "r4"))
    fetched = await store.require("alice")
    assert fetched.to_json(datetime.now(UTC))["phone"] is None
    assert fetched.phone is not None
    assert fetched.phone.e164 == "+33798765432"

    blobs = await everything_in_redis(redis)
    assert record("alice").encode() in blobs
    assert history("alice").encode() in blobs
    for blob in blobs:
        for digits in (MOBILE_NATIONAL, OTHER_NATIONAL):
            assert digits.encode() not in blob

    entries, total = await store.history("alice", 1, 50)
    assert total == 4
    text = json.dumps(entries)
    assert MOBILE_NATIONAL not in text
    assert OTHER_NATIONAL not in text
    assert "+33 * ** ** ** **" in text
    assert MOBILE_NATIONAL not in repr(fetched)
    assert OTHER_NATIONAL not in repr(fetched)
    assert MOBILE not in repr(new(phone_hidden=True))


async def test_visible_number_is_sealed_too(store: AccountStore, redis: aioredis.Redis) -> None:
    created = await create(store)
    assert created.to_json(datetime.now(UTC))["phone"] == MOBILE_E164
    raw = await redis.hgetall(record("alice"))
    assert raw[b"number_tag"] == KEYRING.tag("number", MOBILE_E164).encode()
    assert raw[b"region"] == b"FR"
    assert raw[b"line_type"] == b"mobile"
    for value in raw.values():
        assert MOBILE_NATIONAL.encode() not in value


async def test_sealed_number_is_bound_to_its_account(
    store: AccountStore, redis: aioredis.Redis
) -> None:
    await create(store, "alice")
    await create(store, "bob", phone=OTHER)
    sealed = await redis.hget(record("alice"), "phone")
    assert sealed is not None
    await redis.hset(record("bob"), "phone", sealed)
    with pytest.raises(Exception) as caught:
        await store.get("bob")
    assert MOBILE_NATIONAL not in str(caught.value)
    assert caught.value.__cause__ is None


# --- phone changes ---------------------------------------------------------------


async def test_set_phone_revokes_trusted_devices(
    store: AccountStore, redis: aioredis.Redis
) -> None:
    await create(store, phone_extension="12")
    await create(store, "bob")
    t = tag("alice")
    await redis.hset(keys.trusted_devices(t), mapping={"d1": "x", "d2": "y"})
    # The OTP scripts' runtime fields, kept in the record.
    await redis.hset(
        record("alice"),
        mapping={"c:login": "ch1", "c:rncps": "ch2", "s:login": "1", "g": "5"},
    )
    await redis.hset(keys.trusted_devices(tag("bob")), "d3", "z")
    await redis.hset(record("bob"), "c:login", "ch3")

    updated = await store.set_phone(
        "alice", store.parse_phone(OTHER), hidden=None, who=Who(ACTOR, "r2")
    )
    assert updated.phone is not None
    assert updated.phone.e164 == "+33798765432"
    assert updated.phone_extension == "12"  # kept
    assert updated.phone_hidden is False
    assert await store.get("alice") == updated
    assert await redis.exists(keys.trusted_devices(t)) == 0
    raw = await redis.hgetall(record("alice"))
    # The live challenges die; the last sends and the send-rate state stay.
    assert {k: v for k, v in raw.items() if b":" in k or k == b"g"} == {
        b"s:login": b"1",
        b"g": b"5",
    }
    assert raw[b"number_tag"] == KEYRING.tag("number", "+33798765432").encode()
    # Other accounts are untouched.
    assert await redis.hgetall(keys.trusted_devices(tag("bob"))) == {b"d3": b"z"}
    assert await redis.hget(record("bob"), "c:login") == b"ch3"


async def test_changes_keep_the_runtime_fields(store: AccountStore, redis: aioredis.Redis) -> None:
    """An admin's write rewrites the record's own fields only: the OTP scripts'
    state in the same hash (live challenge, last send, send-rate state) stays."""
    await create(store)
    runtime = {b"c:login": b"ch1", b"s:login": b"1", b"g": b"5"}
    await redis.hset(record("alice"), mapping=runtime)
    who = Who(ACTOR, "r2")
    await store.update("alice", {"first_name": "Alicia", "phone_extension": None}, who=who)
    await store.renew("alice", who=who)
    raw = await redis.hgetall(record("alice"))
    assert {k: raw[k] for k in runtime} == runtime
    assert (await store.get("alice")) is not None


async def test_set_same_phone_still_revokes(store: AccountStore, redis: aioredis.Redis) -> None:
    await create(store)
    t = tag("alice")
    await redis.hset(keys.trusted_devices(t), "d1", "x")
    await store.set_phone("alice", store.parse_phone(MOBILE), extension="7", who=Who(ACTOR, "r2"))
    assert await redis.exists(keys.trusted_devices(t)) == 0
    assert (await store.require("alice")).phone_extension == "7"
    entries, _ = await store.history("alice", 1, 10)
    assert entries[0]["action"] == "phone"


async def test_set_phone_hide_and_clear(store: AccountStore, redis: aioredis.Redis) -> None:
    await create(store, phone_extension="12")
    hidden = await store.set_phone(
        "alice",
        store.parse_phone(MOBILE),
        hidden=True,
        extension=None,
        who=Who(ACTOR, "r2"),
    )
    assert hidden.phone_hidden is True
    assert hidden.phone_extension is None
    assert await store.get("alice") == hidden
    assert await redis.hexists(record("alice"), "phone_extension") == 0

    cleared = await store.set_phone("alice", None, who=Who(ACTOR, "r3"))
    assert cleared.phone is None
    assert cleared.phone_hidden is True
    assert await store.get("alice") == cleared
    raw = await redis.hgetall(record("alice"))
    for field in (b"phone", b"region", b"line_type", b"number_tag"):
        assert field not in raw
    assert KEEP is not None


async def test_set_phone_unknown_account(store: AccountStore) -> None:
    with pytest.raises(NotFound):
        await store.set_phone("ghost", store.parse_phone(MOBILE), who=Who(ACTOR, "r1"))


# --- listing -------------------------------------------------------------------


async def test_list_pagination(store: AccountStore) -> None:
    for i in (3, 1, 4, 0, 2):
        await create(store, f"user{i}", establishment="Mairie")
    await create(store, "zed", establishment="Ailleurs")
    await create(store, "amy", establishment="Ailleurs")

    page1, total = await store.list("Mairie", 1, 2)
    assert total == 5
    assert [a.account_id for a in page1] == ["user0", "user1"]
    page2, _ = await store.list("Mairie", 2, 2)
    assert [a.account_id for a in page2] == ["user2", "user3"]
    page3, _ = await store.list("Mairie", 3, 2)
    assert [a.account_id for a in page3] == ["user4"]
    page4, total = await store.list("Mairie", 4, 2)
    assert page4 == []
    assert total == 5

    others, total = await store.list("Ailleurs", 1, 50)
    assert [a.account_id for a in others] == ["amy", "zed"]
    assert total == 2
    assert await store.list("Nowhere", 1, 10) == ([], 0)


async def test_list_rejects_bad_pages(store: AccountStore) -> None:
    with pytest.raises(InvalidRequest):
        await store.list("Mairie", 0, 10)
    with pytest.raises(InvalidRequest):
        await store.list("Mairie", 1, 0)


# --- updates -------------------------------------------------------------------


async def test_update_fields(store: AccountStore) -> None:
    await create(store)
    updated = await store.update(
        "alice",
        {
            "last_name": "Durand",
            "email": "a.durand@example.org",
            "role": "admin",
            "services": ["rncps"],
            "net_entreprises": True,
            "phone_extension": "99",
            "expires_at": iso_in(1200),
        },
        who=Who(ACTOR, "r2"),
    )
    assert await store.get("alice") == updated
    assert updated.last_name == "Durand"
    assert updated.role is Role.ADMIN
    assert updated.services == ("rncps",)
    assert updated.net_entreprises is True
    assert updated.phone_extension == "99"
    assert updated.expires_at == midnight_in(1200)
    assert updated.phone is not None
    assert updated.phone.e164 == MOBILE_E164

    entries, total = await store.history("alice", 1, 10)
    assert total == 2
    assert entries[0]["action"] == "update"
    assert entries[0]["before"]["last_name"] == "Martin"
    assert entries[0]["after"]["last_name"] == "Durand"
    assert "first_name" not in entries[0]["after"]
    assert entries[0]["request_id"] == "r2"
    assert entries[0]["actor"] == ACTOR


async def test_update_rejects_bad_changes(store: AccountStore) -> None:
    await create(store)
    for changes in (
        {"phone": "0612345678"},
        {"account_id": "bob"},
        {"status": "expired"},
        {"role": "boss"},
        {"expires_at": "tomorrow"},
        {"net_entreprises": "yes"},
    ):
        with pytest.raises(InvalidRequest):
            await store.update("alice", changes, who=Who(ACTOR, "r"))
    with pytest.raises(NotFound):
        await store.update("ghost", {"first_name": "X"}, who=Who(ACTOR, "r"))


async def test_noop_update_writes_no_history(store: AccountStore) -> None:
    await create(store)
    await store.update("alice", {"first_name": "Alice"}, who=Who(ACTOR, "r2"))
    assert (await store.history("alice", 1, 10))[1] == 1


async def test_suspend_and_reactivate(store: AccountStore) -> None:
    await create(store)
    now = datetime.now(UTC)
    suspended = await store.update("alice", {"status": "suspended"}, who=Who(ACTOR, "r2"))
    assert suspended.status(now) is Status.SUSPENDED
    assert (await store.require("alice")).status(now) is Status.SUSPENDED
    assert suspended.to_json(now)["status"] == "suspended"
    active = await store.update("alice", {"status": "active"}, who=Who(ACTOR, "r3"))
    assert active.status(now) is Status.ACTIVE
    assert (await store.require("alice")).status(now) is Status.ACTIVE


async def test_expired_and_renew(store: AccountStore) -> None:
    past = datetime.now(UTC) - timedelta(days=3)
    account = await create(store, expires_at=past)
    now = datetime.now(UTC)
    assert account.status(now) is Status.EXPIRED
    assert account.to_json(now)["status"] == "expired"

    before = datetime.now(UTC)
    renewed = await store.renew("alice", who=Who(ACTOR, "r2"))
    after = datetime.now(UTC)
    assert before + timedelta(days=365, seconds=-1) <= renewed.expires_at
    assert renewed.expires_at <= after + timedelta(days=365)
    assert renewed.status(after) is Status.ACTIVE
    assert await store.get("alice") == renewed

    again = await store.renew("alice", who=Who(ACTOR, "r3"))
    assert again.expires_at == renewed.expires_at + timedelta(days=365)
    entries, _ = await store.history("alice", 1, 10)
    assert entries[0]["action"] == "renew"
    assert entries[0]["before"] == {"expires_at": iso(renewed.expires_at)}


async def test_renew_keeps_suspension(store: AccountStore) -> None:
    await create(store)
    await store.update("alice", {"status": "suspended"}, who=Who(ACTOR, "r2"))
    renewed = await store.renew("alice", who=Who(ACTOR, "r3"))
    assert renewed.status(datetime.now(UTC)) is Status.SUSPENDED


async def test_concurrent_updates_all_land(store: AccountStore) -> None:
    await create(store)
    await asyncio.gather(*(store.renew("alice", who=Who(ACTOR, f"r{i}")) for i in range(8)))
    account = await store.require("alice")
    assert account.expires_at == account.created_at + timedelta(days=365 * 9)
    assert (await store.history("alice", 1, 1))[1] == 9


# --- delete, history, login ------------------------------------------------------


async def test_delete_keeps_history(store: AccountStore, redis: aioredis.Redis) -> None:
    await create(store)
    await create(store, "bob")
    t = tag("alice")
    await redis.hset(keys.trusted_devices(t), "d1", "x")

    await store.delete("alice", who=Who(ACTOR, "r2"))
    assert await store.get("alice") is None
    assert await redis.exists(record("alice")) == 0
    assert await indexed(redis) == {b"bob"}
    accounts, total = await store.list("Clinique du Parc", 1, 10)
    assert [a.account_id for a in accounts] == ["bob"]
    assert total == 1
    assert await redis.exists(keys.trusted_devices(t)) == 0

    entries, total = await store.history("alice", 1, 10)
    assert total == 2
    assert [e["action"] for e in entries] == ["delete", "create"]
    assert entries[0]["before"]["phone"] == "+33 * ** ** ** 78"
    assert entries[0]["after"] == {}

    with pytest.raises(NotFound):
        await store.delete("alice", who=Who(ACTOR, "r3"))
    # The id can be used again.
    await create(store)


async def test_history_newest_first_with_masked_phone(store: AccountStore) -> None:
    await create(store)
    await store.update("alice", {"first_name": "A1"}, who=Who(ACTOR, "r2"))
    await store.set_phone("alice", store.parse_phone(OTHER), who=Who("admin", "r3"))
    await store.renew("alice", who=Who(ACTOR, "r4"))

    entries, total = await store.history("alice", 1, 10)
    assert total == 4
    assert [e["action"] for e in entries] == ["renew", "phone", "update", "create"]
    assert [e["request_id"] for e in entries] == ["r4", "r3", "r2", "req-1"]
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")), reverse=True)
    phone = entries[1]
    assert phone["actor"] == "admin"
    assert phone["before"]["phone"] == "+33 * ** ** ** 78"
    assert phone["after"]["phone"] == "+33 * ** ** ** 32"
    assert entries[3]["after"]["phone"] == "+33 * ** ** ** 78"
    assert entries[3]["before"] == {}
    assert entries[0]["at"].endswith("Z")
    assert "612345678" not in json.dumps(entries)

    page2, total = await store.history("alice", 2, 3)
    assert [e["action"] for e in page2] == ["create"]
    assert total == 4
    assert await store.history("alice", 3, 3) == ([], 4)
    assert await store.history("ghost", 1, 10) == ([], 0)


async def test_record_login(store: AccountStore) -> None:
    await create(store)
    before = datetime.now(UTC) - timedelta(seconds=1)
    await store.record_login("alice")
    account = await store.require("alice")
    assert account.last_login_at is not None
    assert before <= account.last_login_at <= datetime.now(UTC)
    assert account.to_json(datetime.now(UTC))["last_login_at"] == iso(account.last_login_at)
    # A later change keeps it, and logins do not fill the audit history.
    updated = await store.update("alice", {"first_name": "B"}, who=Who(ACTOR, "r"))
    assert updated.last_login_at == account.last_login_at
    assert (await store.require("alice")).last_login_at == account.last_login_at
    assert (await store.history("alice", 1, 10))[1] == 2
    with pytest.raises(NotFound):
        await store.record_login("ghost")


async def test_injected_clock(redis: aioredis.Redis) -> None:
    # A clock the test controls, in the past so that no literal turns stale.
    fixed = datetime(2020, 11, 26, 18, 0, tzinfo=UTC)
    store = AccountStore(
        redis, KEYRING, PhonePolicy(), AccountsConfig(validity_days=30), clock=lambda: fixed
    )
    account = await create(store)
    body = account.to_json(fixed)
    assert body["created_at"] == "2020-11-26T18:00:00Z"
    assert body["expires_at"] == "2020-12-26T18:00:00Z"
    assert account.status(fixed + timedelta(days=30)) is Status.EXPIRED


# --- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"language": "de"}, "accounts.language"),
        ({"totp": "yes"}, "accounts.totp"),
        ({"totp_issuer": "a:b"}, "accounts.totp_issuer"),
        ({"inactive_days": 0}, "accounts.inactive_days"),
        ({"last_admin_grace_days": 91}, "accounts.last_admin_grace_days"),
    ],
)
def test_accounts_config_keys_are_checked(values: dict[str, Any], key: str) -> None:
    raw = {"redis": {"url": "redis://127.0.0.1:1/0"}, "security": {"secret": SECRET}}
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**raw, "accounts": values})
    assert caught.value.key == key


def test_accounts_config_defaults() -> None:
    raw = {"redis": {"url": "redis://127.0.0.1:1/0"}, "security": {"secret": SECRET}}
    accounts = config_from_dict(raw).accounts
    assert (accounts.language, accounts.totp, accounts.inactive_days) == ("fr", False, 90)
    assert (accounts.last_admin_grace_days, accounts.totp_issuer) == (7, "otp-gateway")


# --- audit, expiry marks, last admin ----------------------------------------------


async def test_entries_name_who_acted_for_whom_in_both_streams(store: AccountStore) -> None:
    await create(store, role="admin")
    await create(store, "bob")
    who = Who("admin:backoffice", "req-9", acting_for="alice", step_up="verified")
    await store.update("bob", {"email": "b@example.org"}, who=who)
    [entry] = (await store.history("bob", 1, 1))[0]
    assert entry["account_id"] == "bob" and entry["establishment"] == "Clinique du Parc"
    assert (entry["actor"], entry["acting_for"], entry["step_up"]) == (
        "admin:backoffice",
        "alice",
        "verified",
    )
    assert entry["request_id"] == "req-9"
    entries, total = await store.establishment_history("Clinique du Parc", 1, 10)
    assert total == 3
    assert [(e["account_id"], e["action"]) for e in entries] == [
        ("bob", "update"),
        ("bob", "create"),
        ("alice", "create"),
    ]
    assert (await store.history("alice", 1, 1))[0][0]["acting_for"] is None


async def test_expiry_is_marked_once_per_expiry(store: AccountStore, redis: aioredis.Redis) -> None:
    account = await create(store, expires_at=datetime.now(UTC) - timedelta(days=1))
    await redis.hset(keys.trusted_devices(tag("alice")), "d1", "x")
    assert await store.mark_expired(account, who=Who("system:sweep", "s")) is True
    assert await store.mark_expired(account, who=Who("system:sweep", "s")) is False
    assert await redis.exists(keys.trusted_devices(tag("alice"))) == 0
    renewed = await store.renew("alice", who=Who(ACTOR, "r"))
    assert await store.mark_expired(account, who=Who("system:sweep", "s")) is False  # stale
    assert await store.mark_expired(renewed, who=Who("system:sweep", "s")) is True
    assert (await store.require("alice")).expires_at == renewed.expires_at  # mark kept apart


async def test_last_admin_guard_in_the_store(store: AccountStore) -> None:
    await create(store, role="admin")
    await create(store, "bob")
    for change in ({"role": "user"}, {"status": "suspended"}, {"expires_at": "2001-01-01"}):
        with pytest.raises(Conflict) as caught:
            await store.update("alice", change, who=Who(ACTOR, "r"))
        assert caught.value.code == "last_admin"
    with pytest.raises(Conflict):
        await store.delete("alice", who=Who(ACTOR, "r"))
    await store.delete("bob", who=Who(ACTOR, "r"))
    await store.delete("alice", who=Who(ACTOR, "r"))  # the last account may go
