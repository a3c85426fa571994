"""Body of the master's ``admin`` child: gunicorn serving ``admin_web`` on admin.bind.

The master forks the child (``stalwart_mp.master.children.BODIES["admin"]``); this body
runs gunicorn's own arbiter in that process (its workers are the child's children) with
the app built from the server's config: the control plane at control.bind with the
token of the run directory, the session key in ``<run_dir>/admin.secret``. Gunicorn
handles TERM (graceful) and QUIT (fast) as the master expects of a child; a watcher
thread stops it if the master dies.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

log = logging.getLogger("stalwart_mp.admin")


def gunicorn_options(cfg: Any) -> dict[str, Any]:
    """Gunicorn settings from the server's config (as admin_web/gunicorn.conf.py)."""
    return {
        "bind": [cfg.get("admin.bind")],
        "workers": cfg.get("admin.workers"),
        "worker_class": "gthread",
        "threads": 4,
        "timeout": 60,
        "graceful_timeout": 10,
        "proc_name": "stalwart-mp: admin",
        "forwarded_allow_ips": "127.0.0.1,::1",
        "errorlog": "-",
        # gunicorn's control socket would be one path for every instance on the host
        "control_socket_disable": True,
    }


def _watch_master(master_pid: int) -> None:
    while os.getppid() == master_pid:
        time.sleep(1.0)
    log.warning("master is gone, stopping the web admin",
                extra={"fields": {"master_pid": master_pid}})
    os.kill(os.getpid(), signal.SIGTERM)


def run_admin_child(ctx: Any) -> int:
    """Entry point for the master's fork (``ctx``: ChildContext). Returns an exit code."""
    from gunicorn.app.base import BaseApplication

    from admin_web.config import AdminConfig

    admin = AdminConfig.for_child(ctx.config, ctx.run_dir)
    options = gunicorn_options(ctx.config)

    class AdminApplication(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:  # in each worker, after the fork: grpc is imported here
            from admin_web import create_app

            return create_app(admin)

    threading.Thread(target=_watch_master, args=(ctx.master_pid,), name="admin-watch",
                     daemon=True).start()
    log.info("web admin starting", extra={"fields": {"bind": options["bind"][0],
                                                     "control": admin.control}})
    AdminApplication().run()  # returns (or raises SystemExit) when gunicorn stops
    return 0
