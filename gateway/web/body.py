"""Strict bodies: one reader, one JSON parser, one field checker, clear 4xx.

Every body goes through `read_raw`: a body in another media type is a 415
(no body at all is fine: a route's fields may all be optional), over 64 KiB a
413, and one that does not arrive within `[server] body_timeout_seconds` a
408 (a client that stalls mid-body must not hold a handler).

`json.loads` accepts NaN and Infinity, keeps the last of duplicate keys and
lets a lone surrogate (`"\\ud800"`) through as a string that cannot be
encoded back: all are refused here, once for every field of every route.
Depth bombs and integers too long for `int()` end as a 400, not a
RecursionError or a ValueError.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import parse_qsl

from aiohttp import web

from gateway.errors import InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType

MAX_BODY = 64 * 1024
JSON: Final = "application/json"
FORM: Final = "application/x-www-form-urlencoded"
BODY_TIMEOUT = web.AppKey("body_timeout", float)  # [server] body_timeout_seconds
DEFAULT_BODY_TIMEOUT: Final = 10.0
_MAX_FORM_FIELDS: Final = 100


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidRequest(f"duplicate key {key[:40]!r} in JSON body")
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise InvalidRequest(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def parse_json(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("the body is not UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise InvalidRequest("JSON nested too deeply") from None
    except ValueError:
        # An integer past Python's digit limit (sys.get_int_max_str_digits()).
        raise InvalidRequest("a number in the JSON body is too long") from None
    if _has_lone_surrogate(value):
        raise InvalidRequest("a string in the JSON body is not valid Unicode (lone surrogate)")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    """True when a key or string anywhere in `value` cannot be encoded as UTF-8.

    The text was valid UTF-8, so only a `\\udXXX` escape without its pair can
    bring a surrogate in; it would fail later, at whichever `.encode()` meets
    it first. A loop, not recursion: the value may be nested ~1000 deep."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _require_type(request: web.BaseRequest, media_type: str) -> None:
    charset = (request.charset or "utf-8").lower()
    if request.content_type != media_type or charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"the body must be {media_type} (UTF-8)")


async def read_raw(request: web.Request, media_type: str) -> bytes:
    """The body's bytes (b"" when there is none), once its type, size and time check out."""
    if not request.body_exists:
        return b""
    _require_type(request, media_type)
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise PayloadTooLarge(f"the body is over {MAX_BODY} bytes")
    if request.content.is_eof():  # all here already (an API body comes with its headers)
        raw = await request.read()
    else:
        try:
            async with asyncio.timeout(request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT)):
                raw = await request.read()
        except TimeoutError:
            raise RequestTimeout("the request body did not arrive in time") from None
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"the body is over {MAX_BODY} bytes")
    return raw


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (no body, or a blank one, counts as {})."""
    raw = await read_raw(request, JSON)
    if not raw.strip():
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


async def read_form(request: web.Request) -> list[tuple[str, str]]:
    """An `application/x-www-form-urlencoded` body's pairs, in order (a provider callback)."""
    raw = await read_raw(request, FORM)
    try:
        # As aiohttp's own request.post() does, but strict: no U+FFFD stand-ins.
        return parse_qsl(
            raw.rstrip().decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except ValueError:  # UnicodeDecodeError included
        raise InvalidRequest("the form body is malformed or not UTF-8") from None


class Field:
    """One expected field: its JSON type and, for strings, a length bound."""

    def __init__(self, kind: type, *, required: bool = False, max_len: int = 256) -> None:
        self.kind = kind
        self.required = required
        self.max_len = max_len

    def check(self, name: str, value: Any) -> Any:
        if value is None and not self.required:
            return None
        # JSON true is a Python bool, and bool is an int: check it first.
        ok = isinstance(value, self.kind) and not (self.kind is int and isinstance(value, bool))
        if not ok:
            raise InvalidRequest(f"{name} must be {_json_type(self.kind)}")
        if isinstance(value, str) and len(value) > self.max_len:
            raise InvalidRequest(f"{name} is longer than {self.max_len} characters")
        if isinstance(value, list) and (
            len(value) > 100 or not all(isinstance(v, str) and len(v) <= 256 for v in value)
        ):
            raise InvalidRequest(f"{name} must be a list of at most 100 strings")
        return value


def checked(body: Mapping[str, Any], spec: Mapping[str, Field]) -> dict[str, Any]:
    """The body's fields, typed per `spec`; unknown or missing fields are a 400."""
    for name in body:
        if name not in spec:
            raise InvalidRequest(f"unknown field {name[:40]!r}")
    result = {}
    for name, field in spec.items():
        if name not in body:
            if field.required:
                raise InvalidRequest(f"{name} is required")
            continue
        result[name] = field.check(name, body[name])
    return result


def _json_type(kind: type) -> str:
    names: dict[type, str] = {str: "a string", bool: "a boolean", int: "an integer", list: "a list"}
    return names.get(kind, "an object")


def parse_channel(value: str | None) -> str | None:
    """A requested channel: None (the number's default), sms or voice."""
    if value is not None and value not in ("sms", "voice"):
        raise InvalidRequest("channel must be sms or voice")
    return value


def parse_client_ip(value: str | None) -> str | None:
    """The end user's address as the front end saw it, normalised."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise InvalidRequest("client_ip must be an IPv4 or IPv6 address") from None
