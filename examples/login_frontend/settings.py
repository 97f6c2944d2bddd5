"""The example's configuration, from environment variables only."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path


class SettingsError(Exception):
    """A missing or bad environment variable; the message names it."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the gateway is, the key to call it with, and how to serve the pages."""

    gateway_url: str
    api_key: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    secure_cookies: bool = False
    device_label: str = "Front end d'exemple"
    step_assets: Path = field(default_factory=lambda: default_step_assets())

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """OTP_GATEWAY_URL, OTP_GATEWAY_API_KEY (required), EXAMPLE_HOST, EXAMPLE_PORT,
        EXAMPLE_SECURE_COOKIES=1 (behind HTTPS), OTP_STEP_ASSETS (a copied folder)."""
        key = env.get("OTP_GATEWAY_API_KEY", "")
        if not key:
            raise SettingsError("OTP_GATEWAY_API_KEY is not set (an API key with scope otp)")
        port = env.get("EXAMPLE_PORT", "8000")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError("EXAMPLE_PORT must be a port number")
        assets = env.get("OTP_STEP_ASSETS")
        return cls(
            gateway_url=env.get("OTP_GATEWAY_URL", "http://127.0.0.1:8080").rstrip("/"),
            api_key=key,
            host=env.get("EXAMPLE_HOST", "127.0.0.1"),
            port=int(port),
            secure_cookies=env.get("EXAMPLE_SECURE_COOKIES", "") == "1",
            step_assets=Path(assets) if assets else default_step_assets(),
        )


def default_step_assets() -> Path:
    """The drop-in step's files: those the installed gateway serves, else a copy here."""
    try:
        installed = Path(str(files("gateway") / "web" / "static"))
    except ModuleNotFoundError:
        installed = Path("/nonexistent")
    return installed if (installed / "otp-step.js").exists() else Path(__file__).parent / "static"
