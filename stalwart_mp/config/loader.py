"""Load ``config.toml`` against the settings schema.

Every problem is collected (not just the first): unknown keys with a "did you mean" hint,
values of the wrong type, missing required settings, settings used with the wrong sibling
``type``, and the cross-setting checks registered with ``SCHEMA.check``.
"""
from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from stalwart_mp.config.registry import load_settings_modules
from stalwart_mp.config.schema import SCHEMA, ConfigError, Invalid, Path, Schema, Setting


class ConfigInvalid(Exception):
    """The configuration has errors; ``errors`` lists every one."""

    def __init__(self, source: str, errors: list[ConfigError]):
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"{source}: {len(errors)} error(s) in the configuration:\n{lines}")


@dataclass(slots=True)
class Config:
    """A validated configuration: typed values by dotted key, defaults filled in."""

    values: dict[Path, Any]
    source: str = "<memory>"
    base_dir: FsPath = field(default_factory=FsPath.cwd)

    def get(self, key: str | Path, default: Any = None) -> Any:
        path = _as_path(key)
        if path in self.values:
            return self.values[path]
        return default

    def __contains__(self, key: str | Path) -> bool:
        return _as_path(key) in self.values

    def names(self, prefix: str | Path) -> list[str]:
        """The user-chosen names of the tables under ``prefix`` (e.g. listener names)."""
        base = _as_path(prefix)
        n = len(base)
        seen: dict[str, None] = {}
        for path in self.values:
            if len(path) > n and path[:n] == base:
                seen.setdefault(path[n], None)
        return list(seen)

    def table(self, prefix: str | Path) -> dict[str, Any]:
        """The settings below ``prefix`` as a flat dict keyed by the rest of the dotted key."""
        base = _as_path(prefix)
        n = len(base)
        return {
            ".".join(path[n:]): value
            for path, value in self.values.items()
            if len(path) > n and path[:n] == base
        }

    def path(self, key: str | Path) -> FsPath:
        """A path setting resolved against the config file's folder."""
        value = FsPath(self.get(key))
        return value if value.is_absolute() else self.base_dir / value


def _as_path(key: str | Path) -> Path:
    return tuple(key.split(".")) if isinstance(key, str) else key


def load_file(path: str | FsPath) -> Config:
    """Read and validate a config file; raise ``ConfigInvalid`` with every error."""
    path = FsPath(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigInvalid(str(path), [ConfigError("(file)", f"cannot read: {exc.strerror}")])
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigInvalid(str(path), [ConfigError("(file)", f"not valid TOML: {exc}")])
    return load_dict(data, source=str(path), base_dir=path.resolve().parent)


def load_dict(data: dict, source: str = "<memory>", base_dir: FsPath | None = None) -> Config:
    load_settings_modules()
    cfg, errors = validate(data, SCHEMA, source, base_dir or FsPath.cwd())
    if errors:
        raise ConfigInvalid(source, errors)
    return cfg


def validate(
    data: dict, schema: Schema, source: str, base_dir: FsPath
) -> tuple[Config, list[ConfigError]]:
    errors: list[ConfigError] = []
    values: dict[Path, Any] = {}
    invalid: set[Path] = set()
    _walk(data, (), schema, values, errors, invalid)
    _fill_defaults(schema, values, errors, invalid)
    cfg = Config(values, source, base_dir)
    _check_when(schema, values, errors)
    if not errors:
        for check in schema.checks:
            errors.extend(check(cfg))
    return cfg, errors


def _walk(node: dict, prefix: Path, schema: Schema, out: dict, errors: list,
          invalid: set) -> None:
    for name, value in node.items():
        path = (*prefix, name)
        setting = schema.match(path)
        if setting is not None:
            try:
                out[path] = setting.type.parse(value)
            except Invalid as exc:
                invalid.add(path)
                errors.append(
                    ConfigError(_dotted(path), str(exc), _redact(setting, value), True)
                )
        elif isinstance(value, dict) and schema.is_table_prefix(path):
            _walk(value, path, schema, out, errors, invalid)
        else:
            errors.append(ConfigError(_dotted(path), _unknown_key_message(path, schema)))


def _fill_defaults(schema: Schema, values: dict, errors: list, invalid: set) -> None:
    """Defaults for fixed keys, and for keys inside every named table that exists."""
    for pattern, setting in schema.settings.items():
        for path in _instances(pattern, values):
            if path in values or path in invalid:
                continue
            if setting.when and not _when_applies(setting, path, values):
                continue
            if setting.required:
                errors.append(ConfigError(_dotted(path), f"required: {setting.type.label}"))
            elif setting.default is not None and not callable(setting.default):
                values[path] = setting.default
    for pattern, setting in schema.settings.items():  # derived defaults see the others
        if callable(setting.default):
            for path in _instances(pattern, values):
                if path not in values:
                    values[path] = setting.default(Config(values))


def _instances(pattern: Path, values: dict) -> list[Path]:
    """Concrete paths for a pattern: ``*`` expands to the table names present in the file."""
    paths: list[Path] = [()]
    for i, part in enumerate(pattern):
        if part != "*":
            paths = [(*p, part) for p in paths]
            continue
        expanded = []
        for p in paths:
            names = {k[i] for k in values if len(k) > i and k[:i] == p}
            expanded.extend((*p, n) for n in sorted(names))
        paths = expanded
    return paths


def _when_key(setting: Setting, path: Path, sibling: str) -> Path:
    """Where ``when``'s key lives: in the named table (the part after the last ``*``), so
    ``directory.*.bind.dn`` depends on ``directory.NAME.type``."""
    pattern = setting.path
    table_end = max((i for i, p in enumerate(pattern) if p == "*"), default=len(path) - 2) + 1
    return (*path[:table_end], sibling)


def _when_applies(setting: Setting, path: Path, values: dict) -> bool:
    assert setting.when is not None
    sibling, allowed = setting.when
    return values.get(_when_key(setting, path, sibling)) in allowed


def _check_when(schema: Schema, values: dict, errors: list) -> None:
    for path in list(values):
        setting = schema.match(path)
        if setting is None or setting.when is None:
            continue
        sibling, allowed = setting.when
        actual = values.get(_when_key(setting, path, sibling))
        if actual is not None and actual not in allowed:
            errors.append(
                ConfigError(
                    _dotted(path),
                    f"not used when {sibling} = \"{actual}\" "
                    f"(only with {sibling} = " + " or ".join(f'"{a}"' for a in allowed) + ")",
                )
            )


def _unknown_key_message(path: Path, schema: Schema) -> str:
    candidates = []
    for pattern in schema.settings:
        if len(pattern) >= len(path):
            concrete = tuple(c if p == "*" else p for p, c in zip(pattern, path, strict=False))
            candidates.append(_dotted(concrete))
    wanted = _dotted(path)
    close = difflib.get_close_matches(wanted, sorted(set(candidates)), n=1, cutoff=0.75)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return "unknown key" + hint


def _dotted(path: Path) -> str:
    return ".".join(p if p.replace("-", "").replace("_", "").isalnum() else f'"{p}"' for p in path)


def _redact(setting: Setting, value: Any) -> Any:
    return "********" if setting.secret else value
