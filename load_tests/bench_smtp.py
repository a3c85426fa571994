"""SMTP messages per second into a real stalwart-mp server, optionally side by side with Postfix.

Starts ``stalwart-mp serve`` itself (temporary directory, free loopback ports, the embedded
defaults: LMDB with sync commits, filesystem blobs with fsync, one worker per CPU) with the
account ``user@bench.test``, then for each concurrency C opens C SMTP connections that send
messages of --size bytes for --seconds: MAIL, RCPT, DATA, one command at a time (no
pipelining), over asyncio raw sockets so the client costs little. Prints messages/s, p50/p99
latency (from MAIL to the 250 after the data) and the server's CPU-seconds per 1,000
messages, read from /proc for the master and every child.

CPU is given twice: "at ack" stops the clock at the end of the load window; "all" also
counts the work the server does afterwards for those messages (stalwart-mp's queue process
indexes them for full-text search; Postfix's local(8) delivers them into the Maildir), until
the server is idle again.

With ``--peer postfix`` the same load runs against a throwaway Postfix on loopback (see
smtp_peer_postfix.py) in the same run and the ratio stalwart-mp/postfix is printed. The two
do not acknowledge the same thing: Postfix answers 250 once the queue file is fsync'd and
delivers into the Maildir later; stalwart-mp answers 250 after the message is durably
stored in the mailbox. The SPF/DKIM/DMARC/iprev checks of stalwart-mp's MX listener are
turned off, since Postfix does none of them by default.

    .venv/bin/python load_tests/bench_smtp.py [--concurrency 1,10,50] [--seconds 10]
                                              [--size 4096] [--peer postfix]
    .venv/bin/python load_tests/bench_smtp.py --serve-only [--smtp-port 2525]   # for locust
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.store.registry import open_data_store

BIN = Path(sys.executable).parent
SENDER = "bench@remote.test"
RECIPIENT = "user@bench.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETTLE_SECONDS = 120.0  # how long a server may take to finish the work a case left behind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(size: int, n: int) -> bytes:
    """A plain-text message of ``size`` bytes; lines never start with a dot (no stuffing)."""
    head = (f"From: Bench <{SENDER}>\r\nTo: {RECIPIENT}\r\nSubject: SMTP benchmark {n}\r\n"
            f"Message-ID: <{n}.{os.getpid()}.{time.time_ns()}@remote.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head) - 2)]
    return head + body.rstrip(b"\r\n") + b"\r\n"


# --- the server under test -------------------------------------------------------------

def server_config(smtp_port: int, workers: int) -> str:
    """`stalwart-mp init --dev-ports` defaults, on free ports, with one SMTP (MX) listener."""
    return f"""
[server]
hostname = "mx.bench.test"
workers = {workers}
allow-root = true

[server.listener.smtp]
bind = ["127.0.0.1:{smtp_port}"]
protocol = "smtp"

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

[smtp]
checks.spf = false
checks.dkim = false
checks.iprev = false
checks.dmarc = false

[control]
bind = "127.0.0.1:{free_port()}"

[logging]
level = "info"
"""


def create_account(folder: Path) -> None:
    """user@bench.test, written into the data store before the server opens it."""
    async def run() -> None:
        data = open_data_store("default", {"type": "lmdb",
                                           "path": str(folder / "data" / "lmdb")})
        manager = DirectoryManager(InternalDirectory(data))
        await manager.create_domain("bench.test")
        await manager.create_principal("user", emails=[RECIPIENT])
        await data.close()

    asyncio.run(run())


@dataclass
class StalwartServer:
    """``stalwart-mp serve`` in a temporary directory; stop() removes the directory."""

    folder: Path
    smtp_port: int
    workers: int
    proc: subprocess.Popen | None = None

    @classmethod
    def start(cls, smtp_port: int | None = None, workers: int | None = None) -> StalwartServer:
        folder = Path(tempfile.mkdtemp(prefix="stalwart-bench-"))
        srv = cls(folder, smtp_port or free_port(), workers or os.cpu_count() or 1)
        (folder / "config.toml").write_text(server_config(srv.smtp_port, srv.workers))
        (folder / "data").mkdir()
        create_account(folder)
        with open(folder / "server.log", "ab") as log:  # the child keeps its own copy
            srv.proc = subprocess.Popen(
                [str(BIN / "stalwart-mp"), "serve", "--config", str(folder / "config.toml")],
                stdout=log, stderr=subprocess.STDOUT)
        try:
            srv.wait_ready()
        except Exception:
            srv.stop()
            raise
        return srv

    def status(self) -> dict | None:
        try:
            return json.loads((self.folder / "run" / "status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def pids(self) -> list[int]:
        """The master first, then every child it reports in status.json."""
        st = self.status() or {"master_pid": self.proc.pid, "processes": []}
        return [st["master_pid"], *(p["pid"] for p in st["processes"])]

    def cpu_by_kind(self) -> dict[str, float]:
        """CPU-seconds per process kind (master, worker, queue...), to see where time goes."""
        st = self.status() or {"master_pid": self.proc.pid, "processes": []}
        out = {"master": proc_cpu(st["master_pid"], with_children=True)}
        for p in st["processes"]:
            out[p["kind"]] = out.get(p["kind"], 0.0) + proc_cpu(p["pid"])
        return out

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Every worker up (status.json) and the SMTP banner served."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stalwart-mp exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            st = self.status()
            workers = [p for p in (st or {}).get("processes", []) if p["kind"] == "worker"]
            if len(workers) >= self.workers and banner_ok(self.smtp_port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"stalwart-mp not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.folder, ignore_errors=True)


def banner_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            return s.recv(512).startswith(b"220")
    except OSError:
        return False


# --- CPU accounting from /proc ---------------------------------------------------------

def proc_cpu(pid: int, with_children: bool = False) -> float:
    """utime+stime of a process (plus its reaped children's), in seconds; 0 if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = raw[raw.rindex(")") + 2:].split()  # the name may hold spaces; skip past it
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    if with_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: children already reaped
    return ticks / CLK_TCK


def descendants(root: int) -> list[int]:
    """root and every process below it, for servers (Postfix) that publish no pid list."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2:].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def tree_cpu(pids: list[int]) -> float:
    """CPU of the listed processes; the first (the master) also brings its reaped children."""
    return sum(proc_cpu(pid, with_children=i == 0) for i, pid in enumerate(pids))


def wait_idle(pids: Callable[[], list[int]], done: Callable[[], bool] = lambda: True,
              timeout: float = 30.0) -> bool:
    """Wait until ``done()`` and the processes use < 3% of a core over 0.5 s; False on timeout.

    Run between cases so one server's leftover work (indexing, Maildir delivery) neither
    lands on the next case nor is left out of the "all" CPU figure.
    """
    deadline = time.monotonic() + timeout
    last = tree_cpu(pids())
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = tree_cpu(pids())
        if done() and now - last < 0.015:
            return True
        last = now
    return False


# --- the SMTP load ---------------------------------------------------------------------

class SmtpError(Exception):
    """A reply other than the expected one; the session goes on with RSET."""


async def reply(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One (possibly multi-line) reply: its code and its last line."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3]), line


async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes,
                  expect: int) -> None:
    writer.write(line)
    code, text = await reply(reader)
    if code != expect:
        raise SmtpError(f"{line.strip()!r} -> {text.strip()!r}")


@dataclass
class Load:
    """What one case measured: latencies of the messages acknowledged in the window."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    sent: int = 0
    first_error: str = ""


async def send_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   data: bytes) -> None:
    """MAIL, RCPT, DATA, the message and the final dot, each reply awaited (no pipelining)."""
    await command(reader, writer, f"MAIL FROM:<{SENDER}>\r\n".encode(), 250)
    await command(reader, writer, f"RCPT TO:<{RECIPIENT}>\r\n".encode(), 250)
    await command(reader, writer, b"DATA\r\n", 354)
    writer.write(data + b".\r\n")
    code, text = await reply(reader)
    if code != 250:
        raise SmtpError(f"end of data -> {text.strip()!r}")


async def client(port: int, size: int, deadline: float, load: Load) -> None:
    """One connection sending messages until the deadline; errors counted, session kept."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await reply(reader)
        await command(reader, writer, b"EHLO client.remote.test\r\n", 250)
        while time.perf_counter() < deadline:
            load.sent += 1
            data = message(size, load.sent)
            started = time.perf_counter()
            try:
                await send_one(reader, writer, data)
            except SmtpError as exc:
                load.errors += 1
                load.first_error = load.first_error or str(exc)
                await command(reader, writer, b"RSET\r\n", 250)
                continue
            load.latencies.append(time.perf_counter() - started)
        await command(reader, writer, b"QUIT\r\n", 221)
    finally:
        writer.close()


async def run_load(port: int, concurrency: int, size: int, seconds: float) -> tuple[Load, float]:
    load = Load()
    started = time.perf_counter()
    await asyncio.gather(*(client(port, size, started + seconds, load)
                           for _ in range(concurrency)))
    return load, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Result:
    peer: str
    concurrency: int
    messages: int
    errors: int
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_at_ack: float  # server CPU-seconds per 1,000 messages, load window only
    cpu_all: float     # ... including the work left after the window
    settled: bool
    note: str = ""
    split: dict[str, float] = field(default_factory=dict)  # CPU s/1k by process kind, all


def measure(peer: str, port: int, pids: Callable[[], list[int]], concurrency: int,
            size: int, seconds: float, done_after: Callable[[int], bool],
            quiet: Callable[[], list[int]], by_kind: Callable[[], dict[str, float]] = dict
            ) -> Result:
    """One case: idle servers, the load, then wait for its leftover work to finish.

    ``quiet`` lists the processes of every server in the run: one server's backlog (say,
    indexing) must not eat the CPU of the next case, which runs against the other one.
    """
    wait_idle(quiet, timeout=SETTLE_SECONDS)
    before = tree_cpu(pids())
    kinds_before = by_kind()
    load, elapsed = asyncio.run(run_load(port, concurrency, size, seconds))
    at_ack = tree_cpu(pids()) - before
    n = len(load.latencies)
    settled = wait_idle(pids, lambda: done_after(n), timeout=SETTLE_SECONDS)
    total = tree_cpu(pids()) - before
    per_k = 1000 / n if n else float("nan")
    split = {k: (v - kinds_before.get(k, 0.0)) * per_k for k, v in by_kind().items()}
    return Result(peer, concurrency, n, load.errors, n / elapsed,
                  percentile(load.latencies, 0.50) * 1000,
                  percentile(load.latencies, 0.99) * 1000,
                  at_ack * per_k, total * per_k, settled, load.first_error, split)


# --- output ----------------------------------------------------------------------------

def print_results(results: list[Result]) -> None:
    print(f"\n{'server':<12} {'C':>3} {'messages':>8} {'err':>4} {'msg/s':>8} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'CPU s/1k at ack':>16} {'CPU s/1k all':>13}")
    for r in results:
        mark = "" if r.settled else f" (not idle after {SETTLE_SECONDS:.0f} s)"
        print(f"{r.peer:<12} {r.concurrency:>3} {r.messages:>8} {r.errors:>4} "
              f"{r.per_second:>8.0f} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} "
              f"{r.cpu_at_ack:>16.2f} {r.cpu_all:>13.2f}{mark}")
    for r in results:
        if r.split:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.split.items()))
            print(f"  {r.peer} C={r.concurrency}: CPU s/1k all, by process: {parts}")
        if r.note:
            print(f"  {r.peer} C={r.concurrency}: first error: {r.note}")


def print_ratios(results: list[Result]) -> None:
    mine = {r.concurrency: r for r in results if r.peer == "stalwart-mp"}
    peer = {r.concurrency: r for r in results if r.peer == "postfix"}
    if not peer:
        return
    print("\nstalwart-mp / postfix (msg/s: above 1 is faster; latency and CPU: above 1 costs "
          "more)")
    print(f"{'C':>3} {'msg/s':>7} {'p50':>7} {'p99':>7} {'CPU at ack':>11} {'CPU all':>8}")
    for c in sorted(mine.keys() & peer.keys()):
        a, b = mine[c], peer[c]
        print(f"{c:>3} {a.per_second / b.per_second:>7.2f} {a.p50_ms / b.p50_ms:>7.2f} "
              f"{a.p99_ms / b.p99_ms:>7.2f} {a.cpu_at_ack / b.cpu_at_ack:>11.2f} "
              f"{a.cpu_all / b.cpu_all:>8.2f}")
    print("\nNot the same acknowledgement: stalwart-mp sends 250 after the message is durably "
          "stored in the\nmailbox (LMDB sync commit + fsync'd blob); Postfix sends 250 after "
          "its queue file is fsync'd\nand delivers to the Maildir afterwards (local(8)). "
          "'CPU all' counts that later work for both\n(Postfix's Maildir delivery, "
          "stalwart-mp's full-text indexing). SPF/DKIM/DMARC/iprev off in stalwart-mp.")


# --- entry points ----------------------------------------------------------------------

def serve_only(port: int) -> None:
    """Start the server with the bench account and wait, for locust or manual tests."""
    srv = StalwartServer.start(smtp_port=port)
    print(f"stalwart-mp ready: smtp://127.0.0.1:{srv.smtp_port} (RCPT {RECIPIENT}), "
          f"{srv.workers} workers, dir {srv.folder}; Ctrl-C stops it", flush=True)
    stop = {"now": False}

    def handler(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        while not stop["now"] and srv.proc.poll() is None:
            time.sleep(0.2)
    finally:
        srv.stop()


def benchmark(args: argparse.Namespace) -> None:
    levels = [int(c) for c in args.concurrency.split(",")]
    srv = StalwartServer.start(workers=args.workers)
    peer = None
    try:
        if args.peer == "postfix":
            from smtp_peer_postfix import PostfixPeer

            peer = PostfixPeer.start(free_port())
        print(f"{args.size} B messages, {args.seconds:.0f} s per case, stalwart-mp with "
              f"{srv.workers} workers on {os.cpu_count()} CPUs"
              + (", postfix peer (defaults, no chroot)" if peer else ""), flush=True)
        def postfix_pids() -> list[int]:
            return descendants(peer.master_pid()) if peer else []

        def everyone() -> list[int]:
            return srv.pids() + postfix_pids()

        results = []
        for c in levels:
            results.append(measure("stalwart-mp", srv.smtp_port, srv.pids, c, args.size,
                                   args.seconds, lambda n: True, everyone, srv.cpu_by_kind))
            if peer:
                base = peer.delivered()
                results.append(measure(
                    "postfix", peer.port, postfix_pids, c, args.size, args.seconds,
                    lambda n, base=base: peer.delivered() >= base + n, everyone))
            print_results(results[-2 if peer else -1:])
        print("\n=== summary ===")
        print_results(results)
        print_ratios(results)
    finally:
        srv.stop()
        if peer:
            peer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,10,50",
                        help="comma-separated numbers of concurrent connections")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each case")
    parser.add_argument("--size", type=int, default=4096, help="message size in bytes")
    parser.add_argument("--workers", type=int, default=None, help="default: CPU count")
    parser.add_argument("--peer", choices=["postfix"], default=None,
                        help="also run the load against a throwaway Postfix (needs root)")
    parser.add_argument("--serve-only", action="store_true",
                        help="start the server with user@bench.test and wait (for locust)")
    parser.add_argument("--smtp-port", type=int, default=2525, help="port for --serve-only")
    args = parser.parse_args()
    if args.serve_only:
        serve_only(args.smtp_port)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
