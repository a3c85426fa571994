"""Gunicorn settings of the standalone web admin (the master's ``admin`` child sets the
same ones from the server's config, see admin_web.child).

    gunicorn -c admin_web/gunicorn.conf.py admin_web.wsgi:app

Environment: STALWART_MP_ADMIN_BIND (default 127.0.0.1:8080), STALWART_MP_ADMIN_WORKERS
(default 2), STALWART_MP_ADMIN_TLS_CERT and STALWART_MP_ADMIN_TLS_KEY (serve HTTPS
directly; session cookies are then Secure), plus the app's own variables
(admin_web.config: STALWART_MP_SERVER, STALWART_MP_TOKEN_FILE, ...).
"""
# ruff: noqa: N999  (gunicorn looks for this file name)
import os

bind = [os.environ.get("STALWART_MP_ADMIN_BIND", "127.0.0.1:8080")]
workers = int(os.environ.get("STALWART_MP_ADMIN_WORKERS", "2"))
# threads: a page waiting on the control plane (a reload takes seconds) does not hold
# the whole worker
worker_class = "gthread"
threads = 4
timeout = 60  # a reload through the settings page waits up to 40 s for the master
graceful_timeout = 10
proc_name = "stalwart-mp-admin"
# X-Forwarded-Proto is trusted from a TLS proxy on the same host only
forwarded_allow_ips = os.environ.get("STALWART_MP_ADMIN_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
certfile = os.environ.get("STALWART_MP_ADMIN_TLS_CERT") or None
keyfile = os.environ.get("STALWART_MP_ADMIN_TLS_KEY") or None
control_socket_disable = True  # one default path for every gunicorn of the host
accesslog = "-"
errorlog = "-"
