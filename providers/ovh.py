"""OVHcloud's SMS API (`kind = "ovh"`): signed REST calls, delivery followed by polling.

    send    POST {endpoint}/sms/{serviceName}/jobs
            {"message", "receivers": [to], "sender", "noStopClause": true,
             "priority": "high", "validityPeriod", "charset": "UTF-8", "tag"}
            -> {"ids", "validReceivers", "invalidReceivers", "totalCreditsRemoved"}
    follow  GET {endpoint}/sms/{serviceName}/outgoing/{id} -> {"ptt", "deliveryReceipt", ...}
    clock   GET {endpoint}/auth/time -> the server's epoch seconds (unsigned)

Every call but /auth/time carries X-Ovh-Application, X-Ovh-Consumer,
X-Ovh-Timestamp and X-Ovh-Signature = "$1$" + hex SHA-1 of
`application_secret+consumer_key+METHOD+full URL+body+timestamp`. The timestamp
is the *server's* time: the offset to /auth/time is taken once and kept
(taken again after OVHcloud refuses a timestamp). Answers:

| OVHcloud says                                      | raised                         |
|----------------------------------------------------|--------------------------------|
| 200, the number in `ids`                           | accepted; the SMS id is the ref|
| 200, the number in `invalidReceivers`              | ProviderRejected (the number)  |
| 5xx, 429, a refused or failed connection           | ProviderUnavailable (failover) |
| any 4xx: signature, credentials, rights, service   | ProviderUnavailable (failover; |
|   name, sender, no credit left                     |   the breaker marks it down)   |
| no answer once the request went out                | ProviderRejected: not resent   |

A job POSTed whose answer never came may have been taken: OVHcloud has no
idempotency key, so sending it again (here or through the next provider)
could send the code twice. It is recorded as failed, never resent.

OVHcloud's own status callback (the SMS account's `callBack` URL) is a GET
naming only OVHcloud's SMS id. So instead the provider follows each SMS it
sent: it polls `outgoing/{id}` until a final receipt (or `follow_seconds`)
and relays each new state to the gateway's own callback,
`{callbacks}/status?c=<challenge>&n=<send>`, signed with HMAC-SHA256 under a
key derived from the application secret (`X-Otpgw-Relay-Signature`).

Sources: https://docs.ovhcloud.com/en/guides/web-cloud/messaging/sms/api-sms-cookbook
(jobs and their fields), the OVHcloud guide "Tout savoir sur les utilisateurs
SMS" (ptt codes and DLR ids 0 pending, 1 success, 2 failed, 4 waiting,
8 buffered, 16 error), https://github.com/ovh/python-ovh `ovh/client.py`
(endpoints, signature, /auth/time offset, errorCode values).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from gateway.errors import ConfigError, ProviderRejected, ProviderUnavailable
from gateway.provider import (
    DeliveryEvent,
    OutboundMessage,
    ProviderConfig,
    ProviderContext,
    SendReceipt,
    option,
    reject_unknown_options,
)

log = logging.getLogger("otp_gateway.providers.ovh")

OPTIONS = {
    "endpoint",
    "application_key",
    "application_secret",
    "consumer_key",
    "service_name",
    "sender",
    "timeout_seconds",
    "validity_minutes",
    "follow_seconds",
    "poll_seconds",
}
ENDPOINTS = {
    "ovh-eu": "https://eu.api.ovh.com/1.0",
    "ovh-ca": "https://ca.api.ovh.com/1.0",
    "ovh-us": "https://api.us.ovhcloud.com/1.0",
}
RELAY_HEADER = "X-Otpgw-Relay-Signature"
# After a job left unanswered, sends fail over at once for this long: an API
# that takes jobs and then hangs must not make every code fail (each such send
# is final, and a final refusal does not count against the breaker).
HOLD_OFF_SECONDS = 30.0
# Below the idle timeout of usual servers: a POST on a connection the server
# just closed would be lost as "no answer", and could not be resent.
KEEPALIVE_SECONDS = 10.0
# deliveryReceipt (the DLR id) of an outgoing SMS, in the gateway's states.
_DLR_STATES = {
    "0": "sent",
    "4": "sent",
    "8": "sent",
    "1": "delivered",
    "2": "failed",
    "16": "failed",
}
FINAL = ("delivered", "failed")
# errorCode values that say the keys, the signature or the rights are wrong.
CREDENTIAL_ERRORS = frozenset(
    {"INVALID_SIGNATURE", "INVALID_KEY", "INVALID_CREDENTIAL", "NOT_CREDENTIAL",
     "NOT_GRANTED_CALL", "FORBIDDEN"}
)  # fmt: skip
_SERVICE = re.compile(r"sms-[a-z0-9]+-[0-9]+")
_SENDER = re.compile(r"\+?[0-9]{3,15}|(?=.*[A-Za-z])[A-Za-z0-9 ._-]{1,11}")
_KEY = re.compile(r"[A-Za-z0-9]{8,64}")


def ovh_signature(
    secret: str, consumer_key: str, method: str, url: str, body: str, timestamp: str
) -> str:
    """OVHcloud's X-Ovh-Signature for one request."""
    data = "+".join((secret, consumer_key, method.upper(), url, body, timestamp))
    return "$1$" + hashlib.sha1(data.encode()).hexdigest()


def relay_signature(key: bytes, url: str, params: list[tuple[str, str]]) -> str:
    """The signature of a delivery relayed to the gateway's own callback."""
    data = url + "".join(f"\n{name}={value}" for name, value in sorted(params))
    return hmac.new(key, data.encode(), hashlib.sha256).hexdigest()


def delivery_state(params: Mapping[str, str]) -> DeliveryEvent | None:
    """A relayed receipt (`dlr`, the DLR id) in the gateway's states."""
    state = _DLR_STATES.get(params.get("dlr", ""))
    return DeliveryEvent("message", state) if state else None


class _Settings:
    """The options, checked (a ConfigError names the first bad one)."""

    def __init__(self, opts: Mapping[str, Any], where: str) -> None:
        endpoint: str = option(opts, "endpoint", str, where, "ovh-eu")
        self.endpoint = ENDPOINTS.get(endpoint, endpoint).rstrip("/")
        if not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", self.endpoint):
            known = ", ".join(ENDPOINTS)
            raise ConfigError(f"{where}.endpoint", f"must be one of {known} or an http(s) URL")
        self.application_key = _key(opts, "application_key", where)
        self.application_secret = _key(opts, "application_secret", where)
        self.consumer_key = _key(opts, "consumer_key", where)
        self.service_name: str = option(opts, "service_name", str, where)
        if not _SERVICE.fullmatch(self.service_name):
            raise ConfigError(f"{where}.service_name", "must look like sms-ab12345-1")
        self.sender: str = option(opts, "sender", str, where)
        if not _SENDER.fullmatch(self.sender):
            raise ConfigError(
                f"{where}.sender", "must be a number or an alphanumeric sender (1-11 characters)"
            )
        self.timeout = _bounded(opts, "timeout_seconds", where, 5.0, (0.1, 8.0))
        self.validity = int(_bounded(opts, "validity_minutes", where, 5.0, (1.0, 2880.0)))
        self.follow = _bounded(opts, "follow_seconds", where, 300.0, (0.0, 3600.0))
        self.poll = _bounded(opts, "poll_seconds", where, 5.0, (0.01, 60.0))


def _key(opts: Mapping[str, Any], name: str, where: str) -> str:
    value: str = option(opts, name, str, where)
    if not _KEY.fullmatch(value):
        raise ConfigError(f"{where}.{name}", "must be 8 to 64 letters and digits")
    return value


def _bounded(
    opts: Mapping[str, Any], name: str, where: str, default: float, bounds: tuple[float, float]
) -> float:
    value: float = option(opts, name, float, where, default)
    if not bounds[0] <= value <= bounds[1]:
        raise ConfigError(f"{where}.{name}", f"must be between {bounds[0]:g} and {bounds[1]:g}")
    return value


class OvhProvider:
    """SMS through OVHcloud's signed REST API (`kind = "ovh"`)."""

    def __init__(self, config: ProviderConfig, context: ProviderContext) -> None:
        where = f"providers.{config.name}"
        reject_unknown_options(config.options, OPTIONS, where)
        if set(config.channels) != {"sms"}:
            raise ConfigError(f"{where}.channels", 'OVHcloud sends SMS only: channels = ["sms"]')
        self.name = config.name
        self.channels = config.channels
        self._s = _Settings(config.options, where)
        self._relay_key = hmac.new(
            self._s.application_secret.encode(), b"otp-gateway ovh relay", hashlib.sha256
        ).digest()
        self._callbacks = context.callbacks_url(self.name)
        # Connecting is bounded apart: a connection that never opened sent nothing.
        self._timeout = aiohttp.ClientTimeout(connect=self._s.timeout, sock_read=self._s.timeout)
        self._offset: int | None = None  # OVHcloud's clock minus ours, in seconds
        self._hold_off_until = 0.0  # monotonic time until which sends fail over at once
        self._session: aiohttp.ClientSession | None = None
        self._followers: set[asyncio.Task[None]] = set()

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a session must be made inside the running loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS)
            self._session = aiohttp.ClientSession(timeout=self._timeout, connector=connector)
        return self._session

    # --- sending ------------------------------------------------------------------

    async def send(self, message: OutboundMessage) -> SendReceipt:
        """Create the SMS job; map OVHcloud's answer (see the module doc)."""
        if message.channel != "sms":
            raise ProviderRejected(f"{self.name}: OVHcloud sends SMS only")
        if time.monotonic() < self._hold_off_until:
            raise ProviderUnavailable(f"{self.name}: ovh left a job unanswered; holding off")
        reply = await self._send_job(self._job(message))
        if message.to in _strings(reply.get("invalidReceivers")):
            raise ProviderRejected(f"{self.name}: ovh invalid receiver")
        ids = reply.get("ids")
        if not isinstance(ids, list) or not ids:
            # Nothing was taken, so nothing can be sent twice: the next provider may try.
            raise ProviderUnavailable(f"{self.name}: ovh took no SMS (no id in its answer)")
        sms_id = str(ids[0])
        self._follow(sms_id, message)
        return SendReceipt(provider_ref=sms_id)

    def _job(self, message: OutboundMessage) -> dict[str, Any]:
        return {
            "message": message.text,
            "receivers": [message.to],
            "sender": self._s.sender,
            "noStopClause": True,  # a code, not marketing: no "STOP" line
            "priority": "high",
            "validityPeriod": self._s.validity,  # minutes: a late code is useless
            "charset": "UTF-8",
            "coding": "7bit",  # start-up checked every template fits GSM-7
            "tag": message.challenge_id[:16],  # the account-free half: ops can trace it
        }

    async def _send_job(self, job: dict[str, Any]) -> dict[str, Any]:
        path = f"/sms/{self._s.service_name}/jobs"
        try:
            return await self._call("POST", path, json.dumps(job, separators=(",", ":")))
        except (aiohttp.ClientError, TimeoutError) as exc:
            if _never_sent(exc):
                raise ProviderUnavailable(f"{self.name}: {type(exc).__name__}") from exc
            # The job may have been taken: sending it again could send the code twice.
            self._hold_off_until = time.monotonic() + HOLD_OFF_SECONDS
            raise ProviderRejected(
                f"{self.name}: no answer from ovh ({type(exc).__name__}); not resent"
            ) from exc

    async def _call(self, method: str, path: str, body: str = "") -> dict[str, Any]:
        """One signed request; OVHcloud's answer as a dict, or a ProviderError."""
        try:
            offset = await self._clock()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderUnavailable(f"{self.name}: ovh time: {type(exc).__name__}") from exc
        url = self._s.endpoint + path
        headers = self._signed(method, url, body, str(int(time.time()) + offset))
        async with self._client().request(method, url, data=body.encode(), headers=headers) as resp:
            status, reply = resp.status, await _json(resp)
        if 200 <= status < 300:
            return reply
        raise self._error(status, reply)

    def _signed(self, method: str, url: str, body: str, timestamp: str) -> dict[str, str]:
        s = self._s
        headers = {
            "X-Ovh-Application": s.application_key,
            "X-Ovh-Consumer": s.consumer_key,
            "X-Ovh-Timestamp": timestamp,
            "X-Ovh-Signature": ovh_signature(
                s.application_secret, s.consumer_key, method, url, body, timestamp
            ),
        }
        if body:
            headers["Content-Type"] = "application/json"
        return headers

    async def _clock(self) -> int:
        if self._offset is None:
            async with self._client().get(f"{self._s.endpoint}/auth/time") as resp:
                resp.raise_for_status()
                server = int(await resp.text())
            self._offset = server - int(time.time())
        return self._offset

    def _error(self, status: int, reply: dict[str, Any]) -> ProviderUnavailable:
        code = reply.get("errorCode")
        code = code if isinstance(code, str) and re.fullmatch(r"[A-Z_]{1,40}", code) else ""
        if code == "QUERY_TIME_OUT":
            self._offset = None  # our clock moved: ask OVHcloud's again next time
        # OVHcloud's message may quote the number: only the status and errorCode go out.
        why = "credentials" if status == 401 or code in CREDENTIAL_ERRORS else "HTTP"
        return ProviderUnavailable(f"{self.name}: ovh {why} {status} {code}".rstrip())

    async def aclose(self) -> None:
        """Stop following deliveries; close the HTTP session."""
        for task in list(self._followers):
            task.cancel()
        for task in list(self._followers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    # --- following deliveries ------------------------------------------------------

    def _follow(self, sms_id: str, message: OutboundMessage) -> None:
        if self._s.follow <= 0:
            return
        url = f"{self._callbacks}/status?c={message.challenge_id}&n={message.attempt}"
        task = asyncio.get_running_loop().create_task(self._follow_one(sms_id, url))
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _follow_one(self, sms_id: str, relay_url: str) -> None:
        """Poll one SMS until a final receipt or `follow_seconds`; relay each new state."""
        deadline = time.monotonic() + self._s.follow
        while time.monotonic() < deadline:
            await asyncio.sleep(self._s.poll)
            dlr = await self._receipt(sms_id)
            # "sent" is what the send already is: only a final receipt is news.
            if _DLR_STATES.get(dlr or "") in FINAL and await self._relay(
                relay_url, sms_id, dlr or ""
            ):
                return

    async def _receipt(self, sms_id: str) -> str | None:
        """The SMS's DLR id, or None while OVHcloud has no outgoing record of it yet."""
        try:
            reply = await self._call("GET", f"/sms/{self._s.service_name}/outgoing/{sms_id}")
        except (ProviderUnavailable, aiohttp.ClientError, TimeoutError) as exc:
            # A 404 is the usual answer while the SMS is still a pending job.
            log.debug("ovh receipt not read", extra={"provider": self.name, "error": str(exc)})
            return None
        receipt = reply.get("deliveryReceipt")
        return str(receipt) if isinstance(receipt, int) else None

    async def _relay(self, url: str, sms_id: str, dlr: str) -> bool:
        params = [("id", sms_id), ("dlr", dlr)]
        headers = {RELAY_HEADER: relay_signature(self._relay_key, url, params)}
        try:
            async with self._client().post(url, data=params, headers=headers) as resp:
                return resp.status < 300
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("ovh relay failed", extra={"provider": self.name, "error": str(exc)})
            return False

    # --- the relayed callbacks ----------------------------------------------------------

    def verify_callback(
        self, url: str, params: list[tuple[str, str]], headers: Mapping[str, str]
    ) -> bool:
        """Check the relay's signature (constant time)."""
        expected = relay_signature(self._relay_key, url, params)
        return hmac.compare_digest(expected.encode(), headers.get(RELAY_HEADER, "").encode())

    def delivery_event(self, params: Mapping[str, str]) -> DeliveryEvent | None:
        """The SMS's new state."""
        return delivery_state(params)


def _never_sent(exc: BaseException) -> bool:
    """True when the request cannot have reached OVHcloud: the connection never opened."""
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


async def _json(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    try:
        body = await resp.json(content_type=None)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
