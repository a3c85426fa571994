"""Deliveries per second into the mail model, showing what group commit buys.

Delivers messages of 4 KiB and 100 KiB to one local account with 1, 10 and 50 concurrent
deliveries, on the embedded defaults (LMDB data store with sync commits, filesystem blobs
with fsync), and prints deliveries/s, commits made and the speed-up over 1 concurrent.
Every delivery is durable before it counts, exactly as the SMTP session will acknowledge.

    .venv/bin/python load_tests/bench_delivery.py [--seconds 5] [--sizes 4096,102400]
                                                  [--concurrency 1,10,50] [--dir PATH]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from pathlib import Path

from stalwart_mp.directory.cache import CachedDirectory
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.delivery import Delivery, Status
from stalwart_mp.mail.store import MailStore
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.coalesce import CoalescingDataStore
from stalwart_mp.store.registry import open_data_store


def message(size: int, n: int) -> bytes:
    head = (f"From: Bench <bench@remote.test>\r\nTo: user@bench.test\r\n"
            f"Subject: Benchmark message {n}\r\nMessage-ID: <{n}.{os.getpid()}@remote.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head))]
    return head + body


async def run_case(folder: Path, size: int, concurrency: int, seconds: float) -> dict:
    # as the server opens it (stalwart_mp/services.py): writes coalesced into group commits
    data = CoalescingDataStore(open_data_store("data", {"type": "lmdb",
                                                        "path": str(folder / "lmdb")}))
    blobs = open_blob_store("blobs", {"type": "fs", "path": str(folder / "blobs")}, data)
    directory = InternalDirectory(data)
    manager = DirectoryManager(directory)
    await manager.create_domain("bench.test")
    await manager.create_principal("user", emails=["user@bench.test"])
    committer = GroupCommitter(data, blobs)
    # the per-worker directory cache, as stalwart_mp/services.py sets it up
    delivery = Delivery(MailStore(data, committer), blobs, CachedDirectory(directory))
    counter = 0
    done = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal counter, done
        while time.perf_counter() < deadline:
            counter += 1
            (result,) = await delivery.deliver(message(size, counter), "bench@remote.test",
                                               ["user@bench.test"])
            assert result.status == Status.DELIVERED, result
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await blobs.close()
    await data.close()
    return {"size": size, "concurrency": concurrency, "deliveries": done,
            "per_second": done / elapsed, "commits": data.commits}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sizes", default="4096,102400")
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to create the stores (default: a temporary folder; use a "
                        "folder on the disk you will run on: fsync speed is the point)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bench-delivery-", dir=args.dir))
    print(f"{'size':>8} {'concurrent':>10} {'deliveries/s':>13} {'commits':>8} "
          f"{'per commit':>10} {'speed-up':>9}")
    try:
        for size in sizes:
            base = None
            for level in levels:
                folder = root / f"{size}-{level}"
                folder.mkdir()
                r = await run_case(folder, size, level, args.seconds)
                base = base or r["per_second"]
                print(f"{size:>8} {level:>10} {r['per_second']:>13.1f} {r['commits']:>8} "
                      f"{r['deliveries'] / max(1, r['commits']):>10.1f} "
                      f"{r['per_second'] / base:>8.1f}x", flush=True)
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
