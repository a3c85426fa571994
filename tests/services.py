"""Availability of external services for tests (PostgreSQL, MariaDB, Redis, ...).

A test that needs a service calls ``require_service(name, check)``. When ``check`` raises, the
test is skipped with the reason — or fails under ``REQUIRE_SERVICES=1`` (CI), where a missing
service is a broken environment, not a reason to pass quietly. The outcome of each check is
remembered per name for the whole session, so an unreachable service costs one timeout.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

_outcomes: dict[str, str | None] = {}  # service name -> None (available) or the reason


def services_required() -> bool:
    return os.environ.get("REQUIRE_SERVICES", "") == "1"


def require_service(name: str, check: Callable[[], None]) -> None:
    """Skip (or, with REQUIRE_SERVICES=1, fail) the running test if ``check()`` raises."""
    if name not in _outcomes:
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not available"
            detail = " ".join(str(exc).split()) or type(exc).__name__
            _outcomes[name] = f"{name} is not available: {detail}"
        else:
            _outcomes[name] = None
    reason = _outcomes[name]
    if reason is None:
        return
    if services_required():
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)
