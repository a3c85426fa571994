"""Delivery status notifications (RFC 3464 multipart/report, RFC 6522).

One DSN reports one kind of event ("failed", "delayed", "delivered"/"relayed") for the
recipients it names. It goes to the envelope sender with a null reverse-path (RFC 5321
§4.5.5), so a DSN is never answered by another DSN; a message whose sender is null gets
none at all (the caller checks).
"""
from __future__ import annotations

import email.utils
import re
import time
import uuid
from dataclasses import dataclass

from stalwart_mp.smtp.queue.store import QueuedMessage, QueuedRecipient, orcpt_text

_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")

TITLES = {"failed": "Failure", "delayed": "Delay", "delivered": "Success",
          "relayed": "Relayed"}
EXPLAIN = {
    "failed": "Your message could not be delivered to the following recipients. "
              "This is a permanent error; the message will not be retried.",
    "delayed": "Your message has not been delivered yet to the following recipients. "
               "Delivery will be retried; you do not need to send it again.",
    "delivered": "Your message was delivered to the following recipients.",
    "relayed": "Your message was relayed to the following recipients; the next server "
               "does not report delivery status.",
}


@dataclass(slots=True)
class Report:
    action: str                    # RFC 3464 §2.3.3: failed | delayed | delivered | relayed
    recipients: list[QueuedRecipient]


def status_of(reply: str, action: str) -> str:
    """The RFC 3463 status for the Status field: the reply's enhanced code, or one
    derived from its basic code."""
    text = reply.split(" ", 1)[1] if reply[:3].isdigit() and " " in reply else reply
    m = _ENHANCED.match(text)
    if m:
        return m.group(0)
    if action in ("delivered", "relayed"):
        return "2.0.0"
    if reply[:1] == "5" or action == "failed":
        return "5.0.0"
    return "4.0.0"


def _header_value(value: str) -> str:
    return re.sub(r"[\r\n]+", " ", value)


def build(message: QueuedMessage, report: Report, original: bytes, *, hostname: str,
          will_retry_until: float | None = None, now: float | None = None) -> bytes:
    """The DSN message (CRLF line ends) reporting ``report`` on ``message``."""
    now = time.time() if now is None else now
    boundary = f"=_{uuid.uuid4().hex}"
    date = email.utils.formatdate(now)
    title = TITLES[report.action]
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{message.mail_from}>",
        f"Subject: Delivery Status Notification ({title})",
        f"Date: {date}",
        f"Message-ID: <{uuid.uuid4().hex}@{hostname}>",
        "Auto-Submitted: auto-replied",                       # RFC 3834 §5
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
        "",
        "This is a MIME-formatted delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        EXPLAIN[report.action],
        "",
    ]
    for r in report.recipients:
        lines.append(f"  <{r.address}>" + (f": {_header_value(r.reply)}" if r.reply else ""))
    lines += ["", f"--{boundary}", "Content-Type: message/delivery-status", ""]
    # RFC 3464 §2.2: per-message fields
    lines.append(f"Reporting-MTA: dns; {hostname}")
    if message.envid:
        lines.append(f"Original-Envelope-Id: {_header_value(message.envid)}")
    lines.append(f"Arrival-Date: {email.utils.formatdate(message.created_at)}")
    for r in report.recipients:
        # RFC 3464 §2.3: per-recipient fields, each group after a blank line
        lines.append("")
        if r.orcpt:
            lines.append(f"Original-Recipient: {_header_value(orcpt_text(r.orcpt))}")
        lines.append(f"Final-Recipient: rfc822; {r.address}")
        lines.append(f"Action: {report.action}")
        lines.append(f"Status: {status_of(r.reply, report.action)}")
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {r.remote_mta}")
        if r.reply and r.reply[:3].isdigit():
            lines.append(f"Diagnostic-Code: smtp; {_header_value(r.reply)}")
        elif r.reply:
            lines.append(f"X-Stalwart-Diagnostic: {_header_value(r.reply)}")
        if r.updated_at:
            lines.append(f"Last-Attempt-Date: {email.utils.formatdate(r.updated_at)}")
        if report.action == "delayed" and will_retry_until:
            lines.append(f"Will-Retry-Until: {email.utils.formatdate(will_retry_until)}")
    lines += ["", f"--{boundary}"]
    head = "\r\n".join(lines).encode() + b"\r\n"
    # RFC 3461 §4.3: RET=HDRS returns the header only; otherwise (and for delays, which
    # need not carry the content) the message is returned whole on failure.
    if message.ret == "HDRS" or report.action != "failed":
        end = original.find(b"\r\n\r\n")
        headers = original if end < 0 else original[:end + 2]
        part = b"Content-Type: text/rfc822-headers\r\n\r\n" + headers
    else:
        part = b"Content-Type: message/rfc822\r\n\r\n" + original
    if not part.endswith(b"\r\n"):
        part += b"\r\n"
    return head + part + f"--{boundary}--\r\n".encode()


async def deliver_generated(services, raw: bytes, recipient: str, sender: str = "") -> bool:
    """Deliver a message we wrote (a DSN, a report): into the mailbox when the recipient
    is ours, else through the queue (the caller wakes the runner). DSNs go with a null
    sender, and a generated message never asks for a DSN of its own (no loops). False
    when it could not be delivered nor queued."""
    from stalwart_mp.mail.delivery import Status
    from stalwart_mp.smtp.queue.store import enqueue

    target = await services.delivery.resolve_recipient(recipient)
    if target.status == Status.DELIVERED:
        results = await services.delivery.deliver(raw, sender, [recipient])
        return all(r.status == Status.DELIVERED for r in results)
    if target.status == Status.NOT_LOCAL:
        blob_id = await services.blobs.put(raw)
        generated = QueuedMessage(0, sender, [QueuedRecipient(recipient, ["NEVER"])],
                                  blob_id, len(raw), time.time(), 0.0)
        await enqueue(services.data, services.blobs, generated)
        return True
    return False
