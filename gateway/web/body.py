"""Strict JSON bodies: one parser, one field checker, clear 400s.

`json.loads` accepts NaN and Infinity and keeps the last of duplicate keys;
both are refused here. Depth bombs and integers too long for `int()` end as
a 400, not a RecursionError or a ValueError.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.errors import InvalidRequest, PayloadTooLarge

MAX_BODY = 64 * 1024


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
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"malformed JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise InvalidRequest("JSON nested too deeply") from None
    except ValueError:
        # An integer past Python's digit limit (sys.get_int_max_str_digits()).
        raise InvalidRequest("a number in the JSON body is too long") from None


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (an empty body counts as {})."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise PayloadTooLarge(f"the body is over {MAX_BODY} bytes")
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"the body is over {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


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
