"""The control child over real gRPC: status, reload, authentication, lifecycle, admin CLI.

A stand-in master (fake_master.py) forks the control child like `stalwart-mp serve` does,
keeps status.json and answers SIGHUP; the master itself is tested by tests/master.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from stalwart_mp.control.client import connect
from stalwart_mp.control.gen.stalwart_mp.v1 import server_pb2, server_pb2_grpc
from stalwart_mp.control.token import ensure_control_token
from tests.harness import free_port

HERE = Path(__file__).resolve().parent
ADMIN = Path(sys.executable).parent / "stalwart-mp-admin"


@dataclass
class Control:
    proc: subprocess.Popen
    run_dir: Path
    bind: str

    @property
    def token(self) -> str:
        return (self.run_dir / "control.token").read_text().strip()

    @property
    def token_file(self) -> Path:
        return self.run_dir / "control.token"

    def child_pid(self) -> int:
        status = json.loads((self.run_dir / "status.json").read_text())
        return next(p["pid"] for p in status["processes"] if p["kind"] == "control")

    def admin(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(ADMIN), "--control", self.bind, "--token-file", str(self.token_file), *args],
            check=False, capture_output=True, text=True, timeout=timeout,
        )


def start(run_dir: Path, bind: str) -> Control:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "fake_master.py"), str(run_dir), bind],
        stderr=subprocess.PIPE, text=True,
    )
    control = Control(proc, run_dir, bind)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"fake master exited with {proc.returncode}: {proc.stderr.read()}")
        if (run_dir / "status.json").exists():
            with connect(bind, control.token) as stub:
                try:
                    stub.GetStatus(server_pb2.GetStatusRequest(), timeout=1)
                    return control
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
        time.sleep(0.05)
    stop(control)
    pytest.fail("the control plane did not answer within 20 s")


def stop(control: Control) -> int:
    if control.proc.poll() is None:
        control.proc.send_signal(signal.SIGTERM)
        try:
            control.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            control.proc.kill()
            control.proc.wait()
    return control.proc.returncode


@pytest.fixture
def control(tmp_path) -> Iterator[Control]:
    ctl = start(tmp_path / "run", f"127.0.0.1:{free_port()}")
    yield ctl
    stop(ctl)


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (reaped, or a zombie waiting for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_get_status_over_grpc(control):
    with connect(control.bind, control.token) as stub:
        status = stub.GetStatus(server_pb2.GetStatusRequest(), timeout=10)
    assert status.version == "0.1.0-test"
    assert status.hostname == "mx.example.test"
    assert status.master_pid == control.proc.pid
    assert abs(status.started_at.ToSeconds() - time.time()) < 60
    assert 0 < status.uptime_seconds < 60
    assert status.config_path == "/etc/stalwart-mp/config.toml"
    assert status.generation == 1
    assert [(p.kind, p.generation) for p in status.processes] == [("control", 1), ("worker", 1)]
    assert status.processes[0].pid == control.child_pid()
    assert [(entry.name, list(entry.bind), entry.implicit_tls) for entry in status.listeners] == [
        ("smtp", ["0.0.0.0:25", "[::]:25"], False), ("imaps", ["0.0.0.0:993"], True)]
    assert not status.HasField("last_reload")


def test_wrong_or_missing_token_is_unauthenticated(control):
    with connect(control.bind, "x" * 43) as stub, pytest.raises(grpc.RpcError) as wrong:
        stub.GetStatus(server_pb2.GetStatusRequest(), timeout=10)
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "invalid control token" in wrong.value.details()

    with grpc.insecure_channel(control.bind) as channel:
        stub = server_pb2_grpc.ServerStub(channel)
        for call, request in ((stub.GetStatus, server_pb2.GetStatusRequest()),
                              (stub.Reload, server_pb2.ReloadRequest())):
            with pytest.raises(grpc.RpcError) as missing:
                call(request, timeout=10)
            assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer <token>" in missing.value.details()
        with pytest.raises(grpc.RpcError) as basic:
            stub.GetStatus(server_pb2.GetStatusRequest(), timeout=10,
                           metadata=[("authorization", f"Basic {control.token}")])
        assert basic.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "Basic credentials cannot be checked" in basic.value.details()
    assert (control.run_dir / "status.json").exists()  # nothing was reloaded
    assert json.loads((control.run_dir / "status.json").read_text())["last_reload"] is None


def test_reload_applied_then_refused(control):
    with connect(control.bind, control.token) as stub:
        result = stub.Reload(server_pb2.ReloadRequest(), timeout=40)
        assert (result.applied, list(result.errors), result.generation) == (True, [], 2)
        assert stub.GetStatus(server_pb2.GetStatusRequest(), timeout=10).generation == 2

        (control.run_dir / "reject-reload").write_text(
            'server.hostname = "": expected a host name\n')
        result = stub.Reload(server_pb2.ReloadRequest(), timeout=40)
        assert not result.applied and result.generation == 2
        assert list(result.errors) == ['server.hostname = "": expected a host name']
        status = stub.GetStatus(server_pb2.GetStatusRequest(), timeout=10)
        assert status.last_reload == result


def test_admin_cli_status_json_and_table(control):
    done = control.admin("status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["master_pid"] == control.proc.pid
    assert data["generation"] == 1
    assert [p["kind"] for p in data["processes"]] == ["control", "worker"]
    assert data["listeners"][1] == {"name": "imaps", "protocol": "imap",
                                    "bind": ["0.0.0.0:993"], "implicit_tls": True,
                                    "connections_active": 0, "connections_total": 0}

    table = control.admin("status")
    assert table.returncode == 0, table.stderr
    assert "stalwart-mp 0.1.0-test on mx.example.test" in table.stdout
    assert f"pid {control.proc.pid}" in table.stdout
    assert "imaps  imap      implicit  0     0      0.0.0.0:993" in table.stdout


def test_admin_cli_reload_exit_codes(control):
    applied = control.admin("reload")
    assert (applied.returncode, applied.stdout) == (0, "reload applied: configuration generation 2\n")
    (control.run_dir / "reject-reload").write_text("listener.smtp.bind: port 99999 > 65535\n")
    refused = control.admin("reload")
    assert refused.returncode == 1
    assert refused.stdout == (
        "reload refused; generation 2 stays in force:\n"
        "  - listener.smtp.bind: port 99999 > 65535\n"
    )


def test_admin_cli_explains_failures(control, tmp_path):
    port = free_port()
    unreachable = subprocess.run(
        [str(ADMIN), "--control", f"127.0.0.1:{port}", "--token-file", str(control.token_file),
         "status"], check=False, capture_output=True, text=True, timeout=60)
    assert unreachable.returncode == 3
    assert unreachable.stderr == (
        f"stalwart-mp-admin: cannot reach the control plane at 127.0.0.1:{port}: connection "
        "refused — is `stalwart-mp serve` running, and is control.bind this address?\n"
    )
    bad = tmp_path / "bad.token"
    bad.write_text("y" * 43)
    env = {**os.environ, "STALWART_MP_CONTROL": control.bind,
           "STALWART_MP_TOKEN_FILE": str(bad)}
    refused = subprocess.run([str(ADMIN), "status"], check=False, capture_output=True, text=True,
                             timeout=60, env=env)
    assert refused.returncode == 4
    assert "refused the credentials: invalid control token" in refused.stderr
    env.pop("STALWART_MP_TOKEN_FILE")
    no_token = subprocess.run([str(ADMIN), "status"], check=False, capture_output=True, text=True,
                              timeout=60, env=env)
    assert no_token.returncode == 2
    assert "no credentials: pass --user NAME" in no_token.stderr and "--token-file PATH" in no_token.stderr


def test_sigterm_stops_gracefully(control):
    child = control.child_pid()
    assert stop(control) == 0  # the fake master exits with the control child's status
    assert _gone(child)


def test_exits_when_the_master_dies(control):
    child = control.child_pid()
    control.proc.kill()
    control.proc.wait()
    deadline = time.monotonic() + 10
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), "the control child outlived its master by 10 s"


def test_unix_socket_bind():
    with tempfile.TemporaryDirectory(prefix="smp-") as short:  # sun_path holds 107 bytes
        sock = Path(short) / "control.sock"
        with socket.socket(socket.AF_UNIX) as leftover:  # left by a dead process: replaced
            leftover.bind(str(sock))
        ctl = start(Path(short) / "run", f"unix:{sock}")
        try:
            done = ctl.admin("status", "--json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["master_pid"] == ctl.proc.pid
            second = subprocess.run(
                [sys.executable, "-m", "stalwart_mp.control.main", "--run-dir", str(ctl.run_dir),
                 "--bind", ctl.bind], check=False, capture_output=True, text=True, timeout=60)
            assert second.returncode == 3
            assert f"another process is listening on {sock}" in second.stderr
            assert sock.exists()  # the running control plane keeps its socket
        finally:
            assert stop(ctl) == 0


def test_address_in_use_is_a_boot_error(control, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "stalwart_mp.control.main", "--run-dir", str(tmp_path / "r2"),
         "--bind", control.bind],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 3, done.stderr
    assert f"control.bind = '{control.bind}': cannot listen there" in done.stderr


def test_waits_for_the_previous_control_plane_to_release_the_port(tmp_path):
    """On reload the master starts the new control child before the old one has stopped."""
    port = free_port()
    old = socket.create_server(("127.0.0.1", port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "stalwart_mp.control.main", "--run-dir", str(tmp_path),
         "--bind", f"127.0.0.1:{port}"], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert proc.poll() is None, proc.stderr.read()
        old.close()
        token = ensure_control_token(tmp_path)
        (tmp_path / "status.json").write_text("{}")
        deadline = time.monotonic() + 15
        with connect(f"127.0.0.1:{port}", token) as stub:
            while True:
                try:
                    stub.GetStatus(server_pb2.GetStatusRequest(), timeout=1)
                except grpc.RpcError as exc:
                    if exc.code() == grpc.StatusCode.UNAVAILABLE and "status file" in (
                            exc.details() or ""):
                        break  # served (and the status file is indeed unusable)
                    assert time.monotonic() < deadline, exc.details()
                    time.sleep(0.1)
    finally:
        old.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
