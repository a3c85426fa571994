"""The control plane's bearer token: ``<run_dir>/control.token``.

The master creates it at start if it is missing (32 random bytes, URL-safe base64, mode
0600); a token file that exists is kept. The control child checks every call's
``authorization: Bearer <token>`` metadata against it; clients on the same host read it
from the file (``stalwart-mp-admin --token-file``). Nothing here imports grpc: the master
uses this module.
"""
from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path

TOKEN_FILE = "control.token"
TOKEN_BYTES = 32
_MIN_LENGTH = 32  # characters; 32 random bytes give 43


class TokenError(Exception):
    """The token file cannot be created or used; the message says what to do."""


def token_path(run_dir: Path) -> Path:
    return Path(run_dir) / TOKEN_FILE


def ensure_control_token(run_dir: Path) -> str:
    """Return the control token of ``run_dir``, creating the file (mode 0600) if missing.

    Creation is atomic (written aside, then hard-linked into place), so concurrent callers
    and readers never see a partial token. Raises TokenError if an existing file is readable
    by other users or is not a usable token.
    """
    path = token_path(run_dir)
    if not path.exists():
        _create(path)
    return read_control_token(path, check_mode=True)


def read_control_token(path: Path, check_mode: bool = False) -> str:
    """Read a token file. With ``check_mode``, refuse a file that others can read."""
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise TokenError(
            f"control token file {path} does not exist: it is created by `stalwart-mp serve` "
            "in its run directory (server.run-dir)"
        ) from None
    except PermissionError:
        raise TokenError(
            f"cannot read the control token file {path}: permission denied "
            "(run as the server's user or root)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the control token file {path}: {exc}") from None
    if check_mode and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenError(
            f"control token file {path} has mode {stat.S_IMODE(st.st_mode):04o}: other users "
            f"can read it; run `chmod 600 {path}` (or delete it to get a new token)"
        )
    token = text.strip()
    if len(token) < _MIN_LENGTH or any(c.isspace() for c in token):
        raise TokenError(
            f"control token file {path} does not hold a token (expected one line of at least "
            f"{_MIN_LENGTH} characters); delete it and restart `stalwart-mp serve` for a new one"
        )
    return token


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".control.token.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # fails if another process created it first: keep theirs
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
