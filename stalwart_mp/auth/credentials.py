"""Stored credentials that the SASL mechanisms check against (kept by the directories)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ScramSecret:
    """RFC 5802 §3 stored credentials for one SCRAM mechanism (never the password)."""

    mechanism: str  # "SCRAM-SHA-256" | "SCRAM-SHA-1"
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes
