"""The web admin as a process: the master's admin child (gunicorn, admin.enabled) and the
standalone gunicorn of admin_web/gunicorn.conf.py configured by the environment, both
against a real server without any domain yet; and the first-start setup wizard.
"""
from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin_web.grpc_client import ControlPlane, Credentials, token_credentials
from stalwart_mp.control.gen.stalwart_mp.v1 import domains_pb2, server_pb2
from tests.admin_web.env import ADMIN, ADMIN_PW, app_for, csrf_of, start_server, wait_until
from tests.dns_server import DnsServer
from tests.harness import BIN, ROOT, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator:
    dns = DnsServer().start()
    srv = start_server(tmp_path_factory.mktemp("admin_process"), dns.port, admin=True)
    try:
        yield srv
    finally:
        srv.stop()
        dns.stop()


class Browser:
    """A cookie-keeping HTTP client (no redirects followed: they are asserted)."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect())

    def get(self, path: str) -> tuple[int, dict, str]:
        return self._open(urllib.request.Request(self.base + path))

    def post(self, path: str, data: dict) -> tuple[int, dict, str]:
        body = urllib.parse.urlencode(data).encode()
        return self._open(urllib.request.Request(self.base + path, data=body))

    def _open(self, req: urllib.request.Request) -> tuple[int, dict, str]:
        try:
            with self.opener.open(req, timeout=20) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def login(self) -> tuple[int, dict, str]:
        _, _, page = self.get("/login")
        return self.post("/login", {"csrf_token": csrf_of(page), "username": ADMIN,
                                    "password": ADMIN_PW})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _check_served(base: str) -> None:
    browser = Browser(base)
    status, headers, page = browser.get("/login")
    assert status == 200 and 'name="csrf_token"' in page
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, headers, css = browser.get("/static/admin.css")
    assert status == 200 and ":root" in css
    status, headers, _ = browser.login()
    assert status == 302 and headers["Location"] == "/"
    status, headers, _ = browser.get("/")  # no domain yet: the setup wizard
    assert status == 302 and headers["Location"] == "/setup/"
    status, _, page = browser.get("/setup/")
    assert status == 200 and "This server has no mail domain yet" in page


def test_admin_child_runs_gunicorn_under_the_master(server):
    kinds = [p["kind"] for p in server.status()["processes"]]
    assert kinds.count("admin") == 1
    _check_served(f"http://127.0.0.1:{server.ports['admin']}")
    # the session key is shared by every worker and kept in the run directory
    secret = server.run_dir / "admin.secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 32


def test_standalone_gunicorn_configured_by_the_environment(server, tmp_path):
    port = free_port()
    env = {**os.environ, "STALWART_MP_SERVER": server.control_bind,
           "STALWART_MP_TOKEN_FILE": str(server.run_dir / "control.token"),
           "STALWART_MP_ADMIN_SECRET_KEY_FILE": str(tmp_path / "secret"),
           "STALWART_MP_ADMIN_BIND": f"127.0.0.1:{port}", "STALWART_MP_ADMIN_WORKERS": "1"}
    log = open(tmp_path / "gunicorn.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "-c", str(ROOT / "admin_web" / "gunicorn.conf.py"),
         "admin_web.wsgi:app"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/login"), "gunicorn to answer")
        _check_served(f"http://127.0.0.1:{port}")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        log.close()
    text = (tmp_path / "gunicorn.log").read_text()
    assert "Booting worker" in text
    # the app's own events, as structured lines like the server's
    assert re.search(r'proc=admin .*msg="admin login" user=root', text), text


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_setup_wizard_sets_hostname_first_domain_and_password(server, tmp_path):
    app = app_for(server, tmp_path / "secret")
    client = app.test_client()
    page = client.get("/login")
    client.post("/login", data={"csrf_token": csrf_of(page.text), "username": ADMIN,
                                "password": ADMIN_PW})
    wizard = client.get("/setup/")
    assert 'value="mail.test.example"' in wizard.text  # the current host name
    # errors first: the form is shown again with the reasons
    resp = client.post("/setup/", data={"csrf_token": csrf_of(wizard.text),
                                        "hostname": "mx.wizard.test", "domain": "bad domain",
                                        "password": "short", "confirm": "other"})
    assert resp.status_code == 400
    assert "a domain name such as example.org" in resp.text
    assert "the passwords differ" in resp.text
    resp = client.post("/setup/", data={"csrf_token": csrf_of(wizard.text),
                                        "hostname": "mx.wizard.test", "domain": "wizard.test",
                                        "password": "new-root-password",
                                        "confirm": "new-root-password"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/domains/wizard.test/dns"
    dns_page = client.get(resp.headers["Location"]).text
    assert "wizard.test is ready" in dns_page and '<table id="records">' in dns_page
    token = token_credentials(server.run_dir / "control.token")
    with ControlPlane(server.control_bind, token) as plane:
        assert plane.server.GetStatus(server_pb2.GetStatusRequest()).hostname == \
            "mx.wizard.test"
        assert [d.name for d in plane.domains.ListDomains(
            domains_pb2.ListDomainsRequest()).domains] == ["wizard.test"]
    with ControlPlane(server.control_bind,
                      Credentials(user=ADMIN, password="new-root-password")) as plane:
        plane.server.GetStatus(server_pb2.GetStatusRequest())
    # done: the wizard is no longer offered
    assert client.get("/setup/").headers["Location"] == "/"
    assert client.get("/").status_code == 200
    # the old password is refused from now on
    fresh = app.test_client()
    page = fresh.get("/login")
    resp = fresh.post("/login", data={"csrf_token": csrf_of(page.text), "username": ADMIN,
                                      "password": ADMIN_PW})
    assert resp.status_code == 401
    # put it back for the other tests of this module
    with ControlPlane(server.control_bind, token) as plane:
        from stalwart_mp.control.gen.stalwart_mp.v1 import principals_pb2

        plane.principals.SetPassword(principals_pb2.SetPasswordRequest(
            name=ADMIN, password=ADMIN_PW))
    assert Path(server.config_path).read_text().count("mx.wizard.test") == 0  # stored only


def test_the_admin_child_imports_no_grpc_nor_flask_before_gunicorn_forks():
    """gunicorn's arbiter (the admin child) forks its workers after importing
    admin_web.child: gRPC and Flask must only be imported in the workers."""
    code = ("import sys, admin_web.child, admin_web.config; "
            "print(sorted(m for m in ('grpc', 'flask') if m in sys.modules))")
    out = subprocess.run([str(BIN / "python"), "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def test_dns_records_follow_a_host_name_changed_in_the_settings(server, tmp_path):
    from stalwart_mp.control.gen.stalwart_mp.v1 import principals_pb2

    token = token_credentials(server.run_dir / "control.token")
    with ControlPlane(server.control_bind, token) as plane:
        plane.principals.CreateDomain(principals_pb2.CreateDomainRequest(name="follow.test"))
    app = app_for(server, tmp_path / "secret")
    client = app.test_client()
    page = client.get("/login")
    client.post("/login", data={"csrf_token": csrf_of(page.text), "username": ADMIN,
                                "password": ADMIN_PW})
    from stalwart_mp.control.gen.stalwart_mp.v1 import config_pb2

    with ControlPlane(server.control_bind, token) as plane:  # as the settings page does
        plane.config.UpdateConfig(config_pb2.ConfigChange(
            set={"server.hostname": '"mx.follow.test"'}))
        plane.config.ReloadConfig(config_pb2.ReloadConfigRequest(), timeout=40)
        assert plane.server.GetStatus(server_pb2.GetStatusRequest()).hostname == \
            "mx.follow.test"
    assert "10 mx.follow.test." in client.get("/domains/follow.test/dns").text
