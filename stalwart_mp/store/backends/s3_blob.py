"""S3 blob store (boto3): one object per blob, keyed ``<key-prefix><sha256 hex>``.

Works with Amazon S3 and S3-compatible services (MinIO, Ceph RGW, Garage, R2...).

Durability: S3 answers a PUT only once the object is stored durably, so ``put`` returns after
that answer. Each upload carries ``x-amz-checksum-sha256`` (the blob id itself, base64), so
the service rejects a body damaged in transit instead of storing it under the id; an object
is visible whole or not at all, never partially. Dedup: the key is the content hash, so a
put first asks whether the object exists (HEAD) and uploads only if not; two concurrent
uploads of the same content write the same bytes under the same key.

Threads: boto3 is blocking, so every request runs on a small per-store thread pool with as
many pooled HTTP connections; the event loop never waits on the network. A client is made
from its own ``boto3.session.Session`` (the default session is not thread-safe), in the
process using the store (after fork). boto3 is imported here only, so the master process
never loads it.

Errors (timeouts after ``max-retries`` retries, refused connections, denied access...) are
raised as StoreError naming the store, the bucket and the endpoint.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from stalwart_mp.store import forked
from stalwart_mp.store.blob import BlobStore
from stalwart_mp.store.data import DataStore, StoreError

T = TypeVar("T")

_MISSING = {"404", "NoSuchKey", "NotFound"}


class _Absent(Exception):
    """The object does not exist."""


class _PastEnd(Exception):
    """The object exists but the requested range starts at or after its end."""


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3BlobStore(BlobStore):
    def __init__(
        self,
        name: str,
        *,
        links: DataStore,
        bucket: str,
        region: str = "us-east-1",
        endpoint: str = "",
        access_key: str = "",
        secret_key: str = "",
        prefix: str = "",
        timeout: float = 15,
        max_retries: int = 3,
        threads: int = 8,
    ) -> None:
        super().__init__(name, links)
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint or f"https://s3.{region}.amazonaws.com"
        self._pid = os.getpid()
        self._fork_generation = forked.generation()
        self._closed = False
        config = botocore.config.Config(
            region_name=region,
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": max_retries, "mode": "standard"},
            max_pool_connections=threads,
            # We send our own SHA-256 checksum; no CRC trailers some services reject.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.session.Session()
        self._client = session.client(
            "s3",
            endpoint_url=endpoint or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=config,
        )
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=f"blob-s3-{name}")
        try:
            self._call("reach bucket", "", self._client.head_bucket, Bucket=bucket)
        except BaseException:
            self._shutdown()
            raise

    def key_of(self, blob_id: str) -> str:
        return self.prefix + blob_id

    def _fail(self, what: str, blob_id: str, exc: Exception) -> StoreError:
        target = f"{self.bucket}/{self.key_of(blob_id)}" if blob_id else self.bucket
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return StoreError(
            f'store "{self.name}": cannot {what} {target} on S3 at {self.endpoint}: {detail}'
        )

    def _call(self, what: str, blob_id: str, fn: Callable[..., T], **kwargs: Any) -> T:
        """Run one request (blocking); map errors to _Absent / _PastEnd / StoreError."""
        try:
            return fn(**kwargs)
        except botocore.exceptions.ClientError as exc:
            code = _code(exc)
            if code in _MISSING:
                if not blob_id:
                    raise self._fail(what, blob_id, exc) from exc  # the bucket is missing
                raise _Absent from exc
            if code in ("InvalidRange", "416"):
                raise _PastEnd from exc
            raise self._fail(what, blob_id, exc) from exc
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self._fail(what, blob_id, exc) from exc

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise StoreError(f'store "{self.name}" is closed')
        if forked.generation() != self._fork_generation:
            raise StoreError(
                f'store "{self.name}": opened in process {self._pid}, used in process '
                f"{os.getpid()}; open the store after fork, in the process using it"
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- blocking bodies ------------------------------------------------------------------

    def _head_sync(self, blob_id: str) -> bool:
        try:
            self._call("look up", blob_id, self._client.head_object,
                       Bucket=self.bucket, Key=self.key_of(blob_id))
        except _Absent:
            return False
        return True

    def _ensure_sync(self, blob_id: str, data: bytes) -> None:
        if self._head_sync(blob_id):
            return
        checksum = base64.b64encode(bytes.fromhex(blob_id)).decode("ascii")
        self._call("upload", blob_id, self._client.put_object, Bucket=self.bucket,
                   Key=self.key_of(blob_id), Body=data, ChecksumSHA256=checksum)

    def _read_sync(self, blob_id: str, start: int, end: int | None) -> bytes | None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key_of(blob_id)}
        if end is not None:
            args["Range"] = f"bytes={start}-{end - 1}"
        elif start:
            args["Range"] = f"bytes={start}-"
        try:
            response = self._call("read", blob_id, self._client.get_object, **args)
            with response["Body"] as body:
                return body.read()
        except _Absent:
            return None
        except _PastEnd:
            return b""
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self._fail("read", blob_id, exc) from exc

    def _erase_sync(self, blob_id: str) -> bool:
        if not self._head_sync(blob_id):
            return False
        self._call("delete", blob_id, self._client.delete_object,
                   Bucket=self.bucket, Key=self.key_of(blob_id))
        return True

    # --- primitives -----------------------------------------------------------------------

    async def _ensure(self, blob_id: str, data: bytes) -> None:
        await self._run(self._ensure_sync, blob_id, data)

    async def _read(self, blob_id: str, start: int, end: int | None) -> bytes | None:
        return await self._run(self._read_sync, blob_id, start, end)

    async def _contains(self, blob_id: str) -> bool:
        return await self._run(self._head_sync, blob_id)

    async def _erase(self, blob_id: str) -> bool:
        return await self._run(self._erase_sync, blob_id)

    def _shutdown(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True)
        self._client.close()

    async def _close_backend(self) -> None:
        if not self._closed:
            await asyncio.to_thread(self._shutdown)
