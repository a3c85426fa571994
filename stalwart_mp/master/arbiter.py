"""The master: a prefork supervisor modelled on gunicorn's arbiter.

Signal handlers only queue the signal and wake the loop through a self-pipe; the loop
dispatches to ``handle_<sig>``, then reaps, checks heartbeats and keeps the children at
their wanted numbers (``murder_workers`` / ``manage_children``). No asyncio, no threads, no
DB driver or gRPC here: everything heavy is imported by the children after fork.

Signals: HUP reload · TERM/INT graceful stop · QUIT fast stop · TTIN/TTOU one worker more/less
· USR1 reopen logs (forwarded) · CHLD reap and respawn with backoff.
"""
from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import tempfile
import time
from pathlib import Path

from stalwart_mp import logs
from stalwart_mp.config.loader import Config, ConfigInvalid
from stalwart_mp.config.stored import load_with_stored
from stalwart_mp.master import status, systemd
from stalwart_mp.master.children import (
    BOOT_ERROR,
    Child,
    ChildContext,
    backoff_delay,
    fork_child,
    now,
    wanted_singletons,
)
from stalwart_mp.master.privileges import chown_for_children, target_ids
from stalwart_mp.master.sockets import Listener, SocketPool, listeners_from

log = logging.getLogger("stalwart_mp.master")

SIGNALS = ("HUP", "TERM", "INT", "QUIT", "TTIN", "TTOU", "USR1", "CHLD")
QUICK_DEATH = 5.0  # a child dying sooner than this after its start counts as a failure


class HaltServer(Exception):
    def __init__(self, reason: str, exit_status: int = 1):
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


class Master:
    def __init__(self, config_path: Path, cfg: Config):
        self.config_path = config_path
        self.cfg = cfg
        self.pid = os.getpid()
        self.generation = 1
        self.started_at = time.time()
        self.started_monotonic = now()
        self.config_loaded_at = time.time()
        self.num_workers: int = cfg.get("server.workers")
        self.children: dict[int, Child] = {}
        self.failures: dict[str, int] = {}
        self.next_spawn: dict[str, float] = {}
        self.signal_queue: list[str] = []
        self.stopping = False
        self.last_reload: dict | None = None
        self.run_dir = cfg.path("server.run-dir")
        self.sel = selectors.DefaultSelector()
        self.hub = None
        self.listeners: list[Listener] = []
        self.sockets: SocketPool | None = None

    # --- start-up ---------------------------------------------------------------------

    def run(self) -> int:
        try:
            self.start()
            self.loop()
        except HaltServer as halt:
            log.error("halting", extra={"fields": {"reason": halt.reason}})
            self.stop(graceful=False)
            return halt.exit_status
        return 0

    def start(self) -> None:
        target_ids(self.cfg)  # refuse to run workers as root unless asked (PrivilegeError)
        self._prepare_run_dir()
        self.sockets = SocketPool([sock for _name, sock in systemd.inherited_sockets()])
        self.listeners = listeners_from(self.cfg)
        self.sockets.assign(self.listeners)
        self._prepare_tls()
        self._start_hub()
        self._install_signals()
        self.manage_children()
        status.write(self)
        systemd.notify_ready(f"serving with {self.num_workers} workers")
        log.info("started", extra={"fields": {"workers": self.num_workers,
                                              "config": str(self.config_path)}})

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        metrics = self.run_dir / "metrics"
        metrics.mkdir(exist_ok=True)
        for stale in metrics.glob("*.db"):  # counters of a previous run
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        from stalwart_mp.control.token import ensure_control_token

        ensure_control_token(self.run_dir)
        data_dir = self.cfg.path("server.data-dir")
        data_dir.mkdir(parents=True, exist_ok=True)
        chown_for_children(self.cfg, self.run_dir, data_dir)

    def _prepare_tls(self) -> None:
        """Generate the self-signed certificate once here, so every worker shares it."""
        if self.cfg.names("certificate"):
            return
        from stalwart_mp.tls.selfsigned import ensure_self_signed

        tls_dir = self.cfg.path("server.data-dir") / "tls"
        tls_dir.mkdir(parents=True, exist_ok=True)
        if ensure_self_signed(tls_dir / "self-signed.crt", tls_dir / "self-signed.key",
                              self.cfg.get("server.hostname")):
            log.warning("no [certificate] configured: created a self-signed certificate",
                        extra={"fields": {"path": str(tls_dir / "self-signed.crt")}})
        chown_for_children(self.cfg, tls_dir)

    def _start_hub(self) -> None:
        from stalwart_mp.events.hub import EventHub

        self.hub = EventHub(self.run_dir / "events.sock")
        self.hub.register(self.sel)
        chown_for_children(self.cfg, self.run_dir / "events.sock")

    def _install_signals(self) -> None:
        self.pipe_r, self.pipe_w = os.pipe()
        os.set_blocking(self.pipe_r, False)
        os.set_blocking(self.pipe_w, False)
        self.sel.register(self.pipe_r, selectors.EVENT_READ, None)
        signal.set_wakeup_fd(self.pipe_w)
        for name in SIGNALS:
            signal.signal(getattr(signal, f"SIG{name}"), self._on_signal)

    def _on_signal(self, signum: int, _frame) -> None:
        # Only queue: the loop does the work (gunicorn's arbiter).
        if len(self.signal_queue) < 10:
            self.signal_queue.append(signal.Signals(signum).name[3:])

    # --- the loop ---------------------------------------------------------------------

    def loop(self) -> None:
        watchdog = systemd.watchdog_interval()
        last_watchdog = 0.0
        while True:
            self._wait(1.0)
            while self.signal_queue:
                name = self.signal_queue.pop(0)
                getattr(self, f"handle_{name.lower()}")()
            if self.stopping:
                return
            self.reap()
            self.murder_workers()
            self.manage_children()
            if watchdog and now() - last_watchdog > watchdog / 2:
                systemd.notify_watchdog()
                last_watchdog = now()

    def _wait(self, timeout: float) -> None:
        try:
            events = self.sel.select(timeout)
        except InterruptedError:
            return
        for key, mask in events:
            if key.fd == self.pipe_r:
                try:
                    while os.read(self.pipe_r, 4096):
                        pass
                except BlockingIOError:
                    pass
            elif callable(key.data):
                key.data(mask)

    # --- signals ----------------------------------------------------------------------

    def handle_chld(self) -> None:
        self.reap()

    def handle_hup(self) -> None:
        self.reload()

    def handle_term(self) -> None:
        self.stop(graceful=True)

    handle_int = handle_term

    def handle_quit(self) -> None:
        self.stop(graceful=False)

    def handle_ttin(self) -> None:
        self.num_workers += 1
        log.info("workers", extra={"fields": {"wanted": self.num_workers}})

    def handle_ttou(self) -> None:
        if self.num_workers > 1:
            self.num_workers -= 1
        log.info("workers", extra={"fields": {"wanted": self.num_workers}})

    def handle_usr1(self) -> None:
        logs.reopen()
        self._signal_children(signal.SIGUSR1)

    # --- children ---------------------------------------------------------------------

    def workers(self, generation: int | None = None) -> list[Child]:
        return [
            c for c in self.children.values()
            if c.kind == "worker" and not c.retiring
            and (generation is None or c.generation == generation)
        ]

    def manage_children(self) -> None:
        """Spawn or retire so that the current generation has its wanted numbers."""
        if self.stopping:
            return
        workers = self.workers(self.generation)
        for _ in range(self.num_workers - len(workers)):
            if not self._spawn("worker"):
                break
        for extra in sorted(workers, key=lambda c: c.started_at)[: max(0, len(workers)
                                                                         - self.num_workers)]:
            self._retire(extra)
        for kind in wanted_singletons(self.cfg):
            if not any(c.kind == kind and not c.retiring for c in self.children.values()):
                self._spawn(kind)

    def _spawn(self, kind: str) -> bool:
        if now() < self.next_spawn.get(kind, 0.0):
            return False
        heartbeat = (tempfile.TemporaryFile(dir=self.run_dir)  # noqa: SIM115 - lives with the child
                     if kind == "worker" else None)
        ctx = ChildContext(
            kind=kind,
            generation=self.generation,
            config=self.cfg,
            config_path=self.config_path,
            run_dir=self.run_dir,
            master_pid=self.pid,
            listeners=self.listeners if kind == "worker" else [],
            heartbeat=heartbeat,
            inherited_fds=self._fds_children_must_close(heartbeat),
            cleanups=self._cleanups_in_child(kind),
        )
        pid = fork_child(ctx)
        self.children[pid] = Child(kind, pid, self.generation, now(), heartbeat)
        log.info("spawned", extra={"fields": {"kind": kind, "child": pid,
                                              "generation": self.generation}})
        status.write(self)
        return True

    def _cleanups_in_child(self, kind: str) -> list:
        """Master state a child must drop: the hub, and listeners for non-workers."""
        cleanups = [self.hub.close_in_child] if self.hub else []
        if self.sockets is not None:
            # workers keep their listeners but not the ones a reload is dropping
            cleanups.append(self.sockets.close_all if kind != "worker"
                            else self.sockets.close_unused)
        return cleanups

    def _fds_children_must_close(self, own_heartbeat) -> list[int]:
        fds = [self.pipe_r, self.pipe_w, self.sel.fileno()]
        fds += [c.heartbeat.fileno() for c in self.children.values() if c.heartbeat]
        return [fd for fd in fds if own_heartbeat is None or fd != own_heartbeat.fileno()]

    def _retire(self, child: Child) -> None:
        """Ask a child to finish its sessions and exit (SIGTERM); killed after the timeout."""
        if child.retiring:
            return
        child.retiring = True
        child.kill_sent = now()
        self._kill(child.pid, signal.SIGTERM)

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _signal_children(self, sig: int) -> None:
        for pid in list(self.children):
            self._kill(pid, sig)

    def reap(self) -> None:
        changed = False
        while True:
            try:
                pid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            child = self.children.pop(pid, None)
            if child is None:
                continue
            changed = True
            code = os.waitstatus_to_exitcode(wstatus)
            self._on_child_exit(child, code)
        if changed:
            status.write(self)

    def _on_child_exit(self, child: Child, code: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(child.pid, str(self.run_dir / "metrics"))
        if child.heartbeat:
            child.heartbeat.close()
        fields = {"kind": child.kind, "child": child.pid, "exit": code}
        if child.retiring or self.stopping:
            log.info("child exited", extra={"fields": fields})
            return
        if code == BOOT_ERROR:
            raise HaltServer(f"{child.kind} could not start (see its error above)", 1)
        log.warning("child died; respawning", extra={"fields": fields})
        quick = now() - child.started_at < QUICK_DEATH
        self.failures[child.kind] = self.failures.get(child.kind, 0) + 1 if quick else 0
        self.next_spawn[child.kind] = now() + backoff_delay(self.failures[child.kind])

    def murder_workers(self) -> None:
        """Kill workers whose heartbeat stopped, and retiring children past the timeout."""
        timeout = self.cfg.get("server.heartbeat-timeout")
        graceful = self.cfg.get("server.graceful-timeout")
        for child in list(self.children.values()):
            if child.retiring:
                if child.kill_sent and now() - child.kill_sent > graceful:
                    self._kill(child.pid, signal.SIGKILL)
                continue
            if child.heartbeat is None:
                continue
            beat = os.fstat(child.heartbeat.fileno()).st_mtime
            if time.time() - beat <= timeout or now() - child.started_at <= timeout:
                continue
            log.error("worker hung; killing it", extra={"fields": {"child": child.pid}})
            self._kill(child.pid, signal.SIGABRT)
            child.retiring = True
            child.kill_sent = now() - graceful + 1.0  # SIGKILL one second later if still there

    # --- reload and stop --------------------------------------------------------------

    def reload(self) -> None:
        systemd.notify_reloading()
        try:
            cfg = load_with_stored(self.config_path)  # the file + the stored settings
            new_listeners = listeners_from(cfg)
            assert self.sockets is not None
            self.sockets.assign(new_listeners)
        except (ConfigInvalid, OSError) as exc:
            errors = [str(e) for e in exc.errors] if isinstance(exc, ConfigInvalid) else [str(exc)]
            for line in errors:
                log.error("reload refused; keeping the running config",
                          extra={"fields": {"error": line}})
            self.last_reload = {"applied": False, "errors": errors,
                                "generation": self.generation, "at": time.time()}
            status.write(self)
            systemd.notify_ready("reload refused: config has errors")
            return
        # Workers and the queue process always roll: they run on most settings (the queue's
        # runner hands its leased messages back on SIGTERM). The control child only when
        # what it opened at start changed (its address, TLS, the stores, the directory):
        # keeping it keeps Reload calls alive, and it re-reads the rest itself once the
        # reload is applied (control/principals_service.DirectoryBackend.cfg).
        control_moved = any(cfg.table(prefix) != self.cfg.table(prefix)
                            for prefix in ("control", "store", "storage", "directory"))
        # the web admin restarts when its settings or the control address change
        admin_changed = control_moved or any(
            cfg.get(k) != self.cfg.get(k) for k in ("admin.enabled", "admin.bind",
                                                    "admin.workers"))
        old = [c for c in self.children.values() if not c.retiring
               and (c.kind in ("worker", "queue") or (c.kind == "control" and control_moved)
                    or (c.kind == "admin" and admin_changed))]
        self.cfg = cfg
        self.listeners = new_listeners
        self.num_workers = cfg.get("server.workers")
        self.generation += 1
        self.config_loaded_at = time.time()
        logs.configure_from(cfg)
        self.failures.clear()
        self.next_spawn.clear()
        self.manage_children()  # the new generation starts before the old one retires
        for child in old:
            self._retire(child)
        self.sockets.close_unused()
        self.last_reload = {"applied": True, "errors": [], "generation": self.generation,
                            "at": time.time()}
        status.write(self)
        systemd.notify_ready(f"reloaded: generation {self.generation}")
        log.info("reloaded", extra={"fields": {"generation": self.generation,
                                               "workers": self.num_workers}})

    def stop(self, graceful: bool = True) -> None:
        """Stop every child (TERM and wait, or QUIT), then SIGKILL what is left."""
        if self.stopping:
            return
        self.stopping = True
        systemd.notify_stopping()
        log.info("stopping", extra={"fields": {"graceful": graceful}})
        if self.sockets:
            self.sockets.close_all()  # the workers close theirs too: new connections refused
        self._signal_children(signal.SIGTERM if graceful else signal.SIGQUIT)
        limit = now() + (self.cfg.get("server.graceful-timeout") if graceful else 2.0)
        while self.children and now() < limit:
            self.reap()
            time.sleep(0.05)
        self._signal_children(signal.SIGKILL)
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            self.children.pop(pid, None)
        if self.hub:
            self.hub.close()
        status.remove(self)


def serve(config_path: Path, cfg: Config) -> int:
    master = Master(config_path, cfg)
    try:
        return master.run()
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            log.error("cannot bind", extra={"fields": {"error": exc.strerror}})
            return 1
        raise
