"""Full-text indexing speed: what the queue process's indexer keeps up with.

Delivers ``--messages`` messages of each size to one account (as bench_delivery does, 50 at
a time), then runs the indexer (``background/indexer.py``) over them into a Whoosh index,
batch after batch until none is pending, and prints messages indexed per second and the
CPU time per message (the indexer's own process: reading the blob back, parsing it for its
text, normalising and stemming, Whoosh's segment writing, clearing the pending marks).

    .venv/bin/python load_tests/bench_indexer.py [--messages 2000] [--sizes 4096,102400]
                                                 [--batch 100] [--dir PATH]

Delivery does not wait for indexing (search sees a message a moment later), so this is
the rate that search keeps up with under a sustained load, not a limit on delivery.
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from bench_delivery import message, setup_accounts

from stalwart_mp.background.indexer import Indexer
from stalwart_mp.directory.cache import CachedDirectory
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.delivery import Delivery, Status
from stalwart_mp.mail.store import MailStore
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.coalesce import CoalescingDataStore
from stalwart_mp.store.fts import open_fts_store
from stalwart_mp.store.registry import open_data_store


async def run_case(folder: Path, size: int, messages: int, batch: int) -> dict:
    await setup_accounts(folder, 1)
    data = CoalescingDataStore(open_data_store("data", {"type": "lmdb",
                                                        "path": str(folder / "lmdb")}))
    blobs = open_blob_store("blobs", {"type": "fs", "path": str(folder / "blobs")}, data)
    delivery = Delivery(MailStore(data, GroupCommitter(data, blobs)), blobs,
                        CachedDirectory(InternalDirectory(data)))
    slots = asyncio.Semaphore(50)

    async def deliver(n: int) -> None:
        async with slots:
            (r,) = await delivery.deliver(message(size, n), "bench@remote.test",
                                          ["user0@bench.test"])
            assert r.status == Status.DELIVERED, r

    await asyncio.gather(*(deliver(n) for n in range(messages)))
    fts = open_fts_store("search", {"type": "whoosh", "path": str(folder / "fts")})
    indexer = Indexer(data, blobs, fts, batch)
    cpu, wall, done = time.process_time(), time.perf_counter(), 0
    while (n := await indexer.run_once()) > 0:
        done += n
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await fts.close()
    await blobs.close()
    await data.close()
    return {"indexed": done, "per_second": done / wall, "cpu_ms": cpu / max(1, done) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sizes", default="4096,102400")
    parser.add_argument("--batch", type=int, default=100,
                        help="messages per indexer round (search.index-batch; default: "
                        "%(default)s)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to create the stores (default: a temporary folder)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-indexer-", dir=args.dir))
    print(f"{'size':>8} {'messages':>9} {'indexed/s':>10} {'CPU ms per message':>19}")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            folder = root / str(size)
            folder.mkdir()
            r = asyncio.run(run_case(folder, size, args.messages, args.batch))
            print(f"{size:>8} {r['indexed']:>9} {r['per_second']:>10.0f} {r['cpu_ms']:>19.2f}",
                  flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
