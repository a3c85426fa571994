"""Configuration of the web admin: where the control plane is, how to authenticate to it,
and the key that signs the session cookies.

The app holds no data of its own, so this is all it needs. The master's ``admin`` child
builds it from the server's config (``AdminConfig.for_child``); a standalone gunicorn
(``gunicorn -c admin_web/gunicorn.conf.py admin_web.wsgi:app``) reads the environment
(``AdminConfig.from_env``):

- ``STALWART_MP_SERVER``: control-plane address, "HOST:PORT" or "unix:/path"
  (default 127.0.0.1:50051, as ``stalwart-mp-admin``);
- ``STALWART_MP_TOKEN_FILE``: the server's ``control.token`` (run directory);
- ``STALWART_MP_ADMIN_SECRET_KEY_FILE``: the session signing key (created, mode 0600,
  if missing; default ``admin.secret`` next to the token file);
- ``STALWART_MP_ADMIN_METRICS_URL``: a worker's Prometheus ``/metrics`` URL for the
  dashboard (empty: the dashboard shows no counters);
- ``STALWART_MP_ADMIN_SECURE_COOKIES``: "1" to mark cookies Secure even when the
  request looks like plain HTTP (TLS terminated by a proxy that does not say so).
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_CONTROL = "127.0.0.1:50051"
SECRET_FILE = "admin.secret"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """Everything ``create_app`` needs."""

    control: str = DEFAULT_CONTROL
    token_file: Path | None = None
    secret_key_file: Path | None = None
    metrics_url: str = ""
    secure_cookies: bool = False
    timeout: float = 10.0  # seconds per control-plane call (reload waits longer)
    session_hours: float = 8.0  # a login lasts this long

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AdminConfig:
        env = os.environ if env is None else env
        token = Path(env["STALWART_MP_TOKEN_FILE"]) if env.get("STALWART_MP_TOKEN_FILE") else None
        secret = env.get("STALWART_MP_ADMIN_SECRET_KEY_FILE")
        return cls(
            control=env.get("STALWART_MP_SERVER") or DEFAULT_CONTROL,
            token_file=token,
            secret_key_file=Path(secret) if secret else (
                token.parent / SECRET_FILE if token else None),
            metrics_url=env.get("STALWART_MP_ADMIN_METRICS_URL", ""),
            secure_cookies=env.get("STALWART_MP_ADMIN_SECURE_COOKIES", "") in ("1", "true"),
        )

    @classmethod
    def for_child(cls, cfg: Any, run_dir: Path) -> AdminConfig:
        """The admin child of ``stalwart-mp serve``: the same host, the same run directory."""
        return cls(
            control=cfg.get("control.bind"),
            token_file=Path(run_dir) / "control.token",
            secret_key_file=Path(run_dir) / SECRET_FILE,
            metrics_url=metrics_url_of(cfg),
        )


def metrics_url_of(cfg: Any) -> str:
    """The /metrics URL of the first plain-HTTP listener of a server config, or ""."""
    if not cfg.get("metrics.enabled", True):
        return ""
    for name in sorted(cfg.names("server.listener")):
        prefix = f"server.listener.{name}"
        if cfg.get(f"{prefix}.protocol") != "http" or cfg.get(f"{prefix}.tls.implicit"):
            continue
        binds = cfg.get(f"{prefix}.bind") or []
        if not binds:
            continue
        host, _, port = binds[0].rpartition(":")
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host in ("[::]", "::"):
            host = "[::1]"
        return f"http://{host}:{port}/metrics"
    return ""


def load_secret_key(path: Path | None) -> bytes:
    """The session signing key kept in ``path`` (created with 32 random bytes, mode 0600,
    if missing, so every gunicorn worker and every restart signs alike); a fresh key that
    lives as long as the process when there is no path.

    Creation is atomic (written aside, then hard-linked into place): workers starting
    together all end up with the key of the first one."""
    if path is None:
        return secrets.token_bytes(32)
    path = Path(path)
    if not path.exists():
        aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            pass  # another worker was first: use its key
        finally:
            os.unlink(aside)
    data = path.read_bytes()
    if len(data) < 32:
        raise RuntimeError(f"the session key file {path} is shorter than 32 bytes: "
                           "delete it and a new one is made")
    return data
