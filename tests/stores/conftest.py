"""Fixtures of the store tests: an S3 server (moto) for the blob-store suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services import require_service
from tests.stores.s3_server import MotoServer


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A moto S3 server for the session; skips (fails under REQUIRE_SERVICES=1) without it."""
    server = MotoServer()
    require_service("moto_server", server.start)
    try:
        yield server
    finally:
        server.stop()
