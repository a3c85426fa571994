"""Every view and form of the web admin through Flask's test client, against a REAL
running server (tests/harness.py): its control plane answers every call, its SMTP
listener takes mail, its loopback DNS server answers the DNS check.

Covered: login (admin, wrong password, non-admin), logout, CSRF refusal, the redirect of
an unauthenticated request, the error pages (control plane down, token refused), the
dashboard's figures, domains and DNS records, accounts/groups/lists with search, paging,
edit, aliases, password reset, app passwords and delete, the queue, the settings forms.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin_web import create_app
from admin_web.config import AdminConfig
from admin_web.grpc_client import ControlPlane, Credentials, token_credentials
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    config_pb2,
    dns_pb2,
    domains_pb2,
    principals_pb2,
    queue_pb2,
    server_pb2,
)
from tests.admin_web.env import (
    ADMIN,
    ADMIN_PW,
    USER,
    USER_PW,
    app_for,
    csrf_of,
    send,
    start_server,
    submit,
    wait_until,
)
from tests.dns_server import DnsServer
from tests.harness import free_port

DOMAIN = "example.org"


class Env:
    def __init__(self, server, dns, folder: Path):
        self.server, self.dns, self.folder = server, dns, folder
        self.app = app_for(server, folder / "admin.secret")

    def plane(self) -> ControlPlane:
        return ControlPlane(self.server.control_bind,
                            token_credentials(self.server.run_dir / "control.token"))

    def client(self, user: str = ADMIN, password: str = ADMIN_PW):
        client = self.app.test_client()
        page = client.get("/login")
        resp = client.post("/login", data={"csrf_token": csrf_of(page.text),
                                           "username": user, "password": password})
        assert resp.status_code == 302, resp.text
        return client


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    dns = DnsServer().start()
    folder = tmp_path_factory.mktemp("admin_views")
    server = start_server(folder, dns.port, domain=DOMAIN)
    try:
        yield Env(server, dns, folder)
    finally:
        server.stop()
        dns.stop()


def post(client, url: str, data: dict | None = None, form_page: str | None = None):
    """POST ``data`` with the CSRF token of ``form_page`` (default: ``url``)."""
    token = csrf_of(client.get(form_page or url).text)
    return client.post(url, data={"csrf_token": token, **(data or {})})


# --- authentication --------------------------------------------------------------------

PAGES = ["/", "/domains/", f"/domains/{DOMAIN}/dns", f"/domains/{DOMAIN}/zone",
         "/accounts/", f"/accounts/{USER}", "/groups/", "/lists/", "/aliases/", "/queue/",
         "/settings/",
         "/settings/smtp", "/settings/raw", "/setup/"]


@pytest.mark.parametrize("path", PAGES)
def test_unauthenticated_request_goes_to_the_login_page(env, path):
    resp = env.app.test_client().get(path)
    assert resp.status_code == 302
    assert resp.headers["Location"] == f"/login?next={path}"


def test_login_sets_a_secure_session_and_returns_to_the_page_asked(env):
    client = env.app.test_client()
    page = client.get("/login")
    assert page.status_code == 200 and 'name="password"' in page.text
    resp = client.post("/login?next=/accounts/", data={
        "csrf_token": csrf_of(page.text), "username": ADMIN, "password": ADMIN_PW})
    assert resp.status_code == 302 and resp.headers["Location"] == "/accounts/"
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("stalwart_admin=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    assert client.get("/accounts/").status_code == 200
    # over TLS (a proxy saying so, or gunicorn with a certificate) the cookie is Secure
    tls = env.app.test_client()
    page = tls.get("/login", base_url="https://admin.test")
    resp = tls.post("/login", base_url="https://admin.test", data={
        "csrf_token": csrf_of(page.text), "username": ADMIN, "password": ADMIN_PW},
        headers={"Referer": "https://admin.test/login"})  # checked on HTTPS (CSRF)
    assert "; Secure" in resp.headers["Set-Cookie"]
    assert resp.headers["Strict-Transport-Security"] == "max-age=31536000"


def test_login_refuses_a_wrong_password_with_the_servers_reason(env):
    client = env.app.test_client()
    page = client.get("/login")
    resp = client.post("/login", data={"csrf_token": csrf_of(page.text),
                                       "username": ADMIN, "password": "wrong-password"})
    assert resp.status_code == 401
    assert "invalid user name or password" in resp.text
    assert client.get("/").status_code == 302  # still not signed in


def test_login_refuses_an_account_that_is_not_an_administrator(env):
    client = env.app.test_client()
    page = client.get("/login")
    resp = client.post("/login", data={"csrf_token": csrf_of(page.text),
                                       "username": USER, "password": USER_PW})
    assert resp.status_code == 401
    assert f"&#34;{USER}&#34; is not an administrator" in resp.text
    assert client.get("/").headers["Location"].startswith("/login")


def test_login_failures_count_toward_the_servers_ban(env, tmp_path):
    """Each refused login is an authentication failure of the server's Authenticator: with
    auth.ban.failures reached, the control plane refuses even the right password."""
    # a server of its own, with a ban after 3 failures (the shared one must stay usable)
    dns = DnsServer().start()
    srv = start_server(tmp_path / "ban", dns.port, ban_failures=3)
    try:
        app = app_for(srv, tmp_path / "secret")
        client = app.test_client()
        for _ in range(3):
            page = client.get("/login")
            client.post("/login", data={"csrf_token": csrf_of(page.text),
                                        "username": ADMIN, "password": "bad"})
        page = client.get("/login")
        resp = client.post("/login", data={"csrf_token": csrf_of(page.text),
                                           "username": ADMIN, "password": ADMIN_PW})
        assert resp.status_code == 401
        assert "banned after too many failed logins" in resp.text
    finally:
        srv.stop()
        dns.stop()


def test_bans_and_audit_lines_name_the_browser_and_the_administrator(env, tmp_path):
    """The admin forwards the browser's address (honoured from loopback only), so failed
    logins ban that browser and not every user of the admin; and changes are audit-logged
    under the signed-in administrator's name."""
    dns = DnsServer().start()
    srv = start_server(tmp_path / "fwd", dns.port, ban_failures=3)
    try:
        app = app_for(srv, tmp_path / "secret")
        attacker = app.test_client()
        attacker.environ_base["REMOTE_ADDR"] = "198.51.100.7"
        for _ in range(3):
            page = attacker.get("/login")
            attacker.post("/login", data={"csrf_token": csrf_of(page.text),
                                          "username": ADMIN, "password": "bad"})
        page = attacker.get("/login")
        refused = attacker.post("/login", data={"csrf_token": csrf_of(page.text),
                                                "username": ADMIN, "password": ADMIN_PW})
        assert refused.status_code == 401 and "banned" in refused.text
        other = app.test_client()
        other.environ_base["REMOTE_ADDR"] = "198.51.100.8"
        page = other.get("/login")
        ok = other.post("/login", data={"csrf_token": csrf_of(page.text),
                                        "username": ADMIN, "password": ADMIN_PW})
        assert ok.status_code == 302, "another browser is not banned"
        resp = post(other, "/domains/", {"name": "audit.test"})
        assert resp.status_code == 302, resp.text
        srv.wait_for(lambda: "action=domain.create" in srv.logs(), "the audit line")
        line = next(x for x in srv.logs().splitlines() if "action=domain.create" in x)
        assert f'caller="{ADMIN} (token)"' in line, line
        assert "198.51.100.7" in srv.logs(), "the ban names the browser's address"
    finally:
        srv.stop()
        dns.stop()


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "https://evil.example/",
                                    "javascript:alert(1)"])
def test_next_never_leaves_the_site(env, target):
    client = env.app.test_client()
    page = client.get("/login")
    resp = client.post("/login", query_string={"next": target}, data={
        "csrf_token": csrf_of(page.text), "username": ADMIN, "password": ADMIN_PW})
    assert resp.headers["Location"] == "/"


def test_logout_ends_the_session(env):
    client = env.client()
    assert client.get("/").status_code == 200
    resp = post(client, "/logout", form_page="/")
    assert resp.status_code == 302 and resp.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_a_session_ends_when_the_account_stops_being_an_administrator(env):
    with env.plane() as plane:
        plane.principals.CreatePrincipal(principals_pb2.CreatePrincipalRequest(
            name="temp-admin", password="temp-password-1", roles=["user", "admin"]))
    client = env.client("temp-admin", "temp-password-1")
    assert client.get("/domains/").status_code == 200
    with env.plane() as plane:
        update = principals_pb2.UpdatePrincipalRequest(name="temp-admin")
        update.roles.values.append("user")
        plane.principals.UpdatePrincipal(update)
    assert client.get("/domains/").status_code == 200  # checked once a minute...
    with client.session_transaction() as session:
        session["checked"] = 0  # ...so pretend the minute is over
    resp = client.get("/domains/")
    assert resp.status_code == 302 and resp.headers["Location"] == "/login?next=/domains/"
    assert "temp-admin is no longer an administrator" in client.get("/login").text
    assert client.get("/domains/").status_code == 302  # signed out


def test_forms_without_a_valid_csrf_token_are_refused(env):
    client = env.client()
    resp = client.post("/domains/", data={"name": "nocsrf.test"})
    assert resp.status_code == 400
    assert "did not come from this site" in resp.text
    resp = client.post("/domains/", data={"name": "nocsrf.test", "csrf_token": "forged"})
    assert resp.status_code == 400
    with env.plane() as plane:
        names = [d.name for d in plane.domains.ListDomains(
            domains_pb2.ListDomainsRequest()).domains]
    assert "nocsrf.test" not in names
    # the login form too, and logout
    fresh = env.app.test_client()
    assert fresh.post("/login", data={"username": ADMIN,
                                      "password": ADMIN_PW}).status_code == 400
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200  # still signed in


# --- error pages -----------------------------------------------------------------------

def test_control_plane_down_shows_a_clear_page(env, tmp_path):
    port = free_port()  # nothing listens there
    token = tmp_path / "control.token"
    token.write_text("x" * 43)
    token.chmod(0o600)
    app = create_app(AdminConfig(control=f"127.0.0.1:{port}", token_file=token,
                                 secret_key_file=tmp_path / "secret", timeout=2))
    client = app.test_client()
    page = client.get("/login")
    resp = client.post("/login", data={"csrf_token": csrf_of(page.text),
                                       "username": ADMIN, "password": ADMIN_PW})
    assert resp.status_code == 503
    assert "The mail server is not answering" in resp.text
    assert f"127.0.0.1:{port} cannot be reached" in resp.text
    assert "Traceback" not in resp.text
    with client.session_transaction() as session:  # a session from before the outage
        session["user"] = ADMIN
    resp = client.get("/accounts/")
    assert resp.status_code == 503 and "stalwart-mp serve" in resp.text


def test_a_refused_control_token_is_explained(env, tmp_path):
    token = tmp_path / "control.token"
    token.write_text("y" * 43)
    token.chmod(0o600)
    app = create_app(AdminConfig(control=env.server.control_bind, token_file=token,
                                 secret_key_file=tmp_path / "secret"))
    client = app.test_client()
    with client.session_transaction() as session:
        session["user"] = ADMIN
    resp = client.get("/")
    assert resp.status_code == 502
    assert "invalid control token" in resp.text


def test_unknown_things_are_404_or_the_servers_message(env):
    client = env.client()
    assert client.get("/nowhere").status_code == 404
    resp = client.get("/domains/unknown.test/dns")
    assert resp.status_code == 400 and "unknown.test" in resp.text
    assert client.get("/settings/nosucharea").status_code == 404


# --- dashboard -------------------------------------------------------------------------

def _metric(html: str, name: str) -> int:
    m = re.search(rf'data-metric="{name}">(\d+)<', html)
    assert m, f"no {name} figure on the page"
    return int(m.group(1))


def test_dashboard_shows_status_processes_listeners_and_mail_counts(env):
    client = env.client()
    page = client.get("/")
    assert page.status_code == 200
    assert "mail.test.example" in page.text
    assert "<td>worker</td>" in page.text and "<td>control</td>" in page.text
    assert 'data-listener="smtp"' in page.text and 'data-listener="submission"' in page.text
    received = _metric(page.text, "received")
    delivered = _metric(page.text, "delivered")
    send(env.server, f"{USER}@{DOMAIN}", "dashboard")
    wait_until(lambda: _metric(client.get("/").text, "received") == received + 1,
               "the received count to grow")
    page = client.get("/").text
    assert _metric(page, "delivered") == delivered + 1
    # the stores' disk use: the LMDB data store of the harness config, on this host
    store_row = page.split('data-store="default"', 1)[1].split("</tr>", 1)[0]
    assert "<td>lmdb</td>" in store_row and "data" in store_row
    assert str(env.folder / "data" / "lmdb") in store_row
    assert re.search(r'<td class="num">[\d.]+ (KiB|MiB|GiB|B)</td>', store_row)
    assert "<meter" in store_row  # the volume's use
    smtp_row = page.split('data-listener="smtp"', 1)[1].split("</tr>", 1)[0]
    assert int(re.search(r'data-metric="connections">(\d+)<', smtp_row).group(1)) >= 1


def test_worker_count_changed_from_the_dashboard(env):
    client = env.client()
    resp = post(client, "/workers", {"count": "2"}, form_page="/")
    assert resp.status_code == 302
    page = client.get("/").text
    assert "2 worker processes are running" in page
    assert page.count("<td>worker</td>") == 2
    assert 'name="count" required type="number" value="2"' in page
    resp = post(client, "/workers", {"count": "0"}, form_page="/")
    assert "The number of workers was not changed" in client.get(resp.headers["Location"]).text
    post(client, "/workers", {"count": "1"}, form_page="/")
    assert client.get("/").text.count("<td>worker</td>") == 1


def test_dashboard_without_a_metrics_endpoint_still_shows_the_status_figures(env, tmp_path):
    config = AdminConfig(control=env.server.control_bind,
                         token_file=env.server.run_dir / "control.token",
                         secret_key_file=tmp_path / "secret", metrics_url="")
    client = create_app(config).test_client()
    page = client.get("/login")
    client.post("/login", data={"csrf_token": csrf_of(page.text), "username": ADMIN,
                                "password": ADMIN_PW})
    page = client.get("/").text
    assert _metric(page, "received") >= 0 and 'id="queue-size"' in page
    smtp_row = page.split('data-listener="smtp"', 1)[1].split("</tr>", 1)[0]
    assert smtp_row.rstrip().endswith('<td class="num">—</td>')  # refused: unknown
    with_metrics = env.client().get("/").text
    smtp_row = with_metrics.split('data-listener="smtp"', 1)[1].split("</tr>", 1)[0]
    assert smtp_row.rstrip().endswith('<td class="num">0</td>')


# --- domains and DNS -------------------------------------------------------------------

def test_domain_add_list_search_and_delete(env, caplog):
    client = env.client()
    caplog.set_level("INFO", logger="stalwart_mp.admin")
    resp = post(client, "/domains/", {"name": "Added.Test.", "description": "for the test"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/domains/added.test/dns"
    listing = client.get("/domains/?q=added").text
    assert "added.test" in listing and "for the test" in listing
    assert DOMAIN not in client.get("/domains/?q=added").text.split("<tbody>")[1]
    # the same again: the server's refusal is shown next to the field
    resp = post(client, "/domains/", {"name": "added.test"})
    assert resp.status_code == 400 and "already exists" in resp.text
    resp = post(client, "/domains/", {"name": "not a domain"})
    assert resp.status_code == 400 and "a domain name such as example.org" in resp.text
    # delete asks first, then deletes
    confirm = client.get("/domains/added.test/delete")
    assert confirm.status_code == 200 and "Delete the domain added.test?" in confirm.text
    resp = post(client, "/domains/added.test/delete")
    assert resp.status_code == 302
    with env.plane() as plane:
        names = [d.name for d in plane.domains.ListDomains(
            domains_pb2.ListDomainsRequest()).domains]
    assert "added.test" not in names
    # each change is logged with the administrator who made it
    changes = [r.fields for r in caplog.records if r.getMessage() == "admin web change"]
    assert {"user": ADMIN, "action": "domains.delete", "path": "/domains/added.test/delete",
            "status": 302}.items() <= changes[-1].items()


def test_a_domain_in_use_is_not_deleted_and_the_reason_is_shown(env):
    client = env.client()
    resp = post(client, f"/domains/{DOMAIN}/delete")
    assert resp.status_code == 409
    assert f"{DOMAIN} was not deleted" in resp.text


def test_dns_records_table_zone_file_and_check(env):
    client = env.client()
    page = client.get(f"/domains/{DOMAIN}/dns")
    assert page.status_code == 200
    with env.plane() as plane:
        records = plane.dns.Records(dns_pb2.DnsRecordsRequest(domain=DOMAIN))
    table = page.text.split('<table id="records">', 1)[1].split("</table>", 1)[0]
    rows = table.count('class="copy"')
    assert rows == len(records.records)  # a copy button per record
    mx = next(r for r in records.records if r.type == "MX")
    assert f">{mx.value}<" in page.text
    zone = client.get(f"/domains/{DOMAIN}/zone")
    assert zone.headers["Content-Disposition"] == f'attachment; filename="{DOMAIN}.zone"'
    assert zone.text == records.zone
    # publish the MX record only: the check says published for it, missing for the SPF
    priority, host = mx.value.split()
    env.dns.zone[DOMAIN] = {"MX": [(int(priority), host.rstrip("."))]}
    check = post(client, f"/domains/{DOMAIN}/dns/check", form_page=f"/domains/{DOMAIN}/dns")
    assert check.status_code == 200
    mx_row = check.text.split(f">{mx.value}<", 1)[1].split("</tr>", 1)[0]
    assert 'class="badge published"' in mx_row
    assert 'class="badge missing"' in check.text
    assert "Some records are not published as generated" in check.text


def test_dkim_rotation_shows_the_new_selectors(env):
    client = env.client()
    with env.plane() as plane:
        before = {k.selector for k in plane.domains.GetDomain(
            domains_pb2.GetDomainRequest(name=DOMAIN)).dkim_keys}
    resp = post(client, f"/domains/{DOMAIN}/rotate-dkim", form_page=f"/domains/{DOMAIN}/dns")
    assert resp.status_code == 302
    with env.plane() as plane:
        after = {k.selector for k in plane.domains.GetDomain(
            domains_pb2.GetDomainRequest(name=DOMAIN)).dkim_keys}
    assert after and after != before
    page = client.get(resp.headers["Location"]).text
    assert all(s in page for s in after)


# --- accounts, groups, lists -----------------------------------------------------------

def test_account_create_edit_alias_password_app_password_rename_delete(env):
    client = env.client()
    resp = post(client, "/accounts/", {"name": "bob", "description": "Bob B.",
                                       "emails": f"bob@{DOMAIN}", "password": "bob-password-1",
                                       "quota_mb": "5"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/accounts/bob"
    page = client.get("/accounts/bob").text
    assert "Bob B." in page and f"bob@{DOMAIN}" in page
    assert '<meter min="0" max="5242880" value="0"' in page  # the quota's usage bar
    send(env.server, f"bob@{DOMAIN}", "for bob")
    wait_until(lambda: '<span id="used-messages">1</span>' in client.get("/accounts/bob").text,
               "the usage to show the message")
    # edit: description, quota, roles
    resp = post(client, "/accounts/bob", {"new_name": "bob", "description": "Robert",
                                          "quota_mb": "10", "quota_messages": "100",
                                          "roles": "user, admin"})
    assert resp.status_code == 302
    with env.plane() as plane:
        bob = plane.principals.GetPrincipal(principals_pb2.GetPrincipalRequest(name="bob"))
    assert (bob.description, bob.quota_bytes, bob.quota_messages) == ("Robert", 10 << 20, 100)
    assert list(bob.roles) == ["user", "admin"]
    # an alias, then its removal; a taken address is refused with the server's reason
    resp = post(client, "/accounts/bob/addresses", {"address": f"robert@{DOMAIN}"},
                form_page="/accounts/bob")
    assert resp.status_code == 302
    assert f"robert@{DOMAIN}" in client.get("/accounts/bob").text
    resp = post(client, "/accounts/bob/addresses", {"address": f"{USER}@{DOMAIN}"},
                form_page="/accounts/bob")
    assert resp.status_code == 400 and f"{USER}@{DOMAIN}" in resp.text
    resp = post(client, "/accounts/bob/addresses/remove", {"address": f"robert@{DOMAIN}"},
                form_page="/accounts/bob")
    assert resp.status_code == 302
    with env.plane() as plane:
        bob = plane.principals.GetPrincipal(principals_pb2.GetPrincipalRequest(name="bob"))
    assert list(bob.emails) == [f"bob@{DOMAIN}"]
    # password reset: the new password is the one the server accepts (bob is an admin now)
    resp = post(client, "/accounts/bob/password", {"password": "new-password-2",
                                                   "confirm": "new-password-2"},
                form_page="/accounts/bob")
    assert resp.status_code == 302
    with ControlPlane(env.server.control_bind,
                      Credentials(user="bob", password="new-password-2")) as plane:
        assert plane.server.GetStatus(server_pb2.GetStatusRequest()).hostname
    resp = post(client, "/accounts/bob/password", {"password": "new-password-2",
                                                   "confirm": "different-3"},
                form_page="/accounts/bob")
    assert resp.status_code == 400 and "the passwords differ" in resp.text
    # app password: shown once, listed by name, revoked
    resp = post(client, "/accounts/bob/app-passwords", {"label": "phone"},
                form_page="/accounts/bob")
    assert resp.status_code == 200
    secret = re.search(r'<code id="app-secret" class="big">([^<]+)</code>', resp.text).group(1)
    assert len(secret) >= 16
    page = client.get("/accounts/bob").text
    assert "phone" in page and secret not in page
    resp = post(client, "/accounts/bob/app-passwords/revoke", {"label": "phone"},
                form_page="/accounts/bob")
    assert resp.status_code == 302
    with env.plane() as plane:
        assert not plane.principals.ListAppPasswords(
            principals_pb2.ListAppPasswordsRequest(name="bob")).app_passwords
    # rename, then delete after confirmation
    resp = post(client, "/accounts/bob", {"new_name": "robert", "description": "Robert",
                                          "roles": "user"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/accounts/robert"
    assert client.get("/accounts/robert/delete").status_code == 200
    resp = post(client, "/accounts/robert/delete")
    assert resp.status_code == 302 and resp.headers["Location"] == "/accounts/"
    assert client.get("/accounts/robert").status_code == 400


def test_account_form_errors_are_shown_next_to_the_field(env):
    client = env.client()
    resp = post(client, "/accounts/", {"name": "carol", "emails": "carol@nodomain.test",
                                       "password": "carol-password-1"})
    assert resp.status_code == 400 and "nodomain.test" in resp.text
    resp = post(client, "/accounts/", {"name": "", "password": "short"})
    assert resp.status_code == 400
    assert "This field is required." in resp.text and "at least 8" in resp.text


def test_groups_and_lists_with_members(env):
    client = env.client()
    resp = post(client, "/groups/", {"name": "team", "emails": f"team@{DOMAIN}",
                                     "members": USER})
    assert resp.status_code == 302
    page = client.get("/groups/team").text
    assert f'<span class="mono">{USER}</span>' in page
    resp = post(client, "/groups/team/members", {"member": ADMIN}, form_page="/groups/team")
    assert resp.status_code == 302
    resp = post(client, "/groups/team/members/remove", {"member": USER},
                form_page="/groups/team")
    assert resp.status_code == 302
    resp = post(client, "/groups/team", {"new_name": "team", "description": "The team",
                                         "roles": ""})
    assert resp.status_code == 302
    with env.plane() as plane:
        team = plane.principals.GetPrincipal(principals_pb2.GetPrincipalRequest(name="team"))
    assert list(team.members) == [ADMIN] and team.type == "group"
    assert team.description == "The team"
    resp = post(client, "/lists/", {"name": "news", "emails": f"news@{DOMAIN}",
                                    "members": f"{USER}@{DOMAIN}\nsomeone@far.test"})
    assert resp.status_code == 302
    listing = client.get("/lists/").text
    assert "news" in listing and "team" not in listing.split("<tbody>")[1]
    # a group is not shown as a list
    assert client.get("/lists/team").status_code == 404


def test_accounts_search_and_paging(env, monkeypatch):
    from admin_web.views import principals

    client = env.client()
    for name in ("pager-a", "pager-b", "pager-c"):
        post(client, "/accounts/", {"name": name, "password": "pager-password-1"})
    monkeypatch.setattr(principals, "PAGE_SIZE", 2)
    first_page = client.get("/accounts/?q=pager-").text
    first = first_page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert "pager-a" in first and "pager-b" in first and "pager-c" not in first
    after = re.search(r'href="(/accounts/\?q=pager-&amp;after=[^"]+)">Next page', first_page)
    assert after, "no next-page link"
    second_page = client.get(after.group(1).replace("&amp;", "&")).text
    second = second_page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    assert "pager-c" in second and "pager-a" not in second
    assert "First page" in second_page


def test_aliases_page_lists_adds_and_removes_aliases(env):
    client = env.client()
    resp = post(client, "/aliases/", {"address": f"ally@{DOMAIN}", "owner": USER})
    assert resp.status_code == 302
    table = client.get("/aliases/?q=ally").text.split('<table id="aliases">', 1)[1]
    row = table.split(f"ally@{DOMAIN}", 1)[1].split("</tr>", 1)[0]
    assert f'href="/accounts/{USER}"' in row and f"{USER}@{DOMAIN}" in row
    # primary addresses are not aliases
    all_rows = client.get("/aliases/").text.split('<table id="aliases">', 1)[1]
    assert f'<td class="mono">{ADMIN}@{DOMAIN}</td>\n      <td><a' not in all_rows
    resp = post(client, "/aliases/", {"address": f"ally2@{DOMAIN}", "owner": "nobody"})
    assert resp.status_code == 400 and "nobody" in resp.text
    resp = post(client, "/aliases/remove", {"address": f"ally@{DOMAIN}", "owner": USER},
                form_page="/aliases/")
    assert resp.status_code == 302
    with env.plane() as plane:
        alice = plane.principals.GetPrincipal(principals_pb2.GetPrincipalRequest(name=USER))
    assert f"ally@{DOMAIN}" not in alice.emails
    assert "No alias matches" in client.get("/aliases/?q=ally").text


# --- queue -----------------------------------------------------------------------------

def test_queue_list_filter_detail_retry_and_cancel(env):
    client = env.client()
    submit(env.server, f"{USER}@{DOMAIN}", ["one@remote.test", "two@remote.test"],
           (USER, USER_PW))
    with env.plane() as plane:
        wait_until(lambda: plane.queue.ListMessages(
            queue_pb2.ListMessagesRequest(recipient_domain="remote.test")).messages,
            "the message in the queue")
        msg = plane.queue.ListMessages(
            queue_pb2.ListMessagesRequest(recipient_domain="remote.test")).messages[0]
    listing = client.get("/queue/?domain=remote.test").text
    assert f'href="/queue/{msg.id}"' in listing and "one@remote.test" in listing
    assert "No message matches" in client.get("/queue/?domain=nowhere.test").text
    detail = client.get(f"/queue/{msg.id}").text
    assert "two@remote.test" in detail and USER in detail
    resp = post(client, f"/queue/{msg.id}/retry", form_page=f"/queue/{msg.id}")
    assert resp.status_code == 302
    # cancel one recipient (confirmation page first), then the rest
    confirm = client.get(f"/queue/{msg.id}/cancel?recipient=one@remote.test")
    assert "Cancel one@remote.test in message" in confirm.text
    resp = client.post(f"/queue/{msg.id}/cancel", data={
        "csrf_token": csrf_of(confirm.text), "recipient": "one@remote.test"})
    assert resp.status_code == 302 and resp.headers["Location"] == f"/queue/{msg.id}"
    resp = post(client, f"/queue/{msg.id}/cancel")
    assert resp.status_code == 302 and resp.headers["Location"] == "/queue/"
    assert client.get(f"/queue/{msg.id}").status_code == 400


# --- settings --------------------------------------------------------------------------

def test_settings_areas_help_text_and_raw_view(env):
    client = env.client()
    index = client.get("/settings/").text
    assert 'href="/settings/smtp"' in index and 'href="/settings/server"' in index
    smtp = client.get("/settings/smtp").text
    assert 'name="s:smtp.max-recipients"' in smtp
    assert "Expected: an integer" in smtp  # the type's label, after the help text
    server = client.get("/settings/server").text
    bind = re.search(r'name="s:server\.listener\.smtp\.bind"[^>]*>', server)
    assert bind and "disabled" in bind.group(0)  # bootstrap: file only
    raw = client.get("/settings/raw").text
    assert "server.listener.smtp.bind" in raw and "control.bind" in raw


def test_settings_validate_before_save_then_save_and_reload(env):
    client = env.client()
    with env.plane() as plane:
        generation = plane.server.GetStatus(server_pb2.GetStatusRequest()).generation
    page = client.get("/settings/smtp")
    form = _form_values(page.text)
    # an invalid value: refused with the reason next to the field, nothing stored
    resp = client.post("/settings/smtp", data={**form, "s:smtp.max-recipients": "lots"})
    assert resp.status_code == 400
    assert "Nothing was applied" in resp.text and "smtp.max-recipients" in resp.text
    with env.plane() as plane:
        stored = plane.config.GetConfig(config_pb2.GetConfigRequest()).stored
    assert "smtp.max-recipients" not in {s.key for s in stored}
    # a valid one: stored and applied by a reload
    resp = client.post("/settings/smtp", data={**form, "s:smtp.max-recipients": "42",
                                               "s:smtp.greylist.delay": "10m"})
    assert resp.status_code == 200, resp.text
    assert "Saved and reloaded" in resp.text
    with env.plane() as plane:
        snap = plane.config.GetConfig(config_pb2.GetConfigRequest(prefix="smtp."))
    values = {s.key: s.value for s in snap.settings}
    assert values["smtp.max-recipients"] == "42" and float(values["smtp.greylist.delay"]) == 600
    assert f"generation {generation + 1} is in force" in resp.text
    # a stored value removed: back to the default
    page = client.get("/settings/smtp")
    resp = client.post("/settings/smtp", data={**_form_values(page.text),
                                               "reset:smtp.max-recipients": "on",
                                               "reset:smtp.greylist.delay": "on"})
    assert resp.status_code == 200 and "Saved and reloaded" in resp.text
    with env.plane() as plane:
        stored = plane.config.GetConfig(config_pb2.GetConfigRequest()).stored
    assert not {"smtp.max-recipients", "smtp.greylist.delay"} & {s.key for s in stored}


def _form_values(html: str) -> dict[str, str]:
    """What a browser would post for the settings form as shown."""
    values: dict[str, str] = {"csrf_token": csrf_of(html)}
    for m in re.finditer(r'<input type="(text|checkbox)" id="[^"]+" name="(s:[^"]+)"'
                         r'(?: value="([^"]*)")?([^>]*)>', html):
        kind, name, value, rest = m.groups()
        if "disabled" in rest:
            continue
        if kind == "checkbox":
            if "checked" in rest:
                values[name] = "on"
        else:
            values[name] = _unescape(value or "")
    for m in re.finditer(r'<textarea id="[^"]+" name="(s:[^"]+)"[^>]*?( disabled)?[^>]*>'
                         r'([^<]*)</textarea>', html):
        if not m.group(2):
            values[m.group(1)] = _unescape(m.group(3))
    for m in re.finditer(r'<select id="[^"]+" name="(s:[^"]+)"([^>]*)>(.*?)</select>', html,
                         re.DOTALL):
        if "disabled" in m.group(2):
            continue
        chosen = re.search(r'<option value="([^"]*)" selected', m.group(3))
        if chosen:
            values[m.group(1)] = chosen.group(1)
    return values


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)
