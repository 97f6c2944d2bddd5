"""The dead-letter listing (scope `operator`): sends that every provider failed."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from gateway import keys
from gateway.challenges import iso_ms
from gateway.errors import InvalidRequest
from gateway.web.otp import services

_ENTRY_ID_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_U64 = 2**64 - 1
MAX_LIMIT = 500


def _limit(value: str | None) -> int:
    if value is None:
        return 50
    if not re.fullmatch(r"[0-9]{1,3}", value) or not 1 <= int(value) <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return int(value)


def _before(value: str | None) -> str | None:
    """`before` as a stream id Redis takes: checked here, since a Redis error
    (`ResponseError`) would read as an outage (503) when the input is at fault."""
    if value is None:
        return None
    match = _ENTRY_ID_RE.fullmatch(value)
    parts = [int(part) for part in match.groups()] if match else []
    # Both parts are 64-bit; 0-0 is never an entry's id (nothing comes before it).
    if not parts or max(parts) > _MAX_U64 or parts == [0, 0]:
        raise InvalidRequest("before must be a dead letter id like 1732646400000-0")
    return f"{parts[0]}-{parts[1]}"


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
    before = _before(request.query.get("before"))
    async with svc.redis.pipeline(transaction=False) as pipe:
        pipe.xrevrange(keys.DEAD_LETTERS, f"({before}" if before else "+", "-", count=limit + 1)
        pipe.xlen(keys.DEAD_LETTERS)
        entries, total = await pipe.execute()
    page = [_entry(eid, fields) for eid, fields in entries[:limit]]
    more = len(entries) > limit
    return web.json_response(
        {"dead_letters": page, "total": total, "next_before": page[-1]["id"] if more else None}
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/dead-letters", list_dead_letters, allow_head=False)
