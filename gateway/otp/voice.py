"""The code read aloud: voice scripts, their TwiML, and the signed TwiML URL.

The worker renders every call here (`Call`), to the last byte a provider
sends: the script as one text, and the TwiML the call starts with. Only the
"press 1" URL waits for the provider, since it names that provider's
callbacks (`Call.for_provider`, called by the dispatcher once per provider it
tries); the provider then transports the `VoiceMessage` as it is.

A script greets the person, names what the code is for, then reads the digits
one at a time, a pause after each (never "four hundred and twelve"), as many
times as `[voice] repeat` says, and offers "press 1 to hear it again". TwiML
(`<Say language=...>`, `<Pause>`, `<Gather>`) is built with ElementTree, so
every text is XML-escaped whatever the templates hold.

With `[voice] require_keypress`, the call itself carries no code: it asks for
a key press, and only then does the provider fetch the code's TwiML from the
gateway (`POST {public_url}/callbacks/{provider}/twiml?t=<session>`), so a
voicemail or an automatic switchboard never hears it. The session token names
the challenge and the send, expires with the challenge, and is MACed with a
key derived from `[security] secret`: it cannot be guessed or forged, and it
never holds the code. The same URL serves "press 1 to hear it again".
"""

from __future__ import annotations

import hashlib
import hmac
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields

from gateway.config import Config
from gateway.crypto import Keyring, b64, constant_time_equal
from gateway.messages import Templates
from gateway.provider import MAX_INLINE_TWIML, OutboundMessage, VoiceMessage, callbacks_url

__all__ = [
    "MAX_INLINE_TWIML", "Call", "VoiceMessage", "VoiceScript", "call_twiml", "closing_twiml",
    "code_twiml", "open_session", "plain_text", "script_for", "script_from", "session_token",
]  # fmt: skip

DIGIT_PAUSE_SECONDS = 1
REPEAT_PAUSE_SECONDS = 2
GATHER_SECONDS = 6
KEYPRESS_SECONDS = 10

_SESSION_RE = re.compile(r"([A-Za-z0-9_-]{28})\.([0-9]{1,3})\.([0-9]{1,15})\.([A-Za-z0-9_-]{22})")
_XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'


@dataclass(frozen=True, slots=True, repr=False)
class VoiceScript:
    """What a call says, texts already rendered. `repr` hides the digits."""

    language: str
    intro: str
    code_intro: str
    again: str
    replay: str
    keypress: str
    goodbye: str
    expired: str
    digits: str
    repeat: int = 2
    require_keypress: bool = False

    def __repr__(self) -> str:
        return f"VoiceScript(language={self.language!r}, repeat={self.repeat})"


@dataclass(frozen=True, slots=True, repr=False)
class Call:
    """A voice send, rendered but for the provider that will place it.

    `message.text` is the script as one text. The TwiML's "press 1" URL
    (`/twiml?t=<session>`, none without a session) names the provider's
    callbacks, where its signature is checked: `for_provider` renders it.
    """

    message: OutboundMessage
    script: VoiceScript
    session: str  # the signed token of the TwiML URL ("" when there is none)
    public_url: str

    def for_provider(self, name: str) -> VoiceMessage:
        """The call as provider `name` places it."""
        url = f"{callbacks_url(self.public_url, name)}/twiml?t={self.session}"
        twiml = call_twiml(self.script, url if self.session else None)
        shared = {f.name: getattr(self.message, f.name) for f in fields(OutboundMessage)}
        return VoiceMessage(**shared, twiml=twiml)


def script_from(
    templates: Templates,
    code: str,
    purpose: str,
    *,
    service: str = "",
    repeat: int = 2,
    require_keypress: bool = False,
) -> VoiceScript:
    action = templates.action(purpose)
    service = service or templates.service
    return VoiceScript(
        language=templates.language,
        intro=templates.intro.format(service=service),
        code_intro=templates.code.format(action=action),
        again=templates.again,
        replay=templates.replay,
        keypress=templates.keypress.format(action=action, service=service),
        goodbye=templates.goodbye,
        expired=templates.expired,
        digits=code,
        repeat=repeat,
        require_keypress=require_keypress,
    )


def script_for(config: Config, code: str, purpose: str) -> VoiceScript:
    """The configured script (language, service, repeat, key press) for one code."""
    voice = config.voice
    return script_from(
        config.templates[voice.language],
        code,
        purpose,
        service=voice.service_name,
        repeat=voice.repeat,
        require_keypress=voice.require_keypress,
    )


def plain_text(script: VoiceScript) -> str:
    """The script as one text, for providers that do their own text-to-speech."""
    digits = ", ".join(script.digits)
    readings = [f"{script.code_intro} {digits}."]
    readings += [f"{script.again} {digits}."] * (script.repeat - 1)
    return " ".join([script.intro, *readings])


# --- TwiML ---------------------------------------------------------------------------


def call_twiml(script: VoiceScript, action_url: str | None) -> str:
    """The TwiML a call starts with: the code, or only a key-press prompt."""
    if script.require_keypress and action_url is not None:
        return _keypress_prompt(script, action_url)
    return code_twiml(script, action_url, greet=True)


def code_twiml(script: VoiceScript, action_url: str | None, *, greet: bool) -> str:
    """The code read `repeat` times, then "press 1 to hear it again" when there is a URL."""
    root = ET.Element("Response")
    if greet:
        _say(root, script, script.intro)
        _pause(root, DIGIT_PAUSE_SECONDS)
    for i in range(script.repeat):
        if i:
            _pause(root, REPEAT_PAUSE_SECONDS)
        _say(root, script, script.again if i else script.code_intro)
        _pause(root, DIGIT_PAUSE_SECONDS)
        for digit in script.digits:
            _say(root, script, digit)
            _pause(root, DIGIT_PAUSE_SECONDS)
    if action_url is not None:
        gather = _gather(root, action_url, GATHER_SECONDS)
        _say(gather, script, script.replay)
    return _end(root, script, script.goodbye)


def closing_twiml(script: VoiceScript, *, expired: bool) -> str:
    """A goodbye (after no key was pressed), or "this code is no longer valid"."""
    return _end(ET.Element("Response"), script, script.expired if expired else script.goodbye)


def _keypress_prompt(script: VoiceScript, action_url: str) -> str:
    root = ET.Element("Response")
    for i in range(2):  # said twice: the person may still be lifting the phone
        gather = _gather(root, action_url, KEYPRESS_SECONDS)
        if i == 0:
            _say(gather, script, script.intro)
            _pause(gather, DIGIT_PAUSE_SECONDS)
        _say(gather, script, script.keypress)
    return _end(root, script, script.goodbye)


def _say(parent: ET.Element, script: VoiceScript, text: str) -> None:
    ET.SubElement(parent, "Say", language=script.language).text = text


def _pause(parent: ET.Element, seconds: int) -> None:
    ET.SubElement(parent, "Pause", length=str(seconds))


def _gather(parent: ET.Element, action_url: str, timeout: int) -> ET.Element:
    attributes = {"numDigits": "1", "timeout": str(timeout), "action": action_url}
    return ET.SubElement(parent, "Gather", attributes, method="POST")


def _end(root: ET.Element, script: VoiceScript, text: str) -> str:
    _say(root, script, text)
    ET.SubElement(root, "Hangup")
    return _XML_DECLARATION + ET.tostring(root, encoding="unicode")


# --- the signed TwiML URL's token ---------------------------------------------------


def _mac(keyring: Keyring, payload: str) -> str:
    msg = b"twiml-session/v1\x00" + payload.encode()
    return b64(hmac.new(keyring.tag_key, msg, hashlib.sha256).digest()[:16])


def session_token(keyring: Keyring, challenge_id: str, send: int, expires_ms: int) -> str:
    """`<challenge>.<send>.<expiry ms>.<MAC>`: names a send, never holds the code."""
    payload = f"{challenge_id}.{send}.{expires_ms}"
    return f"{payload}.{_mac(keyring, payload)}"


def open_session(keyring: Keyring, token: str, now_ms: int) -> tuple[str, int] | None:
    """(challenge id, send number) of a valid, unexpired token; else None."""
    match = _SESSION_RE.fullmatch(token)
    if match is None:
        return None
    challenge_id, send, expires, mac = match.groups()
    if not constant_time_equal(mac, _mac(keyring, f"{challenge_id}.{send}.{expires}")):
        return None
    if now_ms >= int(expires):
        return None
    return challenge_id, int(send)
