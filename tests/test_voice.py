"""Voice scripts and their TwiML: digits one at a time, repeats, escaping, every
template and language; and the signed TwiML session token."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from gateway.config import config_from_dict
from gateway.crypto import Keyring
from gateway.messages import BUILTIN, ENGLISH, FRENCH, Templates
from gateway.otp.voice import (
    MAX_INLINE_TWIML,
    Call,
    VoiceScript,
    call_twiml,
    closing_twiml,
    code_twiml,
    open_session,
    plain_text,
    script_for,
    script_from,
    session_token,
)
from gateway.provider import OutboundMessage

URL = "https://otp.example.org/callbacks/twilio/twiml?t=abc.1.2.x&y=<z>"
CODE = "041290"
KEYRING = Keyring.from_secret("voice-test-secret-0123456789-abcdefghij")
PURPOSES = ("login", "account.create", "contact.update", "rncps", "custom.purpose")


def verbs(twiml: str) -> list[tuple[str, str]]:
    """(tag, text or pause length) of every verb, Gather children inlined."""
    assert twiml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    out = []
    for el in ET.fromstring(twiml).iter():
        if el.tag == "Say":
            out.append(("Say", el.text or ""))
        elif el.tag == "Pause":
            out.append(("Pause", el.get("length", "")))
        elif el.tag in ("Gather", "Hangup"):
            out.append((el.tag, el.get("action", "")))
    return out


def readings(twiml: str) -> list[str]:
    """Runs of single-digit <Say>s, pauses in between."""
    runs, run = [], ""
    for tag, text in verbs(twiml):
        if tag == "Say" and len(text) == 1 and text.isdigit():
            run += text
        elif tag != "Pause":
            if run:
                runs.append(run)
            run = ""
    return runs + ([run] if run else [])


@pytest.mark.parametrize("templates", list(BUILTIN.values()), ids=list(BUILTIN))
@pytest.mark.parametrize("purpose", PURPOSES)
def test_every_template_reads_the_digits_one_by_one_twice(
    templates: Templates, purpose: str
) -> None:
    script = script_from(templates, CODE, purpose)
    twiml = call_twiml(script, URL)
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    assert readings(twiml) == [CODE, CODE]
    # Each digit is its own <Say>, followed by a pause: never "forty-one thousand...".
    seq = verbs(twiml)
    for i, (tag, text) in enumerate(seq):
        if tag == "Say" and text.isdigit():
            assert len(text) == 1 and seq[i + 1] == ("Pause", "1")
    assert {el.get("language") for el in root.iter("Say")} == {templates.language}
    texts = [text for tag, text in seq if tag == "Say"]
    assert texts[0] == templates.intro.format(service=templates.service)
    assert texts[1] == templates.code.format(action=templates.action(purpose))
    assert templates.again in texts and templates.replay in texts
    assert texts[-1] == templates.goodbye and seq[-1][0] == "Hangup"
    [gather] = root.iter("Gather")
    assert gather.get("action") == URL and gather.get("numDigits") == "1"
    assert gather.get("method") == "POST"
    assert len(twiml) < MAX_INLINE_TWIML


def test_step_up_actions_are_named() -> None:
    fr = script_from(FRENCH, CODE, "account.create")
    assert fr.code_intro == "Votre code pour la création d'un compte est :"
    en = script_from(ENGLISH, CODE, "account.create")
    assert en.code_intro == "Your code to create an account is:"
    assert script_from(FRENCH, CODE, "login").code_intro == "Votre code de connexion est :"
    assert script_from(FRENCH, CODE, "my.purpose").code_intro == "Votre code de confirmation est :"


def test_leading_zeros_and_repeats() -> None:
    for repeat in (1, 2, 3):
        script = script_from(FRENCH, "000100", "login", repeat=repeat)
        assert readings(code_twiml(script, None, greet=False)) == ["000100"] * repeat


def test_every_text_is_xml_escaped() -> None:
    hostile = replace(
        FRENCH,
        intro="Bonjour <Hangup/> & {service} \"'",
        replay="]]><Say>1</Say>",
        actions={**FRENCH.actions, "login": "de <b>connexion</b> & co"},
    )
    script = script_from(hostile, CODE, "login", service="A&B <Sécu>")
    for twiml in (call_twiml(script, URL), closing_twiml(script, expired=True)):
        ET.fromstring(twiml)  # well-formed
    twiml = call_twiml(script, URL)
    texts = [text for tag, text in verbs(twiml) if tag == "Say"]
    assert texts[0] == "Bonjour <Hangup/> & A&B <Sécu> \"'"
    assert "de <b>connexion</b> & co" in texts[1]
    assert "]]><Say>1</Say>" in texts
    assert "&lt;Hangup/&gt; &amp; A&amp;B &lt;Sécu&gt;" in twiml
    assert (
        'action="https://otp.example.org/callbacks/twilio/twiml?t=abc.1.2.x&amp;y=&lt;z&gt;"'
        in twiml
    )
    assert [tag for tag, _ in verbs(twiml)].count("Hangup") == 1
    assert readings(twiml) == [CODE, CODE]


@pytest.mark.parametrize("templates", list(BUILTIN.values()), ids=list(BUILTIN))
def test_keypress_call_carries_no_digit(templates: Templates) -> None:
    script = script_from(templates, CODE, "rncps", require_keypress=True)
    twiml = call_twiml(script, URL)
    assert readings(twiml) == []
    assert CODE not in twiml
    assert not any(c.isdigit() for tag, t in verbs(twiml) if tag == "Say" for c in t)
    gathers = list(ET.fromstring(twiml).iter("Gather"))
    assert len(gathers) == 2 and all(g.get("action") == URL for g in gathers)
    prompt = templates.keypress.format(action=templates.action("rncps"), service=templates.service)
    assert [t for tag, t in verbs(twiml) if tag == "Say"].count(prompt) == 2
    # Then the fetched TwiML reads the code, without greeting again.
    fetched = code_twiml(script, URL, greet=False)
    assert readings(fetched) == [CODE, CODE]
    assert templates.intro.format(service=templates.service) not in fetched


def test_keypress_without_a_url_reads_the_code_inline() -> None:
    script = script_from(FRENCH, CODE, "login", require_keypress=True)
    twiml = call_twiml(script, None)
    assert readings(twiml) == [CODE, CODE]
    assert list(ET.fromstring(twiml).iter("Gather")) == []


def test_closing_twiml() -> None:
    script = script_from(ENGLISH, "", "login")
    assert [t for tag, t in verbs(closing_twiml(script, expired=True)) if tag == "Say"] == [
        ENGLISH.expired
    ]
    assert [t for tag, t in verbs(closing_twiml(script, expired=False)) if tag == "Say"] == [
        ENGLISH.goodbye
    ]


def test_longest_twiml_stays_under_twilios_inline_limit() -> None:
    script = script_from(FRENCH, "9" * 10, "contact.update", repeat=3, service="x" * 60)
    long_url = "https://" + "a" * 200 + "/callbacks/twilio/twiml?t=" + "b" * 90
    assert len(call_twiml(script, long_url)) < MAX_INLINE_TWIML


def test_plain_text_for_providers_with_their_own_speech() -> None:
    script = script_from(FRENCH, "4129", "login")
    assert plain_text(script) == (
        "Bonjour, ici votre service en ligne. Votre code de connexion est : 4, 1, 2, 9. "
        "Je répète votre code : 4, 1, 2, 9."
    )


def test_script_for_uses_the_voice_config() -> None:
    config = config_from_dict(
        {
            "redis": {"url": "redis://127.0.0.1:1/0"},
            "security": {"secret": "s" * 40},
            "voice": {"language": "en-GB", "repeat": 3, "service_name": "Acme HR",
                      "require_keypress": True},
        }
    )  # fmt: skip
    script = script_for(config, CODE, "login")
    assert script.language == "en-GB" and script.repeat == 3 and script.require_keypress
    assert script.intro == "Hello, this is Acme HR."


def test_reprs_hide_the_code_and_the_number() -> None:
    script = script_from(FRENCH, CODE, "login")
    base = OutboundMessage("c" * 28, "voice", "+33612345678", CODE, plain_text(script), 1, "login")
    message = Call(base, script, "tok", "https://otp.example.org").for_provider("twilio")
    for value in (script, message):
        assert CODE not in repr(value) and "612345678" not in repr(value)
    assert isinstance(message, OutboundMessage)
    assert isinstance(repr(VoiceScript("fr-FR", "", "", "", "", "", "", "", CODE)), str)


# --- the session token ---------------------------------------------------------------------


def test_session_token_round_trip_and_expiry() -> None:
    challenge_id = "A" * 16 + "tagtagtagtag"
    token = session_token(KEYRING, challenge_id, 2, 10_000)
    assert open_session(KEYRING, token, 9_999) == (challenge_id, 2)
    assert open_session(KEYRING, token, 10_000) is None  # expired
    other = Keyring.from_secret("another-secret-0123456789-abcdefghijklmn")
    assert open_session(other, token, 0) is None


def test_session_token_cannot_be_altered() -> None:
    challenge_id = "B" * 16 + "tagtagtagtag"
    token = session_token(KEYRING, challenge_id, 1, 10_000)
    cid, send, expires, mac = token.split(".")
    for forged in (
        f"{cid}.2.{expires}.{mac}",  # another send
        f"{cid}.{send}.99999999.{mac}",  # a later expiry
        f"{'C' * 16 + 'tagtagtagtag'}.{send}.{expires}.{mac}",  # another challenge
        f"{cid}.{send}.{expires}.{'A' * 22}",
        f"{cid}.{send}.{expires}",
        "",
        token + "x",
    ):
        assert open_session(KEYRING, forged, 0) is None, forged
