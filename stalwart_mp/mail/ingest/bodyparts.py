"""Which parts are the text body, the HTML body and the attachments: the algorithm of
RFC 8621 §4.1.4 (JMAP Email textBody / htmlBody / attachments), used for previews, search text
and attachment names. message/rfc822 parts are attachments (their insides are not walked)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stalwart_mp.mail.ingest.mime import Part

_INLINE_MEDIA = ("image", "audio", "video")


@dataclass(slots=True)
class BodyParts:
    text_body: list[Part] = field(default_factory=list)
    html_body: list[Part] = field(default_factory=list)
    attachments: list[Part] = field(default_factory=list)


def _is_text(part: Part, subtype: str) -> bool:
    return part.content_type == "text" and part.subtype == subtype


def classify(root: Part) -> BodyParts:
    result = BodyParts()
    if root.is_multipart:
        _walk(root.children, root.subtype, root.subtype == "alternative", result,
              result.text_body, result.html_body)
    else:
        _walk([root], "mixed", False, result, result.text_body, result.html_body)
    return result


def _walk(
    parts: list[Part],
    multipart_type: str,
    in_alternative: bool,
    result: BodyParts,
    text_body: list[Part] | None,
    html_body: list[Part] | None,
) -> None:
    text_length = len(text_body) if text_body is not None else -1
    html_length = len(html_body) if html_body is not None else -1
    for i, part in enumerate(parts):
        if part.is_multipart:
            sub = part.subtype
            _walk(part.children, sub, in_alternative or sub == "alternative", result,
                  text_body, html_body)
            continue
        inline_media = part.content_type in _INLINE_MEDIA
        is_inline = part.disposition != "attachment" and (
            _is_text(part, "plain") or _is_text(part, "html") or inline_media
        ) and (i == 0 or (multipart_type != "related" and (inline_media or not part.filename)))
        if not is_inline:
            result.attachments.append(part)
            continue
        if multipart_type == "alternative":
            if _is_text(part, "plain") and text_body is not None:
                text_body.append(part)
            elif _is_text(part, "html") and html_body is not None:
                html_body.append(part)
            else:
                result.attachments.append(part)
            continue
        if in_alternative:
            if _is_text(part, "plain"):
                html_body = None
            if _is_text(part, "html"):
                text_body = None
        if text_body is not None:
            text_body.append(part)
        if html_body is not None:
            html_body.append(part)
        if (text_body is None or html_body is None) and inline_media:
            result.attachments.append(part)
    if multipart_type == "alternative" and text_body is not None and html_body is not None:
        # RFC 8621 §4.1.4: an alternative that had no text (or no html) version uses the other
        if text_length == len(text_body) and html_length != len(html_body):
            text_body.extend(html_body[html_length:])
        if html_length == len(html_body) and text_length != len(text_body):
            html_body.extend(text_body[text_length:])
