"""`[redis]`: where Redis is, one `url`, a primary found through `sentinels` or a
Redis Cluster through `cluster_nodes` (none: the embedded redis-server), and the
credentials and TLS each allows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.config.model import RedisConfig
from gateway.config.table import Table
from gateway.errors import ConfigError


def parse_redis(t: Table, env: Mapping[str, str]) -> RedisConfig:
    """`[redis]`, with `OTPGW_REDIS_URL` over its `url`."""
    url: str | None = t.get("url", str, "") or None
    if env.get("OTPGW_REDIS_URL"):
        url = env["OTPGW_REDIS_URL"]
    if url is not None and not re.fullmatch(r"(rediss?|unix)://\S+", url):
        raise ConfigError("redis.url", "must be a redis://, rediss:// or unix:// URL")
    sentinels = tuple(_address(a, t.key("sentinels")) for a in t.str_list("sentinels", ()))
    cluster = tuple(_address(a, t.key("cluster_nodes")) for a in t.str_list("cluster_nodes", ()))
    _one_topology(t, url, sentinels, cluster)
    timeout = t.get("timeout_seconds", float, 2.0)
    if not 0.05 <= timeout <= 60:
        raise ConfigError(t.key("timeout_seconds"), "must be between 0.05 and 60")
    cfg = RedisConfig(
        url=url,
        timeout_seconds=timeout,
        data_dir=t.get("data_dir", str, "var"),
        appendfsync=t.choice("appendfsync", "always", ("always", "everysec", "no")),
        sentinels=sentinels,
        sentinel_master=t.get("sentinel_master", str, ""),
        sentinel_password=t.secret("sentinel_password", required=False),
        cluster_nodes=cluster,
        username=t.get("username", str, ""),
        password=t.secret("password", required=False),
        tls=t.get("tls", bool, False),
        tls_ca_file=t.get("tls_ca_file", str, ""),
        wait_replicas=t.int_in("wait_replicas", 0, 0, 16),
    )
    _check_redis(t, cfg)
    t.done()
    return cfg


def _address(text: str, key: str) -> tuple[str, int]:
    """ "host:port" (an IPv6 host in brackets) as (host, port)."""
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})", text)
    if not match or not 0 < int(match[2]) <= 65535:
        raise ConfigError(key, f'{text!r} is not "host:port"')
    return match[1].strip("[]"), int(match[2])


def _one_topology(
    t: Table,
    url: str | None,
    sentinels: tuple[tuple[str, int], ...],
    cluster: tuple[tuple[str, int], ...],
) -> None:
    """At most one of url, sentinels, cluster_nodes (none: the embedded default)."""
    named = (("url", url), ("sentinels", sentinels), ("cluster_nodes", cluster))
    given = [name for name, value in named if value]
    if len(given) > 1:
        raise ConfigError(
            t.key(given[1]), f"give one of url, sentinels, cluster_nodes, not {given[0]} too"
        )


def _check_redis(t: Table, cfg: RedisConfig) -> None:
    sentinel_only = {
        "sentinel_master": cfg.sentinel_master,
        "sentinel_password": cfg.sentinel_password,
    }
    if not cfg.sentinels:
        for name, value in sentinel_only.items():
            if value:
                raise ConfigError(t.key(name), "only goes with sentinels")
    elif not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", cfg.sentinel_master):
        raise ConfigError(t.key("sentinel_master"), "the master's name is required with sentinels")
    if cfg.tls and not (cfg.sentinels or cfg.cluster_nodes):
        raise ConfigError(
            t.key("tls"), "only goes with sentinels or cluster_nodes (url: rediss://)"
        )
    if cfg.cluster_nodes and cfg.wait_replicas:
        # WAIT counts the replicas of the node the connection is on; a script's
        # node is only known once the cluster client routed it. Not built yet.
        raise ConfigError(t.key("wait_replicas"), "is not supported with cluster_nodes")
    if cfg.tls_ca_file and not cfg.tls:
        raise ConfigError(t.key("tls_ca_file"), "only goes with tls = true")
    if cfg.url is not None and (cfg.password or cfg.username) and _url_has_credentials(cfg.url):
        raise ConfigError(t.key("password"), "the url carries credentials already: give one")
    if cfg.embedded and (cfg.password or cfg.username or cfg.wait_replicas):
        raise ConfigError(
            t.key("url"),
            "username, password and wait_replicas need a url, sentinels or cluster_nodes",
        )


def _url_has_credentials(url: str) -> bool:
    return bool(re.match(r"[a-z]+://[^/@]*@", url))
