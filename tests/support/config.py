"""The test configuration: one secret, one API key per scope, `make_config`."""

from __future__ import annotations

from typing import Any

from gateway.config import Config, config_from_dict
from tests.support.cluster import cluster_from_url

SECRET = "test-secret-0123456789-abcdefghijklmnop"
OTP_KEY = "otp-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
OPERATOR_KEY = "operator-key-0123456789abcdef"
METRICS_KEY = "metrics-key-0123456789abcdef"


def make_config(redis_url: str, **sections: Any) -> Config:
    """A valid test configuration; keyword arguments replace whole sections.

    A `cluster://` URL (the suite's Redis under `OTP_TESTS_REDIS=cluster`, see
    tests/support/cluster.py) becomes `cluster_nodes`, in a `redis` section
    given here too."""
    raw: dict[str, Any] = {
        "server": {"mode": "development"},
        "redis": redis_section({"url": redis_url}),
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
    raw["redis"] = redis_section(raw["redis"])
    return config_from_dict(raw)


def redis_section(table: dict[str, Any]) -> dict[str, Any]:
    """`table`, its `url` turned into `cluster_nodes` when it is a `cluster://` URL."""
    url = table.get("url")
    if not isinstance(url, str) or not url.startswith("cluster://"):
        return table
    rest = {k: v for k, v in table.items() if k != "url"}
    return {**cluster_from_url(url), **rest}
