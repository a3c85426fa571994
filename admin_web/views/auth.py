"""Login and logout.

The login form's user name and password are checked by the control plane itself: one
``Server.GetStatus`` call with ``authorization: Basic`` credentials (RFC 7617), which the
server verifies like any protocol login, so failures count toward its bans and throttles,
and which it accepts only for an account with the role "admin". An account with
two-factor authentication gives its TOTP code in the form's optional "Authentication code"
field: the password sent is then ``password$code``. Afterwards the session
(a signed, HttpOnly cookie) names the administrator and calls use the control token.
"""
from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from admin_web.context import admin_config, signed_in
from admin_web.forms import ConfirmForm, LoginForm
from admin_web.grpc_client import ControlPlane, ControlRefused, Credentials
from stalwart_mp.control.gen.stalwart_mp.v1 import server_pb2

bp = Blueprint("auth", __name__)
log = logging.getLogger("stalwart_mp.admin")


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no scheme, no host): never an open redirect."""
    if not target:
        return url_for("dashboard.index")
    parts = urlsplit(target)
    # browsers read "/\\host" as "//host": no backslash either
    if (parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//")
            or "\\" in target):
        return url_for("dashboard.index")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response | tuple[str, int]:
    form = LoginForm()
    if signed_in() is not None and request.method == "GET":
        return redirect(url_for("dashboard.index"))
    if form.validate_on_submit():
        cfg = admin_config()
        user = form.username.data.strip()
        password = form.password.data
        if (form.code.data or "").strip():  # TOTP: the server takes "password$code"
            password += "$" + form.code.data.strip()
        try:
            with ControlPlane(cfg.control, Credentials(user=user, password=password,
                                                      client_ip=request.remote_addr),
                              cfg.timeout) as plane:
                plane.server.GetStatus(server_pb2.GetStatusRequest())
        except ControlRefused as exc:
            log.warning("admin login refused", extra={"fields": {
                "user": user, "client": request.remote_addr, "reason": str(exc)}})
            form.password.errors.append(
                str(exc) if exc.forbidden else f"Login refused: {exc}")
            return render_template("login.html", form=form), 401
        session.clear()  # a new session for the new identity (no fixation)
        session.permanent = True
        session["user"] = user
        session["at"] = session["checked"] = int(time.time())
        log.info("admin login", extra={"fields": {"user": user, "client": request.remote_addr}})
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", form=form)


@bp.route("/logout", methods=["POST"])
def logout() -> Response:
    form = ConfirmForm()
    if form.validate_on_submit():
        user = session.get("user")
        session.clear()
        if user:
            log.info("admin logout", extra={"fields": {"user": user}})
        flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
