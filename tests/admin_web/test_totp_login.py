"""Two-factor authentication in the web admin, through Flask's test client against a REAL
running server: the account page turns TOTP on (the key shown once) and off, and the login
form's "Authentication code" is sent as ``password$code``: without it, with a wrong or a
replayed code the login is refused."""
from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator

import pytest

from stalwart_mp.auth import totp
from tests.admin_web.env import ADMIN, ADMIN_PW, app_for, csrf_of, start_server
from tests.auth.test_totp import independent_code
from tests.dns_server import DnsServer


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator:
    dns = DnsServer().start()
    folder = tmp_path_factory.mktemp("admin_totp")
    server = start_server(folder, dns.port, domain="example.org")
    try:
        yield app_for(server, folder / "admin.secret")
    finally:
        server.stop()
        dns.stop()


def login(app, password: str, code: str = ""):
    client = app.test_client()
    page = client.get("/login")
    resp = client.post("/login", data={"csrf_token": csrf_of(page.text), "username": ADMIN,
                                       "password": password, "code": code})
    return client, resp


def post(client, url: str, form_page: str):
    return client.post(url, data={"csrf_token": csrf_of(client.get(form_page).text)})


def test_enable_log_in_with_a_code_then_disable(app):
    client, resp = login(app, ADMIN_PW)
    assert resp.status_code == 302
    page = f"/accounts/{ADMIN}"
    assert "Authentication code" in app.test_client().get("/login").text
    assert "Enable two-factor authentication" in client.get(page).text

    assert client.post(f"{page}/totp").status_code == 400  # no CSRF token: refused
    shown = post(client, f"{page}/totp", page)
    assert shown.status_code == 200
    uri = html.unescape(re.search(r'id="totp-uri" class="mono">([^<]+)<', shown.text)[1])
    secret = re.search(r'id="totp-secret" class="big">([A-Z2-7]+)<', shown.text)[1]
    assert totp.parse_uri(uri).secret == secret
    # the same URI as a QR code an authenticator app scans (inline SVG, segno's matrix)
    import segno
    svg = re.search(r'<figure class="qr">(<svg.*?</svg>)', shown.text, re.S)[1]
    expected = segno.make(uri, error="m")
    assert f'width="{(expected.symbol_size(scale=4, border=2))[0]}"' in svg
    assert "<title>TOTP key</title>" in svg
    # shown once: the page afterwards says it is on, without the key
    after = client.get(page).text
    assert "Disable two-factor authentication" in after and secret not in after
    assert ">2FA</span>" in client.get("/accounts/").text  # flagged in the list

    _, refused = login(app, ADMIN_PW)  # the password alone
    assert refused.status_code == 401
    _, bad = login(app, ADMIN_PW, "12ab")  # not 6 digits: a form error, no call
    assert bad.status_code == 200 and "6 digits" in bad.text
    now = independent_code(secret, time.time())
    wrong = "000000" if now != "000000" else "111111"
    _, refused = login(app, ADMIN_PW, wrong)
    assert refused.status_code == 401

    admin, ok = login(app, ADMIN_PW, now)
    assert ok.status_code == 302, ok.text
    _, replay = login(app, ADMIN_PW, now)
    assert replay.status_code == 401

    done = post(admin, f"{page}/totp/disable", page)
    assert done.status_code == 302
    assert "Off: the password alone signs in." in admin.get(page).text
    assert ">2FA</span>" not in admin.get("/accounts/").text
    assert login(app, ADMIN_PW)[1].status_code == 302
