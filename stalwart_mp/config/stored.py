"""Settings stored in the data store, laid over the bootstrap TOML file.

Two layers, as in Stalwart: the TOML file holds what the server needs before it can reach
its data store (stores, directory connections, listeners, folders, the control plane's
address: ``BOOTSTRAP``); any other setting may also be stored in the data store, where a
stored value overrides the file's. The control plane edits the stored layer
(``control/config_service.py``).

Key layout in the data store::

    0x50 | dotted key (UTF-8)  ->  the value as JSON text (UTF-8)

The master has no DB driver (tests/test_layers.py), so it cannot read these keys itself.
The control child mirrors them into ``<run_dir>/stored-settings.json`` (written atomically
after every change, and at its start when the mirror differs from the store — it then asks
the master to reload); the master's loader reads that file (``load_with_stored``). The data
store stays the source of truth: a lost run folder (tmpfs after a reboot) is rewritten from
it by the next control child.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import tomllib
from pathlib import Path as FsPath
from typing import Any

from stalwart_mp.config.loader import Config, ConfigInvalid, load_dict
from stalwart_mp.config.schema import SCHEMA, ConfigError

log = logging.getLogger("stalwart_mp.config")

TAG_SETTING = 0x50
OVERLAY_FILE = "stored-settings.json"
# Only in the file: the stores and directories (needed to read the stored layer at all),
# where the server listens, its folders and identity, the control plane and web admin.
BOOTSTRAP = ("server.run-dir", "server.data-dir", "server.user", "server.group",
             "server.allow-root", "server.listener.", "control.", "admin.", "store.",
             "storage.", "directory.")
_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
STORED_SUFFIX = " [stored setting: change it with `stalwart-mp-admin config set/unset`]"


class StoredSettingsError(Exception):
    """The stored-settings mirror cannot be read or written (the message names the file)."""


def is_bootstrap(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in BOOTSTRAP)


def setting_key(key: str) -> bytes:
    return bytes([TAG_SETTING]) + key.encode("utf-8")


# --- the data store (async; the store object is passed in, no driver imported) -------------


async def read_stored(data: Any) -> dict[str, Any]:
    """Every stored setting: dotted key -> value (decoded JSON), in key order."""
    rows = await data.range(bytes([TAG_SETTING]), bytes([TAG_SETTING + 1]))
    out: dict[str, Any] = {}
    for key, value in rows:
        name = key[1:].decode("utf-8")
        try:
            out[name] = json.loads(value.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.error("stored setting is not JSON; ignored", extra={"fields": {"key": name}})
    return out


async def write_stored(data: Any, set_values: dict[str, Any], unset: list[str]) -> None:
    """Store and remove settings in one batch (values already checked by ``check_change``)."""
    from stalwart_mp.store.data import WriteBatch

    batch = WriteBatch()
    for key in unset:
        batch.delete(setting_key(key))
    for key, value in set_values.items():
        batch.put(setting_key(key), json.dumps(value, separators=(",", ":")).encode("utf-8"))
    await data.write(batch)


# --- the mirror file in the run folder -------------------------------------------------------


def overlay_path(run_dir: FsPath) -> FsPath:
    return FsPath(run_dir) / OVERLAY_FILE


def read_overlay(run_dir: FsPath) -> dict[str, Any]:
    """The mirrored stored settings; {} when there is no mirror. Raises StoredSettingsError."""
    path = overlay_path(run_dir)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoredSettingsError(f"cannot read the stored settings in {path}: {exc}") from None
    settings = doc.get("settings") if isinstance(doc, dict) else None
    if not isinstance(settings, dict):
        raise StoredSettingsError(f'{path}: expected {{"settings": {{KEY: VALUE}}}}')
    return settings


def write_overlay(run_dir: FsPath, settings: dict[str, Any]) -> bool:
    """Write the mirror atomically (temp file, fsync, rename); False if it was already so."""
    try:
        if read_overlay(run_dir) == settings:  # no file reads as {}
            return False
    except StoredSettingsError:
        pass  # unreadable: rewrite it
    path = overlay_path(run_dir)
    text = json.dumps({"settings": dict(sorted(settings.items()))}, indent=1, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=".stored-settings.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


# --- merging and checking ------------------------------------------------------------------


def check_keys(settings: dict[str, Any]) -> list[ConfigError]:
    """Problems the loader cannot see: bad key syntax, bootstrap keys, values TOML cannot hold."""
    errors = []
    for key, value in settings.items():
        if not _KEY.fullmatch(key):
            errors.append(ConfigError(key, "not a dotted key (names of letters, digits, _ and "
                                           "-, separated by dots)"))
        elif is_bootstrap(key):
            errors.append(ConfigError(key, "a bootstrap setting: it can only be set in the "
                                           "configuration file"))
        elif not _tomlable(value):
            errors.append(ConfigError(key, "expected a string, number, boolean or list"))
    return errors


def _tomlable(value: Any) -> bool:
    if isinstance(value, list):
        return all(_tomlable(v) for v in value)
    return isinstance(value, str | int | float | bool)


def merge(file_data: dict, settings: dict[str, Any]) -> dict:
    """The file's TOML tables with each stored dotted key set (stored values win)."""
    merged = json.loads(json.dumps(file_data, default=str))  # deep copy; TOML dates -> text
    for key, value in settings.items():
        node = merged
        *parents, last = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[last] = value
    return merged


def read_toml(config_path: FsPath) -> dict:
    """The file's TOML data; raises ConfigInvalid as ``load_file`` does."""
    try:
        raw = FsPath(config_path).read_bytes()
    except OSError as exc:
        raise ConfigInvalid(str(config_path),
                            [ConfigError("(file)", f"cannot read: {exc.strerror}")]) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigInvalid(str(config_path),
                            [ConfigError("(file)", f"not valid TOML: {exc}")]) from None


def load_merged(config_path: FsPath, file_data: dict, settings: dict[str, Any]) -> Config:
    """Validate the file's data with ``settings`` laid over it; raise ConfigInvalid listing
    every error (those about stored keys say so)."""
    errors = check_keys(settings)
    usable = {k: v for k, v in settings.items() if not any(e.key == k for e in errors)}
    source = f"{config_path} + stored settings" if settings else str(config_path)
    base = FsPath(config_path).resolve().parent
    try:
        cfg = load_dict(merge(file_data, usable), source=source, base_dir=base)
    except ConfigInvalid as exc:
        errors += exc.errors
        cfg = None
    if errors:
        raise ConfigInvalid(source, [_mark(e, settings) for e in errors])
    assert cfg is not None
    return cfg


def _mark(error: ConfigError, settings: dict[str, Any]) -> ConfigError:
    if error.key in settings and not error.message.endswith(STORED_SUFFIX):
        return ConfigError(error.key, error.message + STORED_SUFFIX, error.value,
                           error.has_value)
    return error


def load_with_stored(config_path: FsPath) -> Config:
    """The configuration the master runs: the file plus the stored settings mirrored in its
    run folder. Raises ConfigInvalid (every error) if the file or the pair is invalid."""
    config_path = FsPath(config_path)
    data = read_toml(config_path)
    file_cfg = load_dict(data, source=str(config_path),
                         base_dir=config_path.resolve().parent)
    try:
        settings = read_overlay(file_cfg.path("server.run-dir"))
    except StoredSettingsError as exc:
        raise ConfigInvalid(str(config_path), [ConfigError("(stored settings)", str(exc))])
    if not settings:
        return file_cfg
    return load_merged(config_path, data, settings)


def load_for_start(config_path: FsPath) -> tuple[Config, ConfigInvalid | None]:
    """The configuration to start with, and why the stored settings were left out if they
    were: a broken stored setting must not keep the server (and so its control plane, where
    it can be fixed) from starting. Raises ConfigInvalid if the file itself is invalid."""
    try:
        return load_with_stored(config_path), None
    except ConfigInvalid as exc:
        config_path = FsPath(config_path)
        file_cfg = load_dict(read_toml(config_path), source=str(config_path),
                             base_dir=config_path.resolve().parent)
        return file_cfg, exc


def sources(cfg: Config, file_data: dict, settings: dict[str, Any]) -> dict[str, str]:
    """Where each key of ``cfg`` comes from: "stored", "file" or "default"."""
    in_file = set()

    def walk(node: dict, prefix: tuple[str, ...]) -> None:
        for name, value in node.items():
            path = (*prefix, name)
            if isinstance(value, dict) and SCHEMA.match(path) is None:
                walk(value, path)
            else:
                in_file.add(path)

    walk(file_data, ())
    out = {}
    for path in cfg.values:
        dotted = ".".join(path)
        out[dotted] = ("stored" if dotted in settings
                       else "file" if path in in_file else "default")
    return out
