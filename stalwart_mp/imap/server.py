"""The IMAP protocol server of a worker (one per ``protocol = "imap"`` listener).

143 speaks STARTTLS (RFC 9051 §6.2.1; LOGIN and cleartext SASL are refused before it except
from loopback or with ``imap.allow-plain-text``); 993 sets ``tls.implicit = true`` (RFC 8314).
"""
from __future__ import annotations

import asyncio
import logging

from stalwart_mp.imap.session import ImapSession

log = logging.getLogger("stalwart_mp.imap")


class ImapProtocolServer:
    kind = "imap"

    def __init__(self, listener, worker):
        self.listener = listener
        self.worker = worker
        cfg = worker.cfg
        self.hostname = cfg.get("server.hostname")
        self.max_message_size = cfg.get("imap.max-message-size")
        self.max_literal = cfg.get("imap.max-literal")
        self.max_line = cfg.get("imap.max-line")
        self.max_bad = cfg.get("imap.max-bad-commands")
        self.timeout_unauth = cfg.get("imap.timeout.unauthenticated")
        self.timeout_auth = max(cfg.get("imap.timeout.authenticated"),
                                listener.settings.get("timeout", 0) or 0)
        self.allow_plain_text = cfg.get("imap.allow-plain-text") or \
            cfg.get("auth.allow-plain-text")
        self.handshake_timeout = cfg.get("tls.handshake-timeout")
        self.max_saved = cfg.get("imap.max-search-results-saved")
        self.sessions: set[ImapSession] = set()
        self._fts = None
        self._fts_failed = False

    @property
    def services(self):
        return self.worker.services

    @property
    def tls(self):
        return self.worker.tls

    @property
    def events(self):
        return self.worker.events

    def fts(self):
        """The full-text store for SEARCH TEXT/BODY, opened on first use."""
        if self._fts is None and not self._fts_failed:
            try:
                from stalwart_mp.store.configured import open_fts_store

                self._fts = open_fts_store(self.worker.cfg)
            except Exception:
                self._fts_failed = True
                log.warning("full-text store unavailable: SEARCH TEXT/BODY refused",
                            exc_info=True)
        return self._fts

    async def start(self) -> None:
        return None

    def protocol_factory(self, info) -> asyncio.Protocol:
        session = ImapSession(self, info)
        self.sessions.add(session)
        return session

    async def shutdown(self) -> None:
        """Let running commands finish (5 s at most), then BYE (RFC 9051 §7.1.5)."""
        for _ in range(50):
            if not any(s.busy for s in self.sessions):
                break
            await asyncio.sleep(0.1)
        for session in list(self.sessions):
            session.shutting_down()
