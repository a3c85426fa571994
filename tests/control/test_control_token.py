"""The control token file: created once, private, and checked when read."""
from __future__ import annotations

import os
import stat

import pytest

from stalwart_mp.control.token import TokenError, ensure_control_token, read_control_token


def test_created_private_and_stable(tmp_path):
    token = ensure_control_token(tmp_path / "run")
    path = tmp_path / "run" / "control.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(token) >= 43 and token == path.read_text().strip()
    assert ensure_control_token(tmp_path / "run") == token
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["control.token"]


def test_readable_by_others_is_refused(tmp_path):
    ensure_control_token(tmp_path)
    os.chmod(tmp_path / "control.token", 0o644)
    with pytest.raises(TokenError, match=r"mode 0644.*chmod 600"):
        ensure_control_token(tmp_path)


def test_garbage_and_missing_files_are_explained(tmp_path):
    (tmp_path / "control.token").write_text("short\n")
    with pytest.raises(TokenError, match="does not hold a token"):
        read_control_token(tmp_path / "control.token")
    with pytest.raises(TokenError, match="does not exist.*stalwart-mp serve"):
        read_control_token(tmp_path / "nope")
