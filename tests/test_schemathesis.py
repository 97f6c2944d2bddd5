"""Schemathesis judges gateway/openapi.json against a live gateway, key scope by key scope.

The gateway listens on a real loopback socket (its own thread and event loop) over the
tests' redis-server; Schemathesis sends real HTTP requests with every check on (status
codes, content types, headers, schemas, negative data rejected, positive data accepted,
auth not ignored...). Each operation starts from the same seed: accounts, an admin and a
live challenge, so requests reach the handlers' real branches and not only 404s. A few
values are placeholders that Schemathesis draws from dictionaries and the test swaps for
live ones just before the call: the seeded challenge id, a trusted device id, a fresh
step-up token. Hypothesis is derandomized: a run repeats.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from gateway.app import create_app
from gateway.embedded import RedisServer
from gateway.runtime import Services
from gateway.web.request import SERVICES
from tests.support.cluster import flush
from tests.support.config import ADMIN_KEY, METRICS_KEY, OPERATOR_KEY, OTP_KEY, make_config
from tests.support.httpfake import Stub

T = TypeVar("T")

LIVE_CHALLENGE = "live-challenge"
LIVE_DEVICE = "live-device"
FRESH_STEP_UP = "fresh-step-up"
ESTABLISHMENT = "Mairie de Luisant"
ACCOUNTS = ["boss", "alice", "bob", "nophone", "gone"]

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": 1,
        # The gateway ignores query parameters it does not know, as the document says.
        "generation": {
            "max-examples": 6,
            "deterministic": True,
            "no-shrink": True,
            "allow-extra-parameters": True,
            # Each test sends its scope's key itself (the `ignored_auth` check still drops it).
            "with-security-parameters": False,
        },
        "checks": {
            "enabled": True,
            # A well-formed request may still be refused for what it means: a wrong code (422),
            # a spent challenge (410). Only 400 `invalid_request` says the document lied.
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "401", "403", "404", "409", "410", "422", "429"]
            },
        },
        "dictionaries": {
            "accounts": {"values": ACCOUNTS},
            "admins": {"values": ["boss"]},
            "challenges": {"values": [LIVE_CHALLENGE]},
            "devices": {"values": [LIVE_DEVICE]},
            "step_ups": {"values": [FRESH_STEP_UP]},
            "establishments": {"values": [ESTABLISHMENT]},
        },
        "parameters": {
            "path.account_id": {"dictionary": "accounts", "probability": 0.8},
            "path.challenge_id": {"dictionary": "challenges", "probability": 0.7},
            "path.device_id": {"dictionary": "devices", "probability": 0.7},
            "body.account_id": {"dictionary": "accounts", "probability": 0.7},
            "body.challenge_id": {"dictionary": "challenges", "probability": 0.7},
            "query.establishment": {"dictionary": "establishments", "probability": 0.7},
            "header.X-Acting-Account": {"dictionary": "admins", "probability": 0.9},
            "header.X-Step-Up-Token": {"dictionary": "step_ups", "probability": 0.7},
        },
    }
)
DOC = files("gateway") / "openapi.json"
schema = schemathesis.openapi.from_dict(json.loads(DOC.read_text(encoding="utf-8")), config=CONFIG)


def for_scope(scope: str) -> Any:
    """The operations a key of `scope` may call; the open ones go with `metrics`.

    A key's calls to other operations end at the scope check (403), before any input is
    read: `test_wrong_scope_is_documented` covers those.
    """

    def allowed(ctx: Any) -> bool:
        security = ctx.operation.definition.raw.get("security", [])
        scopes = {s for requirement in security for s in requirement.get("bearerAuth", [])}
        return scope in scopes or (scope == "metrics" and not scopes)

    return schema.include(allowed)


# The seed is per operation on purpose: every example of one operation shares it.
SEEDED = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


class LiveGateway:
    """The gateway app on a loopback port, served from its own thread and event loop."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sink = Stub()
        self.runners: list[web.AppRunner] = []
        self.url = ""
        self.services: Services | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def __enter__(self) -> LiveGateway:
        self.thread.start()
        self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def _start(self) -> None:
        sink_app = web.Application()
        sink_app.router.add_post("/send", self.sink.handle)
        self.sink.url = await self._serve(sink_app) + "/send"
        config = make_config(
            self.redis_url,
            providers=[self.sink.provider()],
            otp={"resend_cooldown_seconds": 0},
            rate_limits={
                "account": "100000/1m",
                "number": "100000/1m",
                "failures": "100000/1m",
                "ip": "100000/1m",
            },
        )
        app = create_app(config, run_worker=False)
        self.url = await self._serve(app)
        self.services = app[SERVICES]

    async def _stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()

    def drain(self) -> None:
        assert self.services is not None
        self.run(self.services.worker.drain())


@dataclass
class Seed:
    """What the seed created: the live challenge's id and one trusted device's."""

    challenge_id: str
    device_id: str


class Client:
    """Plain HTTP calls to the live gateway, for the seed."""

    def __init__(self, live: LiveGateway) -> None:
        self.live = live
        self.session = requests.Session()

    def call(self, method: str, path: str, key: str, body: Any = None, **headers: str) -> Any:
        sent = {"Authorization": f"Bearer {key}", **headers}
        resp = self.session.request(method, self.live.url + path, json=body, headers=sent)
        assert resp.status_code < 300, (method, path, resp.status_code, resp.text)
        return resp.json() if resp.content else None

    def account(self, account_id: str, **fields: Any) -> None:
        body = {
            "account_id": account_id,
            "establishment": ESTABLISHMENT,
            "last_name": "Martin",
            "first_name": account_id.capitalize(),
            "email": f"{account_id}@example.org",
            "role": "user",
            "phone": "06 12 34 56 78",
            **fields,
        }
        self.call("POST", "/accounts", OPERATOR_KEY, body)

    def verified(self, account_id: str, purpose: str, **extra: Any) -> dict[str, Any]:
        """A challenge for `purpose`, its code fetched from the sink and verified."""
        created = self.call(
            "POST", "/challenge", OTP_KEY, {"account_id": account_id, "purpose": purpose}
        )
        self.live.drain()
        code = self.live.sink.codes(created["challenge_id"])[-1]
        body = {"challenge_id": created["challenge_id"], "code": code, **extra}
        reply: dict[str, Any] = self.call("POST", "/verify", OTP_KEY, body)
        return reply

    def step_up(self, account_id: str, purpose: str) -> str:
        """A fresh step-up token of `account_id` for `purpose`, or "" when it has no phone."""
        try:
            reply = self.verified(account_id, purpose)
        except AssertionError:
            return "no-step-up-for-this-account"
        return str(reply["step_up_token"])

    def seed(self) -> Seed:
        self.account("boss", role="admin", phone="06 98 76 54 31")
        self.account("alice")
        self.account("bob", phone="07 98 76 54 32")
        self.account("nophone", phone=None)
        self.account("gone")
        self.call("DELETE", "/accounts/gone", OPERATOR_KEY)
        self.verified("alice", "login", trust_device=True, device_label="laptop")
        devices = self.call("GET", "/accounts/alice/trusted-devices", OPERATOR_KEY)
        live = self.call("POST", "/challenge", OTP_KEY, {"account_id": "alice"})
        self.live.drain()
        return Seed(live["challenge_id"], devices["devices"][0]["device_id"])


@pytest.fixture(scope="module")
def live(redis_server: RedisServer) -> Iterator[LiveGateway]:
    with LiveGateway(redis_server.url) as gateway:
        yield gateway


@pytest.fixture
def seed(live: LiveGateway, redis_server: RedisServer) -> Seed:
    """A fresh, known state for each operation: what one operation did, the next does not see."""
    flush(redis_server)
    return Client(live).seed()


def swap(container: Any, seed: Seed) -> None:
    """Placeholders drawn from the dictionaries become the seed's live values."""
    if not isinstance(container, dict):
        return
    for name, value in list(container.items()):
        if value == LIVE_CHALLENGE:
            container[name] = seed.challenge_id
        elif value == LIVE_DEVICE:
            container[name] = seed.device_id


def step_up_purpose(case: Any) -> str:
    return (
        "account.create" if (case.method, case.path) == ("POST", "/accounts") else "contact.update"
    )


def prepare(case: Any, live: LiveGateway, seed: Seed, key: str) -> dict[str, str]:
    """Fill in what a caller with this key sends; the headers to add to the case's own."""
    swap(case.path_parameters, seed)
    swap(case.body, seed)
    headers = case.headers if case.headers is not None else {}
    if key != ADMIN_KEY:
        # Only an admin key reads X-Acting-Account (documented): other callers do not send it.
        headers.pop("X-Acting-Account", None)
    else:
        # The document: with an admin key, X-Acting-Account is required.
        headers.setdefault("X-Acting-Account", "boss")
        if case.path in ("/accounts", "/history") and case.query is not None:
            # An admin may leave `establishment` out (documented): send it, as the document asks.
            case.query.setdefault("establishment", ESTABLISHMENT)
    if headers.get("X-Step-Up-Token") == FRESH_STEP_UP:
        owner = (
            headers.get("X-Acting-Account")
            if key == ADMIN_KEY
            else case.path_parameters.get("account_id")
        )
        if owner in ACCOUNTS:
            token = Client(live).step_up(str(owner), step_up_purpose(case))
            headers["X-Step-Up-Token"] = token
    case.headers = headers
    return {"Authorization": f"Bearer {key}"}


def run_case(case: Any, live: LiveGateway, seed: Seed, key: str) -> None:
    headers = prepare(case, live, seed, key)
    case.call_and_validate(base_url=live.url, headers=headers)


@for_scope("otp").parametrize()
@SEEDED
def test_otp_scope(case: Any, live: LiveGateway, seed: Seed) -> None:
    run_case(case, live, seed, OTP_KEY)


@for_scope("operator").parametrize()
@SEEDED
def test_operator_scope(case: Any, live: LiveGateway, seed: Seed) -> None:
    run_case(case, live, seed, OPERATOR_KEY)


@for_scope("admin").parametrize()
@SEEDED
def test_admin_scope(case: Any, live: LiveGateway, seed: Seed) -> None:
    run_case(case, live, seed, ADMIN_KEY)


@for_scope("metrics").parametrize()
@SEEDED
def test_metrics_scope(case: Any, live: LiveGateway, seed: Seed) -> None:
    run_case(case, live, seed, METRICS_KEY)


KEYS = {"otp": OTP_KEY, "operator": OPERATOR_KEY, "admin": ADMIN_KEY, "metrics": METRICS_KEY}


def test_wrong_scope_is_documented(live: LiveGateway, seed: Seed) -> None:
    """Each key on the operations its scope does not reach: a documented 403 `forbidden`."""
    session = requests.Session()
    for (path, method), scopes in secured_operations().items():
        url = live.url + path.format(
            account_id="alice", challenge_id=seed.challenge_id, device_id=seed.device_id
        )
        for scope in set(KEYS) - scopes:
            headers = {"Authorization": f"Bearer {KEYS[scope]}", "X-Acting-Account": "boss"}
            resp = session.request(method, url, headers=headers)
            where = (scope, method, path)
            assert resp.status_code == 403, (where, resp.status_code, resp.text)
            assert resp.json()["error"] == "forbidden", (where, resp.text)
            operation = schema[path][method.upper()]
            assert "403" in operation.definition.raw["responses"], where


def secured_operations() -> dict[tuple[str, str], set[str]]:
    doc = json.loads(DOC.read_text(encoding="utf-8"))
    found = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            security = op.get("security", [])
            scopes = {s for requirement in security for s in requirement.get("bearerAuth", [])}
            if scopes and {} not in security:
                found[(path, method)] = scopes
    return found
