"""The dead-letter listing (scope `operator`): sends that every provider failed.

Dead letters sit in one stream per hash-slot group (beside that group's send
stream); the listing merges them newest first. `drop.lua` makes their ids
unique across the groups (the sequence number is the group modulo 16), so an
id still names one dead letter and still works as the `before` cursor."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from gateway import keys
from gateway.clock import iso_ms
from gateway.errors import InvalidRequest
from gateway.web.request import services

_ENTRY_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_U64 = 2**64 - 1
MAX_LIMIT = 500


def _limit(value: str | None) -> int:
    if value is None:
        return 50
    if not re.fullmatch(r"[0-9]{1,3}", value) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return int(value)


def _newest(value: str | None) -> str | None:
    """XREVRANGE's upper end for `before` (an id): "+" without it, None when no
    entry can come before it (0-0). Checked here, since a Redis error
    (`ResponseError`) would read as an outage (503) when the input is at fault."""
    if value is None:
        return "+"
    match = _ENTRY_ID_RE.fullmatch(value)
    if not match:
        raise InvalidRequest("before must be a dead letter id like 1732646400000-0")
    ms, seq = (int(part) for part in match.groups())
    if ms == seq == 0:
        return None
    if ms > _MAX_U64 or (ms == _MAX_U64 and seq >= _MAX_U64):
        return "+"  # past the largest id Redis allows: every entry is before it
    return f"({ms}-{min(seq, _MAX_U64)}"


def _order(entry_id: bytes) -> tuple[int, int]:
    ms, seq = entry_id.split(b"-")
    return int(ms), int(seq)


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    eid = entry_id.decode()
    send = fields.get(b"n", b"")
    return {
        "id": eid,
        "challenge_id": fields.get(b"c", b"").decode(errors="replace"),
        "send": int(send) if send.isdigit() else None,
        "channel": fields.get(b"ch", b"").decode(errors="replace"),
        "reason": fields.get(b"reason", b"").decode(errors="replace"),
        "failed_at": iso_ms(int(eid.split("-")[0])),
    }


async def list_dead_letters(request: web.Request) -> web.Response:
    """Dead letters, newest first; `before` (an id) pages on, `limit` caps the page."""
    svc = services(request, "operator")
    limit = _limit(request.query.get("limit"))
    newest = _newest(request.query.get("before"))
    async with svc.redis.pipeline(transaction=False) as pipe:
        for key in keys.DEAD_LETTERS:
            pipe.xlen(key)
            if newest is not None:
                pipe.xrevrange(key, newest, "-", count=limit + 1)
        replies = await pipe.execute()
    step = 1 if newest is None else 2
    total = sum(replies[0::step])
    found = [entry for rows in replies[1::step] for entry in rows] if newest is not None else []
    entries = sorted(found, key=lambda entry: _order(entry[0]), reverse=True)
    page = [_entry(eid, fields) for eid, fields in entries[:limit]]
    more = len(entries) > limit
    return web.json_response(
        {"dead_letters": page, "total": total, "next_before": page[-1]["id"] if more else None}
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/dead-letters", list_dead_letters, allow_head=False)
