"""The master's status file (``<run_dir>/status.json``) and its ServerStatus message.

The master writes the file atomically whenever its children change or a reload ends
(``stalwart_mp.master.status``); the control child only reads it, so the master never serves
a request itself. Schema::

    {"version": str, "hostname": str, "master_pid": int, "started_at": float (unix time),
     "config_path": str, "config_loaded_at": float, "generation": int,
     "processes": [{"kind": str, "pid": int, "started_at": float, "generation": int}],
     "listeners": [{"name": str, "protocol": str, "bind": [str], "implicit_tls": bool}],
     "last_reload": {"applied": bool, "errors": [str], "generation": int, "at": float} | null}
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from stalwart_mp.control.gen.stalwart_mp.v1 import server_pb2

STATUS_FILE = "status.json"

_NUMBER = (int, float)
_TOP: dict[str, type | tuple[type, ...]] = {
    "version": str, "hostname": str, "master_pid": int, "started_at": _NUMBER,
    "config_path": str, "config_loaded_at": _NUMBER, "generation": int,
    "processes": list, "listeners": list,
}
_PROCESS = {"kind": str, "pid": int, "started_at": _NUMBER, "generation": int}
_LISTENER = {"name": str, "protocol": str, "bind": list, "implicit_tls": bool}
_RELOAD = {"applied": bool, "errors": list, "generation": int, "at": _NUMBER}


class StatusUnavailable(Exception):
    """The status file is missing or unusable; the message names the file and the problem."""


def status_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATUS_FILE


def read_status(run_dir: Path) -> dict[str, Any]:
    """Read and check ``<run_dir>/status.json``. Raises StatusUnavailable."""
    path = status_path(run_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StatusUnavailable(
            f"no status file at {path}: the master writes it once it has started "
            "(is `stalwart-mp serve` running with this run directory?)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StatusUnavailable(f"cannot read the status file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise StatusUnavailable(f"status file {path} is not valid JSON: {exc}") from None
    _check(path, data)
    return data


def _check(path: Path, data: Any) -> None:
    if not isinstance(data, dict):
        raise StatusUnavailable(f"status file {path}: expected a JSON object at the top")
    _check_fields(path, "", data, _TOP)
    for i, proc in enumerate(data["processes"]):
        _check_fields(path, f"processes[{i}].", proc, _PROCESS)
    for i, listener in enumerate(data["listeners"]):
        _check_fields(path, f"listeners[{i}].", listener, _LISTENER)
    last = data.get("last_reload")
    if last is not None:
        _check_fields(path, "last_reload.", last, _RELOAD)


def _check_fields(path: Path, where: str, obj: Any, fields: dict) -> None:
    if not isinstance(obj, dict):
        raise StatusUnavailable(f"status file {path}: {where.rstrip('.')} must be an object")
    for name, kind in fields.items():
        value = obj.get(name)
        # bool is an int in Python: only accept it where a bool is expected
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise StatusUnavailable(
                f"status file {path}: {where}{name} = {value!r}, expected {_kind_name(kind)}"
            )


def _kind_name(kind: type | tuple[type, ...]) -> str:
    if kind == _NUMBER:
        return "a number"
    return {str: "a string", int: "an integer", bool: "true or false", list: "a list"}[kind]


def timestamp(unix: float) -> Timestamp:
    """A protobuf Timestamp from unix seconds (float), to the microsecond (a float's precision)."""
    seconds = math.floor(unix)
    micros = round((unix - seconds) * 1_000_000)
    return Timestamp(seconds=seconds + micros // 1_000_000, nanos=micros % 1_000_000 * 1000)


def reload_result_to_proto(last_reload: dict[str, Any]) -> server_pb2.ReloadResult:
    """The ``last_reload`` object of the status file as a ReloadResult."""
    return server_pb2.ReloadResult(
        applied=last_reload["applied"],
        errors=[str(e) for e in last_reload["errors"]],
        generation=last_reload["generation"],
        finished_at=timestamp(last_reload["at"]),
    )


def status_to_proto(status: dict[str, Any], now: float | None = None,
                    counts: dict | None = None) -> server_pb2.ServerStatus:
    """A checked status dict (from read_status) as a ServerStatus; uptime is taken at ``now``;
    ``counts``: aggregated metric samples (``metrics.totals()``) for the connection and
    message counters (zero without)."""
    now = time.time() if now is None else now
    counts = counts or {}

    def count(name: str, **labels: str) -> int:
        return int(counts.get((name, tuple(sorted(labels.items()))), 0))

    message = server_pb2.ServerStatus(
        version=status["version"],
        hostname=status["hostname"],
        master_pid=status["master_pid"],
        started_at=timestamp(status["started_at"]),
        uptime_seconds=max(0.0, now - status["started_at"]),
        config_path=status["config_path"],
        config_loaded_at=timestamp(status["config_loaded_at"]),
        generation=status["generation"],
        workers_wanted=status.get("workers_wanted", 0),
        messages_received=sum(int(v) for (name, _), v in counts.items()
                              if name == "stalwart_messages_received_total"),
        messages_delivered=count("stalwart_messages_delivered_total"),
        processes=[
            server_pb2.ProcessInfo(
                kind=p["kind"], pid=p["pid"], started_at=timestamp(p["started_at"]),
                generation=p["generation"],
            )
            for p in status["processes"]
        ],
        listeners=[
            server_pb2.ListenerInfo(
                name=entry["name"], protocol=entry["protocol"],
                bind=[str(b) for b in entry["bind"]], implicit_tls=entry["implicit_tls"],
                connections_active=count("stalwart_connections_active",
                                         listener=entry["name"]),
                connections_total=count("stalwart_connections_total", listener=entry["name"],
                                        protocol=entry["protocol"]),
            )
            for entry in status["listeners"]
        ],
    )
    if status.get("last_reload") is not None:
        message.last_reload.CopyFrom(reload_result_to_proto(status["last_reload"]))
    return message
