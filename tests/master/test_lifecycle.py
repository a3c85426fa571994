"""Start-up, systemd integration, TLS, PROXY protocol, limits and logs of a real server."""
from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest

from stalwart_mp.tls.selfsigned import generate_self_signed
from tests.harness import BIN, Server, base_config, cli, free_port, http_get


def _server(tmp_path, extra: str = "", workers: int = 1, **kw) -> Server:
    port = free_port()
    return Server(tmp_path, port, base_config(tmp_path, port, workers=workers, extra=extra),
                  **kw)


def _listener(name: str, port: int, body: str) -> str:
    return f'\n[server.listener.{name}]\nbind = ["127.0.0.1:{port}"]\nprotocol = "http"\n{body}\n'


def test_sd_notify_ready_reloading_stopping(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    srv = _server(tmp_path, env={"NOTIFY_SOCKET": path}).start()
    try:
        assert b"READY=1" in sock.recv(4096)
        srv.signal(signal.SIGHUP)
        assert b"RELOADING=1" in sock.recv(4096)
        assert b"READY=1" in sock.recv(4096)
    finally:
        srv.stop()
    assert b"STOPPING=1" in sock.recv(4096)
    sock.close()


def test_socket_activation_uses_inherited_listener(tmp_path):
    """systemd passes the bound socket as fd 3 with LISTEN_PID/LISTEN_FDS."""
    port = free_port()
    listening = socket.socket()
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listening.bind(("127.0.0.1", port))
    listening.listen(16)
    srv = Server(tmp_path, port, base_config(tmp_path, port, workers=2))
    srv.config_path.write_text(srv.config_text)
    # a tiny launcher: move the socket to fd 3, set LISTEN_PID to its own pid, exec serve
    launcher = (
        "import os, sys\n"
        f"os.dup2({listening.fileno()}, 3)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid()); os.environ['LISTEN_FDS'] = '1'\n"
        f"os.execv({str(BIN / 'stalwart-mp')!r}, ['stalwart-mp', 'serve', '--config', "
        f"{str(srv.config_path)!r}])\n"
    )
    log = open(tmp_path / "server.log", "ab")
    proc = subprocess.Popen([sys.executable, "-c", launcher], pass_fds=[listening.fileno()],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "STALWART_MP_TEST_HOOKS": "1"})
    listening.close()  # only the server holds it now
    srv.proc, srv.log = proc, log
    try:
        srv.wait_for(lambda: srv._ready(2), "the socket-activated server")
        status, headers, _ = http_get(port, "/healthz/live")
        assert status == 200 and int(headers["x-stalwart-worker"]) in srv.worker_pids()
        assert f"listening listener=http address=127.0.0.1:{port}" not in srv.logs(), \
            "the inherited socket is used, not a new bind"
    finally:
        srv.stop()


def test_implicit_tls_with_sni_certificates(tmp_path):
    for name in ("a.example.org", "b.example.org"):
        key, cert = generate_self_signed(name)
        (tmp_path / f"{name}.key").write_bytes(key)
        (tmp_path / f"{name}.crt").write_bytes(cert)
    tls_port = free_port()
    extra = _listener("https", tls_port, "tls.implicit = true") + "".join(
        f'\n[certificate."{n}"]\ncert = "{n}.crt"\nprivate-key = "{n}.key"\n'
        + ("default = true\n" if n.startswith("a") else "")
        for n in ("a.example.org", "b.example.org")
    )
    srv = _server(tmp_path, extra).start()
    try:
        def served_name(sni: str | None) -> str:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname=sni) as tls:
                    der = tls.getpeercert(binary_form=True)
            from cryptography import x509

            cert = x509.load_der_x509_certificate(der)
            return cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)[0]

        assert served_name("b.example.org") == "b.example.org"
        assert served_name("a.example.org") == "a.example.org"
        assert served_name("unknown.example") == "a.example.org"  # the default
        assert http_get(tls_port, "/healthz/live", tls=True)[0] == 200
        # plaintext on an implicit-TLS port fails the handshake; the server keeps serving
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
            raw.sendall(b"GET /healthz/live HTTP/1.0\r\n\r\n")
            assert raw.recv(100) == b""
        assert http_get(tls_port, "/healthz/live", tls=True)[0] == 200
    finally:
        srv.stop()


def test_missing_certificate_stops_the_server_with_its_error(tmp_path):
    extra = '\n[certificate."main"]\ncert = "nope.crt"\nprivate-key = "nope.key"\n'
    srv = _server(tmp_path, extra)
    srv.config_path.write_text(srv.config_text)
    res = subprocess.run([str(BIN / "stalwart-mp"), "serve", "--config", str(srv.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "nope.crt" in res.stderr and "halting" in res.stderr


def test_proxy_protocol_sets_client_address(tmp_path):
    proxied = free_port()
    extra = _listener("behind-lb", proxied, "proxy-protocol = true")
    srv = _server(tmp_path, extra).start()

    def get_metrics(header: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", proxied), timeout=5) as s:
            s.sendall(header + b"GET /metrics HTTP/1.0\r\n\r\n")
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except ConnectionResetError:  # closed with our request unread: a reset
                pass
            return data

    try:
        # /metrics is served to loopback only: the address in the PROXY header decides
        inside = get_metrics(b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 80\r\n")
        assert inside.startswith(b"HTTP/1.0 200") or inside.startswith(b"HTTP/1.1 200")
        outside = get_metrics(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n")
        assert b" 403 " in outside.split(b"\r\n", 1)[0]
        # v2 binary header from an IPv6 client
        import ipaddress
        import struct

        addrs = (ipaddress.IPv6Address("2001:db8::1").packed + ipaddress.IPv6Address("::1").packed
                 + struct.pack("!HH", 40000, 80))
        v2 = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x21]) + struct.pack("!H", len(addrs))
        assert b" 403 " in get_metrics(v2 + addrs).split(b"\r\n", 1)[0]
        # garbage instead of a header: connection closed, server still fine
        assert get_metrics(b"HELLO THERE\r\n") == b""
        assert http_get(srv.http_port, "/healthz/live")[0] == 200
    finally:
        srv.stop()
    assert "bad PROXY header" in srv.logs()


def test_connections_per_ip_are_limited(tmp_path):
    limited = free_port()
    extra = _listener("limited", limited, "max-connections-per-ip = 2")
    srv = _server(tmp_path, extra).start()
    try:
        held = [socket.create_connection(("127.0.0.1", limited), timeout=5) for _ in range(2)]
        time.sleep(0.3)
        third = socket.create_connection(("127.0.0.1", limited), timeout=5)
        assert third.recv(10) == b"", "the third connection from one IP is closed at once"
        third.close()
        held[0].close()
        time.sleep(0.3)
        assert http_get(limited, "/healthz/live")[0] == 200, "a slot is free again"
        for s in held[1:]:
            s.close()
        metrics = http_get(srv.http_port, "/metrics")[2].decode()
        assert ('stalwart_connections_rejected_total{listener="limited",'
                'reason="too-many-from-ip"} 1.0') in metrics
    finally:
        srv.stop()


def test_quit_stops_at_once(tmp_path):
    srv = _server(tmp_path).start()
    workers = srv.worker_pids()
    started = time.monotonic()
    srv.signal(signal.SIGQUIT)
    assert srv.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    srv.log.close()


def test_json_logs_to_file_reopened_on_usr1(tmp_path):
    srv = _server(tmp_path)
    srv.config_text = srv.config_text.replace('[logging]\nlevel = "info"',
                                              '[logging]\nlevel = "info"\nformat = "json"\n'
                                              'file = "server.json.log"')
    srv.start()
    try:
        log_file = tmp_path / "server.json.log"
        lines = [json.loads(line) for line in log_file.read_text().splitlines()]
        started = next(r for r in lines if r["msg"] == "started")
        assert started["proc"] == "master" and started["level"] == "info"
        assert {"ts", "pid", "logger"} <= started.keys()
        log_file.rename(tmp_path / "server.json.log.1")
        srv.signal(signal.SIGUSR1)
        time.sleep(0.5)
        srv.signal(signal.SIGTTIN)  # something new to log
        srv.wait_for(lambda: log_file.exists() and "workers" in log_file.read_text(),
                     "the reopened log file")
    finally:
        srv.stop()


def test_daemon_with_pidfile(tmp_path):
    srv = _server(tmp_path)
    srv.config_text = srv.config_text.replace('[logging]\nlevel = "info"',
                                              '[logging]\nlevel = "info"\nfile = "d.log"')
    srv.config_path.write_text(srv.config_text)
    pidfile = tmp_path / "master.pid"
    res = cli("serve", "--config", str(srv.config_path), "--daemon", "--pidfile", str(pidfile),
              env={"STALWART_MP_TEST_HOOKS": "1"})
    assert res.returncode == 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (pidfile.exists() and srv.worker_pids()):
        time.sleep(0.1)
    pid = int(pidfile.read_text())
    try:
        assert srv.status()["master_pid"] == pid
        srv.wait_for(lambda: _answers(srv.http_port), "the daemon to answer")
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and pidfile.exists():
        time.sleep(0.1)
    assert not pidfile.exists(), "the pid file is removed on exit"


def _answers(port: int) -> bool:
    try:
        return http_get(port, "/healthz/ready", timeout=2)[0] == 200
    except OSError:
        return False


def _cfg(**server):
    from stalwart_mp.config.loader import load_dict

    return load_dict({"server": {"hostname": "a.example", **server},
                      "store": {"d": {"type": "lmdb", "path": "x"},
                                "s": {"type": "whoosh", "path": "y"}},
                      "storage": {"data": "d", "fts": "s"}})


def test_privilege_drop_rules():
    from stalwart_mp.master.privileges import PrivilegeError, target_ids

    if os.geteuid() != 0:
        assert target_ids(_cfg(user="nobody")) is None, "nothing to drop for an ordinary user"
        return
    with pytest.raises(PrivilegeError, match="running as root needs server.user"):
        target_ids(_cfg())
    assert target_ids(_cfg(**{"allow-root": True})) is None
    with pytest.raises(PrivilegeError, match='server.user = "no-such-user-x": no such user'):
        target_ids(_cfg(user="no-such-user-x"))
    nobody = pwd.getpwnam("nobody")
    assert target_ids(_cfg(user="nobody")) == (nobody.pw_uid, nobody.pw_gid)


def test_child_switches_to_server_user(tmp_path):
    """What a forked child does first: drop to server.user (the master stays root)."""
    from stalwart_mp.master.privileges import chown_for_children, drop_privileges

    if os.geteuid() != 0:
        cfg = _cfg(user="nobody")
        expected = (os.getuid(), os.getgid())
    else:
        cfg = _cfg(user="nobody")
        nobody = pwd.getpwnam("nobody")
        expected = (nobody.pw_uid, nobody.pw_gid)
    (tmp_path / "data" / "sub").mkdir(parents=True)
    chown_for_children(cfg, tmp_path / "data")
    assert os.stat(tmp_path / "data" / "sub").st_uid == expected[0]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop, then report who we are
        try:
            drop_privileges(cfg)
            os.write(w, json.dumps([os.getuid(), os.geteuid(), os.getgid()]).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    uid, euid, gid = json.loads(os.read(r, 1000))
    os.close(r)
    assert (uid, gid) == expected and euid == expected[0]


def _uid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError(f"no Uid for {pid}")


def test_store_down_keeps_serving_and_reports_it(tmp_path):
    """A data store that cannot be reached is named in the logs and in /healthz/ready; the
    server keeps serving what does not need it."""
    dead = free_port()
    srv = _server(tmp_path)
    srv.config_text = srv.config_text.replace(
        '[store."default"]\ntype = "lmdb"\npath = "data/lmdb"',
        f'[store."default"]\ntype = "postgresql"\nhost = "127.0.0.1"\nport = {dead}\n'
        'database = "test"\nuser = "postgres"\ntimeout = 1')
    srv.config_path.write_text(srv.config_text)
    log = open(tmp_path / "server.log", "ab")
    srv.proc = subprocess.Popen([str(BIN / "stalwart-mp"), "serve", "--config",
                                 str(srv.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "STALWART_MP_TEST_HOOKS": "1"})
    srv.log = log
    try:
        srv.wait_for(lambda: _answers_live(srv.http_port), "the live endpoint")
        status, _, body = http_get(srv.http_port, "/healthz/ready")
        answer = json.loads(body)
        assert status == 503 and answer["status"] == "unavailable"
        assert f"127.0.0.1:{dead}" in answer["reason"] and '"default"' in answer["reason"]
        assert srv.proc.poll() is None, "the master keeps running"
    finally:
        srv.stop()
    assert "stores unavailable; retrying" in srv.logs()


def _answers_live(port: int) -> bool:
    try:
        return http_get(port, "/healthz/live", timeout=2)[0] == 200
    except OSError:
        return False


def test_store_that_comes_back_is_picked_up(tmp_path):
    srv = _server(tmp_path)
    srv.config_text = srv.config_text.replace(
        '[store."default"]\ntype = "lmdb"\npath = "data/lmdb"',
        '[store."default"]\ntype = "sqlite"\npath = "later/data.db"')
    srv.config_path.write_text(srv.config_text)
    (tmp_path / "later").write_text("a file where the store's folder should be")
    log = open(tmp_path / "server.log", "ab")
    srv.proc = subprocess.Popen([str(BIN / "stalwart-mp"), "serve", "--config",
                                 str(srv.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "STALWART_MP_TEST_HOOKS": "1"})
    srv.log = log
    try:
        srv.wait_for(lambda: _answers_live(srv.http_port), "the live endpoint")
        assert http_get(srv.http_port, "/healthz/ready")[0] == 503
        (tmp_path / "later").unlink()  # the obstacle goes: the worker's retry succeeds
        (tmp_path / "later").mkdir()
        srv.wait_for(lambda: http_get(srv.http_port, "/healthz/ready")[0] == 200,
                     "the store to be picked up", timeout=30)
    finally:
        srv.stop()
    assert "stores available again" in srv.logs()
