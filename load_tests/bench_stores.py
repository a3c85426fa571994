"""Data-store benchmark: the same operations on every backend, through the DataStore API.

    .venv/bin/python load_tests/bench_stores.py [--backends lmdb,sqlite,...] [--seconds 2]

For each backend: point ``get`` of a random key, ``range`` of 100 keys from a random
start, and durable commits of write batches of 1, 10 and 100 puts. Each figure is one
coroutine issuing requests back to back for ``--seconds`` (``--concurrency`` runs several
at once), so it measures the latency-bound rate a single session sees; group commit is what
turns many sessions into larger batches, hence the batch sizes. Commits are durable on every
backend (fsync / WAL flush), so the commit figures mostly measure the disk.

Network backends use a fresh table, dropped afterwards. Connection settings come from the
environment, with local defaults:
  STALWART_BENCH_PG_HOST/PORT/USER/PASSWORD/DATABASE      (127.0.0.1 5432 postgres "" test)
  STALWART_BENCH_MYSQL_HOST/PORT/USER/PASSWORD/DATABASE   (127.0.0.1 3306 root "" test)
An unreachable backend is skipped with the reason. A benchmark, not a test: nothing is
asserted (CONVENTIONS.md §7).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from stalwart_mp.store.data import DataStore, StoreError, WriteBatch
from stalwart_mp.store.registry import open_data_store

BACKENDS = ("lmdb", "sqlite", "postgresql", "mysql", "memory")
COLUMNS = ("get", "range100", "commit1", "commit10", "commit100")
TAG_READ, TAG_WRITE = 0x10, 0x20


def _env(prefix: str, key: str, default: str) -> str:
    return os.environ.get(f"STALWART_BENCH_{prefix}_{key}", default)


def network_settings(kind: str, table: str) -> dict[str, Any]:
    prefix, port, user = ("PG", "5432", "postgres") if kind == "postgresql" else (
        "MYSQL", "3306", "root")
    return {
        "type": kind,
        "host": _env(prefix, "HOST", "127.0.0.1"),
        "port": int(_env(prefix, "PORT", port)),
        "user": _env(prefix, "USER", user),
        "password": _env(prefix, "PASSWORD", ""),
        "database": _env(prefix, "DATABASE", "test"),
        "table": table,
        "pool-size": 16,
        "timeout": 5,
    }


def settings_for(kind: str, folder: Path) -> dict[str, Any]:
    if kind == "lmdb":
        return {"type": "lmdb", "path": str(folder / "lmdb")}
    if kind == "sqlite":
        return {"type": "sqlite", "path": str(folder / "data.db")}
    if kind == "memory":
        return {"type": "memory"}
    return network_settings(kind, f"bench_{uuid.uuid4().hex[:12]}")


def drop_table(settings: dict[str, Any]) -> None:
    """Remove a network backend's benchmark table (the embedded ones live in a temp dir)."""
    kind = settings["type"]
    if kind == "postgresql":
        import psycopg2

        conn = psycopg2.connect(
            host=settings["host"], port=settings["port"], user=settings["user"],
            password=settings["password"], dbname=settings["database"],
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{settings["table"]}"')
        conn.close()
    elif kind == "mysql":
        import pymysql

        conn = pymysql.connect(
            host=settings["host"], port=settings["port"], user=settings["user"],
            password=settings["password"], database=settings["database"],
        )
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{settings['table']}`")
        conn.close()


def read_key(i: int) -> bytes:
    return bytes([TAG_READ]) + i.to_bytes(8, "big")


async def preload(store: DataStore, keys: int, value: bytes) -> None:
    for start in range(0, keys, 1000):
        batch = WriteBatch()
        for i in range(start, min(keys, start + 1000)):
            batch.put(read_key(i), value)
        await store.write(batch)


async def measure(
    op: Callable[[random.Random], Awaitable[None]], seconds: float, concurrency: int
) -> float:
    """Operations per second of ``op`` run back to back by ``concurrency`` coroutines."""
    deadline = time.perf_counter() + seconds
    counts = [0] * concurrency

    async def loop(slot: int) -> None:
        rng = random.Random(slot)
        while time.perf_counter() < deadline:
            await op(rng)
            counts[slot] += 1

    start = time.perf_counter()
    await asyncio.gather(*(loop(s) for s in range(concurrency)))
    return sum(counts) / (time.perf_counter() - start)


async def bench_backend(
    kind: str, folder: Path, args: argparse.Namespace
) -> dict[str, float]:
    settings = settings_for(kind, folder)
    store = open_data_store(f"bench-{kind}", settings)
    try:
        value = os.urandom(args.value_size)
        await preload(store, args.keys, value)
        written = 0

        async def get(rng: random.Random) -> None:
            await store.get(read_key(rng.randrange(args.keys)))

        async def scan(rng: random.Random) -> None:
            start = read_key(rng.randrange(max(1, args.keys - 100)))
            await store.range(start, bytes([TAG_READ + 1]), limit=100)

        def commit(size: int) -> Callable[[random.Random], Awaitable[None]]:
            async def run(rng: random.Random) -> None:
                nonlocal written
                batch = WriteBatch()
                for _ in range(size):
                    written += 1
                    batch.put(bytes([TAG_WRITE]) + rng.randbytes(8) + written.to_bytes(8, "big"),
                              value)
                await store.write(batch)

            return run

        ops = {"get": get, "range100": scan, "commit1": commit(1), "commit10": commit(10),
               "commit100": commit(100)}
        return {name: await measure(op, args.seconds, args.concurrency)
                for name, op in ops.items()}
    finally:
        await store.close()
        drop_table(settings)


def table(results: dict[str, dict[str, float]], concurrency: int) -> str:
    head = ["backend", "get/s", "range100/s", "commit1/s", "commit10/s", "commit100/s",
            "keys/s @10", "keys/s @100"]
    rows = []
    for kind, r in results.items():
        rows.append([kind, *(f"{r[c]:,.0f}" for c in COLUMNS),
                     f"{r['commit10'] * 10:,.0f}", f"{r['commit100'] * 100:,.0f}"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    legend = (
        f"(ops/s with {concurrency} concurrent request(s); range100 = one range of 100 keys; "
        "commitN = one durable batch of N puts)"
    )
    lines = [
        legend,
        "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help=f"comma-separated, from {', '.join(BACKENDS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="duration of each measurement (default: 2)")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="coroutines issuing requests at once (default: 1)")
    parser.add_argument("--keys", type=int, default=10_000,
                        help="keys preloaded for the reads (default: 10000)")
    parser.add_argument("--value-size", type=int, default=200,
                        help="bytes per value (default: 200)")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(unknown)}; known: {', '.join(BACKENDS)}")
    return args


async def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-stores-") as tmp:
        for kind in args.backends:
            print(f"{kind}: running ({len(COLUMNS)} x {args.seconds:g}s)...", file=sys.stderr)
            try:
                results[kind] = await bench_backend(kind, Path(tmp) / kind, args)
            except (StoreError, ImportError) as exc:
                print(f"{kind}: skipped: {exc}", file=sys.stderr)
    if results:
        print(table(results, args.concurrency))
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
