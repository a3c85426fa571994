"""Structured log lines: the pid field follows the process across fork."""
from __future__ import annotations

import json
import logging
import os

from stalwart_mp import logs


def test_pid_field_is_the_logging_process_after_fork(tmp_path):
    path = tmp_path / "server.log"
    logs.configure("info", "json", str(path))
    try:
        logging.getLogger("stalwart_mp.test").info("from the parent")
        child = os.fork()
        if child == 0:   # the child logs once and leaves without any clean-up
            logging.getLogger("stalwart_mp.test").info("from the child")
            logging.getLogger().handlers[0].flush()
            os._exit(0)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        logs.configure("info", "logfmt")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["msg"], r["pid"]) for r in lines] == [("from the parent", os.getpid()),
                                                     ("from the child", child)]
