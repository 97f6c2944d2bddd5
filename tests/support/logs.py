"""What the gateway's own loggers write during a test, read back as JSON lines."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

from gateway.logs import JsonFormatter


@contextlib.contextmanager
def gateway_logs() -> Iterator[io.StringIO]:
    """The `otp_gateway` loggers (at INFO) also write JSON lines into a buffer, meanwhile."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("otp_gateway")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-blank line of `text`, parsed as JSON."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]
