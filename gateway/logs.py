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
from typing import Any

from gateway.config import LoggingConfig

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
REDACTED = "[redacted]"
_SECRET_FIELDS = frozenset(
    {"code", "to", "phone", "number", "secret", "token", "key", "password", "authorization"}
)
_CHALLENGE_ID_RE = re.compile(r"[A-Za-z0-9_-]{28}")


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
    context = _REQUEST.get()
    if context is not None:
        fields.setdefault("request_id", context.request_id)
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger event key=value ...` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{k}={json.dumps(v, default=str)}" for k, v in _fields(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name} {record.getMessage()}"
        line = f"{line} {pairs}" if pairs else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(config: LoggingConfig) -> None:
    """Send every log line to stderr in `[logging] format`, at `[logging] level`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    # aiohttp's access log would print raw paths; our middleware logs routes.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
