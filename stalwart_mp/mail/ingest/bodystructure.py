"""BODYSTRUCTURE / BODY as nested Python lists, in the exact field order of RFC 9051 §7.5.2,
so the IMAP writer only serialises: str → string, int → number, None → NIL, list →
parenthesised list.

Non-multipart: type, subtype, params, id, description, encoding, size
  [text/*: lines] [message/rfc822, message/global: envelope, body, lines]
  [extended: md5, disposition, language, location]
Multipart: body..., subtype [extended: params, disposition, language, location]
"""

from __future__ import annotations

from stalwart_mp.mail.ingest.envelope import Envelope, Tree, envelope_tree
from stalwart_mp.mail.ingest.mime import Part


def _params(params: dict[str, str]) -> list[Tree] | None:
    """RFC 9051 body-fld-param: ``(key value key value ...)`` or NIL."""
    if not params:
        return None
    flat: list[Tree] = []
    for key, value in params.items():
        flat.append(key)
        flat.append(value)
    return flat


def _disposition(part: Part) -> list[Tree] | None:
    """RFC 9051 body-fld-dsp: ``(type params)`` or NIL (RFC 2183)."""
    if part.disposition is None:
        return None
    return [part.disposition, _params(part.disposition_params)]


def _language(part: Part) -> list[Tree] | None:
    """RFC 9051 body-fld-lang (RFC 3282 Content-Language): a list of tags, or NIL."""
    return list(part.language) if part.language else None


def bodystructure_tree(part: Part, extended: bool = True) -> list[Tree]:
    """BODYSTRUCTURE (``extended=True``) or BODY (``extended=False``) of ``part``."""
    if part.is_multipart:
        out: list[Tree] = [bodystructure_tree(child, extended) for child in part.children]
        out.append(part.subtype)
        if extended:
            out += [_params(part.params), _disposition(part), _language(part), part.location]
        return out
    params = dict(part.params)
    if part.content_type == "text" and "charset" not in params:
        params["charset"] = "us-ascii"  # RFC 2045 §5.2 default
    out = [
        part.content_type,
        part.subtype,
        _params(params),
        part.id,
        part.description,
        part.encoding,
        part.size,
    ]
    if part.is_message and part.children:
        envelope = part.envelope if part.envelope is not None else Envelope()
        out += [envelope_tree(envelope), bodystructure_tree(part.children[0], extended),
                part.lines]
    elif part.content_type == "text":
        out.append(part.lines)
    if extended:
        out += [part.md5, _disposition(part), _language(part), part.location]
    return out
