"""The blob store role: raw messages, Sieve scripts and uploads, addressed by their content.

Blob ids. A blob's id is the lowercase hex SHA-256 of its bytes (64 characters), used as
the blob id everywhere above the store (JMAP blobId, the email record, the queue).
SHA-256 rather than BLAKE2b: OpenSSL runs it on the CPU's SHA extensions (faster than
BLAKE2b on current x86 and ARM servers), and S3 verifies an upload against a SHA-256
checksum, so the id itself proves the stored object is intact. Since the id is the content,
writing the same bytes twice stores them once (a message sent to 50 local recipients is one
blob) and a blob never changes once written.

Reference links. Blob bytes live in the backend (a folder, a bucket or a data store), but
the links saying who uses a blob live in the DATA store given to ``open_blob_store``, next
to the metadata that owns them, so a message's metadata and its link commit together::

    0x20 | sha256 (32 bytes) | owner          -> b""            a link (owner: any bytes)
    0x21 | sha256 (32 bytes)                  -> b"P" | ms (8)  put at (ms since the epoch)
                                               or b"D" | ms (8)  being collected until ms

``collect(grace)`` deletes blobs that have no link and were last put more than ``grace``
seconds ago. Delivery puts the blob, then commits the metadata that links it; the grace
period covers that gap (and a put of content that already exists refreshes the time).

Races with the collector. A collect that has decided to delete a blob must never delete
bytes that a concurrent ``put`` has just reported as stored. The "put at" record is the
arbiter, changed only by compare-and-set: the collector first swaps ``P|t`` for
``D|deadline`` (a lease of ``LEASE_SECONDS``), re-checks the links, deletes the bytes only
while most of the lease is left, then removes the record. ``put`` and ``link`` wait while a
live ``D`` record is present, then proceed (``put`` rewrites the bytes if they are gone).
If a collector dies holding the lease, the lease expires and the blob is usable again.
The lease compares wall clocks of possibly different servers: they are assumed to agree
to within a few seconds (NTP).

Durability: ``put`` returns only once the bytes are durable (fsync / S3 / data-store
commit, see each backend) — ARCHITECTURE.md, "Durability promise".
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import re
import struct
import time
from collections.abc import Mapping
from typing import Any

from stalwart_mp.store import blob_settings as _blob_settings  # noqa: F401 - declares fs/s3 keys
from stalwart_mp.store import settings as _store_settings  # noqa: F401 - declares shared keys
from stalwart_mp.store.data import AssertionFailed, DataStore, StoreError, WriteBatch
from stalwart_mp.store.types import store_kind

LINK_TAG = 0x20
PUT_AT_TAG = 0x21
CHUNK_TAG = 0x22  # used by the data backend: 0x22 | sha256 | chunk number

BLOB_ID_HEX = 64
LEASE_SECONDS = 60.0
# The collector deletes bytes only while at least this much of its lease is left, so the
# deletion (bounded by the backend's timeouts) ends well before anyone may take over.
ERASE_MARGIN_SECONDS = 45.0
_WAIT_STEP = 0.02
_PAGE = 512

_LIVE = b"P"
_COLLECTING = b"D"
_STAMP = struct.Struct(">cq")
_BLOB_ID = re.compile(r"[0-9a-f]{64}")

BlobData = bytes | bytearray | memoryview


def blob_id_of(data: BlobData) -> str:
    """The id of a blob: lowercase hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def is_blob_id(value: object) -> bool:
    return isinstance(value, str) and _BLOB_ID.fullmatch(value) is not None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _successor(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return prefix + b"\xff" * 256
    return stripped[:-1] + bytes([stripped[-1] + 1])


def link_key(digest: bytes, owner: bytes = b"") -> bytes:
    return bytes([LINK_TAG]) + digest + owner


def put_at_key(digest: bytes) -> bytes:
    return bytes([PUT_AT_TAG]) + digest


def _stamp(kind: bytes, ms: int) -> bytes:
    return _STAMP.pack(kind, ms)


def _unstamp(value: bytes | None) -> tuple[bytes, int] | None:
    if value is None or len(value) != _STAMP.size:
        return None
    return _STAMP.unpack(value)


class BlobStore(abc.ABC):
    """Content-addressed blobs with reference links; open it in the process that uses it.

    Subclasses provide the bytes (``_ensure``, ``_read``, ``_contains``, ``_erase``,
    ``_close_backend``); this class provides ids, links and collection on the data store.
    Malformed blob ids are treated as absent by the readers (``get``, ``exists``,
    ``delete``) — they may come straight from a client — and rejected by ``link``.
    """

    name: str

    def __init__(self, name: str, links: DataStore) -> None:
        self.name = name
        self.links = links

    # --- backend primitives ---------------------------------------------------------------

    @abc.abstractmethod
    async def _ensure(self, blob_id: str, data: bytes) -> None:
        """Make the blob present and durable; a no-op (but durable) if it already is."""

    async def _stage(self, blob_id: str, data: bytes) -> object | None:
        """Optional first half of a put, run WHILE the put-at mark commits: make the bytes
        durable where nothing can see them under the blob's name (the fs backend: a synced
        temporary file, which its housekeeping removes if left behind). Returns what
        ``_publish`` needs; None (the default): nothing staged, ``_publish`` does it all."""
        return None

    async def _publish(self, blob_id: str, data: bytes, staged: object | None) -> None:
        """Second half of a put, once the put-at mark is durable: the blob appears under
        its name. The default writes it whole (``_ensure``)."""
        await self._ensure(blob_id, data)

    async def _discard(self, staged: object) -> None:
        """Drop what ``_stage`` made, when the put failed before ``_publish``."""

    @abc.abstractmethod
    async def _read(self, blob_id: str, start: int, end: int | None) -> bytes | None:
        """Bytes ``[start, end)`` clamped to the size (``end`` None: to the end); None if absent.

        Called with ``0 <= start`` and ``end`` None or ``end > start``.
        """

    @abc.abstractmethod
    async def _contains(self, blob_id: str) -> bool: ...

    @abc.abstractmethod
    async def _erase(self, blob_id: str) -> bool:
        """Delete the bytes durably; True if they existed."""

    @abc.abstractmethod
    async def _close_backend(self) -> None: ...

    async def _housekeeping(self, grace_seconds: float) -> None:
        """Backend clean-up run by ``collect`` (e.g. partial files left by a killed writer)."""

    # --- blobs ----------------------------------------------------------------------------

    async def put(self, data: BlobData) -> str:
        """Store ``data`` durably and return its id; the same content is stored once."""
        if not isinstance(data, bytes):
            data = bytes(data)
        blob_id = blob_id_of(data)
        # The put-at mark must be durable before the blob is visible under its name, so
        # a crash never leaves a named blob that collection cannot see; staging the bytes
        # meanwhile takes their fsync off that sequence.
        staging = asyncio.ensure_future(self._stage(blob_id, data))
        try:
            await self._mark_put(bytes.fromhex(blob_id))
        except BaseException:
            staged = await asyncio.gather(staging, return_exceptions=True)
            if staged[0] is not None and not isinstance(staged[0], BaseException):
                await self._discard(staged[0])
            raise
        await self._publish(blob_id, data, await staging)
        return blob_id

    async def get(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes | None:
        """Bytes ``[start, end)`` of the blob (clamped to its size), or None if it is absent."""
        if start < 0 or (end is not None and end < 0):
            raise ValueError(f"blob range [{start}, {end}) has a negative bound")
        if not is_blob_id(blob_id):
            return None
        if end is not None and end <= start:
            return b"" if await self._contains(blob_id) else None
        return await self._read(blob_id, start, end)

    async def exists(self, blob_id: str) -> bool:
        return is_blob_id(blob_id) and await self._contains(blob_id)

    async def delete(self, blob_id: str) -> bool:
        """Delete the blob now, links or not (the caller knows); True if it existed."""
        if not is_blob_id(blob_id):
            return False
        existed = await self._erase(blob_id)
        await self.links.write(WriteBatch().delete(put_at_key(bytes.fromhex(blob_id))))
        return existed

    # --- links ----------------------------------------------------------------------------

    def _digest(self, blob_id: str) -> bytes:
        if not is_blob_id(blob_id):
            raise StoreError(
                f'store "{self.name}": {blob_id!r} is not a blob id (64 lowercase hex digits)'
            )
        return bytes.fromhex(blob_id)

    async def link(self, blob_id: str, owner: bytes) -> None:
        """Record that ``owner`` uses the blob, so ``collect`` keeps it.

        Waits out a collector holding the blob. To link in the same transaction as the
        owner's metadata, use ``link_into``.
        """
        digest = self._digest(blob_id)
        stamp_key = put_at_key(digest)
        while True:
            current = await self._wait_unclaimed(stamp_key)
            try:
                await self.links.write(
                    WriteBatch().assert_value(stamp_key, current).put(link_key(digest, owner), b"")
                )
                return
            except AssertionFailed:
                continue

    async def link_into(self, batch: WriteBatch, blob_id: str, owner: bytes) -> None:
        """Add a link to the caller's own batch (e.g. the message metadata being committed).

        The batch also asserts the blob's put-at record, so if a collector claims the blob
        before the batch commits, the batch fails with AssertionFailed (on
        ``put_at_key``) instead of linking a blob about to vanish: put the blob again
        and retry the batch.
        """
        digest = self._digest(blob_id)
        stamp_key = put_at_key(digest)
        current = await self._wait_unclaimed(stamp_key)
        batch.assert_value(stamp_key, current).put(link_key(digest, owner), b"")

    def unlink_into(self, batch: WriteBatch, blob_id: str, owner: bytes) -> None:
        """Add the removal of a link to the caller's own batch."""
        batch.delete(link_key(self._digest(blob_id), owner))

    async def unlink(self, blob_id: str, owner: bytes) -> None:
        await self.links.write(WriteBatch().delete(link_key(self._digest(blob_id), owner)))

    async def linked(self, blob_id: str) -> bool:
        return await self._linked(self._digest(blob_id))

    async def _linked(self, digest: bytes) -> bool:
        prefix = link_key(digest)
        return bool(await self.links.range(prefix, _successor(prefix), limit=1, keys_only=True))

    # --- put-at records and collection -----------------------------------------------------

    async def _wait_unclaimed(self, stamp_key: bytes) -> bytes | None:
        """The current put-at value once no collector holds a live lease on the blob."""
        while True:
            current = await self.links.get(stamp_key)
            state = _unstamp(current)
            if state is None or state[0] != _COLLECTING or state[1] <= _now_ms():
                return current
            await asyncio.sleep(_WAIT_STEP)

    async def _mark_put(self, digest: bytes) -> None:
        """Set "put at" to now, unless another put already set it to a time >= our start."""
        started = _now_ms()
        key = put_at_key(digest)
        while True:
            current = await self._wait_unclaimed(key)
            state = _unstamp(current)
            if state is not None and state[0] == _LIVE and state[1] >= started:
                return
            try:
                await self.links.write(
                    WriteBatch().assert_value(key, current).put(key, _stamp(_LIVE, _now_ms()))
                )
                return
            except AssertionFailed:
                continue

    async def collect(self, grace_seconds: float) -> int:
        """Delete blobs without links last put over ``grace_seconds`` ago; how many were."""
        if grace_seconds < 0:
            raise ValueError(f"grace_seconds = {grace_seconds}: expected >= 0")
        grace_ms = int(grace_seconds * 1000)
        deleted = 0
        start, end = bytes([PUT_AT_TAG]), bytes([PUT_AT_TAG + 1])
        while True:
            page = await self.links.range(start, end, limit=_PAGE)
            for key, value in page:
                if await self._collect_one(key, value, grace_ms):
                    deleted += 1
            if len(page) < _PAGE:
                break
            start = page[-1][0] + b"\x00"
        await self._housekeeping(grace_seconds)
        return deleted

    async def _collect_one(self, key: bytes, value: bytes | None, grace_ms: int) -> bool:
        state = _unstamp(value)
        if state is None or len(key) != 33:
            return False
        kind, ms = state
        now = _now_ms()
        if kind == _LIVE and ms + grace_ms > now:
            return False
        if kind == _COLLECTING and ms > now:
            return False  # another collector holds it
        digest = key[1:]
        if await self._linked(digest):
            return False
        deadline = now + int(LEASE_SECONDS * 1000)
        claim = _stamp(_COLLECTING, deadline)
        try:
            await self.links.write(WriteBatch().assert_value(key, value).put(key, claim))
        except AssertionFailed:
            return False  # put again (or claimed) meanwhile
        if (
            await self._linked(digest)
            or _now_ms() > deadline - int(ERASE_MARGIN_SECONDS * 1000)
        ):
            await self._release(key, claim, value)
            return False
        erased = await self._erase(digest.hex())
        try:
            await self.links.write(WriteBatch().assert_value(key, claim).delete(key))
        except AssertionFailed:
            pass  # the lease ran out and a put took the blob over: it rewrote the bytes
        return erased

    async def _release(self, key: bytes, claim: bytes, previous: bytes | None) -> None:
        batch = WriteBatch().assert_value(key, claim)
        batch.put(key, previous) if previous is not None else batch.delete(key)
        try:
            await self.links.write(batch)
        except AssertionFailed:
            pass

    async def close(self) -> None:
        """Close the backend; the data store holding the links is the caller's to close."""
        await self._close_backend()


def open_blob_store(name: str, settings: Mapping[str, Any], data_store: DataStore) -> BlobStore:
    """Open the blob store ``name``; links are kept in ``data_store``.

    ``settings["type"]`` picks the backend: "fs", "s3", or a data-store type (blobs in
    chunks). When ``name`` is the data store's own name the open ``data_store`` is reused.
    Raises StoreError naming the store. Call it in the process that will use the store.
    """
    from stalwart_mp.store.registry import open_data_store, parse_store_options

    kind = store_kind(name, settings, "blob")
    try:
        if kind == "fs":
            from stalwart_mp.store.backends.fs_blob import FsBlobStore

            o = parse_store_options(name, kind, settings)
            return FsBlobStore(name, o["path"], links=data_store, depth=o["depth"],
                               sync=o["sync"])
        if kind == "s3":
            from stalwart_mp.store.backends.s3_blob import S3BlobStore

            o = parse_store_options(name, kind, settings)
            return S3BlobStore(
                name,
                links=data_store,
                bucket=o["bucket"],
                region=o["region"],
                endpoint=o["endpoint"],
                access_key=o["access-key"],
                secret_key=o["secret-key"],
                prefix=o["key-prefix"],
                timeout=o["timeout"],
                max_retries=o["max-retries"],
            )
        from stalwart_mp.store.backends.data_blob import DataBlobStore

        if name == data_store.name:
            return DataBlobStore(name, data_store, links=data_store, owns_store=False)
        return DataBlobStore(
            name, open_data_store(name, settings), links=data_store, owns_store=True
        )
    except ImportError as exc:
        raise StoreError(
            f'store "{name}": the {kind} backend needs the Python package "{exc.name}"; '
            "install stalwart-mp[backends]"
        ) from exc
