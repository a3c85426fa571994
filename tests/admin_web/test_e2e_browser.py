"""End to end in a real browser: Debian's headless Chromium driven by Playwright, against
a real `stalwart-mp serve` whose admin child runs gunicorn with the web admin.

One administrator's first session, as a person would click through it: sign in, the setup
wizard creates the first domain, its DNS records (copy button, zone download, live check),
an account created through the form, a message sent to it over SMTP and counted on the
dashboard and on the account's usage bar, a setting changed, saved and reloaded, the queue,
an account deleted after confirmation, sign out. Screenshots of each page go to
tests/artifacts/ (not committed) for a person to look at.
"""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from admin_web.grpc_client import ControlPlane, token_credentials
from stalwart_mp.control.gen.stalwart_mp.v1 import config_pb2
from tests.admin_web.env import ADMIN, ADMIN_PW, send, start_server
from tests.dns_server import DnsServer
from tests.harness import ROOT
from tests.services import require_service

CHROMIUM = os.environ.get("STALWART_MP_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
DOMAIN = "shop.test"


def _chromium_present() -> None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        raise FileNotFoundError(f"{CHROMIUM} (Debian package chromium; .ci/run installs it)")
    import playwright.sync_api  # noqa: F401  (requirements/dev.txt)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator:
    dns = DnsServer().start()
    srv = start_server(tmp_path_factory.mktemp("admin_e2e"), dns.port, admin=True)
    srv.dns = dns
    try:
        yield srv
    finally:
        srv.stop()
        dns.stop()


@pytest.fixture
def page(server):
    require_service("chromium", _chromium_present)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        context = browser.new_context(
            base_url=f"http://127.0.0.1:{server.ports['admin']}", accept_downloads=True,
            viewport={"width": 1280, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        context.set_default_timeout(20_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # script errors only: the 4xx answers the test provokes are logged as resource errors
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error"
                and not msg.text.startswith("Failed to load resource") else None)
        missing: list[str] = []
        page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
        try:
            yield page
        finally:
            context.close()
            browser.close()
        assert not errors, f"errors in the browser console: {errors}"
        assert not missing, f"pages or files not found: {missing}"


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"admin-{name}.png"), full_page=True)


def test_first_session_in_a_browser(server, page):
    from playwright.sync_api import expect

    # --- sign in: the login page first, with a refusal for a wrong password ---
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    shot(page, "login")
    page.get_by_label("User name").fill(ADMIN)
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("invalid user name or password")
    page.get_by_label("Password").fill(ADMIN_PW)
    page.get_by_role("button", name="Sign in").click()

    # --- first start: the setup wizard, then the new domain's DNS records ---
    expect(page).to_have_url(re.compile(r"/setup/$"))
    expect(page.get_by_label("Host name of this mail server")).to_have_value("mail.test.example")
    shot(page, "setup")
    page.get_by_label("First mail domain").fill(DOMAIN)
    page.get_by_role("button", name="Set up and show the DNS records").click()
    expect(page).to_have_url(re.compile(rf"/domains/{DOMAIN}/dns$"))
    expect(page.get_by_role("status").first).to_contain_text(f"{DOMAIN} is ready")
    records = page.locator("#records tbody tr")
    assert records.count() >= 5
    expect(page.locator("#records")).to_contain_text("10 mail.test.example.")
    expect(page.locator("#records")).to_contain_text("v=DKIM1; k=ed25519")
    shot(page, "dns")
    # the copy button puts the record's value on the clipboard
    first_value = page.locator("#records tbody tr").first.locator("td.value").inner_text()
    page.locator("#records tbody tr").first.get_by_role("button").click()
    expect(page.locator("#records tbody tr").first.get_by_role("button")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == first_value.strip()
    # the zone file downloads
    with page.expect_download() as download:
        page.get_by_role("link", name="Download zone file").click()
    assert download.value.suggested_filename == f"{DOMAIN}.zone"
    zone = Path(download.value.path()).read_text()
    assert "MX" in zone and "_dmarc" in zone
    # check DNS: publish the MX only, the rest is reported missing
    server.dns.zone[DOMAIN] = {"MX": [(10, "mail.test.example")]}
    page.get_by_role("button", name="Check DNS").click()
    expect(page.locator("#check-summary")).to_contain_text("Some records are not published")
    mx_row = page.locator("#records tbody tr", has_text="10 mail.test.example.")
    expect(mx_row.locator(".badge")).to_have_text("published")
    expect(page.locator(".badge.missing").first).to_be_visible()
    shot(page, "dns-check")

    # --- an account through the form ---
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Accounts").click()
    page.get_by_label("Name (login)").fill("carol")
    page.get_by_label("Full name or description").fill("Carol C.")
    page.get_by_label("Addresses").fill(f"carol@{DOMAIN}")
    page.locator("#password").fill("carol-password-1")
    page.get_by_label("Storage quota (MiB)").fill("2")
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(re.compile(r"/accounts/carol$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("carol")
    expect(page.locator("#addresses")).to_contain_text(f"carol@{DOMAIN}")

    # --- a message over SMTP: counted on the dashboard and in the account's usage ---
    send(server, f"carol@{DOMAIN}", "through the browser test")
    for _ in range(100):
        page.goto("/")
        if page.locator('[data-metric="received"]').inner_text() == "1":
            break
        page.wait_for_timeout(200)
    expect(page.locator('[data-metric="received"]')).to_have_text("1")
    expect(page.locator('[data-metric="delivered"]')).to_have_text("1")
    smtp_row = page.locator('tr[data-listener="smtp"]')
    assert int(smtp_row.locator('[data-metric="connections"]').inner_text()) >= 1
    expect(page.locator("main")).to_contain_text("admin")  # the admin child is listed
    shot(page, "dashboard")
    page.goto("/accounts/carol")
    expect(page.locator("#used-messages")).to_have_text("1")
    expect(page.locator("meter").first).to_be_visible()
    shot(page, "account")

    # --- a setting changed, validated, saved and reloaded ---
    page.get_by_role("link", name="Settings").click()
    shot(page, "settings")
    page.get_by_role("link", name="smtp", exact=True).click()
    field = page.locator('input[name="s:smtp.max-recipients"]')
    field.fill("many")
    page.get_by_role("button", name="Validate, save and reload").click()
    expect(page.locator("#outcome")).to_contain_text("Nothing was applied")
    page.locator('input[name="s:smtp.max-recipients"]').fill("77")
    page.get_by_role("button", name="Validate, save and reload").click()
    expect(page.locator("#outcome")).to_contain_text("Saved and reloaded: smtp.max-recipients")
    expect(page.locator('input[name="s:smtp.max-recipients"]')).to_have_value("77")
    shot(page, "settings-smtp")
    with ControlPlane(server.control_bind,
                      token_credentials(server.run_dir / "control.token")) as plane:
        snapshot = plane.config.GetConfig(config_pb2.GetConfigRequest(prefix="smtp."))
    assert {s.key: (s.value, s.source) for s in snapshot.settings}[
        "smtp.max-recipients"] == ("77", "stored")

    # --- responsive: on a phone-sized screen nothing overflows the page's width ---
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/", f"/domains/{DOMAIN}/dns", "/accounts/carol", "/settings/smtp"):
        page.goto(path)
        overflow = page.evaluate("document.documentElement.scrollWidth"
                                 " - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone screen"
    page.goto("/")
    shot(page, "dashboard-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # --- the queue, and a delete with its confirmation ---
    page.get_by_role("link", name="Queue").click()
    expect(page.locator("#queue")).to_contain_text("the queue is empty")
    shot(page, "queue")
    page.goto("/accounts/carol")
    page.get_by_role("link", name="Delete carol…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Delete the account carol?")
    page.get_by_role("button", name="Delete carol").click()
    expect(page).to_have_url(re.compile(r"/accounts/$"))
    expect(page.locator("#principals")).not_to_contain_text("carol")

    # --- sign out ---
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/domains/")
    expect(page).to_have_url(re.compile(r"/login\?next=/domains/$"))
