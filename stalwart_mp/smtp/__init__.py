"""SMTP and LMTP.

``protocol.py`` is the pure, sans-I/O server protocol (CONVENTIONS §2, like h11): the session
feeds it bytes with ``receive_data``, takes events from ``next_event`` and writes what ``send``
returns. It never touches sockets, clocks, the store or the directory.

Protocol decisions (see ``protocol.py`` for the RFC citations next to each rule):

* Command lines must end with CRLF; bare LF is answered 500 5.5.2. Lines longer than
  ``max_line`` are dropped up to their end and answered 500 5.5.2 (AUTH lines: 12288, 5.5.6).
* DATA ends only at CRLF.CRLF. A lone dot touching a bare CR/LF is SMTP smuggling: the message
  is read to the real end and refused 554 5.5.2. Other bare LFs are kept as sent.
* Size is enforced while streaming (DATA and BDAT): 552 5.3.4 after the end of the data.
* BDAT chunks are read byte-exactly whatever the state (errors discard the chunk); a
  non-LAST chunk yields ``BdatChunk``, BDAT LAST yields ``MessageData(chunked=True)`` — the
  same event as the end of DATA.
* STARTTLS pauses parsing; ``start_tls()`` returns the plaintext bytes pipelined after it so
  the session can log and drop them (RFC 3207 §4.2, CVE-2011-0411).
* Transitions are driven by the replies the session sends (2yz to MAIL opens the
  transaction, 354 starts DATA, 334/235 drive AUTH), kept in one table in ``_transition``.
"""
