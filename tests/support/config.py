"""The test configuration: one secret, one API key per scope, `make_config`."""

from __future__ import annotations

from typing import Any

from gateway.config import Config, config_from_dict

SECRET = "test-secret-0123456789-abcdefghijklmnop"
OTP_KEY = "otp-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
OPERATOR_KEY = "operator-key-0123456789abcdef"
METRICS_KEY = "metrics-key-0123456789abcdef"


def make_config(redis_url: str, **sections: Any) -> Config:
    """A valid test configuration; keyword arguments replace whole sections."""
    raw: dict[str, Any] = {
        "server": {"mode": "development"},
        "redis": {"url": redis_url},
        "security": {"secret": SECRET},
        "api_keys": [
            {"name": "front", "key": OTP_KEY, "scopes": ["otp"]},
            {"name": "admin", "key": ADMIN_KEY, "scopes": ["admin"]},
            {"name": "ops", "key": OPERATOR_KEY, "scopes": ["operator"]},
            {"name": "prom", "key": METRICS_KEY, "scopes": ["metrics"]},
        ],
        "providers": [{"name": "console", "kind": "console", "channels": ["sms", "voice"]}],
    }
    raw.update(sections)
    return config_from_dict(raw)
