"""The Flask application of the web admin: configuration, session cookies, CSRF,
security headers, blueprints and error pages (``admin_web.create_app`` calls ``build``)."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from flask import Flask, Response, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect

from admin_web.config import AdminConfig, load_secret_key
from admin_web.context import close_control, signed_in
from admin_web.grpc_client import ControlDown, ControlError, ControlRefused

log = logging.getLogger("stalwart_mp.admin")


class _SessionInterface(SecureCookieSessionInterface):
    """Session cookies marked Secure whenever the request came over TLS (or always, when
    configured), HttpOnly and SameSite=Lax in every case (see create_app)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def build(config: AdminConfig | None = None, **overrides: Any) -> Flask:
    """The web admin for ``config`` (default: from the environment, see admin_web.config).

    ``overrides`` go into ``app.config`` (tests: ``WTF_CSRF_ENABLED``...)."""
    config = config or AdminConfig.from_env()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=load_secret_key(config.secret_key_file),
        SESSION_COOKIE_NAME="stalwart_admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.secure_cookies,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=config.session_hours),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        MAX_CONTENT_LENGTH=1024 * 1024,
        **overrides,
    )
    app.session_interface = _SessionInterface()
    app.extensions["stalwart_admin"] = config
    CSRFProtect(app)

    from admin_web.views import (
        aliases,
        auth,
        dashboard,
        domains,
        principals,
        queue,
        settings,
        setup,
    )

    for module in (auth, dashboard, domains, principals, aliases, queue, settings, setup):
        app.register_blueprint(module.bp)
    app.teardown_request(close_control)
    _error_pages(app)

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {"current_user": signed_in()}

    @app.after_request
    def _audit(response: Response) -> Response:
        # The control plane's audit log names the caller "token" for the admin's calls:
        # this line says which administrator made each change, from where.
        if request.method == "POST" and request.endpoint not in ("auth.login", None):
            log.info("admin web change", extra={"fields": {
                "user": signed_in() or "-", "client": request.remote_addr,
                "action": request.endpoint, "path": request.path,
                "status": response.status_code}})
        return response

    @app.after_request
    def _headers(response: Response) -> Response:
        # everything is served from here: no inline scripts, no third-party origins
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
            "form-action 'self'; base-uri 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.is_secure:  # RFC 6797: browsers keep to HTTPS for this host
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if request.endpoint != "static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def _error_pages(app: Flask) -> None:
    @app.errorhandler(ControlDown)
    def _down(exc: ControlDown) -> tuple[str, int]:
        log.warning("control plane down", extra={"fields": {"error": str(exc)}})
        return render_template("error.html", title="The mail server is not answering",
                               message=str(exc), status=503), 503

    @app.errorhandler(ControlRefused)
    def _refused(exc: ControlRefused) -> tuple[str, int]:
        return render_template(
            "error.html", title="The control plane refused the web admin",
            message=str(exc), status=502), 502

    @app.errorhandler(ControlError)
    def _error(exc: ControlError) -> tuple[str, int]:
        return render_template("error.html", title="The server refused the request",
                               message=str(exc), status=400), 400

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError) -> tuple[str, int]:
        return render_template(
            "error.html", title="The form could not be accepted",
            message="It has expired or did not come from this site "
            f"({exc.description}). Go back, reload the page and submit it again.",
            status=400), 400

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> tuple[str, int]:
        return render_template("error.html", title="Page not found",
                               message=f"There is no page at {request.path}.",
                               status=404), 404
