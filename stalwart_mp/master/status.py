"""The master's status file (``<run-dir>/status.json``), read by the control plane.

Written atomically (temp file + rename) whenever the set of children changes or a reload
ends, so the control child can report processes and reload results without talking to the
master (which serves no requests itself).
"""
from __future__ import annotations

import json
import os
import socket

from stalwart_mp import __version__
from stalwart_mp.master.privileges import target_ids


def snapshot(master) -> dict:
    return {
        "version": __version__,
        "hostname": master.cfg.get("server.hostname") or socket.getfqdn(),
        "master_pid": master.pid,
        "started_at": master.started_at,
        "config_path": str(master.config_path),
        "config_loaded_at": master.config_loaded_at,
        "generation": master.generation,
        "workers_wanted": master.num_workers,
        "processes": [
            {"kind": c.kind, "pid": c.pid, "generation": c.generation,
             "started_at": master.started_at + (c.started_at - master.started_monotonic)}
            for c in sorted(master.children.values(), key=lambda c: (c.kind, c.pid))
            if not c.retiring
        ],
        "listeners": [
            {"name": listener.name, "protocol": listener.protocol,
             "bind": listener.addresses, "implicit_tls": listener.implicit_tls}
            for listener in master.listeners
        ],
        "last_reload": master.last_reload,
    }


def write(master) -> None:
    path = master.run_dir / "status.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(snapshot(master), indent=1))
    os.chmod(tmp, 0o640)
    ids = target_ids(master.cfg)
    if ids:
        os.chown(tmp, *ids)
    os.replace(tmp, path)


def remove(master) -> None:
    try:
        (master.run_dir / "status.json").unlink()
    except FileNotFoundError:
        pass
