"""Structured logging: one line per event, logfmt or JSON, with the process and connection.

Every record carries ``pid`` and ``proc`` (master, worker, control...). Inside a session the
``conn`` context variable adds the connection id to every line that session logs. Extra
fields are passed with ``log.info("accepted", extra={"fields": {"ip": ip}})``.
Secrets are never passed to the logger (settings marked ``secret`` are redacted upstream).
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from typing import Any

conn_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("conn_id", default=None)

_process_kind = "master"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


# This process's id, kept across forks: os.getpid() is a system call, and a busy worker
# logs a line per message.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def set_process_kind(kind: str) -> None:
    global _process_kind
    _process_kind = kind


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "proc": _process_kind,
        "pid": _pid,
        "logger": record.name,
    }
    cid = conn_id.get()
    if cid:
        out["conn"] = cid
    out["msg"] = record.getMessage()
    extra = getattr(record, "fields", None)
    if extra:
        out.update(extra)
    if record.exc_info:
        out["error"] = logging.Formatter().formatException(record.exc_info)
    return out


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=False)


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\n\\'):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class _ReopenableFileHandler(logging.FileHandler):
    def reopen(self) -> None:
        self.acquire()
        try:
            if self.stream:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def configure(level: str = "info", fmt: str = "logfmt", file: str = "") -> None:
    """(Re)configure the root logger of this process."""
    # Our lines carry their own pid and no thread: spare every record those lookups
    # (LogRecord takes them by default, a getpid() system call among them).
    logging.logProcesses = logging.logThreads = logging.logMultiprocessing = False
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handler: logging.Handler
    if file:
        handler = _ReopenableFileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    for noisy in ("aiohttp.access", "grpc"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def configure_from(cfg) -> None:
    configure(cfg.get("logging.level"), cfg.get("logging.format"), _file(cfg))


def _file(cfg) -> str:
    name = cfg.get("logging.file") or ""
    return str(cfg.path("logging.file")) if name else ""


def reopen() -> None:
    """SIGUSR1: reopen the log file after logrotate moved it."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _ReopenableFileHandler):
            handler.reopen()
