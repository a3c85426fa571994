"""Which process a store was opened in, without a system call per operation.

Stores must be opened after fork, in the process that uses them; each one checks that on
every operation. ``os.getpid()`` is a real system call (glibc no longer caches it), which
showed up at several percent of a delivery's CPU; a counter bumped in every forked child
answers the same question for the price of an attribute read.
"""
from __future__ import annotations

import os

_generation = 0


def _bump() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_bump)


def generation() -> int:
    """Changes in a child after each fork: compare with the value seen at open."""
    return _generation
