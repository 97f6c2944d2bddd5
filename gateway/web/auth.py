"""API keys: `Authorization: Bearer <key>`, compared in constant time.

An `admin` key may be bound to establishments (`[[api_keys]] establishments`):
it then acts only for admins of those (`gateway.web.caller`). An unbound admin
key acts for any establishment's admin named in `X-Acting-Account`, so
start-up warns once per such key (by name, never its value).
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from aiohttp import web

from gateway.config import ApiKey
from gateway.errors import Forbidden, Unauthorized

log = logging.getLogger("otp_gateway.auth")


def warn_unbound(keys: tuple[ApiKey, ...]) -> None:
    """One warning per admin key that no establishment binds."""
    for key in keys:
        if "admin" in key.scopes and key.establishments is None:
            log.warning(
                "API key %r has the admin scope and no establishments: it can act for "
                "the admins of every establishment (bind it with establishments = [...])",
                key.name,
                extra={"api_key": key.name},
            )


class ApiKeys:
    """Checks a request's key and scope."""

    def __init__(self, keys: tuple[ApiKey, ...]) -> None:
        # Comparing fixed-length digests keeps the time independent of the key's length.
        self._keys = [(hashlib.sha256(k.key.reveal().encode()).digest(), k) for k in keys]

    def identify(self, request: web.Request) -> ApiKey:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise Unauthorized("missing API key: send Authorization: Bearer <key>")
        # aiohttp keeps a header's non-UTF-8 bytes as lone surrogates; such a key
        # cannot match, but must still be hashed (and refused) like any other.
        digest = hashlib.sha256(presented.strip().encode("utf-8", "surrogatepass")).digest()
        found: ApiKey | None = None
        for stored, key in self._keys:
            # No early exit: every key is compared whatever matched.
            if hmac.compare_digest(stored, digest):
                found = key
        if found is None:
            raise Unauthorized("unknown API key")
        return found

    def require(self, request: web.Request, *scopes: str) -> ApiKey:
        """The caller's key, if it has one of `scopes`; else 401/403."""
        key = self.identify(request)
        if not key.scopes.intersection(scopes):
            raise Forbidden(f"this key lacks the {' or '.join(scopes)} scope")
        return key
