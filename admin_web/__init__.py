"""The web admin of stalwart-mp: a Flask application on the gRPC control plane.

It holds no data: every page reads and writes through the control plane
(``admin_web.grpc_client``). ``create_app(config)`` builds the application; gunicorn runs
it from ``admin_web.wsgi:app`` (standalone) or from the master's ``admin`` child
(``admin_web.child``).

Importing this package imports neither Flask nor gRPC: the admin child's gunicorn arbiter
forks its workers after importing ``admin_web.child``, and each worker builds the app (and
opens its gRPC channels) after the fork.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from admin_web.config import AdminConfig


def create_app(config: AdminConfig | None = None, **overrides: Any) -> Flask:
    """The web admin for ``config`` (default: from the environment, see admin_web.config);
    ``overrides`` go into ``app.config``."""
    from admin_web.app import build

    return build(config, **overrides)
