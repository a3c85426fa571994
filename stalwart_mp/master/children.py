"""Child processes of the master: what each kind runs, and the fork that starts it.

A child is forked from the master (which holds no event loop, no DB connection, no gRPC
channel) and only then imports what it needs. Kinds:
- ``worker`` (N): uvloop, serves every listener on the shared sockets;
- ``control`` (1): the gRPC control plane;
- ``queue`` (1): background mail work (indexing, housekeeping; outbound delivery later);
- ``admin`` (1, when admin.enabled): gunicorn serving the web admin (``admin_web``).
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from stalwart_mp import logs
from stalwart_mp.master.privileges import drop_privileges
from stalwart_mp.master.sockets import Listener

log = logging.getLogger("stalwart_mp.master")

# Exit code of a child that cannot start at all (bad certificate, unreadable store...):
# respawning would fail the same way, so the master stops with the child's error.
BOOT_ERROR = 3

# kind -> "module:function"; the function takes a ChildContext and returns an exit code.
BODIES: dict[str, str] = {
    "worker": "stalwart_mp.worker.main:run_worker",
    "control": "stalwart_mp.control.main:run_control_child",
    "queue": "stalwart_mp.background.main:run_queue_child",
    "admin": "admin_web.child:run_admin_child",
}
SINGLETONS = ("control", "queue", "admin")
# singletons that run only while a setting is true
OPTIONAL_SINGLETONS = {"admin": "admin.enabled"}


def wanted_singletons(cfg: object) -> list[str]:
    """The singleton kinds ``cfg`` (a Config) asks for."""
    return [kind for kind in SINGLETONS
            if kind not in OPTIONAL_SINGLETONS
            or cfg.get(OPTIONAL_SINGLETONS[kind])]  # type: ignore[attr-defined]


@dataclass(slots=True)
class ChildContext:
    """Everything a child needs, inherited through fork."""

    kind: str
    generation: int
    config: object  # stalwart_mp.config.loader.Config
    config_path: Path
    run_dir: Path
    master_pid: int
    listeners: list[Listener] = field(default_factory=list)
    heartbeat: IO[bytes] | None = None
    inherited_fds: list[int] = field(default_factory=list)  # to close in the child
    cleanups: list[Callable[[], None]] = field(default_factory=list)  # master state to drop


@dataclass(slots=True)
class Child:
    """The master's record of a running child."""

    kind: str
    pid: int
    generation: int
    started_at: float
    heartbeat: IO[bytes] | None = None
    retiring: bool = False
    kill_sent: float | None = None


def fork_child(ctx: ChildContext) -> int:
    """Fork and run ``ctx.kind``'s body in the child. Returns the pid in the master."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        _prepare_child(ctx)
        module, _, func = BODIES[ctx.kind].partition(":")
        code = getattr(importlib.import_module(module), func)(ctx)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("child crashed", extra={"fields": {"kind": ctx.kind}})
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code or 0)
    return 0  # unreachable: the child always leaves through os._exit


def _prepare_child(ctx: ChildContext) -> None:
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    for cleanup in ctx.cleanups:
        cleanup()
    for fd in ctx.inherited_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    logs.set_process_kind(ctx.kind)
    logs.configure_from(ctx.config)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(ctx.run_dir / "metrics")
    drop_privileges(ctx.config)
    try:
        import setproctitle  # optional: nicer `ps` output

        setproctitle.setproctitle(f"stalwart-mp: {ctx.kind}")
    except ImportError:
        pass


def master_alive(ctx: ChildContext) -> bool:
    """True while the master that forked us is alive (we are re-parented when it dies)."""
    return os.getppid() == ctx.master_pid


def backoff_delay(failures: int) -> float:
    """Respawn delay after ``failures`` quick deaths in a row: 0, 0.5, 1, 2 ... 30 s."""
    return 0.0 if failures <= 0 else min(30.0, 0.5 * 2 ** (failures - 1))


def now() -> float:
    return time.monotonic()
