"""The sans-I/O IMAP layer: ``reader`` (bytes → whole commands, literal continuations and
limits), ``parser`` (grammar → typed ``commands``), ``writer`` (values → wire bytes) and
``utf7`` (RFC 3501 §5.1.3 mailbox names). No sockets, no event loop, no store."""
