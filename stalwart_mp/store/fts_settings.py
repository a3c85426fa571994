"""Settings of the fts stores (declared with their backends)."""
from __future__ import annotations
