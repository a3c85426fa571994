"""Helpers for the lookup-store tests: a private memcached server, Redis cleanup, and the
bodies of the child processes (run with multiprocessing "spawn", so they live in a module).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stalwart_mp.store.lookup import open_lookup_store

REDIS_URL = os.environ.get("STALWART_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"memcached exited with {proc.returncode}: {err.strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"memcached did not listen on port {port}") from None
            time.sleep(0.02)


@contextmanager
def memcached_server() -> Iterator[str]:
    """Run ``memcached`` on a free loopback port; yields "127.0.0.1:PORT"."""
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    if not os.path.exists(binary):
        raise RuntimeError("no memcached binary on PATH")
    port = free_port()
    cmd = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "64"]
    if os.geteuid() == 0:  # memcached refuses to run as root without -u
        cmd += ["-u", pwd.getpwuid(0).pw_name]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, proc, time.monotonic() + 10)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def delete_redis_prefix(prefix: str) -> None:
    """Remove every key a test created under its own prefix."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        for key in client.scan_iter(match=prefix.encode() + b"*", count=500):
            client.delete(key)
    finally:
        client.close()


# --- child processes ---------------------------------------------------------------------


def count_up(settings: dict[str, Any], key: bytes, times: int, start: Any, results: Any) -> None:
    """Open the lookup store in this process and ``incr`` ``key`` ``times`` times.

    ``start`` is a barrier shared by the children, so they all begin once every one has
    opened its store: the increments really race.
    """

    async def run() -> list[int]:
        store = await open_lookup_store("lookup", settings)
        try:
            await asyncio.to_thread(start.wait, 60)
            return [await store.incr(key, 1, ttl=600) for _ in range(times)]
        finally:
            await store.close()

    results.put((os.getpid(), asyncio.run(run())))


def race_for_lock(settings: dict[str, Any], key: bytes, start: Any, results: Any) -> None:
    """Try once to take the lock ``key`` (all children at once, see ``count_up``)."""

    async def run() -> bool:
        store = await open_lookup_store("lookup", settings)
        try:
            await asyncio.to_thread(start.wait, 60)
            return await store.try_lock(key, 60) is not None
        finally:
            await store.close()

    results.put((os.getpid(), asyncio.run(run())))
