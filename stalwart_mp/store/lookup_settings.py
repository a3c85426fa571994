"""Settings of the lookup stores (declared with their backends).

Only Redis and memcached have settings of their own here; ``timeout`` and ``pool-size`` are
shared with the network data stores (``store.settings``), and a data-store type used as the
lookup store takes that data store's settings.
"""
from __future__ import annotations

from typing import Any

from stalwart_mp.config.schema import (
    REQUIRED,
    SCHEMA,
    Invalid,
    ListOf,
    Setting,
    Str,
    Type,
    parse_host_port,
)

MEMCACHED_PORT = 11211


class HostPort(Type):
    """A server address: "host", "host:port" or "[IPv6]:port" (default port 11211)."""

    label = 'an address such as "127.0.0.1:11211", "cache.example.org" or "[::1]:11211"'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Invalid(f"expected {self.label}")
        try:
            split_server(value)
        except ValueError:
            raise Invalid(f"expected {self.label}") from None
        return value


def split_server(value: str) -> tuple[str, int]:
    """("host", port) of a memcached server address; ValueError when malformed."""
    value = value.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError(value)
    if value.startswith("[") and value.endswith("]"):
        return value[1:-1], MEMCACHED_PORT
    if ":" not in value:
        return value, MEMCACHED_PORT
    return parse_host_port(value)


SCHEMA.add(
    Setting(
        "store.*.url",
        Str(
            pattern=r"(redis|rediss|unix)://\S*",
            label='a Redis URL such as "redis://127.0.0.1:6379/0", '
            '"rediss://user:password@host:6380/0" or "unix:///run/redis.sock?db=0"',
        ),
        REQUIRED,
        help=(
            'Redis server to keep the lookup keys in: "redis://[[user]:password@]host[:port]'
            '[/db]", "rediss://..." for TLS, or "unix:///path/to/socket?db=N". Every worker '
            "of every server naming the same Redis shares the keys (rate limits, greylist, "
            "bans, locks)."
        ),
        when=("type", ("redis",)),
        secret=True,  # the URL may carry a password
    ),
    Setting(
        "store.*.servers",
        ListOf(HostPort(), min_items=1),
        REQUIRED,
        help=(
            'Memcached servers, e.g. ["10.0.0.5:11211", "10.0.0.6:11211"]. With several, keys '
            "are spread over them by rendezvous hashing; a server that is down loses its keys "
            "(memcached keeps nothing on disk: counters and locks restart from zero)."
        ),
        when=("type", ("memcached",)),
    ),
    Setting(
        "store.*.prefix",
        Str(
            pattern=r"[!-~]{0,100}",
            label="a key prefix of at most 100 printable ASCII characters, without spaces",
        ),
        "",
        help=(
            'Prepended to every key, e.g. "mail1:", so several servers or applications can '
            "share one Redis or memcached without seeing each other's keys."
        ),
        when=("type", ("redis", "memcached")),
    ),
)
