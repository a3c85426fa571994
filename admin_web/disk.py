"""Disk use of the stores, for the dashboard, when the web admin runs on the server's host.

The control plane says where each store lives (``store.<name>.path`` of the effective
configuration, relative to the configuration file's folder); the sizes are read here with
``stat`` and ``statvfs``, so they are shown only when that path exists on this host (the
admin child always; a standalone admin on another host shows "not on this host").
Counting stops after ``MAX_ENTRIES`` files (a file-system blob store may hold millions):
the size is then a lower bound.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

MAX_ENTRIES = 5000


@dataclass(slots=True)
class StoreDisk:
    name: str
    type: str
    roles: list[str]
    path: str
    size: int | None = None  # bytes of the store's files; None: not on this host
    partial: bool = False  # counting stopped early: size is at least this
    volume_used: int = 0
    volume_total: int = 0


def _size(path: Path) -> tuple[int, bool]:
    if path.is_file():
        return path.stat().st_size, False
    total = seen = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
            except OSError:
                continue
            seen += 1
            if seen >= MAX_ENTRIES:
                return total, True
    return total, False


def store_disks(settings: dict[str, str], config_path: str) -> list[StoreDisk]:
    """Every store with a path; ``settings``: dotted key -> JSON value (GetConfig)."""
    base = Path(config_path).parent
    roles: dict[str, list[str]] = {}
    for role in ("data", "blob", "fts", "lookup"):
        value = settings.get(f"storage.{role}")
        if value is not None:
            roles.setdefault(json.loads(value), []).append(role)
    out = []
    for key, value in sorted(settings.items()):
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "store" or parts[2] != "path":
            continue
        name = parts[1]
        path = Path(json.loads(value))
        path = path if path.is_absolute() else base / path
        disk = StoreDisk(name=name, type=json.loads(settings.get(f"store.{name}.type", '""')),
                         roles=roles.get(name, []), path=str(path))
        if path.exists():
            disk.size, disk.partial = _size(path)
            usage = shutil.disk_usage(path)
            disk.volume_used, disk.volume_total = usage.used, usage.total
        out.append(disk)
    return out
