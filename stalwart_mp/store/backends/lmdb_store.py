"""LMDB data store: the embedded default, shared by every process of the server.

Prefork safety: open the store in the process that uses it, after fork (each worker opens
its own ``lmdb.Environment``). An LMDB environment must not cross a fork: the child would
inherit the parent's reader slots and mmap state. The store remembers the pid that opened
it and refuses to run in another one. All processes coordinate through the lock file
(``lock=True``): one writer at a time (a robust mutex, recovered if a writer dies), readers
never block and never see an uncommitted transaction (MVCC), so a half-written batch is
never visible. Reader slots left by a killed process are reclaimed (``reader_check``) when a
store is opened. Stores naming the same directory within one process share one environment
(LMDB allows a single one per database per process), with its writer thread and write lock.

Durability: ``sync=True, metasync=True`` (and no ``writemap``/``map_async``): a commit
returns only after the data pages and the meta page are fdatasync'ed, so ``write`` returns
only once the batch survives a crash (ARCHITECTURE.md, "Durability promise").

Threads: reads run inline on the event loop (a read transaction over the mmap costs
microseconds). Writes run on a one-thread executor: a durable commit waits for fdatasync,
which takes milliseconds (far longer on a busy disk) and would stall every session of the
worker if done inline (CONVENTIONS.md §7: never block the loop for more than a
millisecond). One thread is enough since LMDB admits one writer at a time anyway.

Growth: when the map is full the write is retried after doubling ``map_size``; another
process picks the new size up on ``MapResizedError``. ``set_mapsize`` requires that no
transaction of this process is active, so it runs on the loop thread while the write lock is
held (the writer thread idle, and loop-thread reads never span an ``await``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import lmdb

from stalwart_mp.store import forked
from stalwart_mp.store.backends.batch import (
    check_range,
    id_batch,
    keys_to_read,
    resolve,
    validate,
)
from stalwart_mp.store.data import (
    DataStore,
    StoreError,
    WriteBatch,
    decode_counter,
)

T = TypeVar("T")

DEFAULT_MAP_SIZE = 1 << 30
DEFAULT_MAX_READERS = 512


class _Env:
    """One open environment of this process, shared by every store on the same directory.

    LMDB allows a single ``MDB_env`` per database per process (py-lmdb refuses a second),
    so two stores on one path (e.g. data and lookup roles on the same store) share it, with
    its writer thread and write lock: resizing needs every transaction of the process idle.
    """

    def __init__(self, path: Path, map_size: int, max_readers: int) -> None:
        self.path = path
        self.pid = os.getpid()
        self.users = 0
        self.env = lmdb.Environment(
            str(path),
            map_size=map_size,
            subdir=True,
            max_readers=max_readers,
            max_dbs=0,
            lock=True,
            sync=True,
            metasync=True,
            map_async=False,
            writemap=False,
            readahead=False,  # random access over a large map: readahead only evicts
        )
        self.env.reader_check()  # free reader slots of processes that died
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"lmdb-{path.name}")
        self.write_lock: asyncio.Lock | None = None

    def lock(self) -> asyncio.Lock:
        if self.write_lock is None:
            self.write_lock = asyncio.Lock()
        return self.write_lock

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.env.close()


_ENVS: dict[str, _Env] = {}
_ENVS_LOCK = threading.Lock()


def _acquire(path: Path, map_size: int, max_readers: int) -> _Env:
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        shared = _ENVS.get(key)
        if shared is None or shared.pid != os.getpid():  # none yet, or inherited over fork
            path.mkdir(parents=True, exist_ok=True)
            shared = _ENVS[key] = _Env(path, map_size, max_readers)
        shared.users += 1
        return shared


def _release(shared: _Env) -> None:
    with _ENVS_LOCK:
        shared.users -= 1
        if shared.users > 0:
            return
        key = os.path.realpath(shared.path)
        if _ENVS.get(key) is shared:
            del _ENVS[key]
    shared.close()


class LmdbStore(DataStore):
    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_readers: int = DEFAULT_MAX_READERS,
    ) -> None:
        self.name = name
        self.path = Path(path)
        try:
            self._shared = _acquire(self.path, map_size, max_readers)
        except (OSError, lmdb.Error) as exc:
            raise StoreError(f'store "{name}": cannot open LMDB at {self.path}: {exc}') from exc
        self._env = self._shared.env
        self._pid = os.getpid()
        self._fork_generation = forked.generation()
        self._closed = False

    # --- helpers --------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise StoreError(f'store "{self.name}" is closed')
        if forked.generation() != self._fork_generation:
            raise StoreError(
                f'store "{self.name}": LMDB environment opened in process {self._pid} used in '
                f"process {os.getpid()}; open the store after fork, in the process using it"
            )

    def _lock(self) -> asyncio.Lock:
        return self._shared.lock()

    def _error(self, exc: lmdb.Error) -> StoreError:
        return StoreError(f'store "{self.name}": LMDB error at {self.path}: {exc}')

    async def _read(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        self._check()
        for _ in range(3):
            try:
                with self._env.begin(buffers=False) as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                async with self._lock():  # writer idle: safe to adopt the new size
                    self._env.set_mapsize(0)
            except lmdb.Error as exc:
                raise self._error(exc) from exc
        raise StoreError(f'store "{self.name}": LMDB map keeps being resized by other processes')

    # --- reads ----------------------------------------------------------------------------

    async def get(self, key: bytes) -> bytes | None:
        return await self._read(lambda txn: txn.get(key))

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        # One read transaction: every value comes from the same committed snapshot.
        return await self._read(lambda txn: [txn.get(k) for k in keys])

    async def range(
        self,
        start: bytes,
        end: bytes,
        *,
        reverse: bool = False,
        limit: int | None = None,
        keys_only: bool = False,
    ) -> list[tuple[bytes, bytes | None]]:
        if not check_range(start, end, limit):
            return []

        def scan(txn: lmdb.Transaction) -> list[tuple[bytes, bytes | None]]:
            out: list[tuple[bytes, bytes | None]] = []
            cur = txn.cursor()
            if reverse:
                ok = cur.prev() if cur.set_range(end) else cur.last()
            else:
                ok = cur.set_range(start)
            while ok:
                key = cur.key()
                if (key < start) if reverse else (key >= end):
                    break
                out.append((key, None if keys_only else cur.value()))
                if limit is not None and len(out) >= limit:
                    break
                ok = cur.prev() if reverse else cur.next()
            return out

        return await self._read(scan)

    # --- writes ---------------------------------------------------------------------------

    def _commit(self, batch: WriteBatch) -> dict[bytes, bytes | None]:
        """Runs on the writer thread: one LMDB write transaction, committed durably."""
        with self._env.begin(write=True) as txn:  # exception inside => abort
            current = {k: txn.get(k) for k in keys_to_read(batch)}
            final = resolve(batch, current)
            for key, value in final.items():
                if value is None:
                    txn.delete(key)
                else:
                    txn.put(key, value)
        return final

    async def _apply(self, batch: WriteBatch) -> dict[bytes, bytes | None]:
        self._check()
        validate(batch)
        loop = asyncio.get_running_loop()
        async with self._lock():
            while True:
                try:
                    return await loop.run_in_executor(self._shared.executor, self._commit, batch)
                except lmdb.MapFullError:
                    # Aborted, nothing written; no txn of this process is active now.
                    self._env.set_mapsize(self._env.info()["map_size"] * 2)
                except lmdb.MapResizedError:
                    self._env.set_mapsize(0)  # adopt the size another process set
                except lmdb.Error as exc:
                    raise self._error(exc) from exc

    async def write(self, batch: WriteBatch) -> None:
        await self._apply(batch)

    async def assign_id(self, key: bytes) -> int:
        # The increment runs in LMDB's single-writer transaction: processes serialize on the
        # writer mutex, so no two callers anywhere read the same counter value.
        return decode_counter((await self._apply(id_batch(key)))[key])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if os.getpid() == self._pid:
            await asyncio.to_thread(_release, self._shared)  # waits for the writer thread
