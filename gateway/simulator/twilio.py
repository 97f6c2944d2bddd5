"""A Twilio-compatible API on loopback: `otp-gateway simulate twilio --port N`.

Speaks Twilio's REST wire format for what the gateway uses, with HTTP basic
auth (account SID, auth token):

    POST /2010-04-01/Accounts/{sid}/Messages.json   To, From, Body, StatusCallback
    POST /2010-04-01/Accounts/{sid}/Calls.json      To, From, Twiml|Url, StatusCallback,
                                                    MachineDetection, SendDigits, Timeout
    GET  /2010-04-01/Accounts/{sid}/Messages/{MessageSid}.json, .../Calls/{CallSid}.json

It answers 201 with the resource (`sid`, `status`...) or Twilio's error body
(`{"code", "message", "more_info", "status"}`), then lets each message or call
run its course in the background: the phone rings, a person or a machine
answers (TwiML is played, `Gather` actions are fetched from the gateway) or
not, and signed status callbacks go to `StatusCallback`.

A control API, unauthenticated (a loopback development tool), steers it:

    POST /_sim/numbers/{number}  {"voice": ["no_answer", "answer"], "sms": ["undelivered"]}
    POST /_sim/mix       {"no_answer": 0.2, "busy": 0.07, "machine": 0.08, "no_press": 0.02,
                          "sms_undelivered": 0.03, "seed": 1, "first_only": false}
    POST /_sim/settings  {"outage": 503 | null, "delay": 0.0, "ring_seconds": 0.05,
                          "duplicate_callbacks": false, "reorder_callbacks": false}
    GET  /_sim/messages, GET /_sim/calls   what it received and what was heard
    GET  /_sim/reached?since=N   codes that reached a person (SMS delivered, heard
                                 in a call), from the Nth on; GET /_sim/stats   counts
    POST /_sim/reset
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import hmac
import json
import random
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

from gateway.listen import bind
from gateway.simulator.phone import API_VERSION, Listener, Webhooks, call_params, timestamp
from gateway.simulator.state import (
    SMS_OUTCOMES,
    VOICE_OUTCOMES,
    Call,
    Message,
    Mix,
    Numbers,
    Reached,
    new_sid,
)

DEFAULT_SID = "AC" + "5" * 32
DEFAULT_TOKEN = "simulator-auth-token-0123456789"
MAX_TWIML = 4000
_READABLE = functools.partial(json.dumps, ensure_ascii=False)  # the control API's lists
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_CODE = re.compile(r"(?<![0-9])[0-9]{4,10}(?![0-9])")
_CALL_END = {"no_answer": "no-answer", "busy": "busy", "fail": "failed"}
_SMS_END = {"deliver": ("delivered", ""), "undelivered": ("undelivered", "30003"),
            "failed": ("failed", "30008")}  # fmt: skip


def twilio_error(status: int, code: int, message: str) -> web.Response:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status)


class TwilioSimulator:
    """The simulator's state and its aiohttp application (`app()`)."""

    def __init__(
        self,
        account_sid: str = DEFAULT_SID,
        auth_token: str = DEFAULT_TOKEN,
        *,
        ring_seconds: float = 0.05,
        seed: int | None = None,
        webhook_timeout: float = 5.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.ring_seconds = ring_seconds
        self.seed = seed
        self.webhooks = Webhooks(account_sid, auth_token, webhook_timeout)
        self.numbers = Numbers()
        self.messages: list[Message] = []
        self.calls: list[Call] = []
        self.outage: int | None = None  # answer every API request with this status
        self.delay = 0.0  # seconds before the API answers
        self.duplicate_callbacks = False
        self.reorder_callbacks = False
        self.requests = 0  # API requests received, accepted or not
        self.reached: list[Reached] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # --- the application -------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        base = "/2010-04-01/Accounts/{account_sid}"
        app.router.add_post(f"{base}/Messages.json", self.create_message)
        app.router.add_post(f"{base}/Calls.json", self.create_call)
        app.router.add_get(f"{base}/Messages/{{sid}}.json", self.fetch_message)
        app.router.add_get(f"{base}/Calls/{{sid}}.json", self.fetch_call)
        app.router.add_post("/_sim/numbers/{number}", self.control_number)
        app.router.add_post("/_sim/mix", self.control_mix)
        app.router.add_post("/_sim/settings", self.control_settings)
        app.router.add_get("/_sim/messages", self.list_messages)
        app.router.add_get("/_sim/calls", self.list_calls)
        app.router.add_get("/_sim/reached", self.list_reached)
        app.router.add_get("/_sim/stats", self.stats)
        app.router.add_post("/_sim/reset", self.control_reset)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop what is still ringing and close the webhook client."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.webhooks.close()

    async def settle(self) -> None:
        """Wait until every message and call has run its course (for tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _spawn(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the REST API -------------------------------------------------------------------

    async def _gate(self, request: web.Request) -> web.Response | None:
        """Outage, delay and basic auth, in front of every API request."""
        self.requests += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.outage is not None:
            return twilio_error(self.outage, 20500, "Service unavailable")
        if not self._authorized(request):
            return twilio_error(401, 20003, "Authentication Error - invalid username")
        return None

    def _authorized(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{self.account_sid}:{self.auth_token}".encode()
        return (
            scheme.lower() == "basic"
            and hmac.compare_digest(f"{user}:{password}".encode(), expected)
            and request.match_info["account_sid"] == self.account_sid
        )

    async def create_message(self, request: web.Request) -> web.Response:
        """Messages.json: take an SMS, then deliver it (or not) in the background."""
        refused = await self._gate(request)
        if refused is not None:
            return refused
        form = [(k, v) for k, v in (await request.post()).items() if isinstance(v, str)]
        fields = dict(form)
        error = _message_error(fields)
        if error is not None:
            return error
        outcome = self.numbers.next_sms(fields["To"])
        if outcome == "reject":
            return twilio_error(400, 21614, "'To' number is not a valid mobile number")
        message = Message(
            sid=new_sid("SM"), to=fields["To"], sender=fields["From"], body=fields["Body"],
            status_callback=fields.get("StatusCallback", ""), outcome=outcome, form=form,
        )  # fmt: skip
        self.messages.append(message)
        self._spawn(self._deliver(message))
        return web.json_response(self._message_resource(message), status=201)

    async def create_call(self, request: web.Request) -> web.Response:
        """Calls.json: place a call, then let it ring, be answered or not, in the background."""
        refused = await self._gate(request)
        if refused is not None:
            return refused
        form = [(k, v) for k, v in (await request.post()).items() if isinstance(v, str)]
        fields = dict(form)
        error = _call_error(fields)
        if error is not None:
            return error
        outcome = self.numbers.next_call(fields["To"])
        if outcome == "reject":
            return twilio_error(400, 21217, "Phone number does not appear to be valid")
        call = Call(
            sid=new_sid("CA"), to=fields["To"], sender=fields["From"],
            twiml=fields.get("Twiml", ""), status_callback=fields.get("StatusCallback", ""),
            outcome=outcome, form=form,
            machine_detection=fields.get("MachineDetection", "") in ("Enable", "DetectMessageEnd"),
            send_digits=fields.get("SendDigits", ""),
        )  # fmt: skip
        self.calls.append(call)
        self._spawn(self._ring(call, fields.get("Url", "")))
        return web.json_response(self._call_resource(call), status=201)

    async def fetch_message(self, request: web.Request) -> web.Response:
        """A message's resource, as Twilio's GET returns it."""
        refused = await self._gate(request)
        if refused is not None:
            return refused
        for message in self.messages:
            if message.sid == request.match_info["sid"]:
                return web.json_response(self._message_resource(message))
        return twilio_error(404, 20404, "The requested resource was not found")

    async def fetch_call(self, request: web.Request) -> web.Response:
        """A call's resource, as Twilio's GET returns it."""
        refused = await self._gate(request)
        if refused is not None:
            return refused
        for call in self.calls:
            if call.sid == request.match_info["sid"]:
                return web.json_response(self._call_resource(call))
        return twilio_error(404, 20404, "The requested resource was not found")

    def _resource(self, kind: str, sid: str, to: str, sender: str, status: str) -> dict[str, Any]:
        return {
            "sid": sid, "account_sid": self.account_sid, "to": to, "from": sender,
            "status": status, "direction": "outbound-api", "api_version": API_VERSION,
            "date_created": timestamp(), "date_updated": timestamp(),
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/{kind}/{sid}.json",
        }  # fmt: skip

    def _message_resource(self, message: Message) -> dict[str, Any]:
        resource = self._resource(
            "Messages", message.sid, message.to, message.sender, message.status
        )
        return resource | {"body": message.body, "num_segments": "1", "error_code": None}

    def _call_resource(self, call: Call) -> dict[str, Any]:
        resource = self._resource("Calls", call.sid, call.to, call.sender, call.status)
        return resource | {"answered_by": call.answered_by or None}

    # --- what happens next ---------------------------------------------------------------

    async def _deliver(self, message: Message) -> None:
        await asyncio.sleep(self.ring_seconds / 2)
        final, error = _SMS_END[message.outcome]
        steps = [("sent", ""), (final, error)]
        if self.reorder_callbacks:
            steps.reverse()
        for status, error_code in steps:
            message.status = status
            code = _CODE.search(message.body)
            if status == "delivered" and code:
                self._reached("sms", code[0], message)
            await self._message_callback(message, status, error_code)
        message.status = final

    async def _message_callback(self, message: Message, status: str, error_code: str) -> None:
        if not message.status_callback:
            return
        params = [
            ("AccountSid", self.account_sid), ("ApiVersion", API_VERSION),
            ("From", message.sender), ("MessageSid", message.sid), ("MessageStatus", status),
            ("SmsSid", message.sid), ("SmsStatus", status), ("To", message.to),
        ]  # fmt: skip
        if error_code:
            params.append(("ErrorCode", error_code))
        await self._callback(message.status_callback, params)
        message.callbacks += 1

    async def _ring(self, call: Call, url: str) -> None:
        call.status = "ringing"
        await asyncio.sleep(self.ring_seconds)
        if call.outcome in _CALL_END:
            call.status = _CALL_END[call.outcome]
        else:
            await self._answered(call, url)
            call.status = "completed"
        extra = {"CallDuration": "0" if call.outcome in _CALL_END else "20"}
        params = call_params(call, self.account_sid, CallbackSource="call-progress-events",
                             Timestamp=timestamp(), SequenceNumber="0", **extra)  # fmt: skip
        if call.status_callback:
            await self._callback(call.status_callback, params)
            call.callbacks += 1

    async def _answered(self, call: Call, url: str) -> None:
        person = call.outcome != "machine"
        call.status = "in-progress"
        if call.machine_detection:
            call.answered_by = "human" if person else "machine_start"
        listener = Listener(call, self.webhooks, person=person)
        if url:
            await listener.play(await listener.fetch(url, ""))
        else:
            await listener.play(call.twiml)
        if person and call.heard.code:
            self._reached("voice", call.heard.code, call)

    def _reached(self, kind: str, code: str, sent: Message | Call) -> None:
        self.reached.append(
            Reached(kind, sent.to, code, sent.status_callback, sent.received_at, time.time())
        )

    async def _callback(self, url: str, params: list[tuple[str, str]]) -> None:
        for _ in range(2 if self.duplicate_callbacks else 1):
            await self.webhooks.post(url, params)

    # --- the control API ----------------------------------------------------------------

    async def control_number(self, request: web.Request) -> web.Response:
        """Script the next outcomes of one number."""
        body = await _json_object(request)
        voice, sms = body.get("voice", []), body.get("sms", [])
        if not _outcomes(voice, VOICE_OUTCOMES) or not _outcomes(sms, SMS_OUTCOMES):
            raise web.HTTPBadRequest(
                text=f"voice: list of {VOICE_OUTCOMES}; sms: list of {SMS_OUTCOMES}"
            )
        self.numbers.script(request.match_info["number"], voice, sms)
        return web.json_response(
            {"number": request.match_info["number"], "voice": voice, "sms": sms}
        )

    async def control_mix(self, request: web.Request) -> web.Response:
        """Draw every call's and SMS's outcome (or only the first ones) from a failure mix."""
        body = await _json_object(request)
        names = ("no_answer", "busy", "machine", "no_press", "sms_undelivered")
        shares = {k: float(body.get(k, 0.0)) for k in names}
        if (
            not all(0 <= v <= 1 for v in shares.values())
            or sum(shares.values()) - shares["sms_undelivered"] > 1
        ):
            raise web.HTTPBadRequest(text="shares are between 0 and 1, call shares sum to <= 1")
        seed = body.get("seed", self.seed)
        first_only = bool(body.get("first_only", False))
        self.numbers.mix = Mix(**shares, first_only=first_only, rng=random.Random(seed))
        return web.json_response({**shares, "first_only": first_only})

    async def control_settings(self, request: web.Request) -> web.Response:
        """Outage, API delay, ring time, duplicated or reordered callbacks."""
        body = await _json_object(request)
        if "outage" in body:
            self.outage = None if body["outage"] is None else int(body["outage"])
        self.delay = float(body.get("delay", self.delay))
        self.ring_seconds = float(body.get("ring_seconds", self.ring_seconds))
        self.duplicate_callbacks = bool(body.get("duplicate_callbacks", self.duplicate_callbacks))
        self.reorder_callbacks = bool(body.get("reorder_callbacks", self.reorder_callbacks))
        return web.json_response(self.settings())

    def settings(self) -> dict[str, Any]:
        return {
            "outage": self.outage, "delay": self.delay, "ring_seconds": self.ring_seconds,
            "duplicate_callbacks": self.duplicate_callbacks,
            "reorder_callbacks": self.reorder_callbacks,
        }  # fmt: skip

    async def list_messages(self, request: web.Request) -> web.Response:
        """Every message received, newest last."""
        return web.json_response({"messages": [m.view() for m in self.messages]}, dumps=_READABLE)

    async def list_calls(self, request: web.Request) -> web.Response:
        """Every call received and what its far end heard, newest last."""
        return web.json_response({"calls": [c.view() for c in self.calls]}, dumps=_READABLE)

    async def list_reached(self, request: web.Request) -> web.Response:
        """Codes that reached a person, in order, from `?since=N` on."""
        since = request.query.get("since", "0")
        start = int(since) if since.isdigit() else 0
        events = [r.view() for r in self.reached[start:]]
        return web.json_response({"reached": events, "next": start + len(events)})

    async def stats(self, request: web.Request) -> web.Response:
        """How much it received, and how many codes reached a person."""
        return web.json_response({
            "requests": self.requests, "messages": len(self.messages),
            "calls": len(self.calls), "reached": len(self.reached),
        })  # fmt: skip

    async def control_reset(self, request: web.Request) -> web.Response:
        """Forget everything received and every script; settings back to defaults."""
        self.numbers = Numbers()
        self.messages.clear()
        self.calls.clear()
        self.reached.clear()
        self.requests = 0
        self.outage, self.delay = None, 0.0
        self.duplicate_callbacks = self.reorder_callbacks = False
        return web.json_response(self.settings())


def _message_error(fields: dict[str, str]) -> web.Response | None:
    if not fields.get("To"):
        return twilio_error(400, 21604, "A 'To' phone number is required.")
    if not _E164.fullmatch(fields["To"]):
        return twilio_error(400, 21211, "Invalid 'To' Phone Number")
    if not fields.get("From"):
        return twilio_error(400, 21603, "A 'From' phone number is required.")
    if not fields.get("Body"):
        return twilio_error(400, 21602, "Message body is required.")
    if len(fields["Body"]) > 1600:
        return twilio_error(
            400, 21617, "The concatenated message body exceeds the 1600 character limit."
        )
    return None


def _call_error(fields: dict[str, str]) -> web.Response | None:
    if not fields.get("To"):
        return twilio_error(400, 21201, "No 'To' number is specified")
    if not _E164.fullmatch(fields["To"]):
        return twilio_error(400, 21217, "Phone number does not appear to be valid")
    if not fields.get("From"):
        return twilio_error(400, 21213, "No 'From' number is specified")
    if not fields.get("Twiml") and not fields.get("Url"):
        return twilio_error(400, 21205, "Url parameter is required.")
    twiml = fields.get("Twiml", "")
    if len(twiml) > MAX_TWIML:
        return twilio_error(400, 11750, "TwiML response body too large")
    if twiml:
        try:
            ET.fromstring(twiml)
        except ET.ParseError:
            return twilio_error(400, 12100, "Document parse failure")
    return None


def _outcomes(value: Any, allowed: tuple[str, ...]) -> bool:
    return isinstance(value, list) and all(v in allowed for v in value)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def serve(host: str, port: int, simulator: TwilioSimulator) -> None:
    """Run the simulator until interrupted (`otp-gateway simulate twilio`).

    Raises ConfigError naming `--port` when the port is taken."""
    sockets = bind(host, port, "--port")

    def announce(_: str) -> None:
        print(
            f"twilio simulator listening on http://{host}:{port}\n"
            f"  account_sid = {simulator.account_sid}\n"
            f"  auth_token  = {simulator.auth_token}",
            flush=True,
        )

    web.run_app(simulator.app(), sock=sockets, print=announce, access_log=None)
