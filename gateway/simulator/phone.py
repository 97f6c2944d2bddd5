"""The far end of the simulator: phones that ring, people and machines that
listen to TwiML, and the signed webhooks Twilio sends back.

Webhooks are signed as Twilio signs them: `X-Twilio-Signature` is base64 of
HMAC-SHA1(auth token, URL + each POST parameter sorted by name, name then
value). This is written apart from the gateway's own check on purpose: the
tests then prove the two agree, not that one function agrees with itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import aiohttp

from gateway.simulator.state import Call

log = logging.getLogger("otp_gateway.simulator")
API_VERSION = "2010-04-01"
MAX_FETCHES = 5  # TwiML documents one call may chain through


def sign(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    payload = url
    for name, value in sorted(set(params)):
        payload += name + value
    mac = hmac.new(auth_token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


class Webhooks:
    """Signs and posts webhooks (status callbacks, TwiML fetches) like Twilio."""

    def __init__(self, account_sid: str, auth_token: str, timeout: float) -> None:
        self.account_sid = account_sid
        self._token = auth_token
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 5.0))
        self._session: aiohttp.ClientSession | None = None
        self.sent: list[tuple[str, list[tuple[str, str]], int]] = []  # url, params, status

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def post(self, url: str, params: list[tuple[str, str]]) -> tuple[int, str]:
        """POST a signed form; returns (status, body), status 0 when unreachable."""
        headers = {"X-Twilio-Signature": sign(self._token, url, params)}
        try:
            async with self._client().post(url, data=params, headers=headers) as resp:
                result = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("webhook failed", extra={"error": type(exc).__name__})
            result = 0, ""
        self.sent.append((url, params, result[0]))
        return result

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def call_params(call: Call, account_sid: str, **extra: str) -> list[tuple[str, str]]:
    params = [
        ("AccountSid", account_sid),
        ("ApiVersion", API_VERSION),
        ("CallSid", call.sid),
        ("CallStatus", call.status),
        ("Direction", "outbound-api"),
        ("From", call.sender),
        ("To", call.to),
    ]
    if call.answered_by:
        params.append(("AnsweredBy", call.answered_by))
    return params + sorted(extra.items())


def timestamp() -> str:
    return datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


class Listener:
    """Plays a call's TwiML to a person or a machine, as Twilio would."""

    def __init__(self, call: Call, webhooks: Webhooks, *, person: bool) -> None:
        self.call = call
        self.webhooks = webhooks
        self.person = person
        self.replays_left = 1 if call.outcome == "replay" else 0

    async def play(self, twiml: str) -> None:
        for _ in range(MAX_FETCHES):
            try:
                root = ET.fromstring(twiml)
            except ET.ParseError:
                self.call.heard.say("<application error>")
                break
            next_url, digits = self._walk(root)
            if next_url is None:
                break
            twiml = await self.fetch(next_url, digits)
        self.call.heard.end_reading()

    def _walk(self, root: ET.Element) -> tuple[str | None, str]:
        """Play verbs until the call hangs up or a Gather hands over to its action."""
        for verb in root:
            if verb.tag == "Say":
                self.call.heard.say((verb.text or "").strip())
            elif verb.tag == "Gather":
                for child in verb:
                    if child.tag == "Say":
                        self.call.heard.say((child.text or "").strip())
                key = self._press()
                if key and verb.get("action"):
                    self.call.heard.pressed.append(key)
                    return verb.get("action"), key
            elif verb.tag == "Redirect" and verb.text:
                return verb.text.strip(), ""
            elif verb.tag == "Hangup":
                break
        return None, ""

    def _press(self) -> str:
        """A person presses 1 to get the code, and once more if told to replay it."""
        if not self.person or self.call.outcome == "no_press":
            return ""
        self.call.heard.end_reading()
        if not self.call.heard.readings:
            return "1"
        if self.replays_left:
            self.replays_left -= 1
            return "1"
        return ""

    async def fetch(self, url: str, digits: str) -> str:
        self.call.heard.fetched.append(url)
        extra = {"Digits": digits, "FinishedOnKey": ""} if digits else {}
        params = call_params(self.call, self.webhooks.account_sid, **extra)
        status, body = await self.webhooks.post(url, params)
        if status != 200:
            return "<Response><Say>An application error has occurred.</Say></Response>"
        return body
