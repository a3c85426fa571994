"""Settings of the lookup stores (declared with their backends)."""
from __future__ import annotations
