"""Where settings are declared: every module listed here registers its settings on import.

The master imports these before forking, so they must stay light (no DB drivers, no grpc).
"""
from __future__ import annotations

import importlib

SETTINGS_MODULES = (
    "stalwart_mp.config.core_settings",
    "stalwart_mp.store.settings",
    "stalwart_mp.store.blob_settings",
    "stalwart_mp.store.fts_settings",
    "stalwart_mp.store.lookup_settings",
    "stalwart_mp.directory.settings",
    "stalwart_mp.directory.sql_settings",
    "stalwart_mp.directory.ldap_settings",
    "stalwart_mp.mail.settings",
    "stalwart_mp.dns.settings",
    "stalwart_mp.smtp.settings",
    "stalwart_mp.smtp.outbound.settings",
    "stalwart_mp.imap.settings",
)

_loaded = False


def load_settings_modules() -> None:
    global _loaded
    if _loaded:
        return
    for name in SETTINGS_MODULES:
        importlib.import_module(name)
    _loaded = True
