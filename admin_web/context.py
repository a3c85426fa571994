"""Per-request access to the control plane and the signed-in administrator."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import current_app, g, redirect, request, session, url_for

from admin_web.config import AdminConfig
from admin_web.grpc_client import ControlPlane, token_credentials


def admin_config() -> AdminConfig:
    return current_app.extensions["stalwart_admin"]


def control() -> ControlPlane:
    """The control plane for this request, authenticated by the control token (the
    administrator proved who they are at login); closed at the end of the request."""
    plane = g.get("control_plane")
    if plane is None:
        cfg = admin_config()
        plane = ControlPlane(cfg.control, token_credentials(cfg.token_file), cfg.timeout)
        g.control_plane = plane
    return plane


def close_control(_exc: BaseException | None = None) -> None:
    plane = g.pop("control_plane", None)
    if plane is not None:
        plane.close()


def signed_in() -> str | None:
    """The administrator's name if this session is signed in and not expired."""
    return session.get("user")


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Redirect to the login page (coming back here afterwards) without a session."""
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if signed_in() is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped
