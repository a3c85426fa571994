"""Backend-independent evaluation of a ``WriteBatch``.

Every backend follows the same shape inside one transaction: read the current values of the
keys the batch asserts on or adds to (under whatever lock makes that read stable until
commit), call ``resolve`` to check assertions and compute the final value of each touched
key, then write those values and commit. Keeping the semantics here means the five backends
cannot disagree on what a batch means.
"""

from __future__ import annotations

from collections.abc import Mapping

from stalwart_mp.store.data import AssertionFailed, Op, StoreError, WriteBatch, encode_counter

COUNTER_MIN = -(2**63)
COUNTER_MAX = 2**63 - 1


def keys_to_read(batch: WriteBatch) -> list[bytes]:
    """Sorted distinct keys whose stored value the batch depends on (ASSERT and ADD)."""
    return sorted({key for op, key, _ in batch.ops if op in (Op.ASSERT, Op.ADD)})


def touched_keys(batch: WriteBatch) -> list[bytes]:
    """Sorted distinct keys the batch reads or writes (lock order: sorted avoids deadlocks)."""
    return sorted({key for _, key, _ in batch.ops})


def validate(batch: WriteBatch) -> None:
    """Reject malformed operations before any I/O (a programming error, not a conflict)."""
    for op, key, arg in batch.ops:
        if not isinstance(key, bytes) or not key:
            raise StoreError(f"store key must be non-empty bytes, got {key!r}")
        if op is Op.PUT and not isinstance(arg, bytes):
            raise StoreError(f"put {key!r}: value must be bytes, got {type(arg).__name__}")
        if op is Op.ADD and (isinstance(arg, bool) or not isinstance(arg, int)):
            raise StoreError(f"add {key!r}: delta must be an int, got {arg!r}")
        if op is Op.ASSERT and arg is not None and not isinstance(arg, bytes):
            raise StoreError(f"assert {key!r}: expected value must be bytes or None")


def counter_value(key: bytes, raw: bytes | None) -> int:
    if raw is None:
        return 0
    if len(raw) != 8:
        raise StoreError(f"key {key!r} holds {len(raw)} bytes, not an 8-byte counter")
    return int.from_bytes(raw, "big", signed=True)


def resolve(batch: WriteBatch, current: Mapping[bytes, bytes | None]) -> dict[bytes, bytes | None]:
    """Apply the ops in order over ``current``; return the final value per touched key.

    ``current`` must hold the stored value (or None) of every key in ``keys_to_read``.
    A None in the result means "delete". Raises AssertionFailed (nothing to write) when an
    assertion does not hold against the state produced by the ops before it.
    """
    pending: dict[bytes, bytes | None] = {}

    def value_of(key: bytes) -> bytes | None:
        return pending[key] if key in pending else current.get(key)

    for op, key, arg in batch.ops:
        if op is Op.PUT:
            pending[key] = arg  # type: ignore[assignment]
        elif op is Op.DELETE:
            pending[key] = None
        elif op is Op.ADD:
            total = counter_value(key, value_of(key)) + arg  # type: ignore[operator]
            if not COUNTER_MIN <= total <= COUNTER_MAX:
                raise StoreError(f"counter {key!r} would overflow 64 bits ({total})")
            pending[key] = encode_counter(total)
        elif op is Op.ASSERT and value_of(key) != arg:
            raise AssertionFailed(key)
    return pending


def id_batch(key: bytes) -> WriteBatch:
    """The batch behind ``assign_id``: one atomic increment of the sequence counter."""
    return WriteBatch().add(key, 1)


def check_range(start: bytes, end: bytes, limit: int | None) -> bool:
    """False when the range is empty by construction (start >= end or limit <= 0)."""
    return start < end and (limit is None or limit > 0)
