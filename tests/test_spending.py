"""A send's limits paid apart from its challenge (gateway/otp/spending.py): what a
Redis Cluster runs. The scripts' modes are single-slot calls, so these run on
either topology; the whole flow runs on the cluster with the suite."""

from __future__ import annotations

from typing import Any

from gateway import keys
from gateway.accounts import Who
from gateway.otp.spending import Spend, paid
from tests.support.gateway import Gateway, add_account
from tests.support.otp import OTHER_MOBILE

NUMBER_TAG = "AbCdEfGhIjKl"


async def states(redis: Any, spend: Spend) -> list[Any]:
    number, country, global_, ip = spend.keys()
    return [
        await redis.hget(number, NUMBER_TAG[keys.NUMBER_BUCKET_CHARS :]),
        await redis.get(country),
        await redis.get(global_),
        await redis.get(ip),
    ]


async def test_a_refund_gives_back_exactly_what_was_spent(gw: Gateway, redis: Any) -> None:
    scripts = gw.services.challenges.scripts
    spend = Spend(NUMBER_TAG, "FR", "Mairie", keys.ip_rate("t"), True)
    assert await scripts.limits(keys=spend.keys(), args=spend.args()) == [b"ok"]
    once = await states(redis, spend)
    assert None not in once
    assert await scripts.limits(keys=spend.keys(), args=spend.args()) == [b"ok"]
    await scripts.refund(keys=spend.keys(), args=spend.args())
    assert await states(redis, spend) == once
    await scripts.refund(keys=spend.keys(), args=spend.args())  # back below now: gone
    assert await states(redis, spend) == [None, None, None, None]


async def test_a_refused_write_refunds_and_a_new_number_is_moved(gw: Gateway, redis: Any) -> None:
    """create.lua `check`, then the number changes, then `spent` says `moved` and
    `paid` refunds what limits.lua took: nothing was created, nothing spent."""
    await add_account(gw)
    service = gw.services.challenges
    tag = service.account_tag("alice")
    cid = "A" * 16 + tag
    own = [keys.account(tag), keys.challenge(cid), keys.failures(tag), keys.stream_of(cid),
           keys.trusted_devices(tag)]  # fmt: skip
    args = ["login", cid, "alice", b"digest", b"sealed", "", "", "0", "", "", "", ""]
    checked = await service.scripts.create(keys=own, args=[*args, "check"])
    assert checked[0] == b"check"
    number_tag, region, establishment = (v.decode() for v in checked[1:4])
    store = gw.services.accounts
    await store.set_phone("alice", store.parse_phone(OTHER_MOBILE), who=Who("test", "t"))
    spend = Spend(number_tag, region, establishment, keys.ip_rate("none"), False)
    spent = [*args, "spent", number_tag, establishment]
    reply = await paid(
        service.scripts.limits,
        service.scripts.refund,
        spend,
        lambda: service.scripts.create(keys=own, args=spent),
    )
    assert reply == [b"moved"]
    assert not await redis.exists(keys.challenge(cid))
    assert await states(redis, spend) == [None, None, None, None]  # all given back
