"""Console sessions, kept server-side in Redis: a random id in a cookie, the rest here.

A session is one JSON value under `keys.console_session(sha256(id))`, written with a
TTL (single-key commands only). It has two stages: `code` while the sign-in
waits for the code (it holds the challenge), `in` once signed in (a new id:
the sign-in never keeps the id it started with). It ends when unused for
`[console] idle_minutes` or `absolute_hours` after the sign-in, whichever
comes first; both are checked against the stored times, not only the TTL, so
a clock the tests set decides as the real one does.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Literal

import redis.asyncio as aioredis

from gateway import keys
from gateway.clock import now_ms
from gateway.config import ConsoleConfig
from gateway.crypto import constant_time_equal

ID_BYTES: Final = 32
_MINUTE_MS: Final = 60_000

Stage = Literal["code", "in"]


@dataclass(frozen=True, slots=True)
class Session:
    """What the console knows of a browser: who signs in, how far, its CSRF token."""

    account_id: str
    stage: Stage
    role: str  # "admin" | "operator" | "user"
    csrf: str
    created_ms: int
    seen_ms: int
    challenge_id: str = ""  # stage "code": the sign-in's challenge
    channel: str = ""
    destination: str = ""  # masked, as /challenge answers it
    expires_at_ms: int = 0  # the code's expiry
    establishment: str = ""  # an operator's chosen establishment
    # A sensitive action waiting for its step-up code (`stepup`).
    action: str = ""  # the path its form posts to, e.g. "/console/comptes/alice/suspendre"
    action_target: str = ""  # the account it is about
    action_challenge: str = ""  # the acting admin's step-up challenge
    action_destination: str = ""
    action_expires_ms: int = 0
    action_title: str = ""  # what the code is for: "la suspension du compte alice"
    action_button: str = ""  # the button that confirms it: "Suspendre le compte"
    # The change as it was asked for, checked: the code confirms this one, not
    # whatever a later form might carry.
    action_fields: dict[str, Any] = field(default_factory=dict)
    action_channel: str = ""  # where the step-up code went: sms | voice
    # A user's new number waiting for the code sent to it ("Mon compte").
    change_challenge: str = ""
    change_destination: str = ""  # masked, as the phone-change service answers it
    change_expires_ms: int = 0
    change_channel: str = ""
    # An authenticator app being enrolled: its otpauth:// URI, sealed (`mine_app`),
    # kept until confirmed or removed so the QR image can be drawn on its own request.
    totp_uri_sealed: str = ""

    def csrf_ok(self, presented: str | None) -> bool:
        """Whether a form's token is this session's (constant time)."""
        return bool(presented) and constant_time_equal(self.csrf, presented or "")


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def well_formed(session_id: str | None) -> bool:
    """A cookie value that could be an id (anything else is not looked up)."""
    return (
        session_id is not None
        and 20 <= len(session_id) <= 64
        and all(c.isalnum() or c in "-_" for c in session_id)
        and session_id.isascii()
    )


class SessionStore:
    """Create, read (and touch), change and end console sessions."""

    def __init__(
        self, redis: aioredis.Redis, config: ConsoleConfig, clock: Callable[[], int] = now_ms
    ) -> None:
        self.redis = redis
        self.idle_ms = config.idle_minutes * _MINUTE_MS
        self.absolute_ms = config.absolute_hours * 60 * _MINUTE_MS
        self.clock = clock

    async def start(self, account_id: str, stage: Stage, role: str, **fields: Any) -> str:
        """A new session; returns its id (the cookie's value)."""
        now = self.clock()
        session = Session(account_id, stage, role, secrets.token_urlsafe(24), now, now, **fields)
        session_id = secrets.token_urlsafe(ID_BYTES)
        await self._write(session_id, session)
        return session_id

    async def get(self, session_id: str | None) -> Session | None:
        """The live session of that id, its idle clock restarted; None when over."""
        if session_id is None or not well_formed(session_id):
            return None
        raw = await self.redis.get(keys.console_session(_digest(session_id)))
        if raw is None:
            return None
        session = Session(**json.loads(raw))
        now = self.clock()
        if now - session.seen_ms >= self.idle_ms or now - session.created_ms >= self.absolute_ms:
            await self.end(session_id)
            return None
        session = replace(session, seen_ms=now)
        await self._write(session_id, session)
        return session

    async def update(self, session_id: str, session: Session) -> None:
        await self._write(session_id, session)

    async def end(self, session_id: str) -> None:
        if well_formed(session_id):
            await self.redis.delete(keys.console_session(_digest(session_id)))

    async def _write(self, session_id: str, session: Session) -> None:
        left = min(
            self.idle_ms - (self.clock() - session.seen_ms),
            self.absolute_ms - (self.clock() - session.created_ms),
        )
        value = json.dumps(asdict(session), separators=(",", ":"))
        await self.redis.set(keys.console_session(_digest(session_id)), value, px=max(1, left))
