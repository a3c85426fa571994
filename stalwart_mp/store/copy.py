"""``stalwart-mp store copy``: move a data store to another backend, resumably, with proof.

Migrating (say from the embedded LMDB default to PostgreSQL when a second server joins)
must neither lose a key nor leave the operator guessing, and a copy of millions of keys
will sometimes be interrupted. So:

- Keys are copied in key order, in batches. Each batch also writes a checkpoint — the last
  key copied — under the reserved key ``0xFF "copy-progress"`` (outside the data subspaces
  0x00-0xFE) *in the same transaction* as the keys, so the checkpoint never claims a key
  that is not committed, and a rerun continues right after the last committed batch.
- Each batch compare-and-sets the checkpoint, so two copies racing into one destination
  fail instead of interleaving.
- Without a checkpoint the destination must be empty: a copy never merges into data.
- After copying, both stores are scanned side by side (``verify.compare``): counts per
  subspace, a running BLAKE2b checksum, and the first differing key if any. The checkpoint
  is removed only when the stores are identical, so a destination that still carries one
  is known not to be a verified copy.

Stop the server (or anything writing to the source) first: a key written to the source
behind the copy's position would be missed — and the verification would say so.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, TextIO

from stalwart_mp.store.data import AssertionFailed, DataStore, StoreError, WriteBatch
from stalwart_mp.store.progress import Progress, format_bytes, format_duration
from stalwart_mp.store.types import DATA_TYPES
from stalwart_mp.store.verify import (
    CHECKPOINT_KEY,
    KEY_END,
    compare,
    count_keys,
    describe_key,
    scan,
)

DEFAULT_BATCH = 1000
BATCH_BYTES = 16 << 20  # at most this much value data per destination transaction
_COPYABLE = tuple(t for t in DATA_TYPES if t != "memory")


class CopyRefused(Exception):
    """A precondition does not hold; nothing was written. The message says what to do."""


@dataclass(slots=True)
class Checkpoint:
    """Progress of a copy, stored in the destination under ``CHECKPOINT_KEY``."""

    source: str  # name of the source store, so a resume cannot silently switch sources
    last: str = ""  # hex of the last key copied ("" = none yet)
    copied: int = 0
    bytes: int = 0
    complete: bool = False  # every key copied; not yet verified

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes, store: str) -> Checkpoint:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise CopyRefused(
                f'store "{store}": the copy checkpoint {describe_key(CHECKPOINT_KEY)} is not '
                f"readable ({exc}); use --restart to discard the unfinished copy"
            ) from None

    def resume_key(self) -> bytes:
        """The first key still to copy: the successor of the last one copied."""
        return bytes.fromhex(self.last) + b"\x00" if self.last else b""


@dataclass(slots=True)
class Options:
    config: Any  # a loaded stalwart_mp.config.loader.Config
    source: str
    destination: str
    batch: int = DEFAULT_BATCH
    verify_only: bool = False
    restart: bool = False


# --- checks on the configuration ------------------------------------------------------------


def check_copyable(cfg: Any, name: str, role: str) -> str:
    """The type of store ``name``; CopyRefused unless it is a data store on disk or server."""
    names = cfg.names("store")
    if name not in names:
        defined = ", ".join(f'"{n}"' for n in names) or "none"
        raise CopyRefused(
            f'{role} store "{name}": no [store."{name}"] in {cfg.source}; stores defined: '
            f"{defined}"
        )
    kind = cfg.get(("store", name, "type"))
    if kind == "memory":
        raise CopyRefused(
            f'{role} store "{name}" is a memory store: it lives inside one process, so there '
            "is nothing to copy from or into it"
        )
    if kind not in _COPYABLE:
        raise CopyRefused(
            f'{role} store "{name}" is a {kind} store: store copy handles data stores ('
            + ", ".join(_COPYABLE)
            + ") for now; blob, full-text and lookup-only stores get their own copy"
        )
    return kind


def _location(settings: Mapping[str, Any]) -> tuple[Any, ...]:
    """Where a store's data lives, to catch two names for the same data."""
    if "path" in settings:
        return (settings["type"], settings["path"])
    return tuple(settings.get(k) for k in ("type", "host", "port", "database", "table"))


# --- copying --------------------------------------------------------------------------------


async def read_checkpoint(store: DataStore) -> tuple[bytes | None, Checkpoint | None]:
    raw = await store.get(CHECKPOINT_KEY)
    return raw, None if raw is None else Checkpoint.decode(raw, store.name)


async def _write(
    store: DataStore, pairs: list[tuple[bytes, bytes]], previous: bytes | None, state: Checkpoint
) -> bytes:
    """One destination transaction: the keys plus the checkpoint that now covers them."""
    batch = WriteBatch()
    for key, value in pairs:
        batch.put(key, value)
    raw = state.encode()
    batch.assert_value(CHECKPOINT_KEY, previous).put(CHECKPOINT_KEY, raw)
    try:
        await store.write(batch)
    except AssertionFailed:
        raise CopyRefused(
            f'store "{store.name}": its copy checkpoint changed under this copy: another '
            "copy is writing into the same store; stop it (this one stopped safely)"
        ) from None
    return raw


def _batches(pairs: list[tuple[bytes, bytes]], size: int) -> list[list[tuple[bytes, bytes]]]:
    """Split a page into write batches of at most ``size`` keys and ~BATCH_BYTES of data."""
    out: list[list[tuple[bytes, bytes]]] = [[]]
    held = 0
    for key, value in pairs:
        if out[-1] and (len(out[-1]) >= size or held + len(value) > BATCH_BYTES):
            out.append([])
            held = 0
        out[-1].append((key, value))
        held += len(key) + len(value)
    return out


async def copy_keys(
    source: DataStore,
    destination: DataStore,
    state: Checkpoint,
    previous: bytes | None,
    *,
    batch: int,
    progress: Progress | None = None,
) -> Checkpoint:
    """Copy every source key after ``state.last`` into ``destination``, checkpointing each
    batch; return the final checkpoint (marked complete and stored)."""
    async for page in scan(source, state.resume_key(), page=batch):
        for chunk in _batches(page, batch):  # type: ignore[arg-type]  # values are bytes
            state.last = chunk[-1][0].hex()
            state.copied += len(chunk)
            nbytes = sum(len(k) + len(v) for k, v in chunk)
            state.bytes += nbytes
            previous = await _write(destination, chunk, previous, state)
            if progress is not None:
                progress.advance(len(chunk), nbytes)
    state.complete = True
    await _write(destination, [], previous, state)
    return state


async def clear(store: DataStore, *, batch: int, err: TextIO) -> int:
    """Delete every key of ``store`` (an unfinished copy being restarted)."""
    progress = Progress(f'discarding the unfinished copy in "{store.name}"', stream=err)
    deleted = 0
    while True:
        keys = await store.range(b"", KEY_END, limit=batch, keys_only=True)
        if not keys:
            break
        doomed = WriteBatch()
        for key, _ in keys:
            doomed.delete(key)
        await store.write(doomed)
        deleted += len(keys)
        progress.advance(len(keys))
    progress.finish()
    return deleted


# --- the command ----------------------------------------------------------------------------


async def _prepare(
    opts: Options, source: DataStore, destination: DataStore, out: TextIO, err: TextIO
) -> tuple[bytes | None, Checkpoint | None]:
    """Check the stores' states; return the destination's checkpoint (raw and decoded)."""
    if await source.get(CHECKPOINT_KEY) is not None:
        raise CopyRefused(
            f'source store "{opts.source}" holds a copy checkpoint: it is the destination of '
            "an unfinished or unverified copy; finish that copy first"
        )
    raw, state = await read_checkpoint(destination)
    if opts.verify_only:
        if state is not None:
            print(
                f'note: "{opts.destination}" holds the checkpoint of an '
                f"{'unverified' if state.complete else 'unfinished'} copy from "
                f'"{state.source}" ({state.copied:,} keys copied)',
                file=out,
            )
        return raw, state
    if state is not None and opts.restart:
        deleted = await clear(destination, batch=opts.batch, err=err)
        print(f'restart: deleted {deleted:,} keys from "{opts.destination}"', file=out)
        return None, None
    if state is not None:
        if state.source != opts.source:
            raise CopyRefused(
                f'destination store "{opts.destination}" holds an unfinished copy from store '
                f'"{state.source}", not "{opts.source}"; rerun with --from {state.source}, '
                "or pass --restart to discard it"
            )
        return raw, state
    first = await destination.range(b"", KEY_END, limit=1, keys_only=True)
    if first:
        hint = " (--restart only discards an unfinished copy)" if opts.restart else ""
        raise CopyRefused(
            f'destination store "{opts.destination}" is not empty (first key '
            f"{describe_key(first[0][0])}) and holds no copy checkpoint: a copy never merges "
            f"into existing data; empty it or choose another store{hint}"
        )
    return None, None


async def run(opts: Options, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Copy (unless verify-only) and verify; 0 when the stores end up identical.

    Results go to ``out`` (standard output), progress to ``err`` (standard error).
    """
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    from stalwart_mp.store.configured import store_settings
    from stalwart_mp.store.registry import open_data_store

    cfg = opts.config
    kinds = [
        check_copyable(cfg, opts.source, "source"),
        check_copyable(cfg, opts.destination, "destination"),
    ]
    settings = [store_settings(cfg, opts.source), store_settings(cfg, opts.destination)]
    if opts.source == opts.destination or _location(settings[0]) == _location(settings[1]):
        raise CopyRefused(
            f'stores "{opts.source}" and "{opts.destination}" are the same data; copy '
            "between two different stores"
        )
    source = open_data_store(opts.source, settings[0])
    try:
        destination = open_data_store(opts.destination, settings[1])
    except BaseException:
        await source.close()
        raise
    try:
        print(
            f'store "{opts.source}" ({kinds[0]}) -> store "{opts.destination}" ({kinds[1]})',
            file=out,
        )
        raw, state = await _prepare(opts, source, destination, out, err)
        total = None
        if not opts.verify_only:
            total = await _copy(opts, source, destination, raw, state, out, err)
        return await _verify(opts, source, destination, total, out, err)
    finally:
        await source.close()
        await destination.close()


async def _copy(
    opts: Options,
    source: DataStore,
    destination: DataStore,
    raw: bytes | None,
    state: Checkpoint | None,
    out: TextIO,
    err: TextIO,
) -> int | None:
    """Copy what is left to copy; return the number of source keys (None if not counted)."""
    if state is not None and state.complete:
        print("copy already complete (not yet verified)", file=out)
        return None
    counting = Progress(f'counting keys in "{opts.source}"', stream=err)
    total = await count_keys(source, counting)
    counting.finish()
    if state is None:
        state = Checkpoint(opts.source)
        print(f"copying {total:,} keys in batches of {opts.batch:,}", file=out)
    else:
        print(
            f"resuming after key {describe_key(bytes.fromhex(state.last))}: "
            f"{state.copied:,} of {total:,} keys already copied",
            file=out,
        )
    progress = Progress("copying", total, stream=err, initial=state.copied)
    state = await copy_keys(source, destination, state, raw, batch=opts.batch, progress=progress)
    progress.finish()
    elapsed = format_duration(progress.elapsed)
    print(f"copied {state.copied:,} keys ({format_bytes(state.bytes)}) in {elapsed}", file=out)
    return total


async def _verify(
    opts: Options,
    source: DataStore,
    destination: DataStore,
    total: int | None,
    out: TextIO,
    err: TextIO,
) -> int:
    label = f'verifying "{opts.source}" against "{opts.destination}"'
    progress = Progress(label, total, stream=err)
    result = await compare(source, destination, page=opts.batch, progress=progress)
    progress.finish()
    print(result.report(opts.source, opts.destination), file=out)
    if not result.identical:
        if not opts.verify_only:
            print(
                f'the copy in "{opts.destination}" keeps its checkpoint (unverified); rerun '
                "with --restart to copy again from scratch",
                file=out,
            )
        return 1
    raw, state = await read_checkpoint(destination)
    if raw is not None and state is not None and state.complete and not opts.verify_only:
        done = WriteBatch().assert_value(CHECKPOINT_KEY, raw).delete(CHECKPOINT_KEY)
        await destination.write(done)
        print(f'copy verified: checkpoint removed from "{opts.destination}"', file=out)
    return 0


def main(args: argparse.Namespace) -> int:
    """Entry point of ``stalwart-mp store copy`` (arguments parsed by ``stalwart_mp.cli``)."""
    from stalwart_mp.config.loader import ConfigInvalid, load_file

    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # results interleave with stderr progress
    try:
        cfg = load_file(args.config)
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    opts = Options(cfg, args.source, args.destination, args.batch, args.verify_only, args.restart)
    try:
        return asyncio.run(run(opts))
    except (CopyRefused, StoreError) as exc:
        print(f"store copy: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "\nstore copy: interrupted; every batch committed so far is kept: run the same "
            "command again to resume",
            file=sys.stderr,
        )
        return 130
