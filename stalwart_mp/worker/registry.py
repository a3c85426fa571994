"""Which protocols this build serves, and where each one's server lives.

A listener's ``protocol`` maps to a ``ProtocolServer`` class, imported lazily in the worker
(the master only needs the names, for config validation). Each protocol issue adds its line.
"""
from __future__ import annotations

import importlib

_SERVERS: dict[str, str] = {
    "http": "stalwart_mp.http.server:HttpProtocolServer",
    "smtp": "stalwart_mp.smtp.server:SmtpProtocolServer",
    "submission": "stalwart_mp.smtp.server:SubmissionProtocolServer",
    "lmtp": "stalwart_mp.smtp.server:LmtpProtocolServer",
    "imap": "stalwart_mp.imap.server:ImapProtocolServer",
}


def available_protocols() -> frozenset[str]:
    return frozenset(_SERVERS)


def server_class(protocol: str) -> type:
    module, _, name = _SERVERS[protocol].partition(":")
    return getattr(importlib.import_module(module), name)
