"""Settings of the blob stores (declared with their backends)."""
from __future__ import annotations
