"""File-system blob store: one file per blob, named by its hash, in sharded folders.

Layout: ``<path>/ab/cd/abcd...`` with ``depth`` = 2 (two hex digits per level), so no
folder holds more than a few thousand entries at any realistic size.

Durability and atomicity (Dovecot's and mox's way; ARCHITECTURE.md "Durability promise"):
a blob is written to a temporary file in its final folder, the file is fsync'ed, renamed
over the final name (atomic on POSIX), then the folder is fsync'ed so the new entry survives
a crash. Readers open only final names, so they never see a partial blob; a writer killed
mid-way leaves at worst a temporary file, removed by ``collect`` once it is old.

Dedup: the final name is the content's hash, so a put finding the file already there
writes nothing. It still fsyncs the folder, because the writer that renamed the file in may
not have done so yet (it may have been killed just after the rename). Concurrent writers of
the same content (any processes) each rename an identical complete file, so whichever
rename lands last, the name always points at the whole blob. Shard folders are created on
first use and their entries (in their parents) fsync'ed once per process.

Threads: file I/O and fsync run on a small per-store thread pool so the event loop never
waits on the disk. Open the store in the process using it (after fork).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from stalwart_mp.store import forked
from stalwart_mp.store.blob import BlobStore, is_blob_id
from stalwart_mp.store.data import DataStore, StoreError

T = TypeVar("T")

TEMP_PREFIX = ".tmp-"
# A temporary file older than this (or than the collect grace, if longer) is a leftover.
TEMP_MAX_AGE = 3600.0


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: Path) -> None:
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
        threads: int = 16,
    ) -> None:
        super().__init__(name, links)
        self.root = Path(path).absolute()
        self.depth = depth
        self._pid = os.getpid()
        self._fork_generation = forked.generation()
        self._closed = False
        self._durable_dirs: set[Path] = set()
        try:
            self._make_dirs(self.root)
        except OSError as exc:
            raise StoreError(f'store "{name}": cannot use folder {self.root}: {exc}') from exc
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"blob-fs-{name}")

    def path_of(self, blob_id: str) -> Path:
        """Where the blob's file is (whether or not it exists)."""
        return self.root.joinpath(*(blob_id[2 * i : 2 * i + 2] for i in range(self.depth)), blob_id)

    async def _run(self, what: str, blob_id: str, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreError(f'store "{self.name}" is closed')
        if forked.generation() != self._fork_generation:
            raise StoreError(
                f'store "{self.name}": opened in process {self._pid}, used in process '
                f"{os.getpid()}; open the store after fork, in the process using it"
            )
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except OSError as exc:
            raise StoreError(
                f'store "{self.name}": cannot {what} blob {blob_id} under {self.root}: {exc}'
            ) from exc

    # --- folders --------------------------------------------------------------------------

    def _make_dirs(self, folder: Path) -> None:
        """Create ``folder`` and its parents, and make every entry on the path durable.

        The first time this process uses a folder, its PARENT is fsync'ed (that is where
        the folder's entry lives), whoever created it: another process may have made it
        and been killed before syncing. The folder's own entries (the blob's name) are
        fsync'ed by the writer after its rename. Each level is remembered separately, so
        a new shard folder costs one fsync of its parent, not one per level.
        """
        if folder in self._durable_dirs:
            return
        folder.mkdir(parents=True, exist_ok=True)
        chain = [folder, *folder.parents]
        top = chain.index(self.root) if self.root in chain else len(chain) - 1
        for d in reversed(chain[: top + 1]):   # root first, so a parent is durable before
            if d not in self._durable_dirs:
                _fsync_dir(d.parent)
                self._durable_dirs.add(d)

    # --- primitives -----------------------------------------------------------------------

    def _ensure_sync(self, blob_id: str, data: bytes) -> None:
        temp = self._stage_sync(blob_id, data)
        if temp is None:  # already there: the writer that renamed it in may not have synced
            _fsync_dir(self.path_of(blob_id).parent)
            return
        self._publish_sync(blob_id, data, temp)

    def _stage_sync(self, blob_id: str, data: bytes) -> str | None:
        """A synced temporary file in the blob's folder (None: the blob is already there)."""
        final = self.path_of(blob_id)
        self._make_dirs(final.parent)
        if final.exists():
            return None
        fd, temp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{blob_id[:16]}-", dir=final.parent)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            _unlink_quietly(temp)
            raise
        return temp

    def _publish_sync(self, blob_id: str, data: bytes, temp: str | None) -> None:
        final = self.path_of(blob_id)
        if temp is None:  # it was there when staged; a collector may have taken it since
            self._ensure_sync(blob_id, data)
            return
        try:
            os.replace(temp, final)
        except BaseException:
            _unlink_quietly(temp)
            raise
        _fsync_dir(final.parent)

    def _read_sync(self, blob_id: str, start: int, end: int | None) -> bytes | None:
        try:
            f = open(self.path_of(blob_id), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return None
        with f:
            if start:
                f.seek(start)
            return f.read() if end is None else f.read(end - start)

    def _erase_sync(self, blob_id: str) -> bool:
        final = self.path_of(blob_id)
        try:
            final.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(final.parent)  # else a crash could bring back a blob with no record
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
        await self._run("write", blob_id, self._ensure_sync, blob_id, data)

    async def _stage(self, blob_id: str, data: bytes) -> str | None:
        return await self._run("write", blob_id, self._stage_sync, blob_id, data)

    async def _publish(self, blob_id: str, data: bytes, staged: object | None) -> None:
        await self._run("write", blob_id, self._publish_sync, blob_id, data, staged)

    async def _discard(self, staged: object) -> None:
        await self._run("discard", str(staged), _unlink_quietly, str(staged))

    async def _read(self, blob_id: str, start: int, end: int | None) -> bytes | None:
        return await self._run("read", blob_id, self._read_sync, blob_id, start, end)

    async def _contains(self, blob_id: str) -> bool:
        return await self._run("find", blob_id, self.path_of(blob_id).is_file)

    async def _erase(self, blob_id: str) -> bool:
        return await self._run("delete", blob_id, self._erase_sync, blob_id)

    async def _housekeeping(self, grace_seconds: float) -> None:
        await self._run("clean up", "temporaries", self._purge_temps_sync,
                        max(grace_seconds, TEMP_MAX_AGE))

    async def _close_backend(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)

    def blob_files(self) -> list[Path]:
        """Every stored blob file (for tools and tests); temporaries excluded."""
        return sorted(p for p in self.root.rglob("*") if p.is_file() and is_blob_id(p.name))
