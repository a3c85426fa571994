"""Start ``stalwart-mp serve`` for real, as a subprocess on free loopback ports."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "stalwart-mp"), *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def base_config(tmp: Path, http_port: int, workers: int = 2, extra: str = "") -> str:
    return f"""
[server]
hostname = "mail.test.example"
workers = {workers}
graceful-timeout = "10s"
heartbeat-timeout = "3s"
allow-root = true

[server.listener.http]
bind = ["127.0.0.1:{http_port}"]
protocol = "http"

[store."default"]
type = "lmdb"
path = "data/lmdb"

[store."search"]
type = "whoosh"
path = "data/fts"

[storage]
data = "default"
fts = "search"

[control]
bind = "127.0.0.1:{free_port()}"

[logging]
level = "info"
{extra}
"""


def http_get(port: int, path: str, timeout: float = 10, tls: bool = False
             ) -> tuple[int, dict, bytes]:
    """One request on a fresh connection: (status, headers, body)."""
    if tls:
        import ssl

        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@dataclass
class Server:
    folder: Path
    http_port: int
    config_text: str
    env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def config_path(self) -> Path:
        return self.folder / "config.toml"

    @property
    def run_dir(self) -> Path:
        return self.folder / "run"

    def start(self, wait_workers: int | None = None) -> Server:
        self.config_path.write_text(self.config_text)
        self.log = open(self.folder / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "stalwart-mp"), "serve", "--config", str(self.config_path)],
            stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, "STALWART_MP_TEST_HOOKS": "1", **self.env},
        )
        self.wait_for(lambda: self._ready(wait_workers), "the server to be ready")
        return self

    def _ready(self, wait_workers: int | None) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.logs()}")
        st = self.status()
        if not st:
            return False
        want = wait_workers if wait_workers is not None else 1
        if len(self.worker_pids(st)) < want:
            return False
        try:
            return http_get(self.http_port, "/healthz/ready", timeout=2)[0] == 200
        except OSError:
            return False

    def status(self) -> dict | None:
        try:
            return json.loads((self.run_dir / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def worker_pids(self, st: dict | None = None) -> set[int]:
        st = st or self.status() or {"processes": []}
        return {p["pid"] for p in st["processes"] if p["kind"] == "worker"}

    def wait_for(self, predicate, what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n--- server log ---\n{self.logs()}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def logs(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode
