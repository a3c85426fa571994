"""Outbound delivery: routing (MX, smarthost, routes), the SMTP client, the runner of the
queue process, DSNs and DKIM signing of submitted mail."""
