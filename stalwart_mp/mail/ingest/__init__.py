"""Message ingest: parse a message once, at delivery, into everything IMAP, POP3 and JMAP
need (envelope, MIME tree with byte offsets, BODYSTRUCTURE data, thread keys, preview,
attachment names, search text). Pure code: bytes in, records out; no I/O, no store access.

    parsed = parse_message(raw)
    record = to_record(parsed)              # msgpack it next to the blob
    stored = from_record(record)            # at FETCH time
    raw[stored.root.section("2").body_start : stored.root.section("2").end]   # BODY[2]
    stored.header_fields(raw, ["subject"])  # BODY[HEADER.FIELDS (SUBJECT)], no parse
    split_headers(raw, part.header_start, part.body_start, 1 << 20)  # a part's fields, if asked
"""

from stalwart_mp.mail.ingest.addresses import Address, parse_address_list
from stalwart_mp.mail.ingest.bodystructure import bodystructure_tree
from stalwart_mp.mail.ingest.charsets import decode as decode_charset
from stalwart_mp.mail.ingest.dates import parse_date
from stalwart_mp.mail.ingest.envelope import Envelope, envelope_tree
from stalwart_mp.mail.ingest.headers import Header, header_fields, split_headers
from stalwart_mp.mail.ingest.message import ParsedMessage, header_envelope, parse_message
from stalwart_mp.mail.ingest.mime import Part
from stalwart_mp.mail.ingest.rfc2047 import decode_words
from stalwart_mp.mail.ingest.serialize import StoredMessage, from_record, to_record
from stalwart_mp.mail.ingest.thread import base_subject, normalize_id
from stalwart_mp.mail.ingest.transfer import decode_body, decoded_text

__all__ = [
    "Address",
    "Envelope",
    "Header",
    "ParsedMessage",
    "Part",
    "StoredMessage",
    "base_subject",
    "bodystructure_tree",
    "decode_body",
    "decode_charset",
    "decode_words",
    "decoded_text",
    "envelope_tree",
    "from_record",
    "header_envelope",
    "header_fields",
    "normalize_id",
    "parse_address_list",
    "parse_date",
    "parse_message",
    "split_headers",
    "to_record",
]
