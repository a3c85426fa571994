"""The queue child's work: outbound delivery (with the SMTP outbound issue), full-text
indexing, and housekeeping (blob collection, expired keys and tokens)."""
