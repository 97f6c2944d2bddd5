"""Twilio's REST API, or any Twilio-compatible one: SMS and voice calls.

    SMS    POST {base_url}/2010-04-01/Accounts/{sid}/Messages.json
           To, From, Body, StatusCallback
    voice  POST {base_url}/2010-04-01/Accounts/{sid}/Calls.json
           To, From, Twiml (inline, as the worker rendered it), StatusCallback,
           Timeout (ring time), MachineDetection=Enable, or SendDigits for an extension

Both with HTTP basic auth (account SID, auth token) and a timeout. Answers:

| Twilio says                                   | raised                          |
|-----------------------------------------------|---------------------------------|
| 2xx                                           | accepted; the `sid` is the ref  |
| 5xx, 429, timeout, refused connection         | ProviderUnavailable (failover)  |
| 4xx with an error code about the number       | ProviderRejected(reason)        |
| any other 4xx (auth, our From number, ...)    | ProviderUnavailable (failover)  |

Status callbacks come to `{public_url}/callbacks/{name}/status?c=<challenge>&n=<send>`
and are trusted only with a valid `X-Twilio-Signature`: base64 of
HMAC-SHA1(auth token, URL + every POST parameter sorted by name, name then
value). Machine detection is left off when an extension is dialled: the
switchboard that answers first would always count as a machine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

import aiohttp

from gateway.errors import ConfigError, ProviderRejected, ProviderUnavailable
from gateway.provider import (
    MAX_INLINE_TWIML,
    DeliveryEvent,
    OutboundMessage,
    ProviderConfig,
    ProviderContext,
    SendReceipt,
    VoiceMessage,
    option,
    reject_unknown_options,
)

OPTIONS = {
    "base_url",
    "account_sid",
    "auth_token",
    "from_number",
    "timeout_seconds",
    "ring_seconds",
}
API_VERSION = "2010-04-01"

# Twilio error codes that are about the destination: final, no failover.
NUMBER_ERRORS = {
    21211: "invalid_number",
    21217: "invalid_number",
    21401: "invalid_number",
    13224: "invalid_number",
    21214: "unreachable",
    21612: "unreachable",
    21614: "not_a_mobile",
    21635: "not_a_mobile",
    21407: "unsupported_destination",
    21215: "region_not_permitted",
    21408: "region_not_permitted",
    13227: "region_not_permitted",
    21216: "blocked",
    13225: "blocked",
    21610: "unsubscribed",
}

_CALL_STATES = {
    "queued": "sent",
    "initiated": "sent",
    "ringing": "sent",
    "in-progress": "sent",
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "failed",
    "canceled": "failed",
}
_MESSAGE_STATES = {
    "accepted": "sent",
    "scheduled": "sent",
    "queued": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "delivered",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SENDER_ID = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
_SID = re.compile(r"AC[0-9a-fA-F]{32}")


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's X-Twilio-Signature for a POST of `params` to `url`."""
    data = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def delivery_state(params: Mapping[str, str]) -> DeliveryEvent | None:
    """What a call or message status callback says, in the gateway's states."""
    if "CallStatus" in params:
        status = params["CallStatus"]
        if status == "completed":
            answered_by = params.get("AnsweredBy", "")
            machine = answered_by.startswith("machine") or answered_by == "fax"
            return DeliveryEvent("call", "machine" if machine else "delivered")
        state = _CALL_STATES.get(status)
        return DeliveryEvent("call", state) if state else None
    message_status = params.get("MessageStatus") or params.get("SmsStatus") or ""
    state = _MESSAGE_STATES.get(message_status)
    return DeliveryEvent("message", state) if state else None


class TwilioProvider:
    """SMS and voice through Twilio's REST API (`kind = "twilio"`)."""

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        where = f"providers.{config.name}"
        opts = config.options
        reject_unknown_options(opts, OPTIONS, where)
        self.name = config.name
        self.channels = config.channels
        base_url: str = option(opts, "base_url", str, where, "https://api.twilio.com")
        if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", base_url):
            raise ConfigError(f"{where}.base_url", "must be an http(s) URL")
        self.account_sid: str = option(opts, "account_sid", str, where)
        if not _SID.fullmatch(self.account_sid):
            raise ConfigError(f"{where}.account_sid", "must be AC followed by 32 hex digits")
        token: str = option(opts, "auth_token", str, where)
        if len(token) < 16:
            raise ConfigError(f"{where}.auth_token", "must be at least 16 characters")
        self._token = token
        self.from_number: str = option(opts, "from_number", str, where)
        self._check_sender(where)
        self._api = f"{base_url.rstrip('/')}/{API_VERSION}/Accounts/{self.account_sid}"
        self._callbacks = context.callbacks_url(self.name)
        timeout = option(opts, "timeout_seconds", float, where, 5.0)
        if not 0.1 <= timeout <= 60:
            raise ConfigError(f"{where}.timeout_seconds", "must be between 0.1 and 60")
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self.ring_seconds: int = option(opts, "ring_seconds", int, where, 30)
        if not 5 <= self.ring_seconds <= 600:
            raise ConfigError(f"{where}.ring_seconds", "must be between 5 and 600")
        self._session: aiohttp.ClientSession | None = None

    def _check_sender(self, where: str) -> None:
        if _E164.fullmatch(self.from_number):
            return
        if "voice" in self.channels or not _SENDER_ID.fullmatch(self.from_number):
            raise ConfigError(
                f"{where}.from_number",
                "must be an E.164 number (or, for SMS only, an alphanumeric sender id)",
            )

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a session must be made inside the running loop.
        if self._session is None or self._session.closed:
            auth = {"Authorization": aiohttp.encode_basic_auth(self.account_sid, self._token)}
            self._session = aiohttp.ClientSession(timeout=self._timeout, headers=auth)
        return self._session

    # --- sending ------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Create the message or the call; map Twilio's answer (see the module doc)."""
        if message.channel == "voice":
            reply = await self._post("Calls.json", self._call_form(message))
        else:
            reply = await self._post("Messages.json", self._sms_form(message))
        return SendReceipt(provider_ref=str(reply.get("sid", "")))

    def status_url(self, message: OutboundMessage) -> str:
        return f"{self._callbacks}/status?c={message.challenge_id}&n={message.attempt}"

    def _sms_form(self, message: OutboundMessage) -> list[tuple[str, str]]:
        return [
            ("To", message.to),
            ("From", self.from_number),
            ("Body", message.text),
            ("StatusCallback", self.status_url(message)),
        ]

    def _call_form(self, message: OutboundMessage) -> list[tuple[str, str]]:
        form = [
            ("To", message.to),
            ("From", self.from_number),
            ("Twiml", self._twiml(message)),
            ("StatusCallback", self.status_url(message)),
            ("StatusCallbackMethod", "POST"),
            ("Timeout", str(self.ring_seconds)),
        ]
        extension = message.extension or ""
        if re.fullmatch(r"[0-9*#]{1,20}", extension):
            form.append(("SendDigits", "ww" + extension))  # a second after pick-up
        else:
            form.append(("MachineDetection", "Enable"))
        return form

    def _twiml(self, message: OutboundMessage) -> str:
        # The worker renders every call (gateway.otp.voice): a call without its
        # TwiML is a caller's bug, never something to improvise.
        if not isinstance(message, VoiceMessage) or not message.twiml:
            raise ProviderRejected(f"{self.name}: a call needs its TwiML (a VoiceMessage)")
        if len(message.twiml) > MAX_INLINE_TWIML:
            raise ProviderRejected(f"{self.name}: the call's TwiML is over {MAX_INLINE_TWIML}")
        return message.twiml

    async def _post(self, resource: str, form: list[tuple[str, str]]) -> dict[str, Any]:
        try:
            async with self._client().post(f"{self._api}/{resource}", data=form) as resp:
                status = resp.status
                body = await _json(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderUnavailable(f"{self.name}: {type(exc).__name__}") from exc
        if 200 <= status < 300:
            return body
        raise _error(self.name, status, body)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

    # --- status callbacks -----------------------------------------------------------

    def verify_callback(
        self, url: str, params: list[tuple[str, str]], headers: Mapping[str, str]
    ) -> bool:
        """Check X-Twilio-Signature (constant time)."""
        expected = twilio_signature(self._token, url, params)
        presented = headers.get("X-Twilio-Signature", "")
        return hmac.compare_digest(expected.encode(), presented.encode())

    def delivery_event(self, params: Mapping[str, str]) -> DeliveryEvent | None:
        """The call's or the message's new state."""
        return delivery_state(params)


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json(content_type=None)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error(name: str, status: int, body: dict[str, Any]) -> ProviderRejected | ProviderUnavailable:
    code = body.get("code")
    reason = NUMBER_ERRORS.get(code) if isinstance(code, int) else None
    # Twilio's own message may quote the number: only the code goes into ours.
    if 400 <= status < 500 and status != 429 and reason is not None:
        return ProviderRejected(f"{name}: twilio error {code} ({reason})")
    return ProviderUnavailable(f"{name}: HTTP {status}, twilio error {code}")
