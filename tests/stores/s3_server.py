"""A moto S3 server on a free loopback port, for the blob-store tests.

``.venv/bin/moto_server`` (installed with ``moto[server]``) is started as a child process
and waited for until it answers; each test gets a bucket of its own.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def moto_binary() -> str:
    beside = Path(sys.executable).parent / "moto_server"
    if beside.exists():
        return str(beside)
    found = shutil.which("moto_server")
    if found is None:
        raise FileNotFoundError("moto_server not found (pip install 'moto[server]')")
    return found


class MotoServer:
    """One moto_server process; ``start`` raises if it does not answer within ``wait``."""

    def __init__(self) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: float = 30.0) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [moto_binary(), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + wait
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with status {self.proc.returncode}")
            try:
                with urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"moto_server did not answer on {self.endpoint}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def new_bucket(self) -> str:
        name = f"blobs-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """Settings (as under [store."NAME"]) of an s3 store on this server."""
        return {
            "type": "s3",
            "bucket": bucket,
            "endpoint": self.endpoint,
            "region": REGION,
            "access-key": ACCESS_KEY,
            "secret-key": SECRET_KEY,
            "timeout": 5,
            # moto answers 500 now and then when several clients PUT one key at once (it
            # closes the replaced object's buffer while still using it); S3 clients retry
            # 500s, and so do we.
            "max-retries": 5,
            **extra,
        }
