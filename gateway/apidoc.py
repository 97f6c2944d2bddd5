"""The OpenAPI document as a deployment serves it: `openapi.json` plus its own settings.

The file describes the default configuration. Two settings change what a request may
hold, so the served copy states them: the purposes (`[otp] purposes` adds to the
built-in ones) and the code length (`[otp] code_length`).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files

from gateway.config import Config


def served_document(config: Config) -> bytes:
    """The document for this deployment, as JSON bytes."""
    return _render(tuple(config.otp.purposes), config.otp.code_length)


@lru_cache(maxsize=4)
def _render(purposes: tuple[str, ...], code_length: int) -> bytes:
    doc = json.loads((files("gateway") / "openapi.json").read_text(encoding="utf-8"))
    schemas = doc["components"]["schemas"]
    schemas["Purpose"]["enum"] = list(purposes)
    schemas["OtpCode"]["pattern"] = f"^[0-9]{{{code_length}}}$"
    return json.dumps(doc, indent=2, ensure_ascii=False).encode("utf-8")
