"""IMAP operations per second against a real stalwart-mp server, optionally side by side with
Dovecot (Debian's dovecot-imapd) in the same run.

Starts ``stalwart-mp serve`` itself (temporary directory, free loopback ports, LMDB and
filesystem blobs, one worker per CPU) with the account ``user`` holding --messages messages
in INBOX, appended over IMAP. For each concurrency C, C clients (asyncio raw sockets, so
the client costs little) each log in once and then, until --seconds run out, repeat:

    SELECT INBOX; FETCH 1:* (FLAGS UID RFC822.SIZE); UID FETCH <random> BODY.PEEK[];
    UID STORE <random> +FLAGS (\\Flagged) (or -FLAGS, alternating); NOOP

Every command is one operation. Prints operations/s, p50/p99 latency per command and the
server's CPU-seconds per 1,000 operations (from /proc, every process of the server).

With ``--peer dovecot`` a throwaway Dovecot (Maildir under a temporary directory, static
password database, no TLS) gets the same messages and the same load in the same run, and
the ratio stalwart-mp/dovecot is printed; ``--peer dovecot,pymap`` adds pymap (PyPI, its
in-memory backend; give its executable with --pymap).

    .venv/bin/python load_tests/bench_imap.py [--concurrency 1,10] [--seconds 10]
                                              [--messages 1000] [--peer dovecot,pymap]
    .venv/bin/python load_tests/bench_imap.py --serve-only [--imap-port 1143]   # for locust
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_smtp import descendants, free_port, proc_cpu

from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.store.registry import open_data_store

BIN = Path(sys.executable).parent
USER, PASSWORD = "user", "bench-pw"
COMMANDS = ("SELECT", "FETCH 1:*", "UID FETCH BODY", "UID STORE", "NOOP")
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


def message(n: int, size: int = 4096) -> bytes:
    head = (f"From: Bench <bench@remote.test>\r\nTo: user@bench.test\r\n"
            f"Subject: IMAP benchmark {n}\r\nDate: Mon, 7 Feb 2022 21:52:25 +0000\r\n"
            f"Message-ID: <{n}.{time.time_ns()}@remote.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
    return head + (line * (size // len(line) + 1))[: max(0, size - len(head))]


# --- servers -------------------------------------------------------------------------------

def stalwart_config(port: int, workers: int) -> str:
    return f"""
[server]
hostname = "imap.bench.test"
workers = {workers}
allow-root = true

[server.listener.imap]
bind = ["127.0.0.1:{port}"]
protocol = "imap"

[server.listener.http]
bind = ["127.0.0.1:{free_port()}"]
protocol = "http"

[store."default"]
type = "lmdb"
path = "data/lmdb"

[store."blobs"]
type = "fs"
path = "data/blobs"

[store."search"]
type = "whoosh"
path = "data/fts"

[storage]
data = "default"
blob = "blobs"
fts = "search"
lookup = "default"

[control]
bind = "127.0.0.1:{free_port()}"

[logging]
level = "warning"
"""


@dataclass
class Server:
    name: str
    port: int
    folder: Path
    proc: subprocess.Popen
    pids_fn: object = None

    def pids(self) -> list[int]:
        return self.pids_fn()

    def cpu(self) -> float:
        """Every live process of the server, plus the children its master reaped (Dovecot
        runs an imap process per connection, gone by the end of a case)."""
        pids = self.pids()
        return proc_cpu(pids[0], with_children=True) + sum(proc_cpu(p) for p in pids[1:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_stalwart(port: int, workers: int) -> Server:
    folder = Path(tempfile.mkdtemp(prefix="stalwart-imap-bench-"))
    (folder / "config.toml").write_text(stalwart_config(port, workers))
    (folder / "data").mkdir()

    async def account() -> None:
        data = open_data_store("default", {"type": "lmdb", "path": str(folder / "data/lmdb")})
        manager = DirectoryManager(InternalDirectory(data))
        await manager.create_domain("bench.test")
        await manager.create_principal(USER, password=PASSWORD, emails=["user@bench.test"])
        await data.close()

    asyncio.run(account())
    with open(folder / "server.log", "ab") as log:  # the child keeps its own copy
        proc = subprocess.Popen([str(BIN / "stalwart-mp"), "serve", "--config",
                                 str(folder / "config.toml")], stdout=log,
                                stderr=subprocess.STDOUT)

    def pids() -> list[int]:
        try:
            st = json.loads((folder / "run" / "status.json").read_text())
            return [st["master_pid"], *(p["pid"] for p in st["processes"]
                                        if p["pid"] != st["master_pid"])]
        except (OSError, ValueError):
            return [proc.pid]

    srv = Server("stalwart-mp", port, folder, proc, pids)
    wait_banner(port, proc, folder / "server.log")
    return srv


def start_dovecot(port: int) -> Server:
    """A throwaway Dovecot 2.3: Maildir, static passdb (any user, one password), no TLS."""
    exe = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not Path(exe).exists():
        raise SystemExit("dovecot not found: apt-get install dovecot-imapd")
    folder = Path(tempfile.mkdtemp(prefix="dovecot-imap-bench-"))
    folder.chmod(0o755)  # the mail processes run as nobody
    (folder / "mail").mkdir()
    (folder / "run").mkdir()
    shutil.chown(folder / "mail", "nobody", "nogroup")
    conf = folder / "dovecot.conf"
    conf.write_text(f"""
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{folder}/mail/%u
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 0
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = static
  args = password={PASSWORD}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={folder}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 1024
}}
""")
    proc = subprocess.Popen([exe, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    srv = Server("dovecot", port, folder, proc, lambda: descendants(proc.pid))
    wait_banner(port, proc, folder / "dovecot.log")
    return srv


def start_pymap(port: int, exe: str) -> Server:
    """pymap (PyPI) with its in-memory backend, the benchmark's user as its demo user."""
    if not Path(exe).exists():
        raise SystemExit(f"pymap not found at {exe}: python3 -m venv /tmp/pymapenv && "
                         "/tmp/pymapenv/bin/pip install pymap (or --pymap PATH)")
    folder = Path(tempfile.mkdtemp(prefix="pymap-imap-bench-"))
    with open(folder / "pymap.log", "ab") as log:
        proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--no-tls",
                                 "dict", "--demo-data", "--demo-user", USER,
                                 "--demo-password", PASSWORD], stdout=log,
                                stderr=subprocess.STDOUT)
    srv = Server("pymap", port, folder, proc, lambda: descendants(proc.pid))
    wait_banner(port, proc, folder / "pymap.log")
    return srv


def wait_banner(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text(errors='replace')[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(200).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"no IMAP banner on {port}")


# --- a small IMAP client -------------------------------------------------------------------

class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader = reader
        self.writer = writer
        self.n = 0

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 24)
        c = cls(reader, writer)
        await reader.readline()
        await c.cmd(f"LOGIN {USER} {PASSWORD}".encode())
        return c

    async def cmd(self, line: bytes, literal: bytes | None = None) -> list[bytes]:
        self.n += 1
        tag = b"b%d" % self.n
        if literal is not None:
            self.writer.write(tag + b" " + line + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        else:
            self.writer.write(tag + b" " + line + b"\r\n")
        out = []
        while True:
            chunk = await self.reader.readline()
            if not chunk:
                raise ConnectionError("server closed the connection")
            m = _LITERAL.search(chunk)
            if m:
                chunk += await self.reader.readexactly(int(m.group(1)))
                continue_line = await self.reader.readline()
                chunk += continue_line
            out.append(chunk)
            if chunk.startswith(tag + b" "):
                if not chunk.startswith(tag + b" OK"):
                    raise RuntimeError(f"{line[:60]!r}: {chunk!r}")
                return out

    async def close(self) -> None:
        try:
            await self.cmd(b"LOGOUT")
        except (ConnectionError, RuntimeError):
            pass
        self.writer.close()


async def fill(port: int, count: int) -> None:
    """``count`` messages into INBOX, over 4 connections."""
    async def part(n: int) -> None:
        c = await Client.open(port)
        for i in range(n, count, 4):
            await c.cmd(b"APPEND INBOX", message(i))
        await c.close()

    await asyncio.gather(*(part(i) for i in range(4)))


@dataclass
class Load:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in COMMANDS})

    @property
    def ops(self) -> int:
        return sum(len(v) for v in self.latencies.values())


async def client(port: int, deadline: float, load: Load, count: int) -> None:
    c = await Client.open(port)
    rnd = random.Random(os.getpid() ^ id(c))
    flip = False
    while time.monotonic() < deadline:
        uid = rnd.randint(1, count)
        flip = not flip
        steps = [("SELECT", b"SELECT INBOX"),
                 ("FETCH 1:*", b"FETCH 1:* (FLAGS UID RFC822.SIZE)"),
                 ("UID FETCH BODY", b"UID FETCH %d BODY.PEEK[]" % uid),
                 ("UID STORE", b"UID STORE %d %sFLAGS (\\Flagged)" % (uid, b"+" if flip
                                                                       else b"-")),
                 ("NOOP", b"NOOP")]
        for name, line in steps:
            started = time.perf_counter()
            await c.cmd(line)
            load.latencies[name].append(time.perf_counter() - started)
    await c.close()


def pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def run_case(srv: Server, concurrency: int, seconds: float, count: int) -> dict:
    load = Load()
    cpu0 = srv.cpu()
    started = time.monotonic()
    deadline = started + seconds

    async def go() -> None:
        await asyncio.gather(*(client(srv.port, deadline, load, count)
                               for _ in range(concurrency)))

    asyncio.run(go())
    elapsed = time.monotonic() - started
    cpu = srv.cpu() - cpu0
    return {"ops": load.ops, "rate": load.ops / elapsed,
            "cpu_per_1000": cpu / max(load.ops, 1) * 1000,
            "p50": {k: pct(v, 0.5) for k, v in load.latencies.items()},
            "p99": {k: pct(v, 0.99) for k, v in load.latencies.items()}}


def report(name: str, c: int, r: dict) -> None:
    print(f"{name:12} C={c:<3} {r['rate']:8.0f} ops/s  {r['cpu_per_1000']:6.2f} CPU-s/1000 ops")
    for cmd in COMMANDS:
        print(f"    {cmd:16} p50 {r['p50'][cmd]:7.2f} ms   p99 {r['p99'][cmd]:7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,10")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=None, help="default: CPU count")
    parser.add_argument("--peer", default="",
                        help="comma-separated peers to compare with: dovecot, pymap")
    parser.add_argument("--pymap", default=os.environ.get("STALWART_BENCH_PYMAP",
                                                          "/tmp/pymapenv/bin/pymap"),
                        help="the pymap executable (a venv with `pip install pymap`)")
    parser.add_argument("--serve-only", action="store_true",
                        help="start the server with its messages and wait (for locust)")
    parser.add_argument("--imap-port", type=int, default=1143)
    args = parser.parse_args()
    workers = args.workers or os.cpu_count() or 1
    if args.serve_only:
        srv = start_stalwart(args.imap_port, workers)
        asyncio.run(fill(srv.port, args.messages))
        print(f"serving imap://127.0.0.1:{srv.port} user={USER} password={PASSWORD}",
              flush=True)
        import signal

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on TERM too
        try:
            srv.proc.wait()
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            srv.stop()
        return
    servers = [start_stalwart(free_port(), workers)]
    peers = [p for p in args.peer.split(",") if p]
    for peer in peers:
        if peer == "dovecot":
            servers.append(start_dovecot(free_port()))
        elif peer == "pymap":
            servers.append(start_pymap(free_port(), args.pymap))
        else:
            raise SystemExit(f"unknown peer {peer!r}: expected dovecot or pymap")
    results: dict[str, dict[int, dict]] = {}
    try:
        for srv in servers:
            asyncio.run(fill(srv.port, args.messages))
        for c in [int(x) for x in args.concurrency.split(",")]:
            for srv in servers:
                r = run_case(srv, c, args.seconds, args.messages)
                results.setdefault(srv.name, {})[c] = r
                report(srv.name, c, r)
            a = results["stalwart-mp"][c]
            for peer in servers[1:]:
                b = results[peer.name][c]
                print(f"    ratio stalwart-mp/{peer.name} at C={c}: {a['rate'] / b['rate']:.2f}x"
                      f" ops/s, {a['cpu_per_1000'] / max(b['cpu_per_1000'], 1e-9):.2f}x "
                      "CPU per op")
    finally:
        for srv in servers:
            srv.stop()


if __name__ == "__main__":
    main()
