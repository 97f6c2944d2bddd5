"""The Twilio simulator: Twilio's wire format, its control API, signed webhooks, the CLI."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.embedded import free_port
from gateway.simulator.twilio import DEFAULT_SID, DEFAULT_TOKEN, TwilioSimulator
from providers.twilio import TwilioProvider, twilio_signature
from tests.support.poll import poll

AUTH = "Basic " + base64.b64encode(f"{DEFAULT_SID}:{DEFAULT_TOKEN}".encode()).decode()
API = f"/2010-04-01/Accounts/{DEFAULT_SID}"
TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Say language="fr-FR">Code :</Say>'
    '<Say>4</Say><Pause length="1"/><Say>2</Say><Say>Bye</Say><Hangup/></Response>'
)


@dataclass
class Receiver:
    """The gateway's side: receives webhooks and checks their signatures."""

    url: str = ""
    got: list[dict[str, str]] = field(default_factory=list)
    bad: int = 0
    twiml: str = "<Response><Say>7</Say><Say>7</Say></Response>"

    async def handle(self, request: web.Request) -> web.Response:
        params = [(k, v) for k, v in (await request.post()).items() if isinstance(v, str)]
        url = self.url + request.raw_path
        if twilio_signature(DEFAULT_TOKEN, url, params) != request.headers["X-Twilio-Signature"]:
            self.bad += 1
            return web.Response(status=403)
        self.got.append({"path": request.path, **dict(params)})
        if request.path == "/twiml":
            return web.Response(text=self.twiml, content_type="application/xml")
        return web.Response(status=204)


@pytest.fixture
async def sim() -> AsyncIterator[tuple[TwilioSimulator, aiohttp.ClientSession, str]]:
    twilio = TwilioSimulator(ring_seconds=0.01, seed=7)
    server = TestServer(twilio.app(), host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        yield twilio, session, base
    await twilio.close()
    await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rec.url = str(server.make_url("")).rstrip("/")
    yield rec
    await server.close()


async def post(
    session: aiohttp.ClientSession, url: str, form: dict[str, str], auth: str = AUTH
) -> tuple[int, dict[str, Any]]:
    async with session.post(url, data=form, headers={"Authorization": auth}) as resp:
        return resp.status, await resp.json()


async def test_messages_json_speaks_twilios_format(sim: Any, receiver: Receiver) -> None:
    twilio, session, base = sim
    form = {"To": "+33612345678", "From": "+33159000000", "Body": "123456 est votre code",
            "StatusCallback": receiver.url + "/status?c=x&n=1"}  # fmt: skip
    status, body = await post(session, base + API + "/Messages.json", form)
    assert status == 201
    assert body["sid"].startswith("SM") and len(body["sid"]) == 34
    assert body["status"] == "queued" and body["to"] == "+33612345678"
    assert body["account_sid"] == DEFAULT_SID and body["api_version"] == "2010-04-01"
    assert body["uri"] == f"{API}/Messages/{body['sid']}.json"
    await twilio.settle()
    statuses = [g["MessageStatus"] for g in receiver.got]
    assert statuses == ["sent", "delivered"] and receiver.bad == 0
    assert receiver.got[0]["MessageSid"] == body["sid"] and receiver.got[0]["path"] == "/status"
    async with session.get(
        base + API + f"/Messages/{body['sid']}.json", headers={"Authorization": AUTH}
    ) as resp:
        assert (await resp.json())["status"] == "delivered"


async def test_calls_json_plays_twiml_and_reports_the_answer(sim: Any, receiver: Receiver) -> None:
    twilio, session, base = sim
    form = {"To": "+33142685300", "From": "+33159000000", "Twiml": TWIML,
            "StatusCallback": receiver.url + "/status", "MachineDetection": "Enable"}  # fmt: skip
    status, body = await post(session, base + API + "/Calls.json", form)
    assert status == 201 and body["sid"].startswith("CA") and body["status"] == "queued"
    await twilio.settle()
    [call] = twilio.calls
    assert call.heard.texts == ["Code :", "4", "2", "Bye"]
    assert call.heard.readings == ["42"]
    [final] = receiver.got
    assert final["CallStatus"] == "completed" and final["AnsweredBy"] == "human"
    assert final["CallSid"] == body["sid"] and final["CallDuration"] == "20"


async def test_a_call_by_url_fetches_its_twiml_signed(sim: Any, receiver: Receiver) -> None:
    twilio, session, base = sim
    form = {"To": "+33142685300", "From": "+33159000000", "Url": receiver.url + "/twiml"}
    status, _ = await post(session, base + API + "/Calls.json", form)
    assert status == 201
    await twilio.settle()
    assert twilio.calls[0].heard.readings == ["77"] and receiver.bad == 0
    assert receiver.got[0]["CallStatus"] == "in-progress"


@pytest.mark.parametrize(
    ("outcome", "status", "answered_by"),
    [("no_answer", "no-answer", None), ("busy", "busy", None), ("fail", "failed", None),
     ("machine", "completed", "machine_start")],
)  # fmt: skip
async def test_scripted_call_outcomes(
    sim: Any, receiver: Receiver, outcome: str, status: str, answered_by: str | None
) -> None:
    twilio, session, base = sim
    async with session.post(base + "/_sim/numbers/+33142685300", json={"voice": [outcome]}) as r:
        assert r.status == 200
    form = {"To": "+33142685300", "From": "+33159000000", "Twiml": TWIML,
            "StatusCallback": receiver.url + "/status", "MachineDetection": "Enable"}  # fmt: skip
    await post(session, base + API + "/Calls.json", form)
    await twilio.settle()
    [final] = receiver.got
    assert final["CallStatus"] == status and final.get("AnsweredBy") == answered_by
    async with session.get(base + "/_sim/calls") as resp:
        [call] = (await resp.json())["calls"]
    assert call["outcome"] == outcome
    assert call["heard"] == (["42"] if outcome == "machine" else [])


@pytest.mark.parametrize(
    ("path", "form", "code"),
    [
        ("/Messages.json", {"From": "+33159000000", "Body": "x"}, 21604),
        ("/Messages.json", {"To": "0612345678", "From": "+33159000000", "Body": "x"}, 21211),
        ("/Messages.json", {"To": "+33612345678", "Body": "x"}, 21603),
        ("/Messages.json", {"To": "+33612345678", "From": "+33159000000"}, 21602),
        ("/Calls.json", {"To": "+33612345678", "From": "+33159000000"}, 21205),
        ("/Calls.json", {"To": "+336", "From": "+33159000000", "Twiml": TWIML}, 21217),
        ("/Calls.json", {"To": "+33612345678", "From": "+33159000000", "Twiml": "<Resp"}, 12100),
        ("/Calls.json", {"To": "+33612345678", "From": "+33159000000",
                         "Twiml": "<Response>" + "x" * 4000 + "</Response>"}, 11750),
    ],
)  # fmt: skip
async def test_bad_requests_get_twilio_errors(
    sim: Any, path: str, form: dict[str, str], code: int
) -> None:
    twilio, session, base = sim
    status, body = await post(session, base + API + path, form)
    assert status == 400
    assert body["code"] == code and body["status"] == 400
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert twilio.messages == [] and twilio.calls == []


async def test_basic_auth_is_required(sim: Any) -> None:
    twilio, session, base = sim
    form = {"To": "+33612345678", "From": "+33159000000", "Body": "x"}
    wrong = "Basic " + base64.b64encode(f"{DEFAULT_SID}:nope".encode()).decode()
    for auth in ("", wrong, "Basic !!!", "Bearer x"):
        status, body = await post(session, base + API + "/Messages.json", form, auth)
        assert status == 401 and body["code"] == 20003
    other = f"/2010-04-01/Accounts/AC{'0' * 32}/Messages.json"
    assert (await post(session, base + other, form))[0] == 401
    assert twilio.messages == []


async def test_settings_outage_delay_and_reset(sim: Any) -> None:
    _, session, base = sim
    form = {"To": "+33612345678", "From": "+33159000000", "Body": "x"}
    async with session.post(base + "/_sim/settings", json={"outage": 503}) as resp:
        assert (await resp.json())["outage"] == 503
    status, body = await post(session, base + API + "/Messages.json", form)
    assert status == 503 and body["code"] == 20500
    async with session.post(base + "/_sim/settings", json={"outage": None}) as resp:
        assert resp.status == 200
    assert (await post(session, base + API + "/Messages.json", form))[0] == 201
    async with session.post(base + "/_sim/reset") as resp:
        assert resp.status == 200
    async with session.get(base + "/_sim/messages") as resp:
        assert (await resp.json()) == {"messages": []}
    for bad in ({"voice": ["shout"]}, {"sms": "deliver"}):
        async with session.post(base + "/_sim/numbers/+33612345678", json=bad) as resp:
            assert resp.status == 400


async def test_a_seeded_mix_draws_first_attempts_only(sim: Any) -> None:
    twilio, session, base = sim
    mix = {"no_answer": 0.2, "busy": 0.05, "machine": 0.05, "sms_undelivered": 0.5, "seed": 3,
           "first_only": True}  # fmt: skip
    async with session.post(base + "/_sim/mix", json=mix) as resp:
        assert resp.status == 200
    numbers = [f"+336{i:08d}" for i in range(2000)]
    first = [twilio.numbers.next_call(n) for n in numbers]
    shares = {o: first.count(o) / len(first) for o in ("no_answer", "busy", "machine", "answer")}
    assert abs(shares["no_answer"] - 0.2) < 0.03 and abs(shares["answer"] - 0.7) < 0.03
    assert abs(shares["busy"] - 0.05) < 0.015 and abs(shares["machine"] - 0.05) < 0.015
    assert {twilio.numbers.next_call(n) for n in numbers} == {"answer"}  # the next call
    sms = [twilio.numbers.next_sms(n) for n in numbers]
    assert abs(sms.count("undelivered") / len(sms) - 0.5) < 0.05
    assert {twilio.numbers.next_sms(n) for n in numbers} == {"deliver"}
    async with session.post(base + "/_sim/mix", json={"no_answer": 0.9, "busy": 0.9}) as resp:
        assert resp.status == 400


async def test_a_mix_draws_every_attempt_independently_by_default(sim: Any) -> None:
    twilio, session, base = sim
    mix = {"no_answer": 0.2, "busy": 0.07, "machine": 0.08, "no_press": 0.05,
           "sms_undelivered": 0.3, "seed": 5}  # fmt: skip
    async with session.post(base + "/_sim/mix", json=mix) as resp:
        assert (await resp.json())["first_only"] is False
    numbers = [f"+336{i:08d}" for i in range(1000)]
    for attempt in range(3):  # the third call is drawn like the first
        calls = [twilio.numbers.next_call(n) for n in numbers]
        assert abs(calls.count("no_answer") / len(calls) - 0.2) < 0.04, attempt
        assert abs(calls.count("no_press") / len(calls) - 0.05) < 0.02, attempt
        assert abs(calls.count("answer") / len(calls) - 0.6) < 0.05, attempt
        sms = [twilio.numbers.next_sms(n) for n in numbers]
        assert abs(sms.count("undelivered") / len(sms) - 0.3) < 0.05, attempt


async def test_the_cli_runs_the_simulator() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "simulate", "twilio", "--port", str(port),
        "--ring-seconds", "0.01",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        assert f"listening on http://127.0.0.1:{port}" in line
        form = {"To": "+33612345678", "From": "+33159000000", "Body": "hello"}
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:
            status, body = await post(session, base + API + "/Messages.json", form)
            assert status == 201 and body["sid"].startswith("SM")

            async def delivered() -> bool:
                async with session.get(base + "/_sim/messages") as resp:
                    return bool((await resp.json())["messages"][0]["status"] == "delivered")

            await poll(delivered, within=5)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


def test_the_demo_config_matches_the_simulators_defaults() -> None:
    from pathlib import Path

    from gateway.config import load_config
    from gateway.provider import build_providers
    from gateway.runtime import provider_context

    config = load_config(str(Path(__file__).parents[1] / "config" / "simulator.toml"), env={})
    [provider] = build_providers(config.providers, provider_context(config))
    assert isinstance(provider, TwilioProvider)
    assert provider.account_sid == DEFAULT_SID
    assert provider.verify_callback("u", [], {"X-Twilio-Signature": twilio_signature(
        DEFAULT_TOKEN, "u", [])})  # fmt: skip


async def test_codes_that_reached_a_person_are_listed(sim: Any, receiver: Receiver) -> None:
    twilio, session, base = sim
    async with session.post(base + "/_sim/numbers/+33142685300", json={"voice": ["machine"]}):
        pass
    sms = {"To": "+33612345678", "From": "+33159000000", "Body": "Code 123456 de connexion."}
    call = {"To": "+33142685300", "From": "+33159000000", "Twiml": TWIML}
    await post(session, base + API + "/Messages.json", sms)
    await post(session, base + API + "/Calls.json", call)  # a machine: reaches nobody
    await post(session, base + API + "/Calls.json", call)  # a person
    await twilio.settle()
    async with session.get(base + "/_sim/reached") as resp:
        body = await resp.json()
    assert [(r["kind"], r["code"]) for r in body["reached"]] == [("sms", "123456"), ("voice", "42")]
    assert body["next"] == 2 and all(r["reached_at"] >= r["received_at"] for r in body["reached"])
    async with session.get(base + "/_sim/reached?since=1") as resp:
        assert [r["kind"] for r in (await resp.json())["reached"]] == ["voice"]
    async with session.get(base + "/_sim/stats") as resp:
        assert await resp.json() == {"requests": 3, "messages": 1, "calls": 2, "reached": 2}
