"""Imports point downward only (ARCHITECTURE.md "Layers", CONVENTIONS.md §5).

Every import statement of the package — at module level or inside a function — is read with
``ast`` and checked against the layer rules below, so a shortcut across layers fails here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "stalwart_mp"

# package -> packages it must never import (directly or in a function)
FORBIDDEN = {
    "stalwart_mp.store": ["stalwart_mp.directory", "stalwart_mp.mail", "stalwart_mp.smtp",
                          "stalwart_mp.http", "stalwart_mp.worker", "stalwart_mp.control"],
    "stalwart_mp.directory": ["stalwart_mp.mail", "stalwart_mp.smtp", "stalwart_mp.http",
                              "stalwart_mp.worker", "stalwart_mp.control"],
    "stalwart_mp.auth": ["stalwart_mp.store", "stalwart_mp.mail", "stalwart_mp.smtp",
                         "stalwart_mp.worker"],
    "stalwart_mp.mail": ["stalwart_mp.smtp", "stalwart_mp.http", "stalwart_mp.worker",
                         "stalwart_mp.control"],
    "stalwart_mp.events": ["stalwart_mp.store", "stalwart_mp.directory", "stalwart_mp.mail",
                           "stalwart_mp.smtp"],
    "stalwart_mp.config": ["stalwart_mp.mail", "stalwart_mp.smtp", "stalwart_mp.http",
                           "stalwart_mp.control"],
}
# sans-I/O modules: no sockets, no stores, no event loop (CONVENTIONS.md §2)
SANS_IO = ["stalwart_mp/smtp/protocol.py", "stalwart_mp/smtp/replies.py",
           "stalwart_mp/smtp/address.py", "stalwart_mp/auth/sasl.py",
           "stalwart_mp/worker/proxy_protocol.py", "stalwart_mp/events/frames.py",
           *[str(p.relative_to(ROOT)) for p in (PACKAGE / "mail" / "ingest").glob("*.py")],
           *[str(p.relative_to(ROOT)) for p in (PACKAGE / "imap" / "protocol").glob("*.py")]]
SANS_IO_FORBIDDEN = ["asyncio", "socket", "stalwart_mp.store", "stalwart_mp.directory",
                     "stalwart_mp.worker", "uvloop"]
# the master process, before fork: no event loop, no DB driver, no gRPC (fork safety)
MASTER_MODULE_LEVEL_FORBIDDEN = ["grpc", "uvloop", "psycopg2", "pymysql", "lmdb", "redis",
                                 "pymemcache", "boto3", "ldap3", "aiohttp"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module_level_only: bool = False) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names = []
    package = _module_name(path).rsplit(".", 1)[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names.append(f"{base}.{node.module}" if node.module else base)
            elif node.module:
                names.append(node.module)
    return names


def _matches(name: str, prefixes: list[str]) -> str | None:
    return next((p for p in prefixes if name == p or name.startswith(p + ".")), None)


def _files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "gen" not in p.relative_to(PACKAGE).parts]


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_downward_only(layer):
    violations = []
    for path in _files():
        module = _module_name(path)
        if module != layer and not module.startswith(layer + "."):
            continue
        for name in _imports(path):
            hit = _matches(name, FORBIDDEN[layer])
            if hit:
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert violations == []


def test_sans_io_modules_do_no_io():
    violations = []
    for rel in SANS_IO:
        for name in _imports(ROOT / rel):
            if _matches(name, SANS_IO_FORBIDDEN):
                violations.append(f"{rel} imports {name}")
    assert violations == []


def test_master_imports_nothing_fork_unsafe_at_module_level():
    violations = []
    for path in (PACKAGE / "master").glob("*.py"):
        for name in _imports(path, module_level_only=True):
            if _matches(name, MASTER_MODULE_LEVEL_FORBIDDEN):
                violations.append(f"{path.relative_to(ROOT)} imports {name}")
    assert violations == []
