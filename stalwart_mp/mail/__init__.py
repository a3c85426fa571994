"""The mailbox model: accounts, mailboxes, emails, threads, changes, quota, ingest and search.

One model serves IMAP, POP3 and JMAP (see docs/architecture.md, "Layers"). Messages are parsed
once, at delivery, by :mod:`stalwart_mp.mail.ingest`; every protocol reads what that parse
recorded instead of parsing the message again.
"""
