"""Provider callbacks, under `public_url`: no API key, each request is signed.

    POST /callbacks/{provider}/status?c=<challenge>&n=<send>   delivery status
    POST /callbacks/{provider}/twiml?t=<session>              the code's TwiML

The named provider checks the signature over the URL it was given (the
configured `public_url` plus this path and query) and the POST parameters. The
body must be `application/x-www-form-urlencoded` in UTF-8 (415, 400 otherwise:
it is read before the signature is checked, so it is parsed strictly and
nothing else is). A request that fails the check, or names no provider that
takes callbacks, gets 403 and changes nothing. A valid status callback is applied by
`Deliveries.record`, which is idempotent: a duplicate changes nothing twice.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from gateway.clock import now_ms
from gateway.config import Config
from gateway.crypto import CHALLENGE_ID_LENGTH
from gateway.errors import Forbidden, InvalidRequest
from gateway.otp import voice
from gateway.provider import CallbackProvider, DeliveryEvent
from gateway.runtime import Services
from gateway.web.body import read_form
from gateway.web.request import SERVICES

log = logging.getLogger("otp_gateway.callbacks")
_CHALLENGE_RE = re.compile(f"[A-Za-z0-9_-]{{{CHALLENGE_ID_LENGTH}}}")
_SEND_RE = re.compile(r"[1-9][0-9]?")
XML = "application/xml"


def callback_url(svc: Services, request: web.Request) -> str:
    """The URL the provider was given, hence signed: public_url, not the Host header."""
    return svc.config.server.public_url + request.raw_path


async def _signed(request: web.Request) -> tuple[Services, CallbackProvider, dict[str, str]]:
    svc = request.app[SERVICES]
    provider = svc.dispatcher.provider(request.match_info["provider"])
    params = await read_form(request)
    if not isinstance(provider, CallbackProvider) or not _verified(provider, svc, request, params):
        # The provider's name comes from the URL: only a known one is logged.
        name = provider.name if provider is not None else "unknown"
        log.warning("callback refused: bad signature", extra={"provider": name})
        raise Forbidden("the callback's signature does not match")
    return svc, provider, dict(params)


def _verified(
    provider: CallbackProvider, svc: Services, request: web.Request, params: list[tuple[str, str]]
) -> bool:
    try:
        return provider.verify_callback(callback_url(svc, request), params, request.headers)
    except UnicodeError:
        # A header that is not UTF-8 (aiohttp keeps such bytes as surrogates)
        # cannot hold a valid signature: a refusal, not a crash.
        return False


def _send_of(request: web.Request) -> tuple[str, int]:
    challenge_id, send = request.query.get("c", ""), request.query.get("n", "")
    if not _CHALLENGE_RE.fullmatch(challenge_id) or not _SEND_RE.fullmatch(send):
        raise InvalidRequest("the callback URL must name a challenge (c) and a send (n)")
    return challenge_id, int(send)


async def status(request: web.Request) -> web.Response:
    """A provider reports what became of a send (signed; 403 otherwise)."""
    svc, provider, params = await _signed(request)
    challenge_id, send = _send_of(request)
    event = provider.delivery_event(params)
    if event is not None:
        await svc.deliveries.record(challenge_id, send, _keyed(svc.config, event))
    return web.Response(status=204)


def _keyed(config: Config, event: DeliveryEvent) -> DeliveryEvent:
    """With `[voice] require_keypress`, only a key press (the TwiML route) proves a
    person heard the code: an answered call that ends without one was a machine
    or nobody listening, and is called again like a voicemail."""
    if config.voice.require_keypress and event == DeliveryEvent("call", "delivered"):
        return DeliveryEvent("call", "machine")
    return event


async def twiml(request: web.Request) -> web.Response:
    """The code's TwiML, fetched by the provider once the person pressed a key."""
    svc, _, params = await _signed(request)
    opened = voice.open_session(svc.keyring, request.query.get("t", ""), now_ms())
    if opened is None:
        raise Forbidden("this voice session is invalid or has expired")
    challenge_id, send = opened
    live = await svc.deliveries.live_code(challenge_id)
    if live is None or not params.get("Digits"):
        script = voice.script_for(svc.config, "", "login")
        return web.Response(
            text=voice.closing_twiml(script, expired=live is None), content_type=XML
        )
    code, purpose = live
    # A key was pressed, then the code read: a person heard it.
    await svc.deliveries.record(challenge_id, send, DeliveryEvent("call", "delivered"))
    script = voice.script_for(svc.config, code, purpose)
    url = callback_url(svc, request)
    return web.Response(text=voice.code_twiml(script, url, greet=False), content_type=XML)


def setup(app: web.Application) -> None:
    app.router.add_post("/callbacks/{provider}/status", status)
    app.router.add_post("/callbacks/{provider}/twiml", twiml)
