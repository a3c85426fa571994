"""IMAP4rev2 (RFC 9051) and IMAP4rev1 (RFC 3501) server.

``protocol/`` is the sans-I/O layer (command reader, grammar, response writer); ``server.py``
and ``session.py`` glue it to the worker's transports and to the mail model; the command
modules (``mailboxes.py``, ``fetch.py``, ``search.py``, ``selected.py``) answer by area.
"""
