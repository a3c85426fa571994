"""systemd: sd_notify over a real AF_UNIX datagram socket, socket activation in a subprocess."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stalwart_mp.master import systemd


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_not_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.sd_notify("READY=1") is False
    assert systemd.notify_ready() is False


def test_ready_with_status(notify_socket: socket.socket) -> None:
    assert systemd.notify_ready(status="serving 8 listeners\nwith 4 workers") is True
    assert _received(notify_socket) == "READY=1\nSTATUS=serving 8 listeners with 4 workers"
    assert systemd.notify_ready() is True
    assert _received(notify_socket) == "READY=1"


def test_reloading_carries_monotonic_usec(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.notify_reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = _received(notify_socket).split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after
    assert len(lines) == 2


def test_stopping_watchdog_status_extend(notify_socket: socket.socket) -> None:
    assert systemd.notify_stopping(status="draining")
    assert _received(notify_socket) == "STOPPING=1\nSTATUS=draining"
    assert systemd.notify_watchdog()
    assert _received(notify_socket) == "WATCHDOG=1"
    assert systemd.notify_status("3 workers")
    assert _received(notify_socket) == "STATUS=3 workers"
    assert systemd.notify_extend_timeout(2.5)
    assert _received(notify_socket) == "EXTEND_TIMEOUT_USEC=2500000"


def test_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"stalwart-mp-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.sd_notify("READY=1") is True
        assert sock.recv(100) == b"READY=1"


def test_unreachable_or_unsupported_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert systemd.sd_notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.sd_notify("READY=1") is False


@pytest.mark.parametrize("usec, pid, expected", [
    ("30000000", None, 30.0),
    ("30000000", "self", 30.0),
    ("30000000", "1", None),
    ("0", None, None),
    ("abc", None, None),
    (None, None, None),
])
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           expected: float | None) -> None:
    for key, value in (("WATCHDOG_USEC", usec),
                       ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    assert systemd.watchdog_interval() == expected


# -- socket activation --------------------------------------------------------------------

# Acts like systemd: move the passed fds to 3, 4, ... , set LISTEN_PID to the pid that will
# run the check (exec keeps the pid), then exec the check program.
_LAUNCHER = r"""
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",") if fd]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]  # out of the way of 3, 4, ...
for fd in fds:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index, inheritable=True)
    os.close(fd)
os.environ.setdefault("LISTEN_PID", str(os.getpid()))
os.execv(sys.executable, [sys.executable, "-c", sys.argv[2]])
"""

_CHECK = r"""
import json, os, socket
from stalwart_mp.master.systemd import inherited_sockets
result = inherited_sockets()
print(json.dumps({
    "sockets": [[name, sock.fileno(), sock.family.name, sock.type.name,
                 list(sock.getsockname()), os.get_inheritable(sock.fileno())]
                for name, sock in result],
    "env": [k for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if k in os.environ],
}))
"""


def _activate(socks: list[socket.socket], env: dict[str, str], check: str = _CHECK) -> dict:
    fds = [s.fileno() for s in socks]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    child_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, ",".join(map(str, fds)), check],
        pass_fds=fds, env=child_env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def listeners() -> Iterator[list[socket.socket]]:
    socks = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.bind((host, 0))
        sock.listen(8)
        socks.append(sock)
    yield socks
    for sock in socks:
        sock.close()


def test_inherited_sockets_with_names(listeners: list[socket.socket]) -> None:
    out = _activate(listeners, {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "smtp:imap"})
    (n1, fd1, fam1, type1, addr1, inh1), (n2, fd2, fam2, type2, addr2, inh2) = out["sockets"]
    assert (n1, fd1, fam1, type1) == ("smtp", 3, "AF_INET", "SOCK_STREAM")
    assert (n2, fd2, fam2, type2) == ("imap", 4, "AF_INET6", "SOCK_STREAM")
    assert tuple(addr1) == listeners[0].getsockname()
    assert tuple(addr2[:2]) == listeners[1].getsockname()[:2]
    assert inh1 is False and inh2 is False
    assert out["env"] == []


def test_inherited_sockets_without_names(listeners: list[socket.socket]) -> None:
    out = _activate(listeners, {"LISTEN_FDS": "2"})
    assert [entry[0] for entry in out["sockets"]] == [None, None]
    out = _activate(listeners, {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "only-one"})
    assert [entry[0] for entry in out["sockets"]] == [None, None]


def test_other_pid_gets_nothing_and_env_is_cleared(listeners: list[socket.socket]) -> None:
    out = _activate(listeners, {"LISTEN_FDS": "2", "LISTEN_PID": "1"})
    assert out == {"sockets": [], "env": []}


def test_not_socket_activated() -> None:
    out = _activate([], {})
    assert out == {"sockets": [], "env": []}


def test_non_socket_fd_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "plain-file"
    path.write_text("x")
    check = (
        "from stalwart_mp.master.systemd import inherited_sockets, SocketActivationError\n"
        "try:\n    inherited_sockets()\nexcept SocketActivationError as exc:\n    print(exc)\n"
    )
    with path.open() as handle:
        fds = [handle.fileno()]
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        child_env.update({"LISTEN_FDS": "1", "LISTEN_FDNAMES": "fifo"})
        proc = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, str(fds[0]), check],
            pass_fds=fds, env=child_env, capture_output=True, text=True, timeout=60, check=False,
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("systemd passed fd 3 (fifo), which is not a usable socket")
