"""Every send rendered by the worker, before any provider sees it.

An SMS is its text (`gateway.messages`); a call is its script as one text and
its TwiML (`gateway.otp.voice`). Providers transport what this makes as it is:
none of them renders a word.

    job.lua's reply ─► Send ─► message() ─► Text | voice.Call ─► dispatcher
                                                  (for_provider: each provider's copy)
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway import messages
from gateway.config import Config
from gateway.crypto import Keyring
from gateway.otp import voice
from gateway.provider import OutboundMessage


@dataclass(frozen=True, slots=True, repr=False)
class Send:
    """One send as the queue knows it, before its words. `repr` hides the code and the number."""

    challenge_id: str
    attempt: int  # the send number: an idempotency key
    channel: str
    purpose: str
    code: str
    to: str  # E.164
    extension: str | None
    expires_ms: int  # the challenge's expiry: the TwiML URL dies with the code

    def __repr__(self) -> str:
        return f"Send(challenge_id={self.challenge_id!r}, attempt={self.attempt})"


@dataclass(frozen=True, slots=True, repr=False)
class Text:
    """An SMS: every provider gets the same message."""

    message: OutboundMessage

    def for_provider(self, name: str) -> OutboundMessage:
        """The message as provider `name` gets it: unchanged."""
        return self.message


Rendered = Text | voice.Call


def message(config: Config, keyring: Keyring, send: Send) -> Rendered:
    """The send's words, in `[voice] language`: an SMS text, or a call's script and TwiML."""
    templates = config.templates[config.voice.language]
    if send.channel != "voice":
        text = messages.sms_text(
            templates, send.code, send.purpose, config.otp.ttl_seconds, config.sms.webotp_host
        )
        return Text(_outbound(send, text, templates.language))
    script = voice.script_for(config, send.code, send.purpose)
    session = voice.session_token(keyring, send.challenge_id, send.attempt, send.expires_ms)
    base = _outbound(send, voice.plain_text(script), templates.language)
    return voice.Call(base, script, session, config.server.public_url)


def _outbound(send: Send, text: str, language: str) -> OutboundMessage:
    return OutboundMessage(
        send.challenge_id, send.channel, send.to, send.code, text, send.attempt, send.purpose,
        language, send.extension,
    )  # fmt: skip
