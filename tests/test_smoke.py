from tests.support.gateway import Gateway, add_account


async def test_challenge_then_verify(gw: Gateway) -> None:
    await add_account(gw)
    resp = await gw.post("/challenge", {"account_id": "alice"})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert await gw.drain() == 1
    code = gw.sink.codes(body["challenge_id"])[0]
    resp = await gw.post("/verify", {"challenge_id": body["challenge_id"], "code": code})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["verified"] is True
