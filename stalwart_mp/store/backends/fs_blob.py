"""File-system blob store: one file per blob, named by its hash, in sharded folders.

Layout: ``<path>/ab/cd/abcd...`` with ``depth`` = 2 (two hex digits per level), so no
folder holds more than a few thousand entries at any realistic size.

Atomicity: a blob is written to a temporary file in its final folder and renamed over the
final name (atomic on POSIX) once its put-at mark is durable (blob.py). Readers open only
final names, so they never see a partial blob; a writer killed mid-way leaves at worst a
temporary file, removed by ``collect`` once it is old.

Durability, two ways (``sync``):

- ``"filesystem"`` (the default on Linux): group sync. The renamed files of every put in
  flight in the process are made durable together by ONE ``syncfs(2)`` of the store's
  file system, started after their renames, which writes back their data and the folder
  entries. Fifty concurrent deliveries cost one flush, not a hundred fsyncs — OSTree
  commits its content-addressed objects the same way. A crash before that sync may leave
  a final name whose data did not reach the disk (on file systems that do not order
  rename after data): it is unreferenced (the message was never acknowledged), and a
  later put of the same content finds its size wrong and rewrites it.
- ``"file"``: per blob, the temporary file is fsync'ed before the rename and the folder
  after it (Dovecot's and mox's way): no syncfs, so nothing else on the file system is
  flushed with it, at the cost of two flushes per blob.

Dedup: the final name is the content's hash, so a put finding the file already there
(with the right size) writes nothing. It still syncs, because the writer that renamed the
file in may not have yet (it may have been killed just after the rename). Concurrent
writers of the same content (any processes) each rename an identical complete file, so
whichever rename lands last, the name always points at the whole blob. Shard folders are
created on first use and made durable (their parent fsync'ed, or by the group sync) once
per process.

Threads: file I/O and fsync run on a small per-store thread pool so the event loop never
waits on the disk. Open the store in the process using it (after fork).
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from stalwart_mp.store import forked
from stalwart_mp.store.blob import BlobStore, is_blob_id
from stalwart_mp.store.data import DataStore, StoreError

T = TypeVar("T")
log = logging.getLogger("stalwart_mp.store")
SYNC_MODES = ("filesystem", "file")

TEMP_PREFIX = ".tmp-"
# A temporary file older than this (or than the collect grace, if longer) is a leftover.
TEMP_MAX_AGE = 3600.0
# Blobs up to this size are written on the event loop's thread in "filesystem" sync mode.
# Measured (bench_delivery, 100 KiB at 50 concurrent): on the threads one process gains,
# but two lose more (smaller commit rounds, more conflicts between them).
INLINE_WRITE_MAX = 256 * 1024
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _libc_syncfs() -> Callable[[int], int] | None:
    """``syncfs(2)`` from the C library (Linux, glibc >= 2.14), or None where it is missing.
    ctypes releases the GIL around the call, so the event loop runs on meanwhile."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _libc_syncfs()


def _syncfs(fd: int) -> None:
    if _SYNCFS(fd) != 0:   # Linux >= 5.8 reports write-back errors of the file system here
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs: {os.strerror(err)}")


def _has_size(path: str, size: int) -> bool:
    """Whether the file exists with ``size`` bytes: a blob renamed in but cut short by a
    crash before its sync (group sync) has the wrong size, and is written again."""
    try:
        return os.stat(path).st_size == size
    except FileNotFoundError:
        return False


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FsBlobStore(BlobStore):
    def __init__(
        self,
        name: str,
        path: str | os.PathLike[str],
        *,
        links: DataStore,
        depth: int = 2,
        sync: str = "filesystem",
        threads: int = 16,
    ) -> None:
        super().__init__(name, links)
        self.root = Path(path).absolute()
        self.depth = depth
        if sync not in SYNC_MODES:
            raise StoreError(f'store "{name}": sync = {sync!r}: expected one of {SYNC_MODES}')
        if sync == "filesystem" and _SYNCFS is None:
            log.warning('store "%s": this system has no syncfs(2); blobs are synced one '
                        'by one (sync = "file")', name)
            sync = "file"
        self.group_sync = sync == "filesystem"
        self.syncs = 0   # group syncs made (for benchmarks and tests)
        self._sync_waiters: list[asyncio.Future] = []
        self._syncer: asyncio.Task | None = None
        self._pid = os.getpid()
        self._fork_generation = forked.generation()
        self._closed = False
        self._durable_dirs: set[str] = set()
        self._root = str(self.root)
        self._temp_counter = itertools.count()
        try:
            self._make_dirs(self._root)
        except OSError as exc:
            raise StoreError(f'store "{name}": cannot use folder {self.root}: {exc}') from exc
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"blob-fs-{name}")
        self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)

    def path_of(self, blob_id: str) -> Path:
        """Where the blob's file is (whether or not it exists)."""
        return self.root.joinpath(*(blob_id[2 * i : 2 * i + 2] for i in range(self.depth)), blob_id)

    async def _run(self, what: str, blob_id: str, fn: Callable[..., T], *args: object,
                   inline: bool = False) -> T:
        """``fn(*args)`` on the store's threads, or on the caller's (``inline``) for work
        too small to be worth the hand-over; OSError becomes StoreError."""
        if self._closed:
            raise StoreError(f'store "{self.name}" is closed')
        if forked.generation() != self._fork_generation:
            raise StoreError(
                f'store "{self.name}": opened in process {self._pid}, used in process '
                f"{os.getpid()}; open the store after fork, in the process using it"
            )
        try:
            if inline:
                return fn(*args)
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except OSError as exc:
            raise StoreError(
                f'store "{self.name}": cannot {what} blob {blob_id} under {self.root}: {exc}'
            ) from exc

    def _inline(self, data: bytes) -> bool:
        """With group sync, writing a small blob is a page-cache copy and a rename (no
        fsync): cheaper on the event loop than a thread hand-over and the GIL ping-pong
        that comes with it under load (strace: ~50 futex calls per delivery otherwise)."""
        return self.group_sync and len(data) <= INLINE_WRITE_MAX

    # --- folders --------------------------------------------------------------------------

    def _make_dirs(self, folder: str) -> None:
        """Create ``folder`` and its parents, and make every entry on the path durable.

        Group sync: the sync after the put covers them. Otherwise, the first time this
        process uses a folder, its PARENT is fsync'ed (that is where the folder's entry
        lives), whoever created it: another process may have made it and been killed
        before syncing. The folder's own entries (the blob's name) are fsync'ed by the
        writer after its rename. Each level is remembered separately, so a new shard
        folder costs one fsync of its parent, not one per level.
        """
        if folder in self._durable_dirs:
            return
        os.makedirs(folder, exist_ok=True)
        if self.group_sync:
            self._durable_dirs.add(folder)
            return
        path = Path(folder)
        chain = [path, *path.parents]
        top = chain.index(self.root) if self.root in chain else len(chain) - 1
        for d in reversed(chain[: top + 1]):   # root first, so a parent is durable before
            if str(d) not in self._durable_dirs:
                _fsync_dir(d.parent)
                self._durable_dirs.add(str(d))

    # --- primitives (on plain strings: pathlib costs more than the system calls here) -----

    def _folder_of(self, blob_id: str) -> str:
        return os.path.join(self._root, *(blob_id[2 * i : 2 * i + 2] for i in range(self.depth)))

    def _ensure_sync(self, blob_id: str, data: bytes) -> None:
        """The blob under its final name: written unless already there. Durable on return
        in "file" mode; in "filesystem" mode once the caller's group sync is done."""
        temp = self._stage_sync(blob_id, data)
        if temp is None:  # already there: the writer that renamed it in may not have synced
            if not self.group_sync:
                _fsync_dir(self._folder_of(blob_id))
            return
        self._rename_sync(blob_id, temp)

    def _stage_sync(self, blob_id: str, data: bytes) -> str | None:
        """A temporary file in the blob's folder, fsync'ed in "file" mode (None: the blob is
        already there)."""
        folder = self._folder_of(blob_id)
        self._make_dirs(folder)
        if _has_size(os.path.join(folder, blob_id), len(data)):
            return None
        fd, temp = self._create_temp(folder, blob_id)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if not self.group_sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            _unlink_quietly(temp)
            raise
        return temp

    def _create_temp(self, folder: str, blob_id: str) -> tuple[int, str]:
        """A new temporary file, named after the blob, this process and a counter."""
        while True:
            temp = os.path.join(folder, f"{TEMP_PREFIX}{blob_id[:16]}-{self._pid}-"
                                        f"{next(self._temp_counter)}")
            try:
                return os.open(temp, _TEMP_FLAGS, 0o600), temp
            except FileExistsError:   # left by an earlier process that had our pid
                continue

    def _publish_sync(self, blob_id: str, data: bytes, temp: str | None) -> None:
        if temp is None:  # it was there when staged; a collector may have taken it since
            self._ensure_sync(blob_id, data)
            return
        self._rename_sync(blob_id, temp)

    def _rename_sync(self, blob_id: str, temp: str) -> None:
        folder = self._folder_of(blob_id)
        try:
            os.replace(temp, os.path.join(folder, blob_id))
        except BaseException:
            _unlink_quietly(temp)
            raise
        if not self.group_sync:
            _fsync_dir(folder)

    async def _synced(self) -> None:
        """"filesystem" mode: return once a syncfs that STARTED after this call has
        completed. Callers arriving while one runs share the next: one flush per round."""
        if not self.group_sync:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._sync_waiters.append(waiter)
        if self._syncer is None or self._syncer.done():
            self._syncer = asyncio.create_task(self._sync_rounds())
        await waiter

    async def _sync_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while self._sync_waiters:
            waiters, self._sync_waiters = self._sync_waiters, []
            try:
                await loop.run_in_executor(self._executor, _syncfs, self._root_fd)
            except OSError as exc:
                error = StoreError(f'store "{self.name}": cannot sync the blobs under '
                                   f"{self.root}: {exc}")
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(error)
                continue
            self.syncs += 1
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _read_sync(self, blob_id: str, start: int, end: int | None) -> bytes | None:
        try:
            f = open(os.path.join(self._folder_of(blob_id), blob_id), "rb")  # noqa: SIM115
        except FileNotFoundError:
            return None
        with f:
            if start:
                f.seek(start)
            return f.read() if end is None else f.read(end - start)

    def _erase_sync(self, blob_id: str) -> bool:
        folder = self._folder_of(blob_id)
        try:
            os.unlink(os.path.join(folder, blob_id))
        except FileNotFoundError:
            return False
        _fsync_dir(folder)  # else a crash could bring back a blob with no record
        return True

    def _purge_temps_sync(self, max_age: float) -> None:
        cutoff = time.time() - max_age
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TEMP_PREFIX):
                    continue
                path = os.path.join(folder, name)
                try:
                    if os.stat(path).st_mtime < cutoff:
                        os.unlink(path)
                except FileNotFoundError:
                    pass

    async def _ensure(self, blob_id: str, data: bytes) -> None:
        await self._run("write", blob_id, self._ensure_sync, blob_id, data,
                        inline=self._inline(data))
        await self._synced()

    async def _stage(self, blob_id: str, data: bytes) -> str | None:
        return await self._run("write", blob_id, self._stage_sync, blob_id, data,
                               inline=self._inline(data))

    async def _publish(self, blob_id: str, data: bytes, staged: object | None) -> None:
        await self._run("write", blob_id, self._publish_sync, blob_id, data, staged,
                        inline=self._inline(data))
        await self._synced()

    async def _discard(self, staged: object) -> None:
        await self._run("discard", str(staged), _unlink_quietly, str(staged))

    async def _read(self, blob_id: str, start: int, end: int | None) -> bytes | None:
        return await self._run("read", blob_id, self._read_sync, blob_id, start, end)

    async def _contains(self, blob_id: str) -> bool:
        return await self._run("find", blob_id, os.path.isfile,
                               os.path.join(self._folder_of(blob_id), blob_id))

    async def _erase(self, blob_id: str) -> bool:
        return await self._run("delete", blob_id, self._erase_sync, blob_id)

    async def _housekeeping(self, grace_seconds: float) -> None:
        await self._run("clean up", "temporaries", self._purge_temps_sync,
                        max(grace_seconds, TEMP_MAX_AGE))

    async def _close_backend(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._syncer is not None:
            await asyncio.gather(self._syncer, return_exceptions=True)
        self._executor.shutdown(wait=True)
        os.close(self._root_fd)

    def blob_files(self) -> list[Path]:
        """Every stored blob file (for tools and tests); temporaries excluded."""
        return sorted(p for p in self.root.rglob("*") if p.is_file() and is_blob_id(p.name))
