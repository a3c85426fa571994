"""The generated gRPC stubs in the package match proto/ (they are rebuilt by the build)."""
from __future__ import annotations

from pathlib import Path

import stalwart_mp_build
from stalwart_mp.control import gen

ROOT = Path(__file__).resolve().parents[2]
INSTALLED = Path(gen.__file__).resolve().parent


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix in (".py", ".pyi") and "__pycache__" not in p.parts
    }


def test_installed_stubs_match_proto_files(tmp_path):
    stalwart_mp_build.generate_stubs(ROOT, tmp_path)
    fresh, installed = _files(tmp_path), _files(INSTALLED)
    assert fresh, f"no stubs generated from {ROOT / 'proto'}"
    stale = sorted(
        name for name in fresh.keys() | installed.keys() if fresh.get(name) != installed.get(name)
    )
    assert not stale, (
        f"the stubs in {INSTALLED} are stale (differ from proto/): {', '.join(stale)}; "
        "run `pip install -e .` to regenerate them"
    )


def test_generated_imports_are_package_relative(tmp_path):
    stalwart_mp_build.generate_stubs(ROOT, tmp_path)
    grpc_module = (tmp_path / "stalwart_mp/v1/server_pb2_grpc.py").read_text()
    assert "from . import server_pb2 as" in grpc_module
    assert "from stalwart_mp." not in grpc_module


def test_generation_removes_stubs_of_deleted_protos(tmp_path):
    out = tmp_path / "gen"
    stale = out / "stalwart_mp" / "v1" / "gone_pb2.py"
    stale.parent.mkdir(parents=True)
    stale.write_text("# stub of a deleted .proto\n")
    written = stalwart_mp_build.generate_stubs(ROOT, out)
    assert not stale.exists()
    assert out / "stalwart_mp" / "v1" / "server_pb2.py" in written
