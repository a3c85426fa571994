"""Date-time values (RFC 5322 §3.3) with the obsolete forms of §4.3: two- and three-digit
years, alphabetic zones (UT, GMT, US zones, military letters as -0000), comments, missing
seconds or day-of-week, and the asctime() layout some old software writes."""

from __future__ import annotations

import calendar
import re

_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
)}
# RFC 5322 §4.3 obs-zone; military zones "SHOULD all be considered equivalent to -0000".
_ZONES = {
    "ut": 0, "utc": 0, "gmt": 0, "z": 0,
    "est": -5 * 60, "edt": -4 * 60, "cst": -6 * 60, "cdt": -5 * 60,
    "mst": -7 * 60, "mdt": -6 * 60, "pst": -8 * 60, "pdt": -7 * 60,
}
_RFC5322 = re.compile(
    r"(?:[a-z]+\.?\s*,?\s*)?(?P<day>\d{1,2})\s*[-\s]?\s*(?P<mon>[a-z]{3})[a-z]*\.?\s*[-\s]?\s*"
    r"(?P<year>\d{2,4})\s+(?P<h>\d{1,2})\s*:\s*(?P<m>\d{1,2})(?:\s*:\s*(?P<s>\d{1,2}))?"
    r"(?:\.\d+)?\s*(?P<zone>[+-]\s*\d{1,2}:?\d{2}|[a-z]+)?",
    re.IGNORECASE,
)
_ASCTIME = re.compile(
    r"(?:[a-z]+\s+)?(?P<mon>[a-z]{3})[a-z]*\s+(?P<day>\d{1,2})\s+(?P<h>\d{1,2}):(?P<m>\d{1,2})"
    r"(?::(?P<s>\d{1,2}))?\s+(?:(?P<zone>[a-z]+|[+-]\d{4})\s+)?(?P<year>\d{4})",
    re.IGNORECASE,
)
_COMMENT = re.compile(r"\([^()]*\)")
_MAX_DATE = 256  # a date-time is short; longer text is not searched (bounds the regexes)


def _zone_minutes(zone: str | None) -> int:
    if not zone:
        return 0  # RFC 5322 §3.3: "-0000" (unknown local time) is UTC
    zone = zone.replace(" ", "").replace(":", "")
    if zone[0] in "+-":
        digits = zone[1:].rjust(4, "0")
        hours, minutes = int(digits[:-2]), int(digits[-2:])
        if minutes > 59:
            return 0
        offset = hours * 60 + minutes
        return -offset if zone[0] == "-" else offset
    return _ZONES.get(zone.lower(), 0)


def parse_date(text: str) -> float | None:
    """Seconds since the epoch (UTC) for a Date header value, or None if it is not a date."""
    text = _COMMENT.sub(" ", _COMMENT.sub(" ", text[:_MAX_DATE])).strip()
    match = _RFC5322.search(text) or _ASCTIME.search(text)
    if match is None:
        return None
    month = _MONTHS.get(match.group("mon").lower())
    if month is None:
        return None
    year_text = match.group("year")
    year = int(year_text)
    if len(year_text) == 2:  # RFC 5322 §4.3: 00-49 → 2000s, 50-99 → 1900s
        year += 2000 if year < 50 else 1900
    elif len(year_text) == 3:  # RFC 5322 §4.3: three digits are added to 1900
        year += 1900
    day, hour, minute = int(match.group("day")), int(match.group("h")), int(match.group("m"))
    second = int(match.group("s") or 0)
    if second == 60:  # RFC 5322 §3.3 allows a leap second
        second = 59
    if year < 1900 or hour > 23 or minute > 59 or second > 59:
        return None
    if not 1 <= day <= calendar.monthrange(year, month)[1]:
        return None
    epoch = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    return float(epoch - _zone_minutes(match.group("zone")) * 60)
