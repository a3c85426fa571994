"""Body of the ``control`` child: the gRPC control plane, until SIGTERM or the master's death.

The master forks and calls ``run_control_child(ctx)`` (see ``stalwart_mp.master.children``);
``run_control`` is the same body with plain arguments, also runnable for tests and debugging
as ``python -m stalwart_mp.control.main --run-dir DIR --master-pid PID --bind ADDRESS``.

Signals: TERM and INT stop gracefully (calls in progress get 5 s), QUIT stops at once,
HUP is ignored (reloads are the master's business). Handlers only record the signal; a
self-pipe wakes the main loop, which also checks every second that the master is alive.
"""
from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from stalwart_mp.control.config_service import sync_overlay
from stalwart_mp.control.principals_service import DirectoryBackend
from stalwart_mp.control.service import BindError, build_server, tls_credentials
from stalwart_mp.control.token import TokenError, ensure_control_token
from stalwart_mp.master.children import BOOT_ERROR

log = logging.getLogger("stalwart_mp.control")

GRACE = 5.0  # seconds calls in progress may take after SIGTERM
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


class ControlBootError(Exception):
    """The control plane cannot start (bad address, unusable token file)."""


def run_control(cfg: Any, run_dir: Path, master_pid: int, bind: str,
                config_path: Path | None = None) -> None:
    """Serve the control plane on ``bind`` until SIGTERM/SIGINT/SIGQUIT or the master dies.

    ``cfg`` is the master's Config (None: no stores, the Principals calls are UNAVAILABLE);
    ``run_dir`` holds status.json, control.token and events.sock; ``bind`` is "HOST:PORT" or "unix:/path".
    ``config_path`` is the master's configuration file (the Config service reads it).
    Raises ControlBootError if it cannot start.
    """
    run_dir = Path(run_dir)
    directory = DirectoryBackend(cfg, run_dir, config_path) if cfg is not None else None
    try:
        token = ensure_control_token(run_dir)
        server, port = build_server(run_dir, master_pid, bind, token, directory=directory,
                                    config_path=config_path,
                                    credentials=tls_credentials(cfg) if cfg else None)
    except (TokenError, BindError) as exc:
        raise ControlBootError(str(exc)) from None
    if directory is not None:
        directory.start()  # its loop thread: opens the stores at the first call
        # the master's mirror of the stored settings, from the data store (reload if stale)
        threading.Thread(target=sync_overlay, args=(directory, run_dir, master_pid),
                         name="control-sync", daemon=True).start()
    wake_r, wake_w = socket.socketpair()
    received: list[int] = []
    previous = _install_signals(received, wake_w)
    try:
        server.start()
        log.info("control plane listening",
                 extra={"fields": {"bind": bind, "port": port, "master_pid": master_pid}})
        grace = _serve_until_stopped(received, wake_r, master_pid)
        log.info("control plane stopping", extra={"fields": {"grace": grace}})
        server.stop(grace=grace).wait()
    finally:
        if directory is not None:
            directory.close()
        _restore_signals(previous)
        wake_r.close()
        wake_w.close()


def _serve_until_stopped(received: list[int], wake: socket.socket, master_pid: int) -> float:
    """Wait for a stop signal or the master's death; return the grace period to stop with."""
    while True:
        if received:
            return 0.0 if received[0] == signal.SIGQUIT else GRACE
        if os.getppid() != master_pid:
            log.warning("master is gone, exiting", extra={"fields": {"master_pid": master_pid}})
            return GRACE
        ready, _, _ = select.select([wake], [], [], 1.0)
        if ready:
            wake.recv(4096)  # drain the wake-up bytes; the signals are in ``received``


def _install_signals(received: list[int], wake_w: socket.socket) -> dict[int, Any]:
    wake_w.setblocking(False)
    previous: dict[int, Any] = {signal.SIGHUP: signal.signal(signal.SIGHUP, signal.SIG_IGN)}
    for sig in _STOP_SIGNALS:
        previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    previous[-1] = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    signal.set_wakeup_fd(previous.pop(-1))
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def run_control_child(ctx: Any) -> int:
    """Entry point for the master's fork (``ctx``: stalwart_mp.master.children.ChildContext).

    Returns the exit code: 0 after a normal stop, BOOT_ERROR if the control plane cannot start.
    """
    try:
        run_control(ctx.config, ctx.run_dir, ctx.master_pid, ctx.config.get("control.bind"),
                    ctx.config_path)
    except ControlBootError as exc:
        log.error("control plane cannot start", extra={"fields": {"error": str(exc)}})
        return BOOT_ERROR
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stalwart_mp.control.main",
        description="Run the control plane alone (tests, debugging); "
        "`stalwart-mp serve` normally starts it as a child of the master.",
    )
    parser.add_argument("--run-dir", type=Path, required=True,
                        help="folder holding status.json and control.token")
    parser.add_argument("--master-pid", type=int, default=os.getppid(),
                        help="pid of the master: SIGHUP target of Reload; we exit when it is no "
                        "longer our parent (default: our parent)")
    parser.add_argument("--bind", default="127.0.0.1:50051",
                        help='"HOST:PORT" or "unix:/path" (default: %(default)s)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        run_control(None, args.run_dir, args.master_pid, args.bind)
    except ControlBootError as exc:
        print(f"stalwart-mp control: {exc}", file=sys.stderr)
        return BOOT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
