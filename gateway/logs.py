"""Structured logs: one JSON line per event (or plain text), level from config.

Callers pass context through `extra=`; the formatters write those fields and
nothing else, so a code or a number only reaches a log if someone passes it,
and no module does. As a second line of defence, fields whose name says
"secret" (`code`, `to`, `phone`, `secret`, `token`, ...) are written as
`"[redacted]"` whatever their value.

The HTTP middleware binds the request id (and the request's start) to the
running task with `bind_request`: every line logged while the request is
handled carries `request_id`, and `event()` adds the time spent so far.

Event names used by the gateway (the `event` field):

    request             the access line: route template, method, status, duration_ms
    challenge created   challenge_id, purpose, channel, destination (masked), outcome
    challenge refused   purpose, channel, outcome (the error code)
    challenge resent    challenge_id, channel, destination (masked), outcome
    verification        challenge_id (when well formed), purpose, outcome
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, TextIO

from aiohttp.http_exceptions import HttpProcessingError

from gateway.config import LoggingConfig

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
REDACTED = "[redacted]"
_SECRET_FIELDS = frozenset(
    {"code", "to", "phone", "number", "secret", "token", "key", "password", "authorization"}
)
_CHALLENGE_ID_RE = re.compile(r"[A-Za-z0-9_-]{28}")
_OURS = "otp_gateway"
_REASON_RE = re.compile(r"[A-Za-z][A-Za-z ]{0,59}")


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    started: float  # time.perf_counter() at the request's start


_REQUEST: ContextVar[RequestContext | None] = ContextVar("otp_gateway_request", default=None)


def bind_request(request_id: str) -> Token[RequestContext | None]:
    """Tag every log line of the current task with `request_id` until `unbind_request`."""
    return _REQUEST.set(RequestContext(request_id, time.perf_counter()))


def unbind_request(token: Token[RequestContext | None]) -> None:
    _REQUEST.reset(token)


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def event(logger: logging.Logger, name: str, **fields: Any) -> None:
    """Log one event at info, with the request's elapsed time when in a request."""
    context = _REQUEST.get()
    if context is not None and "duration_ms" not in fields:
        fields["duration_ms"] = elapsed_ms(context.started)
    logger.info(name, extra=fields)


def challenge_id_field(value: object) -> str | None:
    """A caller-supplied challenge id, only when it has the shape of one."""
    return value if isinstance(value, str) and _CHALLENGE_ID_RE.fullmatch(value) else None


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's `extra=` fields, secrets redacted, plus the bound request id."""
    fields = {
        k: REDACTED if k.lower() in _SECRET_FIELDS else v
        for k, v in record.__dict__.items()
        if k not in _STANDARD
    }
    return _with_request_id(fields)


def _with_request_id(fields: dict[str, Any]) -> dict[str, Any]:
    context = _REQUEST.get()
    if context is not None:
        fields.setdefault("request_id", context.request_id)
    return fields


# What a foreign logger's text may quote from a request: the raw bytes of a
# line (aiohttp quotes the line it could not parse), a credential, a header's
# value, a query string (aiohttp's access line).
_SCRUBS = (
    (re.compile(r"\bb'(?:[^'\\\n]|\\.)*'"), "b'[redacted]'"),
    (re.compile(r'\bb"(?:[^"\\\n]|\\.)*"'), "b'[redacted]'"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s'\"]+"), rf"\1 {REDACTED}"),
    (
        re.compile(
            r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-step-up-token"
            r"|x-acting-account|x-twilio-signature|x-signature-sha256)(['\"]?\s*[:=]\s*)[^\r\n]*"
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"""(/[^\s?"']*)\?[^\s"']*"""), rf"\1?{REDACTED}"),
)


def scrub(text: str) -> str:
    """`text` without anything a request may have carried in (see `_SCRUBS`)."""
    for pattern, replacement in _SCRUBS:
        text = pattern.sub(replacement, text)
    return text


def _ours(record: logging.LogRecord) -> bool:
    return record.name == _OURS or record.name.startswith(_OURS + ".")


@dataclass(frozen=True, slots=True)
class _Line:
    """What a formatter writes for one record, once redacted."""

    level: str
    event: str
    fields: dict[str, Any]
    exception: str | None


def _line(record: logging.LogRecord, formatter: logging.Formatter) -> _Line:
    """Our records with their fields; any other logger's (aiohttp.server,
    aiohttp.access, aiohttp.web, asyncio, ...) scrubbed, without its fields,
    and a request aiohttp could not parse as one warning naming only the fault."""
    exc = record.exc_info[1] if record.exc_info else None
    if not _ours(record) and isinstance(exc, HttpProcessingError):
        return _malformed(record, exc)
    exception = scrub(formatter.formatException(record.exc_info)) if record.exc_info else None
    if _ours(record):
        return _Line(record.levelname, record.getMessage(), _fields(record), exception)
    return _Line(record.levelname, scrub(record.getMessage()), _with_request_id({}), exception)


def _malformed(record: logging.LogRecord, exc: HttpProcessingError) -> _Line:
    # aiohttp's message quotes the offending line, header values included
    # (an API key before a NUL byte): only its leading words are kept.
    reason = _REASON_RE.match(exc.message)
    level = "WARNING" if record.levelno >= logging.WARNING else record.levelname
    fields = {
        "error": type(exc).__name__,
        "status": exc.code,
        "reason": reason.group(0).strip() if reason else "",
    }
    return _Line(level, "malformed request", fields, None)


def _timestamp(record: logging.LogRecord) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = _line(record, self)
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": line.level.lower(),
            "logger": record.name,
            "event": line.event,
        }
        entry.update(line.fields)
        if line.exception:
            entry["exception"] = line.exception
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger event key=value ...` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = _line(record, self)
        pairs = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in line.fields.items())
        text = f"{_timestamp(record)} {line.level} {record.name} {line.event}"
        text = f"{text} {pairs}" if pairs else text
        if line.exception:
            text += "\n" + line.exception
        return text


def setup_logging(config: LoggingConfig, stream: TextIO | None = None) -> None:
    """Send every log line to `stream` (stderr) in `[logging] format`, at `[logging] level`.

    The handler sits on the root logger, so aiohttp's and asyncio's records
    pass the same formatter, hence the same redaction, as ours."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    # aiohttp's access log would print raw paths; our middleware logs routes.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # A record that fails to format is dropped: `Handler.handleError` would
    # print its raw arguments to stderr, past every redaction.
    logging.raiseExceptions = False
