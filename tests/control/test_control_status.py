"""Reading the master's status.json and converting it to the ServerStatus message."""
from __future__ import annotations

import json

import pytest

from stalwart_mp.control.status import StatusUnavailable, read_status, status_to_proto

STATUS = {
    "version": "0.1.0", "hostname": "mx.example.test", "master_pid": 42,
    "started_at": 1_700_000_000.25, "config_path": "/etc/stalwart-mp/config.toml",
    "config_loaded_at": 1_700_000_100.0, "generation": 3,
    "processes": [{"kind": "worker", "pid": 43, "started_at": 1_700_000_100.5, "generation": 3}],
    "listeners": [{"name": "submissions", "protocol": "smtp", "bind": ["[::]:465"],
                   "implicit_tls": True}],
    "last_reload": {"applied": False, "errors": ["server.hostname: expected a host name"],
                    "generation": 3, "at": 1_700_000_200.0},
}


def test_converts_every_field(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps(STATUS))
    msg = status_to_proto(read_status(tmp_path), now=1_700_000_010.25)
    assert (msg.version, msg.hostname, msg.master_pid) == ("0.1.0", "mx.example.test", 42)
    assert msg.started_at.seconds == 1_700_000_000 and msg.started_at.nanos == 250_000_000
    assert msg.uptime_seconds == pytest.approx(10.0)
    assert msg.config_path == "/etc/stalwart-mp/config.toml"
    assert msg.config_loaded_at.seconds == 1_700_000_100 and msg.generation == 3
    [proc] = msg.processes
    assert (proc.kind, proc.pid, proc.generation) == ("worker", 43, 3)
    assert proc.started_at.ToMilliseconds() == 1_700_000_100_500
    [listener] = msg.listeners
    assert (listener.name, listener.protocol, list(listener.bind), listener.implicit_tls) == (
        "submissions", "smtp", ["[::]:465"], True)
    assert not msg.last_reload.applied and msg.last_reload.generation == 3
    assert list(msg.last_reload.errors) == ["server.hostname: expected a host name"]
    assert msg.last_reload.finished_at.seconds == 1_700_000_200


def test_no_reload_yet_leaves_the_field_unset(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({**STATUS, "last_reload": None}))
    assert not status_to_proto(read_status(tmp_path)).HasField("last_reload")


def test_missing_file_says_what_to_check(tmp_path):
    with pytest.raises(StatusUnavailable, match=r"no status file at .*status\.json.*serve"):
        read_status(tmp_path)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"master_pid": "42"}, r"master_pid = '42', expected an integer"),
        ({"processes": [{"kind": "worker", "pid": 1, "started_at": 1.0}]},
         r"processes\[0\]\.generation = None, expected an integer"),
        ({"last_reload": {"applied": 1, "errors": [], "generation": 1, "at": 1.0}},
         r"last_reload\.applied = 1, expected true or false"),
    ],
)
def test_bad_fields_are_named(tmp_path, patch, message):
    (tmp_path / "status.json").write_text(json.dumps({**STATUS, **patch}))
    with pytest.raises(StatusUnavailable, match=message):
        read_status(tmp_path)


def test_invalid_json(tmp_path):
    (tmp_path / "status.json").write_text("{")
    with pytest.raises(StatusUnavailable, match="not valid JSON"):
        read_status(tmp_path)
