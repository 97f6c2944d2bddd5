"""Configuration: every key checked, one clear line naming the bad one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import Rate, config_from_dict, load_config, parse_rate
from gateway.errors import ConfigError

BASE: dict[str, Any] = {
    "redis": {"url": "redis://127.0.0.1:6379/0"},
    "security": {"secret": "x" * 32},
}


def build(**sections: Any) -> Any:
    return config_from_dict({**BASE, **sections})


def error_key(exc: pytest.ExceptionInfo[ConfigError]) -> str:
    return exc.value.key


def test_defaults_follow_the_contract() -> None:
    cfg = build()
    assert cfg.otp.code_length == 6
    assert cfg.otp.ttl_seconds == 300
    assert cfg.otp.max_attempts == 5
    assert cfg.otp.resend_cooldown_seconds == 30
    assert cfg.otp.trusted_device_days == 7
    assert cfg.rate_limits.account == Rate(5, 900)
    assert cfg.rate_limits.number == Rate(10, 3600)
    assert cfg.rate_limits.ip == Rate(30, 60)
    assert cfg.rate_limits.country == Rate(1000, 3600)
    assert cfg.rate_limits.global_ == Rate(600, 60)
    assert cfg.rate_limits.failures == Rate(20, 3600)
    assert cfg.server.mode == "production"
    assert "RE" in cfg.phones.allowed_regions and "GP" in cfg.phones.allowed_regions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5/15m", Rate(5, 900)),
        ("10/1h", Rate(10, 3600)),
        ("3/s", Rate(3, 1)),
        ("1/2d", Rate(1, 172800)),
    ],
)
def test_rates_parse(text: str, expected: Rate) -> None:
    assert parse_rate(text, "k") == expected


@pytest.mark.parametrize("text", ["0/1m", "5", "5/15", "5/15x", "-1/1m", "5/ 1m", "٥/1m", "5/0m"])
def test_bad_rates_name_their_key(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build(rate_limits={"account": text})
    assert error_key(exc) == "rate_limits.account"
    assert "rate_limits.account" in str(exc.value)


@pytest.mark.parametrize(
    ("sections", "key"),
    [
        ({"otp": {"code_length": 4}}, "otp.code_length"),
        ({"otp": {"ttl_seconds": 3600}}, "otp.ttl_seconds"),
        ({"otp": {"ttl_seconds": "300"}}, "otp.ttl_seconds"),
        ({"otp": {"max_attempts": True}}, "otp.max_attempts"),
        ({"otp": {"purposes": ["Bad Purpose"]}}, "otp.purposes"),
        ({"otp": {"tll_seconds": 300}}, "otp.tll_seconds"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"mode": "prod"}}, "server.mode"),
        ({"server": {"public_url": "ftp://x"}}, "server.public_url"),
        ({"redis": {"url": "http://x"}}, "redis.url"),
        ({"security": {"secret": "short"}}, "security.secret"),
        ({"security": {}}, "security.secret"),
        ({"logging": {"format": "xml"}}, "logging.format"),
        ({"smtp": {"security": "ssl"}}, "smtp.security"),
        ({"accounts": {"reminder_days": [30, 0]}}, "accounts.reminder_days"),
        ({"phones": {"allowed_regions": ["France"]}}, "phones.allowed_regions"),
        ({"api_keys": [{"name": "a", "key": "short", "scopes": ["otp"]}]}, "api_keys[0].key"),
        ({"api_keys": [{"name": "a", "key": "k" * 20, "scopes": ["root"]}]}, "api_keys[0].scopes"),
        ({"providers": [{"name": "Bad Name", "kind": "http"}]}, "providers[0].name"),
        (
            {"providers": [{"name": "p", "kind": "http", "channels": ["fax"]}]},
            "providers[0].channels",
        ),
        ({"unknown_section": {}}, "unknown_section"),
    ],
)
def test_bad_keys_are_named(sections: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        build(**sections)
    assert error_key(exc) == key
    assert str(exc.value).startswith(f"configuration error: {key}:")
    assert "\n" not in str(exc.value)


def test_cooldown_must_be_shorter_than_ttl() -> None:
    with pytest.raises(ConfigError) as exc:
        build(otp={"ttl_seconds": 30, "resend_cooldown_seconds": 30})
    assert error_key(exc) == "otp.resend_cooldown_seconds"


def test_secrets_from_environment() -> None:
    env = {"S": "s" * 40, "K": "k" * 20, "P": "provider-secret-123456"}
    cfg = config_from_dict(
        {
            "redis": BASE["redis"],
            "security": {"secret_env": "S"},
            "api_keys": [{"name": "a", "key_env": "K", "scopes": ["otp"]}],
            "providers": [{"name": "p", "kind": "http", "url": "http://x", "secret_env": "P"}],
        },
        env,
    )
    assert cfg.security_secret is not None and cfg.security_secret.reveal() == "s" * 40
    assert cfg.api_keys[0].key.reveal() == "k" * 20
    assert cfg.providers[0].options["secret"] == "provider-secret-123456"
    assert "s" * 40 not in repr(cfg) and "k" * 20 not in repr(cfg)


def test_missing_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"redis": BASE["redis"], "security": {"secret_env": "NOPE"}}, {})
    assert error_key(exc) == "security.secret_env"
    assert "NOPE" in str(exc.value)


def test_secret_and_secret_env_together_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict(
            {"redis": BASE["redis"], "security": {"secret": "x" * 32, "secret_env": "S"}},
            {"S": "y" * 32},
        )
    assert error_key(exc) == "security.secret"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[redis]\nurl = "redis://127.0.0.1:1/0"\n[server]\nport = 9000\n'
        '[security]\nsecret = "' + "x" * 32 + '"\n'
    )
    env = {"OTPGW_REDIS_URL": "redis://127.0.0.1:2/0", "OTPGW_PORT": "9100"}
    cfg = load_config(str(path), env)
    assert cfg.redis.url == "redis://127.0.0.1:2/0"
    assert cfg.server.port == 9100
    assert load_config(None, {**env, "OTPGW_CONFIG": str(path)}).server.port == 9100


def test_bad_port_override_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(None, {"OTPGW_PORT": "80a"})
    assert error_key(exc) == "OTPGW_PORT"


def test_body_timeout_is_ten_seconds_by_default_and_bounded() -> None:
    assert build().server.body_timeout_seconds == 10.0
    assert build(server={"body_timeout_seconds": 2}).server.body_timeout_seconds == 2.0
    for bad in (0, 0.01, 301, "10", True):
        with pytest.raises(ConfigError) as exc:
            build(server={"body_timeout_seconds": bad})
        assert error_key(exc) == "server.body_timeout_seconds"


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(str(tmp_path / "missing.toml"), {})
    assert error_key(exc) == "--config"
    bad = tmp_path / "bad.toml"
    bad.write_text("[otp\n")
    with pytest.raises(ConfigError) as exc:
        load_config(str(bad), {})
    assert error_key(exc) == "--config"


def test_embedded_default_needs_no_file_and_is_development() -> None:
    cfg = load_config(None, {})
    assert cfg.embedded
    assert cfg.server.development
    assert cfg.security_secret is None  # the CLI keeps a generated one under ./var/


def test_a_file_without_redis_url_uses_embedded_redis_but_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[otp]\nttl_seconds = 120\n")
    cfg = load_config(str(path), {})
    assert cfg.embedded and cfg.server.mode == "production"


def test_extra_purposes_are_added_to_builtins() -> None:
    cfg = build(otp={"purposes": ["payroll.export"]})
    assert cfg.otp.purposes[:4] == ("login", "account.create", "contact.update", "rncps")
    assert "payroll.export" in cfg.otp.purposes


def test_example_config_is_valid() -> None:
    env = {
        "OTPGW_SECRET": "s" * 40,
        "OTPGW_FRONTEND_KEY": "f" * 20,
        "OTPGW_OPERATOR_KEY": "o" * 20,
        "OTPGW_SINK_SECRET": "k" * 20,
    }
    root = Path(__file__).parent.parent / "config"
    cfg = load_config(str(root / "example.toml"), env)
    assert cfg.providers[0].kind == "http"
    assert load_config(str(root / "dev.toml"), {}).server.development


# --- keys bound to establishments, the establishment budget -----------------------

ADMIN = {"name": "mairie", "key": "k" * 20, "scopes": ["admin"]}


def test_an_admin_key_binds_to_establishments() -> None:
    cfg = build(api_keys=[{**ADMIN, "establishments": ["Mairie de Luisant", "Clinique"]}])
    key = cfg.api_keys[0]
    assert key.establishments == frozenset({"Mairie de Luisant", "Clinique"})
    assert build(api_keys=[ADMIN]).api_keys[0].establishments is None


@pytest.mark.parametrize(
    "key",
    [
        {**ADMIN, "establishments": "Mairie"},
        {**ADMIN, "establishments": []},
        {**ADMIN, "establishments": [""]},
        {**ADMIN, "establishments": ["Mairie", 3]},
        {**ADMIN, "establishments": ["x" * 129]},
        # Binding means nothing to these: the key would reach every establishment anyway.
        {**ADMIN, "scopes": ["otp"], "establishments": ["Mairie"]},
        {**ADMIN, "scopes": ["admin", "operator"], "establishments": ["Mairie"]},
    ],
)
def test_bad_establishments_are_named(key: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as exc:
        build(api_keys=[key])
    assert error_key(exc) == "api_keys[0].establishments"
    assert "api_keys[0].establishments" in str(exc.value)
    assert "unknown key" not in str(exc.value)  # a known key, with a bad value


def test_the_establishment_budget_is_off_unless_set() -> None:
    assert build().rate_limits.establishment is None
    cfg = build(rate_limits={"establishment": "200/1h"})
    assert cfg.rate_limits.establishment == Rate(200, 3600)


@pytest.mark.parametrize("text", ["0/1h", "200", "200/1y", 200])
def test_a_bad_establishment_budget_is_named(text: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        build(rate_limits={"establishment": text})
    assert error_key(exc) == "rate_limits.establishment"
    assert "unknown key" not in str(exc.value)


def test_account_manage_is_a_builtin_purpose() -> None:
    assert "account.manage" in build().otp.purposes


def test_the_console_section() -> None:
    """`[console]`: the defaults docs/console.md gives, and a bad key named."""
    console = build().console
    assert (console.enabled, console.idle_minutes, console.absolute_hours) == (True, 30, 12)
    assert console.operators == () and console.per_page == 25
    custom = build(console={"operators": ["support.cdc"], "idle_minutes": 10}).console
    assert custom.operators == ("support.cdc",) and custom.idle_minutes == 10
    for bad, key in [
        ({"idle_minutes": 0}, "console.idle_minutes"),
        ({"idle_minutes": 800, "absolute_hours": 12}, "console.idle_minutes"),
        ({"absolute_hours": 1000}, "console.absolute_hours"),
        ({"operators": ["bad id"]}, "console.operators"),
        ({"operators": "ops"}, "console.operators"),
        ({"device_label": "a|b"}, "console.device_label"),
        ({"theme": "dark"}, "console.theme"),
    ]:
        with pytest.raises(ConfigError) as exc:
            build(console=bad)
        assert error_key(exc) == key, bad
