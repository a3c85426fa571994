"""Local delivery: one message to many recipients, with a result per recipient.

The message is parsed once and its blob stored once (deduplicated by hash); then every
recipient is resolved through the directory (aliases, lists, catch-all, plus-addressing),
checked against its quota, passed through the delivery hooks (Sieve and the spam filter
plug in here with their issues) and appended — all recipients concurrently, so the group
committer makes them one durable commit. Only then are results returned: the SMTP session
answers 250 after this, never before (ARCHITECTURE.md "Durability promise").
"""
from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum

from stalwart_mp import metrics
from stalwart_mp.directory.base import Directory, DirectoryUnavailable
from stalwart_mp.directory.ids import account_id
from stalwart_mp.directory.recipients import Outcome, resolve
from stalwart_mp.mail.commit import AccountMissing
from stalwart_mp.mail.records import Mailbox, Role
from stalwart_mp.mail.store import MailStore, NoSuchMailbox, Quota, QuotaExceeded

log = logging.getLogger("stalwart_mp.delivery")

# How long a process trusts its memory of an account's folders before reading them again.
# A cached choice is re-checked inside the append transaction (``expect``), so a renamed or
# deleted folder is never delivered into; the age only bounds how long a NEW better match
# (e.g. a Junk folder created later) goes unnoticed.
TARGET_CACHE_SECONDS = 30.0


class Status(str, Enum):
    DELIVERED = "delivered"
    UNKNOWN = "unknown"          # 550 5.1.1
    DISABLED = "disabled"        # 550 5.2.1
    NOT_LOCAL = "not-local"      # not ours: the caller relays or refuses
    OVER_QUOTA = "over-quota"    # 452 4.2.2 or 552 5.2.2 (delivery.over-quota)
    TEMP_FAILURE = "temp-failure"  # 451 4.3.0: directory or store unavailable


@dataclass(slots=True)
class RecipientResult:
    address: str
    status: Status
    accounts: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)   # list members to forward to
    message: str = ""

    @property
    def permanent(self) -> bool:
        return self.status in (Status.UNKNOWN, Status.DISABLED) or (
            self.status == Status.OVER_QUOTA and self.message.startswith("5"))


@dataclass(slots=True)
class Target:
    """Where one account's copy goes; delivery hooks may change it."""

    account: str
    account_id: int
    mailbox_role: str = Role.INBOX
    mailbox_name: str | None = None   # a folder by name (plus-addressing), else the role
    keywords: list[str] = field(default_factory=list)
    discard: bool = False


# A hook sees the parsed message and a target; it may change the target (file into a
# folder, add keywords, discard). Sieve (RFC 5228) and the spam filter register here.
Hook = Callable[[object, Target], Awaitable[None]]


@dataclass(slots=True)
class DeliverySettings:
    sub_addressing: bool = True
    plus_folder: bool = False         # "user+folder@" files into "folder" when it exists
    over_quota_permanent: bool = False

    @classmethod
    def from_config(cls, cfg) -> DeliverySettings:
        return cls(cfg.get("delivery.sub-addressing"), cfg.get("delivery.plus-folder"),
                   cfg.get("delivery.over-quota") == "permanent")


class Delivery:
    def __init__(self, mail: MailStore, blobs, directory: Directory,
                 settings: DeliverySettings | None = None, hooks: list[Hook] | None = None):
        self.mail = mail
        self.blobs = blobs
        self.directory = directory
        self.settings = settings or DeliverySettings()
        self.hooks = hooks if hooks is not None else []
        # account id -> (read at, its folders): the accounts known to have mail state, and
        # the folders delivery chooses from, without a store scan per delivery
        self._folders: dict[int, tuple[float, list[Mailbox]]] = {}

    async def deliver(self, raw: bytes, mail_from: str, recipients: list[str],
                      received_at: float | None = None, junk: bool = False
                      ) -> list[RecipientResult]:
        """``junk``: file into the Junk folder (DMARC quarantine, and later the spam filter)."""
        from stalwart_mp.mail.ingest import parse_message, to_record

        parsed = await _parse(raw, parse_message)
        metadata = to_record(parsed)
        blob_id = await self.blobs.put(raw)
        results = [await self._resolve(r) for r in recipients]
        jobs = []
        for result in results:
            if result.status == Status.DELIVERED:
                for name in result.accounts:
                    jobs.append((result, name))
        outcomes = await asyncio.gather(*(
            self._deliver_one(result, name, parsed, metadata, blob_id, len(raw), received_at,
                              junk)
            for result, name in jobs), return_exceptions=True)
        for (result, name), outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, QuotaExceeded):
                result.status = Status.OVER_QUOTA
                result.message = ("552 5.2.2 mailbox full" if self.settings.over_quota_permanent
                                  else "452 4.2.2 mailbox full, try again later")
            elif isinstance(outcome, BaseException):
                log.error("delivery failed", exc_info=outcome,
                          extra={"fields": {"account": name, "rcpt": result.address}})
                result.status = Status.TEMP_FAILURE
                result.message = "451 4.3.0 temporary failure, try again later"
        stored = sum(1 for outcome in outcomes if not isinstance(outcome, BaseException))
        if stored:
            metrics.messages_delivered_total.inc(stored)
        if log.isEnabledFor(logging.INFO):  # the fields are not built when nobody logs them
            log.info("delivered", extra={"fields": {
                "from": mail_from, "size": len(raw),
                "rcpts": ",".join(f"{r.address}={r.status.value}" for r in results)}})
        return results

    async def resolve_recipient(self, address: str) -> RecipientResult:
        """What delivery would do with this address (SMTP RCPT and LMTP answer from it)."""
        return await self._resolve(address)

    async def _resolve(self, address: str) -> RecipientResult:
        try:
            r = await resolve(self.directory, address,
                              sub_addressing=self.settings.sub_addressing)
        except DirectoryUnavailable as exc:
            return RecipientResult(address, Status.TEMP_FAILURE,
                                   message=f"451 4.3.0 directory unavailable: {exc}")
        status = {Outcome.LOCAL: Status.DELIVERED, Outcome.UNKNOWN_USER: Status.UNKNOWN,
                  Outcome.DISABLED: Status.DISABLED,
                  Outcome.NOT_LOCAL: Status.NOT_LOCAL}[r.outcome]
        result = RecipientResult(address, status, list(r.accounts), list(r.external))
        result.message = r.detail or ""
        return result

    async def _deliver_one(self, result: RecipientResult, name: str, parsed, metadata: dict,
                           blob_id: str, size: int, received_at: float | None,
                           junk: bool = False) -> None:
        principal = await self.directory.principal(name)
        if principal is None:
            raise DirectoryUnavailable(f"{name} vanished during delivery")
        acct = await account_id(self.mail.data, principal)
        target = Target(name, acct, mailbox_role=Role.JUNK if junk else Role.INBOX)
        if self.settings.plus_folder and result.message:
            target.mailbox_name = result.message
        for hook in self.hooks:
            await hook(parsed, target)
        if target.discard:
            return
        for attempt in range(3):
            mailbox, expect = self._mailbox_for(target, await self._account_folders(acct))
            try:
                await self.mail.append(
                    acct, [mailbox], blob_id=blob_id, size=size, metadata=metadata,
                    keywords=target.keywords, received_at=received_at,
                    quota=Quota(principal.quota_bytes, principal.quota_messages),
                    message_id=parsed.message_id, references=[*parsed.references,
                                                              *parsed.in_reply_to],
                    expect=expect)
                return
            except (NoSuchMailbox, AccountMissing):
                # the cached folders were stale (renamed, deleted, account removed): read again
                self._folders.pop(acct, None)
                if attempt == 2:
                    raise

    async def _account_folders(self, acct: int) -> list[Mailbox]:
        cached = self._folders.get(acct)
        now = time.monotonic()
        if cached is not None and now - cached[0] < TARGET_CACHE_SECONDS:
            return cached[1]
        await self.mail.ensure_account(acct)
        boxes = await self.mail.mailboxes(acct)
        self._folders[acct] = (now, boxes)
        return boxes

    @staticmethod
    def _mailbox_for(target: Target, boxes: list[Mailbox]
                     ) -> tuple[int, Callable[[Mailbox], bool]]:
        """The folder for ``target``, and the check that it is still that folder."""
        if target.mailbox_name:
            wanted = target.mailbox_name.lower()
            for m in boxes:
                if m.name.lower() == wanted:
                    return m.id, lambda box: box.name.lower() == wanted
        for role in (target.mailbox_role, Role.INBOX):
            for m in boxes:
                if m.role == role:
                    return m.id, lambda box, role=role: box.role == role
        raise NoSuchMailbox(f"account {target.account} has no inbox")


async def _parse(raw: bytes, parse_message):
    """Parse inline for ordinary messages; big ones on a thread, off the event loop. The
    search text is left out: the stored record does not keep it, the indexer makes it."""
    parse = functools.partial(parse_message, search_text=False)
    if len(raw) < 256 * 1024:
        return parse(raw)
    return await asyncio.get_running_loop().run_in_executor(None, parse, raw)
