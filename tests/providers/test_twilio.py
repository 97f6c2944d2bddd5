"""The `twilio` provider on the wire: against the simulator and hand-made answers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import ProviderConfig
from gateway.errors import ConfigError, ProviderRejected, ProviderUnavailable
from gateway.messages import ENGLISH, FRENCH
from gateway.otp.voice import Call, plain_text, script_from
from gateway.provider import OutboundMessage, ProviderContext, VoiceMessage, available_kinds
from gateway.simulator.phone import sign
from gateway.simulator.twilio import TwilioSimulator
from providers.twilio import NUMBER_ERRORS, TwilioProvider, delivery_state, twilio_signature
from tests.support.httpfake import closed_url

CONTEXT = ProviderContext(development=False, public_url="https://otp.example.org")
SID = "AC" + "ab" * 16
TOKEN = "twilio-test-token-0123456789abcd"
CHALLENGE = "abcdefghijklmnopqrstuvwxyz01"
SMS = OutboundMessage(CHALLENGE, "sms", "+33612345678", "041290", "041290 est votre code", 3,
                      "login")  # fmt: skip


def voice_message(extension: str | None = None, session: str = "sess.1.2.mac") -> VoiceMessage:
    """A call as the worker renders it for the provider named "tw"."""
    script = script_from(FRENCH, "041290", "rncps")
    message = OutboundMessage(CHALLENGE, "voice", "+33142685300", "041290", plain_text(script), 2,
                              "rncps", "fr-FR", extension)  # fmt: skip
    return Call(message, script, session, CONTEXT.public_url).for_provider("tw")


def provider(base_url: str, **options: Any) -> TwilioProvider:
    opts = {"base_url": base_url, "account_sid": SID, "auth_token": TOKEN,
            "from_number": "+33159000000", **options}  # fmt: skip
    return TwilioProvider(ProviderConfig("tw", "twilio", ("sms", "voice"), opts), CONTEXT)


@pytest.fixture
async def sim() -> AsyncIterator[tuple[TwilioSimulator, str]]:
    twilio = TwilioSimulator(SID, TOKEN, ring_seconds=0.01)
    server = TestServer(twilio.app(), host="127.0.0.1")
    await server.start_server()
    yield twilio, str(server.make_url("")).rstrip("/")
    await twilio.close()
    await server.close()


@pytest.fixture
async def answer() -> AsyncIterator[tuple[list[tuple[int, Any]], str]]:
    """A server answering each request with the next (status, JSON body) of the list."""
    answers: list[tuple[int, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        status, body = answers.pop(0)
        if isinstance(body, str):
            return web.Response(status=status, text=body)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield answers, str(server.make_url("")).rstrip("/")
    await server.close()


def test_registered_as_an_entry_point() -> None:
    assert available_kinds()["twilio"].value == "providers.twilio:TwilioProvider"


async def test_sms_on_the_wire(sim: tuple[TwilioSimulator, str]) -> None:
    twilio, url = sim
    p = provider(url)
    try:
        receipt = await p.send(SMS)
    finally:
        await p.aclose()
    [message] = twilio.messages
    assert receipt.provider_ref == message.sid and message.sid.startswith("SM")
    assert message.form == [
        ("To", "+33612345678"),
        ("From", "+33159000000"),
        ("Body", "041290 est votre code"),
        ("StatusCallback", f"https://otp.example.org/callbacks/tw/status?c={CHALLENGE}&n=3"),
    ]


async def test_call_on_the_wire(sim: tuple[TwilioSimulator, str]) -> None:
    twilio, url = sim
    p = provider(url, ring_seconds=25)
    try:
        receipt = await p.send(voice_message())
    finally:
        await p.aclose()
    [call] = twilio.calls
    assert receipt.provider_ref == call.sid and call.sid.startswith("CA")
    form = dict(call.form)
    assert form["To"] == "+33142685300" and form["From"] == "+33159000000"
    assert (
        form["StatusCallback"] == f"https://otp.example.org/callbacks/tw/status?c={CHALLENGE}&n=2"
    )
    assert form["StatusCallbackMethod"] == "POST"
    assert form["MachineDetection"] == "Enable"
    assert form["Timeout"] == "25"
    assert "SendDigits" not in form
    root = ET.fromstring(form["Twiml"])
    digits = "".join(e.text or "" for e in root.iter("Say") if (e.text or "").isdigit())
    assert digits == "041290" * 2
    [gather] = root.iter("Gather")
    assert gather.get("action") == "https://otp.example.org/callbacks/tw/twiml?t=sess.1.2.mac"


async def test_an_extension_is_dialled_after_pick_up(sim: tuple[TwilioSimulator, str]) -> None:
    twilio, url = sim
    p = provider(url)
    try:
        await p.send(voice_message(extension="4021"))
        await p.send(voice_message(extension="12; DROP"))  # not digits: ignored
    finally:
        await p.aclose()
    dialled, ignored = (dict(c.form) for c in twilio.calls)
    assert dialled["SendDigits"] == "ww4021" and "MachineDetection" not in dialled
    assert "SendDigits" not in ignored and ignored["MachineDetection"] == "Enable"


async def test_a_plain_voice_message_gets_the_default_script(
    sim: tuple[TwilioSimulator, str],
) -> None:
    twilio, url = sim
    p = provider(url)
    message = OutboundMessage(CHALLENGE, "voice", "+33142685300", "777001", "", 1, "login", "en-GB")
    script = script_from(ENGLISH, "777001", "login")
    plain = Call(message, script, "", CONTEXT.public_url).for_provider("tw")  # no session
    try:
        await p.send(plain)
    finally:
        await p.aclose()
    root = ET.fromstring(dict(twilio.calls[0].form)["Twiml"])
    assert {e.get("language") for e in root.iter("Say")} == {"en-GB"}
    assert list(root.iter("Gather")) == []  # no session, no "press 1" URL
    digits = "".join(e.text or "" for e in root.iter("Say") if (e.text or "").isdigit())
    assert digits == "777001" * 2


async def test_a_call_without_its_twiml_is_refused_unsent(sim: tuple[TwilioSimulator, str]) -> None:
    """The worker renders every call; the provider never improvises a script."""
    twilio, url = sim
    p = provider(url)
    bare = OutboundMessage(CHALLENGE, "voice", "+33142685300", "777001", "7, 7, 7", 1, "login")
    try:
        with pytest.raises(ProviderRejected) as info:
            await p.send(bare)
    finally:
        await p.aclose()
    assert twilio.calls == [] and "777001" not in str(info.value)


@pytest.mark.parametrize("setting", [{"outage": 503}, {"outage": 500}, {"token": "x" * 20}])
async def test_unavailable_answers_fail_over(
    sim: tuple[TwilioSimulator, str], setting: dict[str, Any]
) -> None:
    twilio, url = sim
    twilio.outage = setting.get("outage")
    p = provider(url, auth_token=setting.get("token", TOKEN))
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await p.send(SMS)
    finally:
        await p.aclose()
    assert twilio.messages == []
    assert "612345678" not in str(info.value) and "041290" not in str(info.value)


async def test_timeouts_and_refused_connections_fail_over(
    sim: tuple[TwilioSimulator, str],
) -> None:
    twilio, url = sim
    twilio.delay = 2
    for base_url in (url, closed_url().removesuffix("/send")):
        p = provider(base_url, timeout_seconds=0.2)
        try:
            with pytest.raises(ProviderUnavailable):
                await p.send(SMS)
        finally:
            await p.aclose()


@pytest.mark.parametrize(("code", "reason"), sorted(NUMBER_ERRORS.items()))
async def test_errors_about_the_number_are_final_with_their_reason(
    answer: tuple[list[tuple[int, Any]], str], code: int, reason: str
) -> None:
    answers, url = answer
    answers.append((400, {"code": code, "message": "The 'To' number +33612345678 is bad",
                          "more_info": "", "status": 400}))  # fmt: skip
    p = provider(url)
    try:
        with pytest.raises(ProviderRejected) as info:
            await p.send(SMS)
    finally:
        await p.aclose()
    assert str(info.value) == f"tw: twilio error {code} ({reason})"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, {"code": 21606, "message": "The From phone number is not a valid SMS number"}),
        (401, {"code": 20003, "message": "Authenticate"}),
        (404, {"code": 20404, "message": "not found"}),
        (429, {"code": 21211, "message": "Too many requests"}),
        (400, "<html>not json</html>"),
        (502, {"code": 21211}),
    ],
)
async def test_other_errors_fail_over(
    answer: tuple[list[tuple[int, Any]], str], status: int, body: Any
) -> None:
    answers, url = answer
    answers.append((status, body))
    p = provider(url)
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await p.send(SMS)
    finally:
        await p.aclose()
    assert f"HTTP {status}" in str(info.value)


async def test_a_2xx_without_json_is_still_accepted(
    answer: tuple[list[tuple[int, Any]], str],
) -> None:
    answers, url = answer
    answers.append((201, "created"))
    p = provider(url)
    try:
        assert (await p.send(SMS)).provider_ref == ""
    finally:
        await p.aclose()


# --- callbacks ---------------------------------------------------------------------------


def test_signature_matches_twilios_published_vectors() -> None:
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675309"), ("Digits", "1234"),
              ("From", "+14158675309"), ("To", "+18005551212")]  # fmt: skip
    assert twilio_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature("12345", url, list(reversed(params))) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"),
                ("Digits", "1234"), ("Digits", "1234")]  # fmt: skip
    assert twilio_signature("12345", url, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_the_simulator_and_the_provider_sign_alike() -> None:
    url = "https://otp.example.org/callbacks/tw/status?c=x&n=1"
    params = [("MessageStatus", "delivered"), ("MessageSid", "SM1"), ("To", "+336"), ("À", "é")]
    assert sign(TOKEN, url, params) == twilio_signature(TOKEN, url, params)
    p = provider("https://api.twilio.com")
    good = {"X-Twilio-Signature": sign(TOKEN, url, params)}
    assert p.verify_callback(url, params, good)
    assert not p.verify_callback(url + "0", params, good)
    assert not p.verify_callback(url, params[:-1], good)
    assert not p.verify_callback(url, params, {})
    assert not p.verify_callback(url, params, {"X-Twilio-Signature": "ümlaut"})


@pytest.mark.parametrize(
    ("params", "event"),
    [
        ({"CallStatus": "completed", "AnsweredBy": "human"}, ("call", "delivered")),
        ({"CallStatus": "completed", "AnsweredBy": "unknown"}, ("call", "delivered")),
        ({"CallStatus": "completed"}, ("call", "delivered")),
        ({"CallStatus": "completed", "AnsweredBy": "machine_start"}, ("call", "machine")),
        ({"CallStatus": "completed", "AnsweredBy": "machine_end_beep"}, ("call", "machine")),
        ({"CallStatus": "completed", "AnsweredBy": "fax"}, ("call", "machine")),
        ({"CallStatus": "no-answer"}, ("call", "no_answer")),
        ({"CallStatus": "busy"}, ("call", "busy")),
        ({"CallStatus": "failed"}, ("call", "failed")),
        ({"CallStatus": "canceled"}, ("call", "failed")),
        ({"CallStatus": "ringing"}, ("call", "sent")),
        ({"CallStatus": "odd"}, None),
        ({"MessageStatus": "sent"}, ("message", "sent")),
        ({"MessageStatus": "delivered"}, ("message", "delivered")),
        ({"MessageStatus": "undelivered", "ErrorCode": "30003"}, ("message", "failed")),
        ({"MessageStatus": "failed"}, ("message", "failed")),
        ({"SmsStatus": "delivered"}, ("message", "delivered")),
        ({"Foo": "bar"}, None),
    ],
)
def test_status_callbacks_map_to_delivery_states(
    params: dict[str, str], event: tuple[str, str] | None
) -> None:
    got = delivery_state(params)
    assert (None if got is None else (got.kind, got.state)) == event


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"account_sid": None}, "account_sid"),
        ({"account_sid": "AC123"}, "account_sid"),
        ({"auth_token": "short"}, "auth_token"),
        ({"from_number": "0612345678"}, "from_number"),
        ({"from_number": "MAIRIE"}, "from_number"),  # a sender id cannot place calls
        ({"base_url": "ftp://x"}, "base_url"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"ring_seconds": 2}, "ring_seconds"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], key: str) -> None:
    opts = {"account_sid": SID, "auth_token": TOKEN, "from_number": "+33159000000", **options}
    opts = {k: v for k, v in opts.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        TwilioProvider(ProviderConfig("tw", "twilio", ("sms", "voice"), opts), CONTEXT)
    assert info.value.key == f"providers.tw.{key}"


def test_an_sms_only_provider_may_use_a_sender_id() -> None:
    opts = {"account_sid": SID, "auth_token": TOKEN, "from_number": "MAIRIE"}
    p = TwilioProvider(ProviderConfig("tw", "twilio", ("sms",), opts), CONTEXT)
    assert p.from_number == "MAIRIE" and p.channels == ("sms",)
