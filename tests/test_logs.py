"""Structured logs (gateway/logs.py, the middleware's access lines, the OTP events).

The last test runs a whole flow through a real `otp-gateway serve` process
and greps everything it wrote for codes, keys, the secret, tokens and numbers.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import pytest

from gateway import logs
from gateway.app import create_app
from gateway.config import LoggingConfig
from gateway.embedded import RedisServer, free_port
from gateway.logs import JsonFormatter, TextFormatter, setup_logging
from tests.support.config import ADMIN_KEY, METRICS_KEY, OPERATOR_KEY, OTP_KEY, SECRET, make_config
from tests.support.gateway import GatewayFactory, add_account
from tests.support.httpfake import SINK_SECRET, StubFactory, closed_url
from tests.support.logs import gateway_logs, json_lines
from tests.support.ops import auth, children, wait_healthy, write_config
from tests.support.otp import MOBILE_DIGITS, OTHER_DIGITS, OTHER_MOBILE, call, digit_runs, wrong
from tests.support.poll import poll
from tests.support.rawhttp import exchange, request, served

# --- the formatters ---------------------------------------------------------------


def _record(msg: str = "something happened", **extra: Any) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "otp_gateway.test", "levelname": "INFO", "msg": msg})
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_fields_and_redact_secret_ones() -> None:
    token = logs.bind_request("req-1")
    try:
        line = JsonFormatter().format(
            _record(challenge_id="c1", outcome="queued", code="123456", to="+33612345678")
        )
    finally:
        logs.unbind_request(token)
    entry = json.loads(line)
    assert entry["event"] == "something happened"
    assert entry["level"] == "info" and entry["logger"] == "otp_gateway.test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["time"])
    assert (entry["request_id"], entry["challenge_id"], entry["outcome"]) == (
        "req-1",
        "c1",
        "queued",
    )
    assert entry["code"] == entry["to"] == logs.REDACTED
    assert "123456" not in line and "612345678" not in line


def test_outside_a_request_there_is_no_request_id() -> None:
    assert "request_id" not in json.loads(JsonFormatter().format(_record()))


def test_text_lines_show_the_fields_too() -> None:
    line = TextFormatter().format(_record("worker started", worker="w1", secret="s3cr3t"))
    assert line.endswith('INFO otp_gateway.test worker started worker="w1" secret="[redacted]"')


def test_exceptions_are_kept_in_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


def test_events_measure_the_request_so_far() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("otp_gateway.test.events")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    token = logs.bind_request("req-2")
    try:
        logs.event(logger, "challenge created", challenge_id="c2", outcome="queued")
    finally:
        logs.unbind_request(token)
        logger.removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["request_id"] == "req-2" and entry["duration_ms"] >= 0


@pytest.mark.parametrize(
    ("config", "formatter", "level"),
    [
        (LoggingConfig("debug", "json"), JsonFormatter, logging.DEBUG),
        (LoggingConfig("warning", "text"), TextFormatter, logging.WARNING),
    ],
)
def test_level_and_format_come_from_config(
    config: LoggingConfig, formatter: type[logging.Formatter], level: int
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging(config)
        [handler] = root.handlers
        assert isinstance(handler.formatter, formatter)
        assert root.level == level
        assert logging.getLogger("aiohttp.access").level == logging.WARNING
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


# --- request ids and access lines, in process ---------------------------------------


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every line the gateway's loggers write during the test, as JSON lines."""
    with gateway_logs() as stream:
        yield stream


async def test_request_id_is_taken_returned_and_logged(
    make_gateway: GatewayFactory, captured: io.StringIO
) -> None:
    gw = await make_gateway()
    await add_account(gw)
    reply = await call(gw, "POST", "/challenge", {"account_id": "alice"}, headers={
        "X-Request-ID": "front-42"
    })  # fmt: skip
    assert reply.status == 202 and reply.headers["X-Request-ID"] == "front-42"
    entries = [e for e in json_lines(captured.getvalue()) if e.get("request_id") == "front-42"]
    access = [e for e in entries if e["event"] == "request"]
    assert [(e["route"], e["method"], e["status"]) for e in access] == [("/challenge", "POST", 202)]
    assert access[0]["duration_ms"] >= 0
    [created] = [e for e in entries if e["event"] == "challenge created"]
    assert created["challenge_id"] == reply.body["challenge_id"]
    assert created["destination"] == reply.body["destination"]
    assert (created["purpose"], created["channel"], created["outcome"]) == (
        "login",
        "sms",
        "queued",
    )
    assert created["duration_ms"] >= 0


@pytest.mark.parametrize("presented", [None, "", "has spaces", "x" * 65, "é-accent"])
async def test_a_missing_or_malformed_request_id_is_replaced(
    make_gateway: GatewayFactory, captured: io.StringIO, presented: str | None
) -> None:
    gw = await make_gateway()
    headers = {} if presented is None else {"X-Request-ID": presented}
    reply = await call(gw, "GET", "/healthz", key=None, headers=headers)
    generated = reply.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    [access] = [e for e in json_lines(captured.getvalue()) if e["event"] == "request"]
    assert access["request_id"] == generated


async def test_access_lines_name_the_route_never_the_path_or_query(
    make_gateway: GatewayFactory, captured: io.StringIO
) -> None:
    gw = await make_gateway()
    await call(gw, "GET", "/challenge/raw-id-in-path-123?code=424242")
    await call(gw, "GET", "/private/path-xyz?phone=0612345678", key=None)
    text = captured.getvalue()
    routes = [(e["route"], e["status"]) for e in json_lines(text) if e["event"] == "request"]
    assert routes == [("/challenge/{challenge_id}", 404), ("unmatched", 404)]
    for leaked in ("raw-id-in-path", "424242", "path-xyz", "0612345678", OTP_KEY):
        assert leaked not in text


# --- a whole flow through a real gateway process, every log line grepped ---------------


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    with children(tmp_path) as start:
        yield start


class Flow:
    """Requests to a gateway process, each with its own X-Request-ID."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.request_ids: list[str] = []
        self.secrets: set[str] = set()

    async def send(
        self, method: str, path: str, body: Any = None, key: str | None = OTP_KEY
    ) -> tuple[int, Any]:
        request_id = f"flow-{len(self.request_ids)}"
        self.request_ids.append(request_id)
        headers = {"X-Request-ID": request_id, **(auth(key) if key else {})}
        async with self.session.request(method, path, json=body, headers=headers) as resp:
            assert resp.headers["X-Request-ID"] == request_id
            text = await resp.text()
        return resp.status, json.loads(text) if text.startswith("{") else text


async def _run_flow(flow: Flow, stub: Any) -> None:
    hidden = {"phone": OTHER_MOBILE, "phone_hidden": True}
    for account_id, extra in (("alice", {}), ("hugo", hidden)):
        body = {
            "account_id": account_id, "establishment": "Mairie", "last_name": "Martin",
            "first_name": "A", "email": f"{account_id}@example.org", "role": "user",
            "phone": "06 12 34 56 78", **extra,
        }  # fmt: skip
        assert (await flow.send("POST", "/accounts", body, key=OPERATOR_KEY))[0] == 201
    alice = await _delivered(flow, stub, {"account_id": "alice"})
    for _ in range(2):
        await _verify(flow, alice, wrong(alice["code"]), 422)
    verified = await _verify(flow, alice, alice["code"], 200, trust_device=True)
    flow.secrets.add(verified["trusted_device_token"])
    body = {"account_id": "alice", "trusted_device_token": verified["trusted_device_token"]}
    assert (await flow.send("POST", "/challenge", body))[0] == 200

    hugo = await _delivered(flow, stub, {"account_id": "hugo", "purpose": "contact.update"})
    assert hugo["destination"].replace(" ", "").strip("+3*") == ""  # every digit hidden
    assert (await flow.send("POST", f"/challenge/{hugo['challenge_id']}/resend", {}))[0] == 202
    await _verify(flow, hugo, wrong(hugo["code"]), 422)
    flow.secrets.add((await _verify(flow, hugo, hugo["code"], 200))["step_up_token"])
    assert (await flow.send("GET", f"/challenge/{hugo['challenge_id']}"))[0] == 200
    await flow.send("GET", f"/healthz?code={hugo['code']}&phone=0612345678", key=None)
    await flow.send("GET", "/accounts/hugo/no-such-thing-xyz", key=OPERATOR_KEY)
    await flow.send("GET", "/metrics", key=None)


async def _delivered(flow: Flow, stub: Any, body: dict[str, Any]) -> dict[str, Any]:
    status, created = await flow.send("POST", "/challenge", body)
    assert status == 202, created
    challenge_id = created["challenge_id"]
    await poll(lambda: bool(stub.codes(challenge_id)), within=10, what="the code")
    created["code"] = stub.codes(challenge_id)[0]
    flow.secrets.add(created["code"])
    return dict(created)


async def _verify(
    flow: Flow, created: dict[str, Any], code: str, status: int, **extra: Any
) -> dict[str, Any]:
    body = {"challenge_id": created["challenge_id"], "code": code, **extra}
    got, reply = await flow.send("POST", "/verify", body)
    assert got == status, reply
    return dict(reply)


async def test_a_full_run_logs_events_and_never_a_code_secret_or_number(
    stubs: StubFactory, spawn: Any, redis_server: RedisServer, redis: Any, tmp_path: Path
) -> None:
    stub = await stubs()
    down = {"name": "down", "kind": "http", "url": closed_url(), "secret": SINK_SECRET}
    port = free_port()
    config = write_config(
        tmp_path / "gateway.toml", redis_server.url, [down, stub.provider("hook")],
        server={"host": "127.0.0.1", "port": port},
        otp={"resend_cooldown_seconds": 0},
        logging={"level": "debug", "format": "json"},
    )  # fmt: skip
    gateway = spawn("serve", "--config", str(config))
    base = f"http://127.0.0.1:{port}"
    await wait_healthy(gateway, base)
    async with aiohttp.ClientSession(base) as session:
        flow = Flow(session)
        await _run_flow(flow, stub)
    gateway.terminate()
    assert await gateway.exit_code() == 0, gateway.output()

    text = gateway.stderr()
    entries = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    app = create_app(make_config(redis_server.url), run_worker=False)
    _assert_access_lines(entries, flow.request_ids, {r.canonical for r in app.router.resources()})
    _assert_events(entries)
    _assert_nothing_leaked(gateway.output(), flow.secrets | {c for c in stub.codes()})


def _assert_access_lines(
    entries: list[dict[str, Any]], request_ids: list[str], templates: set[str]
) -> None:
    access = [e for e in entries if e["event"] == "request"]
    for request_id in request_ids:
        [line] = [e for e in access if e.get("request_id") == request_id]
        assert set(line) >= {"time", "level", "route", "method", "status", "duration_ms"}
    routes = {e["route"] for e in access}
    assert {"/challenge", "/verify", "/challenge/{challenge_id}", "unmatched"} <= routes
    assert routes <= templates | {"unmatched"}


def _assert_events(entries: list[dict[str, Any]]) -> None:
    created = [e for e in entries if e["event"] == "challenge created"]
    assert len(created) == 2
    for event in created:
        assert {"request_id", "challenge_id", "destination", "outcome", "duration_ms"} <= set(event)
    outcomes = sorted(e["outcome"] for e in entries if e["event"] == "verification")
    assert outcomes == ["invalid_code"] * 3 + ["verified"] * 2
    assert [e["outcome"] for e in entries if e["event"] == "challenge not required"] == [
        "trusted_device"
    ]
    # The first provider is down: the failover shows, with the provider's name.
    assert any(e.get("provider") == "down" for e in entries if e["level"] == "warning")


def _assert_nothing_leaked(text: str, secrets: set[str]) -> None:
    runs = digit_runs(text.encode())
    for secret in secrets:
        if secret.isdigit():
            assert secret.encode() not in runs, "a code is in the logs"
        else:
            assert secret not in text, "a token is in the logs"
    for secret in (OTP_KEY, OPERATOR_KEY, ADMIN_KEY, METRICS_KEY, SECRET, SINK_SECRET):
        assert secret not in text, "a key or secret is in the logs"
    for digits in (MOBILE_DIGITS, OTHER_DIGITS, "12 34 56 78", "98 76 54 32", "no-such-thing"):
        assert digits not in text, f"{digits!r} is in the logs"


# --- foreign loggers (aiohttp, asyncio): the same redaction, over raw sockets ----------------


@pytest.fixture
def logged() -> Iterator[Any]:
    """The gateway's own logging set-up (`setup_logging`) writing into a buffer;
    call the fixture's value with a format to (re)start it. Restored after."""
    root, access = logging.getLogger(), logging.getLogger("aiohttp.access")
    saved = (root.handlers[:], root.level, access.level, logging.raiseExceptions)
    stream = io.StringIO()

    def start(fmt: str = "json") -> io.StringIO:
        setup_logging(LoggingConfig("info", fmt), stream)
        return stream

    try:
        yield start
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        access.setLevel(saved[2])
        logging.raiseExceptions = saved[3]


KEY_LINE = b"Authorization: Bearer " + OTP_KEY.encode()
MALFORMED_REQUESTS = {
    "nul_after_key": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + KEY_LINE + b"\x00\r\n\r\n",
    "nul_inside_key": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + KEY_LINE[:-4] + b"\x00"
    + KEY_LINE[-4:] + b"\r\n\r\n",
    "control_in_step_up": b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + KEY_LINE
    + b"\r\nX-Step-Up-Token: su_" + OTP_KEY.encode() + b"\x01\r\n\r\n",
    "no_colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization Bearer " + OTP_KEY.encode()
    + b"\r\n\r\n",
    "nul_in_query": b"GET /healthz?key=" + OTP_KEY.encode() + b"\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
}  # fmt: skip


def _fragments(secret: str) -> list[str]:
    """Every 8-character piece of `secret`: a cut or escaped copy still shows one."""
    return [secret[i : i + 8] for i in range(len(secret) - 7)]


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("kind", MALFORMED_REQUESTS)
async def test_a_malformed_request_is_one_warning_without_the_header(
    redis_server: RedisServer, redis: Any, logged: Any, kind: str, fmt: str
) -> None:
    stream = logged(fmt)
    app = create_app(make_config(redis_server.url), run_worker=False)
    async with served(app) as port:
        reply = await exchange(port, MALFORMED_REQUESTS[kind])
        await poll(lambda: "malformed request" in stream.getvalue(), what="the warning")
    assert reply.status == 400
    text = stream.getvalue()
    for piece in _fragments(OTP_KEY):
        assert piece not in text, (piece, text)
    assert "\\x00" not in text and "\\x01" not in text and "Bearer" not in text
    [line] = [line for line in text.splitlines() if "malformed request" in line]
    if fmt == "json":
        entries = [json.loads(line) for line in text.splitlines()]
        # Start-up's warning about the unbound admin key aside (tests/test_admin_tenant.py).
        request = [e for e in entries if e["logger"] != "otp_gateway.auth"]
        assert [e["level"] for e in request if e["level"] not in ("info", "debug")] == ["warning"]
        entry = json.loads(line)
        assert (entry["logger"], entry["level"], entry["status"]) == (
            "aiohttp.server",
            "warning",
            400,
        )
        assert entry["error"] in (
            "BadHttpMessage",
            "InvalidHeader",
            "InvalidURLError",
            "BadStatusLine",
        )
        assert "exception" not in entry
    else:
        assert " WARNING aiohttp.server malformed request " in line
        assert "ERROR" not in text and "Traceback" not in text


async def test_access_lines_ours_and_aiohttps_never_carry_the_key_or_the_query(
    redis_server: RedisServer, redis: Any, logged: Any
) -> None:
    stream = logged("json")
    # An operator who turns aiohttp's own access log on gets it redacted too.
    logging.getLogger("aiohttp.access").setLevel(logging.INFO)
    app = create_app(make_config(redis_server.url), run_worker=False)
    query = "/challenge/" + "A" * 28 + "?code=424242&phone=0612345678"
    headers = {"Authorization": f"Bearer {OTP_KEY}", "X-Step-Up-Token": "su_" + ADMIN_KEY}
    async with served(app, access_log=aiohttp.web.access_logger) as port:
        reply = await exchange(port, request("GET", query, headers))
        await poll(lambda: stream.getvalue().count("\n") >= 2, what="both access lines")
    assert reply.status == 404
    text = stream.getvalue()
    entries = [json.loads(line) for line in text.splitlines()]
    ours = [e for e in entries if e["logger"] == "otp_gateway.access"]
    theirs = [e for e in entries if e["logger"] == "aiohttp.access"]
    assert [(e["route"], e["status"]) for e in ours] == [("/challenge/{challenge_id}", 404)]
    assert len(theirs) == 1 and "/challenge/" in theirs[0]["event"]
    assert set(theirs[0]) == {"time", "level", "logger", "event"}  # aiohttp's extras dropped
    for secret in ("424242", "0612345678", *_fragments(OTP_KEY), *_fragments(ADMIN_KEY)):
        assert secret not in text, secret


def _foreign(
    name: str, msg: str, *args: Any, exc: BaseException | None = None
) -> logging.LogRecord:
    record = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)
    if exc is not None:
        try:
            raise exc
        except BaseException:
            record.exc_info = sys.exc_info()
    record.__dict__["first_request_line"] = "GET /x?code=424242 HTTP/1.1"  # an extra
    return record


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_foreign_records_are_scrubbed_and_lose_their_extras(formatter: logging.Formatter) -> None:
    key = OTP_KEY
    records = [
        _foreign("asyncio", "Exception in callback %r", {"Authorization": f"Bearer {key}"}),
        _foreign("aiohttp.web", "Error handling request", exc=ValueError(f"bad b'{key}\\x00'")),
        _foreign("aiohttp.access", '1.2.3.4 "GET /verify?code=424242&t=%s HTTP/1.1" 200', key),
        _foreign("aiohttp.server", "x-step-up-token: %s", key),
        _foreign("aiohttp.client", "Cookie=%s; more", key),
    ]
    for record in records:
        line = formatter.format(record)
        assert key[:8] not in line and key[-8:] not in line, line
        assert "424242" not in line and "first_request_line" not in line, line
