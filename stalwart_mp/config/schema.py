"""The declarative settings schema: one declaration per setting.

Each ``Setting`` names its key, type, default, validation and help text. The same declarations
drive the TOML loader (``config.loader``), ``stalwart-mp check-config``, the commented config
written by ``stalwart-mp init`` and, later, the control plane and the admin forms — as
gunicorn's ``config.py`` drives its CLI, file loader and docs from one set of classes.

Keys are dotted paths; ``*`` stands for one user-chosen name, as in
``server.listener.*.bind`` (``[server.listener."imaps"] bind = [...]``).
Settings are declared next to their owners (``stalwart_mp/*/settings.py``) and registered
here at import time; ``config.registry`` imports every settings module.
"""
from __future__ import annotations

import abc
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Path = tuple[str, ...]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class Invalid(ValueError):
    """Raised by a type's ``parse``: the message says what was expected."""


# --- types ------------------------------------------------------------------------------


class Type(abc.ABC):
    """A setting's type: ``parse`` converts a TOML value or raises ``Invalid(expected)``."""

    label = "value"

    @abc.abstractmethod
    def parse(self, value: Any) -> Any: ...

    def to_toml(self, value: Any) -> str:
        return _toml_literal(value)


class Str(Type):
    label = "a string"

    def __init__(self, pattern: str | None = None, label: str | None = None, nonempty=False):
        self.pattern = re.compile(pattern) if pattern else None
        self.nonempty = nonempty
        if label:
            self.label = label

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected {self.label}")
        if self.nonempty and not value.strip():
            raise Invalid(f"expected {self.label}, not an empty string")
        if self.pattern and not self.pattern.fullmatch(value):
            raise Invalid(f"expected {self.label}")
        return value


class Int(Type):
    def __init__(self, min: int | None = None, max: int | None = None):
        self.min, self.max = min, max
        bounds = []
        if min is not None:
            bounds.append(f">= {min}")
        if max is not None:
            bounds.append(f"<= {max}")
        self.label = "an integer" + (" " + " and ".join(bounds) if bounds else "")

    def parse(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected {self.label}")
        if (self.min is not None and value < self.min) or (
            self.max is not None and value > self.max
        ):
            raise Invalid(f"expected {self.label}")
        return value


class Bool(Type):
    label = "true or false"

    def parse(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise Invalid("expected true or false")
        return value


class Choice(Type):
    def __init__(self, *choices: str):
        self.choices = choices
        self.label = "one of " + ", ".join(f'"{c}"' for c in choices)

    def parse(self, value: Any) -> str:
        if value not in self.choices:
            raise Invalid(f"expected {self.label}")
        return value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(Type):
    """A duration: a number of seconds, or a string like "500ms", "30s", "5m", "2h", "1d"."""

    label = 'a duration such as 30, "500ms", "30s", "5m", "2h" or "1d"'

    def parse(self, value: Any) -> float:
        if isinstance(value, bool):
            raise Invalid(f"expected {self.label}")
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        else:
            raise Invalid(f"expected {self.label}")
        if seconds < 0:
            raise Invalid(f"expected {self.label} (not negative)")
        return seconds


_SIZE = re.compile(r"(\d+)\s*([kmgt]?i?b?)", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class Size(Type):
    """A byte size: an integer, or a string like "50MB", "1GiB", "512k" (powers of 1024)."""

    label = 'a size such as 1048576, "512KB", "50MB" or "1GB"'

    def parse(self, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and (m := _SIZE.fullmatch(value.strip())):
            return int(m.group(1)) * _SIZE_UNITS[m.group(2)[:1].lower()]
        raise Invalid(f"expected {self.label}")


class ListOf(Type):
    def __init__(self, item: Type, min_items: int = 0):
        self.item = item
        self.min_items = min_items
        self.label = f"a list of {item.label}" + (
            f" (at least {min_items})" if min_items else ""
        )

    def parse(self, value: Any) -> list:
        if not isinstance(value, list):
            raise Invalid(f"expected {self.label}")
        if len(value) < self.min_items:
            raise Invalid(f"expected {self.label}")
        out = []
        for i, item in enumerate(value):
            try:
                out.append(self.item.parse(item))
            except Invalid as exc:
                raise Invalid(f"item {i + 1}: {exc}") from None
        return out


class BindAddress(Type):
    """A socket address: "ADDR:PORT", "[IPv6]:PORT", or "unix:/path/to/socket"."""

    label = 'an address such as "0.0.0.0:25", "[::]:993", "127.0.0.1:8080" or "unix:/run/x.sock"'

    def __init__(self, allow_unix: bool = False):
        self.allow_unix = allow_unix
        if not allow_unix:
            self.label = 'an address such as "0.0.0.0:25", "[::]:993" or "127.0.0.1:8080"'

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"expected {self.label}")
        if value.startswith("unix:"):
            if self.allow_unix and len(value) > 5:
                return value
            raise Invalid(f"expected {self.label}")
        try:
            parse_host_port(value)
        except ValueError:
            raise Invalid(f"expected {self.label}") from None
        return value


class IpNetwork(Str):
    label = 'an IP network such as "10.0.0.0/8" or "2001:db8::/32"'

    def parse(self, value: Any) -> str:
        value = super().parse(value)
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise Invalid(f"expected {self.label}") from None
        return value


def parse_host_port(value: str) -> tuple[str, int]:
    """Split "host:port" / "[v6]:port" into (host, port); ValueError when malformed."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(value)
    else:
        host, sep, port = value.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(value)
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(value)
    return host, int(port)


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    raise TypeError(f"no TOML literal for {value!r}")


# --- settings ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting.

    ``when`` restricts a setting inside a named table to some values of a sibling key, e.g.
    ``when=("type", ("lmdb", "sqlite"))`` for ``store.*.path``: using it with another store
    type is an error that says which types accept it.
    ``default`` may be a callable taking the loaded ``Config`` (for derived defaults).
    """

    key: str
    type: Type
    default: Any
    help: str
    when: tuple[str, tuple[str, ...]] | None = None
    secret: bool = False  # never logged or echoed back (passwords, tokens)

    @property
    def path(self) -> Path:
        return tuple(self.key.split("."))

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(slots=True)
class ConfigError:
    key: str
    message: str
    value: Any = None
    has_value: bool = False

    def __str__(self) -> str:
        if self.has_value:
            return f"{self.key} = {_short(self.value)}: {self.message}"
        return f"{self.key}: {self.message}"


def _short(value: Any) -> str:
    try:
        text = _toml_literal(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


Check = Callable[["Any"], Iterable[ConfigError]]


@dataclass(slots=True)
class Schema:
    settings: dict[Path, Setting] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    def add(self, *settings: Setting) -> None:
        for s in settings:
            if s.path in self.settings:
                raise ValueError(f"setting {s.key} declared twice")
            self.settings[s.path] = s

    def check(self, fn: Check) -> Check:
        """Register a cross-setting validation run after every setting parsed."""
        self.checks.append(fn)
        return fn

    def match(self, path: Path) -> Setting | None:
        """The setting whose pattern matches a concrete path (``*`` = any one name)."""
        exact = self.settings.get(path)
        if exact is not None:
            return exact
        for pattern, setting in self.settings.items():
            if len(pattern) == len(path) and all(
                p == "*" or p == c for p, c in zip(pattern, path, strict=True)
            ):
                return setting
        return None

    def is_table_prefix(self, path: Path) -> bool:
        """True if some setting lives below ``path`` (so a TOML table there is legal)."""
        n = len(path)
        return any(
            len(p) > n and all(a == "*" or a == b for a, b in zip(p, path, strict=False))
            for p in self.settings
        )


SCHEMA = Schema()
