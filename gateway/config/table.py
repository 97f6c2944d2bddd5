"""The TOML reader: a table read key by key, secrets, rates, arrays of tables.

A key is popped as it is read, so what is left when a section is done is an
unknown key and an error; every error names the key (`ConfigError`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from gateway.config.model import Rate, Secret
from gateway.errors import ConfigError

T = TypeVar("T")

_RATE_RE = re.compile(r"([0-9]{1,9})/([0-9]{0,6})([smhd])")
_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Table:
    """A TOML table read key by key; leftovers are unknown keys and an error."""

    def __init__(self, data: Any, path: str, env: Mapping[str, str]) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path, "must be a table")
        self.data: dict[str, Any] = dict(data)
        self.path = path
        self.env = env

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def get(self, name: str, kind: type[T], default: T) -> T:
        if name not in self.data:
            return default
        value = self.data.pop(name)
        # bool is an int in Python; a port of `true` is still wrong.
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(self.key(name), f"must be {kind.__name__}")
        return value

    def int_in(self, name: str, default: int, low: int, high: int) -> int:
        value = self.get(name, int, default)
        if not low <= value <= high:
            raise ConfigError(self.key(name), f"must be between {low} and {high}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.get(name, str, default)
        if value not in allowed:
            raise ConfigError(self.key(name), f"must be one of {', '.join(allowed)}")
        return value

    def str_list(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(name, list, list(default))
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(self.key(name), "must be a list of strings")
        return tuple(value)

    def secret(self, name: str, *, required: bool) -> Secret | None:
        """`name = "..."` or `name_env = "VAR"`, exactly one of them."""
        direct = self.get(name, str, "")
        var = self.get(f"{name}_env", str, "")
        if direct and var:
            raise ConfigError(self.key(name), f"give {name} or {name}_env, not both")
        if var:
            if var not in self.env or not self.env[var]:
                raise ConfigError(self.key(f"{name}_env"), f"environment variable {var} is not set")
            return Secret(self.env[var])
        if direct:
            return Secret(direct)
        if required:
            raise ConfigError(self.key(name), "is required")
        return None

    def sub(self, name: str) -> Table:
        return Table(self.data.pop(name, {}), self.key(name), self.env)

    def done(self) -> None:
        for name in self.data:
            raise ConfigError(self.key(name), "unknown key")


def parse_rate(text: str, key: str) -> Rate:
    """Parse "N/period" where period is e.g. 15m, 1h, 30s or d."""
    match = _RATE_RE.fullmatch(text)
    if not match or int(match[1]) < 1:
        raise ConfigError(key, 'must look like "5/15m" (count/period, period in s, m, h or d)')
    multiplier = int(match[2]) if match[2] else 1
    period = multiplier * _PERIOD_SECONDS[match[3]]
    if period < 1:
        raise ConfigError(key, "period must be at least 1s")
    return Rate(int(match[1]), period)


def array(name: str, items: Any, env: Mapping[str, str]) -> Iterator[Table]:
    if not isinstance(items, list):
        raise ConfigError(name, f"must be an array of tables ([[{name}]])")
    for i, item in enumerate(items):
        yield Table(item, f"{name}[{i}]", env)
