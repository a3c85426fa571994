"""Per-request access to the control plane and the signed-in administrator."""
from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import grpc
from flask import current_app, flash, g, redirect, request, session, url_for

from admin_web.config import AdminConfig
from admin_web.grpc_client import ControlError, ControlPlane, token_credentials
from stalwart_mp.control.gen.stalwart_mp.v1 import principals_pb2 as pb


def admin_config() -> AdminConfig:
    return current_app.extensions["stalwart_admin"]


def control() -> ControlPlane:
    """The control plane for this request, authenticated by the control token (the
    administrator proved who they are at login); closed at the end of the request."""
    plane = g.get("control_plane")
    if plane is None:
        cfg = admin_config()
        credentials = dataclasses.replace(token_credentials(cfg.token_file),
                                          on_behalf_of=session.get("user"),
                                          client_ip=request.remote_addr)
        plane = ControlPlane(cfg.control, credentials, cfg.timeout)
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
    """Redirect to the login page (coming back here afterwards) without a session, or when
    the signed-in account is no longer an enabled administrator."""
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if signed_in() is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        problem = _still_admin()
        if problem:
            session.clear()
            flash(problem, "error")
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


RECHECK_SECONDS = 60


def _still_admin() -> str | None:
    """Why the session's account may no longer administer (deleted, disabled, role
    removed since the login), or None. Asked at most once a minute per session; a
    directory the Principals service cannot read (SQL, LDAP) is trusted until the session
    ends."""
    now = time.time()
    if now - session.get("checked", 0) < RECHECK_SECONDS:
        return None
    user = session["user"]
    try:
        principal = control().principals.GetPrincipal(pb.GetPrincipalRequest(name=user))
    except ControlError as exc:
        if exc.code == grpc.StatusCode.NOT_FOUND:
            return f"The account {user} no longer exists: sign in again."
        if exc.code != grpc.StatusCode.FAILED_PRECONDITION:
            raise
    else:
        if principal.disabled or "admin" not in principal.roles:
            return f"The account {user} is no longer an administrator."
    session["checked"] = now
    return None
