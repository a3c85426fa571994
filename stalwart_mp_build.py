"""Build-time code generation (used by setup.py and by the stub-freshness test).

Compiles every ``proto/**/*.proto`` with grpcio-tools into ``stalwart_mp/control/gen``:
messages (``*_pb2.py``), type stubs (``*_pb2.pyi``) and services (``*_pb2_grpc.py``), one
sub-package per proto package (``proto/stalwart_mp/v1/server.proto`` ->
``stalwart_mp/control/gen/stalwart_mp/v1/server_pb2.py``).

protoc writes absolute imports between our own protos (``from stalwart_mp.v1 import x_pb2``),
which would resolve to the real ``stalwart_mp`` package; they are rewritten to package-relative
imports (``from . import x_pb2``, ``from ..v2 import y_pb2``) so the stubs work from any folder.
Imports of well-known types (``google.protobuf``) are left alone.
"""
from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

GEN_PACKAGE = "stalwart_mp.control.gen"
GEN_SUFFIXES = (".py", ".pyi")


class ProtocError(RuntimeError):
    """protoc rejected the .proto files (its messages are on stderr)."""


def proto_files(root: Path) -> list[Path]:
    """Every .proto file under ``root/proto``, sorted."""
    return sorted((root / "proto").rglob("*.proto"))


def gen_dir(root: Path) -> Path:
    """Where the build puts the stubs inside the source tree."""
    return root.joinpath(*GEN_PACKAGE.split("."))


def generate_stubs(root: Path, out: Path | None = None) -> list[Path]:
    """Generate the stubs of ``root/proto`` into ``out`` (default: the package) and return them.

    ``out`` belongs to the generator: stubs of .proto files that no longer exist are removed,
    so the folder always matches ``proto/`` exactly. Files are rewritten only if their content
    changes. Raises ProtocError if protoc fails.
    """
    from grpc_tools import protoc  # build-time dependency (pyproject.toml [build-system])

    root = root.resolve()
    out = (out or gen_dir(root)).resolve()
    proto_root = root / "proto"
    files = proto_files(root)
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="stalwart-mp-proto-") as tmp:
        staging = Path(tmp)
        if files:
            args = [
                "grpc_tools.protoc",
                f"-I{proto_root}",
                f"-I{include}",
                f"--python_out={staging}",
                f"--pyi_out={staging}",
                f"--grpc_python_out={staging}",
                *(f.relative_to(proto_root).as_posix() for f in files),
            ]
            if protoc.main(args) != 0:
                raise ProtocError(
                    "protoc failed on " + ", ".join(str(f) for f in files) + " (see stderr)"
                )
        for path in _generated_files(staging):
            _make_imports_relative(path, staging)
        for folder in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()
        return _sync(staging, out)


def _generated_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix in GEN_SUFFIXES and "__pycache__" not in p.parts
    )


_OWN_IMPORT = re.compile(r"^from (stalwart_mp(?:\.\w+)*) import ", re.MULTILINE)


def _make_imports_relative(path: Path, top: Path) -> None:
    """``from stalwart_mp.v1 import x_pb2`` -> ``from . import x_pb2`` (relative to ``path``)."""
    here = path.parent.relative_to(top).parts  # package of this module, e.g. (stalwart_mp, v1)

    def relative(match: re.Match[str]) -> str:
        target = tuple(match.group(1).split("."))
        common = 0
        while common < min(len(here), len(target)) and here[common] == target[common]:
            common += 1
        dots = "." * (len(here) - common + 1)
        rest = ".".join(target[common:])
        return f"from {dots}{rest} import "

    text = path.read_text(encoding="utf-8")
    fixed = _OWN_IMPORT.sub(relative, text)
    if fixed != text:
        path.write_text(fixed, encoding="utf-8")


def _sync(staging: Path, out: Path) -> list[Path]:
    """Make ``out`` hold exactly the generated files of ``staging``; return them."""
    wanted = {p.relative_to(staging) for p in _generated_files(staging)}
    if out.exists():
        for old in _generated_files(out):
            if old.relative_to(out) not in wanted:
                old.unlink()
        folders = (p for p in out.rglob("*") if p.is_dir() and p.name != "__pycache__")
        for folder in sorted(folders, reverse=True):  # deepest first
            if all(child.name == "__pycache__" for child in folder.iterdir()):
                shutil.rmtree(folder)  # its stubs are gone: only bytecode is left
    written = []
    for rel in sorted(wanted):
        src, dst = staging / rel, out / rel
        data = src.read_bytes()
        if not dst.exists() or dst.read_bytes() != data:
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
        written.append(dst)
    return written


if __name__ == "__main__":
    for p in generate_stubs(Path(__file__).resolve().parent):
        print(p)
