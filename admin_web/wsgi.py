"""WSGI entry point of the standalone web admin: ``gunicorn -c admin_web/gunicorn.conf.py
admin_web.wsgi:app``, configured by the environment (see admin_web.config)."""
from __future__ import annotations

from admin_web import create_app

app = create_app()
