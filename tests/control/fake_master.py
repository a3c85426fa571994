"""A stand-in master for the control-plane tests: ``python fake_master.py RUN_DIR BIND``.

Like ``stalwart-mp serve`` it creates the control token, forks the control child (which only
then imports grpc), keeps ``status.json`` current, and answers SIGHUP with a reload: refused
with the lines of ``RUN_DIR/reject-reload`` as errors if that file exists, applied (next
generation) otherwise. SIGTERM is passed on to the child; the fake master then exits with the
child's exit status.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from stalwart_mp.control.token import ensure_control_token


def write_status(run_dir: Path, status: dict) -> None:
    tmp = run_dir / "status.json.tmp"
    tmp.write_text(json.dumps(status, indent=1))
    os.replace(tmp, run_dir / "status.json")


def main() -> int:
    run_dir, bind = Path(sys.argv[1]), sys.argv[2]
    run_dir.mkdir(parents=True, exist_ok=True)
    ensure_control_token(run_dir)
    received: list[int] = []
    for sig in (signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: received.append(signum))
    master_pid = os.getpid()
    started = time.time()
    pid = os.fork()
    if pid == 0:
        for sig in (signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        code = 0
        try:
            from stalwart_mp.control.main import ControlBootError, run_control

            run_control(None, run_dir, master_pid, bind)
        except ControlBootError as exc:
            print(f"control: {exc}", file=sys.stderr)
            code = 3
        finally:
            sys.stderr.flush()
            os._exit(code)
    status = {
        "version": "0.1.0-test", "hostname": "mx.example.test", "master_pid": master_pid,
        "started_at": started, "config_path": "/etc/stalwart-mp/config.toml",
        "config_loaded_at": started, "generation": 1,
        "processes": [
            {"kind": "control", "pid": pid, "started_at": started, "generation": 1},
            {"kind": "worker", "pid": 999_999, "started_at": started + 0.5, "generation": 1},
        ],
        "listeners": [
            {"name": "smtp", "protocol": "smtp", "bind": ["0.0.0.0:25", "[::]:25"],
             "implicit_tls": False},
            {"name": "imaps", "protocol": "imap", "bind": ["0.0.0.0:993"], "implicit_tls": True},
        ],
        "last_reload": None,
    }
    write_status(run_dir, status)
    while True:
        done, wstatus = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(wstatus)
        while received:
            sig = received.pop(0)
            if sig == signal.SIGTERM:
                os.kill(pid, signal.SIGTERM)
            else:
                reload(run_dir, status)
        time.sleep(0.02)


def reload(run_dir: Path, status: dict) -> None:
    reject = run_dir / "reject-reload"
    if reject.exists():
        errors = reject.read_text().splitlines()
    else:
        errors = []
        status["generation"] += 1
        status["config_loaded_at"] = time.time()
    status["last_reload"] = {"applied": not errors, "errors": errors,
                             "generation": status["generation"], "at": time.time()}
    write_status(run_dir, status)


if __name__ == "__main__":
    sys.exit(main())
