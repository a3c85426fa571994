"""The commented ``config.toml`` written by ``stalwart-mp init``.

Comments come from the settings' help texts (one source of truth: the schema), so the file
documents itself and stays in step with the loader.
"""
from __future__ import annotations

import os
import textwrap
from dataclasses import dataclass

from stalwart_mp.config.registry import load_settings_modules
from stalwart_mp.config.schema import SCHEMA

STANDARD_PORTS = {"smtp": 25, "submissions": 465, "submission": 587, "imap": 143,
                  "imaps": 993, "pop3": 110, "pop3s": 995, "managesieve": 4190,
                  "https": 443, "admin": 8080}
DEV_PORTS = {"smtp": 2525, "submissions": 4465, "submission": 5587, "imap": 1143,
             "imaps": 1993, "pop3": 1110, "pop3s": 1995, "managesieve": 14190,
             "https": 8443, "admin": 8080}


@dataclass(frozen=True, slots=True)
class ListenerTemplate:
    name: str        # also the key into the port tables
    protocol: str
    implicit_tls: bool


# Every listener the product has, in the product's order (Stalwart's default listeners).
LISTENERS = (
    ListenerTemplate("smtp", "smtp", False),
    ListenerTemplate("submissions", "submission", True),
    ListenerTemplate("submission", "submission", False),
    ListenerTemplate("imap", "imap", False),
    ListenerTemplate("imaps", "imap", True),
    ListenerTemplate("pop3", "pop3", False),
    ListenerTemplate("pop3s", "pop3", True),
    ListenerTemplate("managesieve", "managesieve", False),
    ListenerTemplate("https", "http", True),
)


def _comment(text: str, indent: str = "") -> str:
    return "\n".join(indent + "# " + line for line in textwrap.wrap(text, 88))


def _setting(key: str, value, commented: bool = False) -> str:
    setting = SCHEMA.match(tuple(key.split(".")))
    assert setting is not None, key
    name = key.rsplit(".", 1)[-1]
    line = f"{name} = {setting.type.to_toml(value)}"
    return _comment(setting.help) + "\n" + ("# " if commented else "") + line


def _root_dev_run(dev_ports: bool) -> list[str]:
    """A --dev-ports trial started as root keeps running as root (no user to drop to)."""
    if not (dev_ports and os.geteuid() == 0):
        return []
    return ["# Written by `init --dev-ports` run as root, for a local trial. In production",
            "# set server.user instead and remove this line.",
            "allow-root = true", ""]


def render(hostname: str, dev_ports: bool, available_protocols: frozenset[str],
           bind_host: str = "0.0.0.0") -> str:
    load_settings_modules()
    ports = DEV_PORTS if dev_ports else STANDARD_PORTS
    out = [
        "# stalwart-mp configuration (bootstrap settings).",
        "# Check it with: stalwart-mp check-config --config THIS_FILE",
        "# Apply changes without a restart: systemctl reload stalwart-mp (or kill -HUP the",
        "# master). Domains, accounts and other settings live in the data store and are",
        "# managed with stalwart-mp-admin.",
        "",
        "[server]",
        _setting("server.hostname", hostname),
        "",
        _setting("server.workers", 4, commented=True),
        "",
        _setting("server.data-dir", "data"),
        "",
        _setting("server.run-dir", "run"),
        "",
        _setting("server.user", "stalwart-mp", commented=True),
        "",
        *_root_dev_run(dev_ports),
        _setting("server.graceful-timeout", "30s", commented=True),
        "",
    ]
    served = [t for t in LISTENERS if t.protocol in available_protocols]
    out.append(_comment(
        "Listeners: one table per listener. Protocols this version serves: "
        + ", ".join(sorted(available_protocols)) + "."))
    for t in served:
        out += [
            "",
            f"[server.listener.{t.name}]",
            f'bind = ["{bind_host}:{ports[t.name]}"]',
            f'protocol = "{t.protocol}"',
            f"tls.implicit = {'true' if t.implicit_tls else 'false'}",
        ]
    out += [
        "",
        _comment("TLS certificates. Without any, a self-signed certificate for"
                 " server.hostname is generated in data-dir/tls on first start."),
        '# [certificate."default"]',
        '# cert = "/etc/letsencrypt/live/mail.example.com/fullchain.pem"',
        '# private-key = "/etc/letsencrypt/live/mail.example.com/privkey.pem"',
        "# default = true",
        "",
        _comment("Stores, by name; [storage] gives each role a store. The embedded defaults:"
                 " LMDB for data and lookup keys (shared by every worker), a folder for"
                 " blobs, whoosh for the search index. PostgreSQL, MySQL/MariaDB, SQLite,"
                 " S3, Redis and memcached are available too."),
        '[store."default"]',
        'type = "lmdb"',
        'path = "data/lmdb"',
        "",
        '[store."blobs"]',
        'type = "fs"',
        'path = "data/blobs"',
        "",
        '[store."search"]',
        'type = "whoosh"',
        'path = "data/fts"',
        "",
        "[storage]",
        'data = "default"',
        'blob = "blobs"',
        'fts = "search"',
        'lookup = "default"',
        "",
        "[control]",
        _setting("control.bind", "127.0.0.1:50051"),
        "",
        "[admin]",
        _setting("admin.enabled", True),
        "",
        _setting("admin.bind", f"127.0.0.1:{ports['admin']}"),
        "",
        "[logging]",
        _setting("logging.level", "info"),
        "",
        _setting("logging.format", "logfmt"),
        "",
    ]
    return "\n".join(out)
