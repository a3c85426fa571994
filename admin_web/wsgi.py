"""WSGI entry point of the standalone web admin: ``gunicorn -c admin_web/gunicorn.conf.py
admin_web.wsgi:app``, configured by the environment (see admin_web.config).

Logs go to stderr as one structured line per event, like the server's
(STALWART_MP_ADMIN_LOG_LEVEL, default info; STALWART_MP_ADMIN_LOG_FORMAT logfmt or json).
"""
from __future__ import annotations

import os

from admin_web import create_app
from stalwart_mp import logs

logs.set_process_kind("admin")
logs.configure(os.environ.get("STALWART_MP_ADMIN_LOG_LEVEL", "info"),
               os.environ.get("STALWART_MP_ADMIN_LOG_FORMAT", "logfmt"))
app = create_app()
