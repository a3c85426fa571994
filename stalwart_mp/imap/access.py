"""Which mailbox a name means, and what the session may do there (RFC 4314 ACL).

A session's own mailboxes are named by their paths; mailboxes other accounts shared with
it (``SETACL``) appear in the other users' namespace as ``Shared Folders/<owner>/<path>``
(RFC 2342 §5). Rights are the RFC 4314 §2.1 letters; the owner has them all; a user has
the union of what is granted to their name, to each group they are a member of (the
directory's ``member_of``, read at login) and to "anyone" (§2). The sharing index of the
mail model (0x49) lists what was shared with an account or a group (by its principal id)
and, under id 0, with anyone, so LIST does not scan other accounts.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from stalwart_mp.directory.base import PrincipalType
from stalwart_mp.imap.folders import DELIMITER, Folders
from stalwart_mp.mail.records import Mailbox

SHARED_ROOT = "Shared Folders"
ALL_RIGHTS = "lrswipkxtea"
ANYONE = "anyone"   # RFC 4314 §2: every user
ANYONE_ID = 0       # its grantee id in the sharing index (account ids start at 1)


@dataclass(slots=True)
class Target:
    acct: int
    box: Mailbox
    path: str                 # the name as this session sees it
    rights: str
    owner: str | None = None  # None: the session's own mailbox

    def may(self, right: str) -> bool:
        return right in self.rights


def is_shared_name(name: str) -> bool:
    return name == SHARED_ROOT or name.startswith(SHARED_ROOT + DELIMITER)


def rights_of(box: Mailbox, user: str, groups: Iterable[str] = ()) -> str:
    """The user's rights on another account's mailbox: granted to them, to one of their
    ``groups`` or to anyone."""
    granted = box.acl.get(user.lower(), "") + box.acl.get(ANYONE, "")
    for group in groups:
        granted += box.acl.get(group.lower(), "")
    return "".join(r for r in ALL_RIGHTS if r in granted)


def session_rights(box: Mailbox, session) -> str:
    principal = session.principal
    return rights_of(box, principal.name, principal.member_of)


async def grantee_account(session, identifier: str) -> int | None:
    """The sharing index's id of an ACL identifier: an account's or a group's, or
    ANYONE_ID; None for a name that is neither (unknown, a mailing list, a domain)."""
    if identifier.lower() == ANYONE:
        return ANYONE_ID
    from stalwart_mp.directory.ids import account_id

    principal = await session.services.directory.principal(identifier)
    if principal is None or principal.type not in (PrincipalType.INDIVIDUAL,
                                                   PrincipalType.GROUP):
        return None
    return await account_id(session.services.data, principal)


async def owner_account(session, owner: str) -> int | None:
    from stalwart_mp.directory.ids import account_id

    principal = await session.services.directory.principal(owner)
    if principal is None:
        return None
    return await account_id(session.services.data, principal)


async def resolve(session, name: str, folders: Folders | None = None) -> Target | None:
    """The mailbox ``name`` means for this session, or None (unknown, a placeholder of the
    shared namespace, or shared without the "l" or "r" right — RFC 4314 §4: not told)."""
    mail = session.services.mail
    if not is_shared_name(name):
        folders = folders or Folders(await mail.mailboxes(session.acct))
        box = folders.find(name)
        if box is None:
            return None
        return Target(session.acct, box, folders.path(box.id), ALL_RIGHTS)
    parts = name.split(DELIMITER, 2)
    if len(parts) < 3 or not parts[2]:
        return None
    owner, rest = parts[1], parts[2]
    acct = await owner_account(session, owner)
    if acct is None or acct == session.acct:
        return None
    owned = Folders(await mail.mailboxes(acct))
    box = owned.find(rest)
    if box is None:
        return None
    rights = session_rights(box, session)
    if "l" not in rights and "r" not in rights:
        return None
    return Target(acct, box, f"{SHARED_ROOT}/{owner}/{owned.path(box.id)}", rights, owner)


async def shared_targets(session) -> list[Target]:
    """Every mailbox shared with this session's account that it may list."""
    mail = session.services.mail
    by_owner: dict[tuple[int, str], set[int]] = {}
    granted = [*await mail.shared_with(session.acct), *await mail.shared_with(ANYONE_ID)]
    for group in session.principal.member_of:
        group_id = await grantee_account(session, group)
        if group_id is not None:
            granted += await mail.shared_with(group_id)
    for owner_acct, mid, _rights, owner in granted:
        if owner and owner_acct != session.acct:
            by_owner.setdefault((owner_acct, owner), set()).add(mid)
    out = []
    for (owner_acct, owner), mids in by_owner.items():
        owned = Folders(await mail.mailboxes(owner_acct))
        for mid in sorted(mids):
            box = owned.by_id.get(mid)
            rights = session_rights(box, session) if box is not None else ""
            if "l" in rights:   # the rights as the mailbox has them now, every grant
                out.append(Target(owner_acct, box, f"{SHARED_ROOT}/{owner}/"
                                                   f"{owned.path(mid)}", rights, owner))
    return sorted(out, key=lambda t: t.path)
