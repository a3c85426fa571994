"""SASL authentication shared by every protocol (SMTP AUTH, IMAP AUTHENTICATE, POP3 AUTH,
ManageSieve, JMAP): the exchanges live in ``sasl.py``, without I/O; credential checks are
callbacks into ``stalwart_mp.directory.auth``."""
