"""The server's code stays lint-clean (ruff, with the project's pyproject settings)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing_in_the_server_code():
    ruff = Path(sys.executable).parent / "ruff"
    folders = [f for f in ("stalwart_mp", "admin_web", "scripts", "load_tests")
               if (ROOT / f).is_dir()]
    res = subprocess.run([str(ruff), "check", "--output-format", "concise", *folders],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
