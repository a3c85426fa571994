"""Deliveries per second into the mail model, showing what group commit buys.

Delivers messages of 4 KiB and 100 KiB to one local account with 1, 10 and 50 concurrent
deliveries, on the embedded defaults (LMDB data store with sync commits, filesystem blobs
made durable by group sync), and prints deliveries/s, commits made, group-commit rounds
re-run because another process committed to the account first, and the speed-up over 1
concurrent.
Every delivery is durable before it counts, exactly as the SMTP session will acknowledge.

    .venv/bin/python load_tests/bench_delivery.py [--seconds 5] [--sizes 4096,102400]
                                                  [--concurrency 1,10,50] [--dir PATH]

What group commit saves is flushes, so the speed-up depends on what a flush costs on the
file system under ``--dir``, which the first line of output names. On ext4 without a journal
(some VM images), a flush is so cheap that 1 concurrent delivery is bound by the CPU, not by
the disk. On a journaled file system (what a Debian install makes), each flush costs a journal
commit. To measure on one where the machine has none, mount an image::

    truncate -s 20G /var/tmp/bench.img && mkfs.ext4 -q -F /var/tmp/bench.img
    mount -o loop /var/tmp/bench.img /mnt && losetup --direct-io=on "$(findmnt -no SOURCE /mnt)"
    .venv/bin/python load_tests/bench_delivery.py --dir /mnt

Start runs a minute apart on ext4 without a journal (see the clean-up at the end of main).
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
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
    head = (f"From: Bench <bench@remote.test>\r\nTo: user0@bench.test\r\n"
            f"Subject: Benchmark message {n}\r\nMessage-ID: <{n}.{os.getpid()}@remote.test>\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again. 0123456789\r\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head))]
    return head + body


def describe_filesystem(path: Path) -> str:
    """The file system holding ``path``: its type, device and, for ext4, whether it has a
    journal (from /proc/self/mountinfo and /sys/fs/ext4; Linux only)."""
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    path, best = path.resolve(), None
    for line in mounts:
        fields = line.split()
        mount_point = Path(fields[4].replace("\\040", " "))
        if path.is_relative_to(mount_point) and (best is None or
                                                 len(mount_point.parts) >= len(best[0].parts)):
            rest = fields[fields.index("-") + 1:]
            best = (mount_point, rest[0], rest[1])
    if best is None:
        return "unknown"
    mount_point, fstype, device = best
    text = f"{fstype} on {device} at {mount_point}"
    if fstype == "ext4":
        try:
            task = (Path("/sys/fs/ext4") / Path(device).name / "journal_task").read_text()
            text += (", without a journal" if task.strip() in ("", "<none>")
                     else ", with a journal")
        except OSError:
            pass
    return text


def recipient(n: int, accounts: int) -> str:
    return f"user{n % accounts}@bench.test"


async def setup_accounts(folder: Path, accounts: int) -> None:
    data = open_data_store("data", {"type": "lmdb", "path": str(folder / "lmdb")})
    manager = DirectoryManager(InternalDirectory(data))
    await manager.create_domain("bench.test")
    for n in range(accounts):
        await manager.create_principal(f"user{n}", emails=[recipient(n, accounts)])
    await data.close()


async def deliver_for(folder: Path, size: int, concurrency: int, start_at: float,
                      seconds: float, first: int, accounts: int,
                      blob_sync: str = "filesystem") -> tuple[int, int, int]:
    """One process's share: ``concurrency`` deliveries at a time from ``start_at`` for
    ``seconds``; returns (deliveries, commits, rounds re-run after a conflict with the
    other processes). Stores opened as stalwart_mp/services.py
    opens them in a worker: writes coalesced into group commits, directory cached."""
    data = CoalescingDataStore(open_data_store("data", {"type": "lmdb",
                                                        "path": str(folder / "lmdb")}))
    blobs = open_blob_store("blobs", {"type": "fs", "path": str(folder / "blobs"),
                                      "sync": blob_sync}, data)
    directory = InternalDirectory(data)
    committer = GroupCommitter(data, blobs)
    delivery = Delivery(MailStore(data, committer), blobs, CachedDirectory(directory))
    # warm up outside the measurement (folders, directory cache), as a running worker is
    for n in range(accounts):
        (r,) = await delivery.deliver(message(size, first), "bench@remote.test",
                                      [recipient(n, accounts)])
        assert r.status == Status.DELIVERED, r
    counter, done = first + 1, 0
    await asyncio.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + seconds
    commits_before, conflicts_before = data.commits, committer.conflicts

    async def client() -> None:
        nonlocal counter, done
        while time.perf_counter() < deadline:
            counter += 1
            (result,) = await delivery.deliver(message(size, counter), "bench@remote.test",
                                               [recipient(counter, accounts)])
            assert result.status == Status.DELIVERED, result
            done += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    commits = data.commits - commits_before
    conflicts = committer.conflicts - conflicts_before
    await blobs.close()
    await data.close()
    return done, commits, conflicts


def _process_main(args: tuple) -> tuple[int, int, int]:
    import uvloop  # the event loop of the server's workers

    return uvloop.run(deliver_for(*args))


def run_case(folder: Path, size: int, concurrency: int, seconds: float, workers: int,
             accounts: int, blob_sync: str = "filesystem") -> dict:
    """``concurrency`` deliveries at a time spread over ``workers`` processes, as the
    server's workers share the connections (each process group-commits its own)."""
    asyncio.run(setup_accounts(folder, accounts))
    procs = max(1, min(workers, concurrency))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    start_at = time.time() + 1.0 + 0.2 * procs   # every process opened and warmed up first
    jobs = [(folder, size, share, start_at, seconds, i * 10_000_000, accounts, blob_sync)
            for i, share in enumerate(shares)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        results = pool.map(_process_main, jobs)
    done = sum(r[0] for r in results)
    return {"size": size, "concurrency": concurrency, "deliveries": done,
            "per_second": done / seconds, "commits": sum(r[1] for r in results),
            "conflicts": sum(r[2] for r in results), "processes": procs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sizes", default="4096,102400")
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes sharing the deliveries, as the server's workers "
                        "(server.workers defaults to the number of CPUs; default: %(default)s); "
                        "1 shows one process's group commit alone")
    parser.add_argument("--blob-sync", choices=("filesystem", "file"), default="filesystem",
                        help="the fs blob store's store.*.sync: one syncfs per round of "
                        "deliveries (the default) or an fsync of every blob file and folder")
    parser.add_argument("--accounts", type=int, default=1,
                        help="recipient accounts, delivered to in turn (default: 1, the "
                        "hardest case: every delivery contends for one account's state)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to create the stores (default: a temporary folder; use a "
                        "folder on the disk you will run on: fsync speed is the point)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    root = Path(tempfile.mkdtemp(prefix="bench-delivery-", dir=args.dir))
    print(f"stores under {root}: {describe_filesystem(root)}")
    print(f"{'size':>8} {'concurrent':>10} {'processes':>9} {'deliveries/s':>13} "
          f"{'commits':>8} {'per commit':>10} {'re-run':>7} {'speed-up':>9}")
    try:
        for size in sizes:
            base = None
            for level in levels:
                folder = root / f"{size}-{level}"
                folder.mkdir()
                r = run_case(folder, size, level, args.seconds, args.workers, args.accounts,
                             args.blob_sync)
                base = base or r["per_second"]
                print(f"{size:>8} {level:>10} {r['processes']:>9} {r['per_second']:>13.1f} "
                      f"{r['commits']:>8} "
                      f"{r['deliveries'] / max(1, r['commits']):>10.1f} "
                      f"{r['conflicts']:>7} "
                      f"{r['per_second'] / base:>8.1f}x", flush=True)
    finally:
        # Removed only at the end: on ext4 without a journal, creating an inode skips
        # (one by one) those deleted in the last minute, so removing a case's thousands
        # of files just before the next case slowed that case by up to a half (perf:
        # find_inode_bit -> recently_deleted). Start runs a minute apart for that reason.
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
