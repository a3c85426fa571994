"""Outbound queue throughput and latency on a real ``stalwart-mp serve``.

Two phases against a loopback SMTP sink (the "remote MX", reached through a smarthost
route so no DNS is involved):

1. drain: ``--messages`` (10,000) messages are put in the queue before the server starts
   (queue records and blobs written into its LMDB store, as the submission path writes
   them); the queue process then delivers them. Prints deliveries per second from the
   server being ready to the last acceptance at the sink.
2. live: ``--live`` (1,000) messages submitted on port 587 by an authenticated user over
   ``--concurrency`` connections; for each, the time from the server's 250 to the sink's
   acceptance of that message. Prints p50/p99 and deliveries per second.

    .venv/bin/python load_tests/bench_queue.py [--messages 10000] [--live 1000]
                                               [--concurrency 10] [--size 4096]
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.smtp.queue.store import QueuedMessage, QueuedRecipient, enqueue
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.registry import open_data_store

BIN = Path(sys.executable).parent
SENDER = "user@bench.test"
_ID = re.compile(rb"Message-ID: <(\d+)\.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def message(size: int, n: int) -> bytes:
    head = (f"From: Bench <{SENDER}>\r\nTo: rcpt{n}@sink.test\r\nSubject: queue benchmark {n}"
            f"\r\nMessage-ID: <{n}.{os.getpid()}@bench.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head) - 2)]
    return head + body.rstrip(b"\r\n") + b"\r\n"


class Sink:
    """A fast loopback MX in a thread: records the acceptance time of each message by the
    number in its Message-ID."""

    def __init__(self) -> None:
        self.accepted: dict[int, float] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> Sink:
        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.session, "127.0.0.1", 0), self.loop).result(10)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def session(self, reader, writer) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    m = _ID.search(data)
                    if m:
                        self.accepted[int(m.group(1))] = time.time()
                    writer.write(b"250 2.0.0 ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()


def config(folder: Path, submission: int, http: int, sink: int) -> str:
    return f"""
[server]
hostname = "mx.bench.test"
workers = {os.cpu_count() or 1}
allow-root = true

[server.listener.http]
bind = ["127.0.0.1:{http}"]
protocol = "http"

[server.listener.submission]
bind = ["127.0.0.1:{submission}"]
protocol = "submission"

[store."default"]
type = "lmdb"
path = "data/lmdb"

[store."search"]
type = "whoosh"
path = "data/fts"

[storage]
data = "default"
fts = "search"

[smtp]
rate-limit.sender = 0

[outbound]
relay.host = "127.0.0.1"
relay.port = {sink}
relay.tls = "none"
concurrency = 200
concurrency-per-domain = 50

[control]
bind = "127.0.0.1:{free_port()}"

[logging]
level = "warning"
"""


async def prepare(folder: Path, count: int, size: int) -> None:
    """The account, and ``count`` queued messages, written before the server starts."""
    data = open_data_store("default", {"type": "lmdb", "path": str(folder / "data" / "lmdb")})
    blobs = open_blob_store("default", {"type": "lmdb"}, data)
    manager = DirectoryManager(InternalDirectory(data))
    await manager.create_domain("bench.test")
    await manager.create_principal("user", password="bench-pw", emails=[SENDER])
    now = time.time()
    for start in range(0, count, 500):
        async def one(n: int) -> None:
            raw = message(size, n)
            blob_id = await blobs.put(raw)
            await enqueue(data, blobs, QueuedMessage(
                0, SENDER, [QueuedRecipient(f"rcpt{n}@sink.test")], blob_id, len(raw),
                now, now))
        await asyncio.gather(*(one(n) for n in range(start, min(count, start + 500))))
    await blobs.close()
    await data.close()


def wait_ready(proc: subprocess.Popen, folder: Path, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((folder / "server.log").read_text()[-4000:])
        try:
            status = json.loads((folder / "run" / "status.json").read_text())
            kinds = [p["kind"] for p in status["processes"]]
            if "queue" in kinds and kinds.count("worker") >= 1:
                with socket.create_connection(("127.0.0.1", port), 1) as s:
                    if s.recv(100).startswith(b"220"):
                        return
        except (OSError, FileNotFoundError, json.JSONDecodeError, KeyError):
            pass
        time.sleep(0.05)
    raise RuntimeError("server not ready")


class Client:
    """One authenticated submission connection (AUTH is done before the clock starts:
    password hashing is not what is measured)."""

    async def open(self, port: int) -> Client:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        await self.reply()
        await self.command("EHLO bench")
        token = base64.b64encode(b"\0user\0bench-pw").decode()
        answer = await self.command(f"AUTH PLAIN {token}")
        if not answer.startswith(b"235"):
            raise RuntimeError(f"AUTH refused: {answer!r}")
        return self

    async def reply(self) -> bytes:
        while True:
            line = await self.reader.readline()
            if line[3:4] != b"-":
                return line

    async def command(self, line: str) -> bytes:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def send(self, numbers: list[int], size: int, acks: dict[int, float]) -> None:
        for n in numbers:
            await self.command(f"MAIL FROM:<{SENDER}>")
            await self.command(f"RCPT TO:<rcpt{n}@sink.test>")
            await self.command("DATA")
            self.writer.write(message(size, n) + b".\r\n")
            if (await self.reply()).startswith(b"250"):
                acks[n] = time.time()
        await self.command("QUIT")
        self.writer.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else 0.0


def run(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="stalwart-bench-queue-"))
    sink = Sink().start()
    submission, http = free_port(), free_port()
    (folder / "config.toml").write_text(config(folder, submission, http, sink.port))
    (folder / "data").mkdir()
    t = time.time()
    asyncio.run(prepare(folder, args.messages, args.size))
    print(f"queued {args.messages} messages of {args.size} bytes in {time.time() - t:.1f}s")
    with open(folder / "server.log", "ab") as log:
        proc = subprocess.Popen([str(BIN / "stalwart-mp"), "serve", "--config",
                                 str(folder / "config.toml")], stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_ready(proc, folder, submission)
        ready = time.time()
        deadline = time.monotonic() + args.timeout
        while len(sink.accepted) < args.messages and time.monotonic() < deadline:
            time.sleep(0.05)
        done = len(sink.accepted)
        last = max(sink.accepted.values(), default=ready)
        print(f"drain: {done}/{args.messages} delivered in {last - ready:.1f}s = "
              f"{done / max(last - ready, 1e-9):.0f} deliveries/s")
        # live: acknowledgement (250 on 587) to acceptance at the sink
        first = 1_000_000
        numbers = list(range(first, first + args.live))
        acks: dict[int, float] = {}
        t0 = 0.0

        async def clients() -> None:
            nonlocal t0
            c = args.concurrency
            opened = [await Client().open(submission) for _ in range(c)]
            t0 = time.time()
            await asyncio.gather(*(client.send(numbers[i::c], args.size, acks)
                                   for i, client in enumerate(opened)))

        asyncio.run(clients())
        deadline = time.monotonic() + args.timeout
        while sum(1 for n in numbers if n in sink.accepted) < len(acks) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        latencies = [sink.accepted[n] - acks[n] for n in acks if n in sink.accepted]
        end = max((sink.accepted[n] for n in acks if n in sink.accepted), default=t0)
        print(f"live: {len(acks)} submitted on 587 ({args.concurrency} connections), "
              f"{len(latencies)} delivered, {len(latencies) / max(end - t0, 1e-9):.0f} "
              f"end-to-end deliveries/s")
        print(f"      250 -> remote acceptance: p50 {percentile(latencies, .5) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, .99) * 1000:.0f} ms")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--live", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep the server's folder")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
