"""Commands of the authenticated state on mailboxes (RFC 9051 §6.3): CREATE (with
CREATE-SPECIAL-USE, RFC 6154 §3), DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (with
LIST-EXTENDED RFC 5258, LIST-STATUS RFC 5819, SPECIAL-USE, CHILDREN), LSUB, STATUS (with
STATUS=SIZE RFC 8438, OBJECTID RFC 8474, APPENDLIMIT RFC 7889), APPEND (MULTIAPPEND
RFC 3502, UIDPLUS RFC 4315 APPENDUID, BINARY RFC 3516) and QUOTA (RFC 9208).
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re

from stalwart_mp.imap import flags as fl
from stalwart_mp.imap.access import (
    ALL_RIGHTS,
    SHARED_ROOT,
    grantee_account,
    is_shared_name,
    resolve,
    shared_targets,
)
from stalwart_mp.imap.folders import (
    ATTR_ROLES,
    DELIMITER,
    Folders,
    normalize,
    pattern_regex,
    valid_name,
)
from stalwart_mp.imap.protocol import commands as c
from stalwart_mp.imap.protocol import writer as w
from stalwart_mp.imap.session import No
from stalwart_mp.mail.records import DELETED, Role
from stalwart_mp.mail.store import MailError, NoSuchMailbox, Quota, QuotaExceeded

log = logging.getLogger("stalwart_mp.imap")


async def _folders(session) -> Folders:
    return Folders(await session.services.mail.mailboxes(session.acct))


def _find(folders: Folders, name: str):
    box = folders.find(name)
    if box is None:
        raise No(f'No mailbox "{name}"', "NONEXISTENT")
    return box


# --- CREATE / DELETE / RENAME (RFC 9051 §6.3.4-6) ---------------------------------------------

async def _create_path(session, folders: Folders, path: str, role: str | None = None):
    """Create ``path`` and any missing superior (RFC 9051 §6.3.4 SHOULD)."""
    mail = session.services.mail
    parent = 0
    parts = path.split(DELIMITER)
    box = None
    for i, part in enumerate(parts):
        prefix = DELIMITER.join(parts[:i + 1])
        box = folders.find(prefix)
        last = i == len(parts) - 1
        if box is not None and not last:
            parent = box.id
            continue
        if box is not None:
            raise No(f'Mailbox "{path}" already exists', "ALREADYEXISTS")
        box = await mail.create_mailbox(session.acct, part, parent, role if last else None)
        parent = box.id
        folders = await _folders(session)
    return box


def _own_only(name: str) -> None:
    if is_shared_name(name):
        raise No("Mailboxes of other accounts cannot be created, deleted or renamed here",
                 "NOPERM")


async def cmd_create(session, cmd: c.Create):
    _own_only(cmd.mailbox)
    path = normalize(cmd.mailbox)
    if path == "INBOX" or (why := valid_name(path)) is not None and path != "INBOX":
        raise No("INBOX always exists" if path == "INBOX" else f"Invalid name: {why}",
                 "ALREADYEXISTS" if path == "INBOX" else "CANNOT")
    role = None
    for attr in cmd.special_use:
        role = ATTR_ROLES.get(attr.lower())
        if role is None:  # RFC 6154 §3: an unknown attribute
            raise No(f"Special-use attribute {attr} is not supported", "USEATTR")
    folders = await _folders(session)
    try:
        await _create_path(session, folders, path, role)
    except MailError as exc:
        code = "USEATTR" if "role" in str(exc) else "ALREADYEXISTS" \
            if "already exists" in str(exc) else "CANNOT"
        raise No(str(exc), code) from None
    return "CREATE completed"


async def cmd_delete(session, cmd: c.MailboxCommand):
    _own_only(cmd.mailbox)
    folders = await _folders(session)
    box = _find(folders, cmd.mailbox)
    if box.role == Role.INBOX and not box.parent_id:
        raise No("INBOX cannot be deleted", "CANNOT")
    if folders.has_children(box.id):  # the model has no \Noselect placeholders
        raise No(f'Mailbox "{cmd.mailbox}" has child mailboxes; delete them first',
                 "HASCHILDREN")
    if session.selected is not None and session.selected.mid == box.id:
        session.selected = None
        from stalwart_mp.imap.session import State

        session.state = State.AUTHENTICATED
    try:
        await session.services.mail.delete_mailbox(session.acct, box.id, remove_emails=True)
    except MailError as exc:
        raise No(str(exc), "CANNOT") from None
    return "DELETE completed"


async def cmd_rename(session, cmd: c.Rename):
    _own_only(cmd.old)
    _own_only(cmd.new)
    mail = session.services.mail
    folders = await _folders(session)
    box = _find(folders, cmd.old)
    new = normalize(cmd.new)
    if (why := valid_name(new)) is not None:
        raise No(f"Invalid name: {why}", "CANNOT")
    if folders.find(new) is not None:
        raise No(f'Mailbox "{new}" already exists', "ALREADYEXISTS")
    if box.role == Role.INBOX and not box.parent_id:
        # RFC 9051 §6.3.6: renaming INBOX moves its messages to a new mailbox; INBOX stays
        dest = await _create_path(session, folders, new)
        eids = [e for _, e in await mail.uid_index(session.acct, box.id)]
        if eids:
            await mail.move(session.acct, eids, box.id, dest.id)
        return "RENAME completed"
    parent_path, _, leaf = new.rpartition(DELIMITER)
    parent_id = 0
    if parent_path:
        parent = folders.find(parent_path) or await _create_path(session, folders,
                                                                   parent_path)
        parent_id = parent.id
    try:
        await mail.update_mailbox(session.acct, box.id, name=leaf, parent_id=parent_id)
    except MailError as exc:
        raise No(str(exc), "CANNOT") from None
    return "RENAME completed"


async def cmd_subscribe(session, cmd: c.MailboxCommand):
    box = _find(await _folders(session), cmd.mailbox)
    await session.services.mail.update_mailbox(session.acct, box.id, subscribed=True)
    return "SUBSCRIBE completed"


async def cmd_unsubscribe(session, cmd: c.MailboxCommand):
    box = _find(await _folders(session), cmd.mailbox)
    await session.services.mail.update_mailbox(session.acct, box.id, subscribed=False)
    return "UNSUBSCRIBE completed"


# --- LIST / LSUB (RFC 9051 §6.3.9, RFC 5258, RFC 5819, RFC 6154) -------------------------------

async def cmd_list(session, cmd: c.ListCmd):
    utf8 = session.utf8
    if cmd.name == "LIST" and cmd.patterns == [""]:
        # RFC 9051 §6.3.9: the hierarchy delimiter and the root name
        session.out(w.untagged(b'LIST (\\Noselect) "/" ""'))
        return "LIST completed"
    for opt in cmd.select_options:
        if opt not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"):
            raise No(f"Unknown LIST selection option {opt}", status="BAD")
    if cmd.select_options == ["RECURSIVEMATCH"]:  # RFC 5258 §3: must not stand alone
        raise No("RECURSIVEMATCH needs another selection option", status="BAD")
    folders = await _folders(session)
    regexes = [pattern_regex(cmd.reference, p) for p in cmd.patterns]
    lsub = cmd.name == "LSUB"
    only_subscribed = lsub or "SUBSCRIBED" in cmd.select_options
    only_special = "SPECIAL-USE" in cmd.select_options
    show_subscribed = "SUBSCRIBED" in cmd.select_options or \
        "SUBSCRIBED" in cmd.return_options
    show_special = not cmd.extended or "SPECIAL-USE" in cmd.return_options or only_special
    status_items = cmd.status_items
    for box in folders.sorted():
        path = folders.path(box.id)
        if not any(rx.match(path) for rx in regexes):
            continue
        if only_subscribed and not box.subscribed:
            continue
        if only_special and not box.role or only_special and box.role == Role.INBOX:
            continue
        attrs = folders.attributes(box, special_use=show_special,
                                   subscribed=show_subscribed and not lsub)
        line = (b"LSUB " if lsub else b"LIST ") + w.encode(attrs) + b' "/" ' + \
            w.mailbox_name(path, utf8)
        session.out(w.untagged(line))
        if status_items:  # RFC 5819 §2: a STATUS response after each LIST
            session.out(await _status_line(session, box, path, status_items))
    if not only_special:
        await _list_shared(session, cmd, regexes, lsub, show_subscribed, status_items)
    return f"{cmd.name} completed"


async def _list_shared(session, cmd: c.ListCmd, regexes, lsub: bool, show_subscribed: bool,
                       status_items) -> None:
    """The other users' namespace (RFC 2342 §5): "Shared Folders", one level per owner
    (\\Noselect), then the mailboxes shared with this account."""
    targets = await shared_targets(session)
    if not targets:
        return
    utf8 = session.utf8
    owners = sorted({t.owner for t in targets})
    placeholders = [SHARED_ROOT, *(f"{SHARED_ROOT}/{o}" for o in owners)]
    for path in placeholders:
        if not lsub and any(rx.match(path) for rx in regexes):
            session.out(w.untagged(b"LIST (\\Noselect \\HasChildren) \"/\" " +
                                   w.mailbox_name(path, utf8)))
    for t in targets:
        if not any(rx.match(t.path) for rx in regexes):
            continue
        attrs = [w.Atom("\\HasNoChildren")]
        line = (b"LSUB " if lsub else b"LIST ") + w.encode(attrs) + b' "/" ' + \
            w.mailbox_name(t.path, utf8)
        session.out(w.untagged(line))
        if status_items and t.may("r"):
            session.out(await _status_line(session, t.box, t.path, status_items, t.acct))


async def cmd_lsub(session, cmd: c.ListCmd):
    return await cmd_list(session, cmd)


# --- STATUS (RFC 9051 §6.3.11) ------------------------------------------------------------

async def _status_line(session, box, path: str, items: list[str],
                       acct: int | None = None) -> bytes:
    acct = session.acct if acct is None else acct
    values: list[object] = []
    deleted = None
    for item in items:
        if item == "MESSAGES":
            value: object = box.total
        elif item == "UIDNEXT":
            value = box.uidnext
        elif item == "UIDVALIDITY":
            value = box.uidvalidity
        elif item == "UNSEEN":
            value = box.unseen
        elif item == "RECENT":
            value = 0
        elif item == "SIZE":
            value = box.size
        elif item == "HIGHESTMODSEQ":
            session.enabled.add("CONDSTORE")
            value = max(box.modseq, 1)
        elif item == "APPENDLIMIT":
            value = session.server.max_message_size
        elif item == "MAILBOXID":
            value = [w.Atom(f"M{box.id}")]
        elif item in ("DELETED", "DELETED-STORAGE"):
            if deleted is None:
                mail = session.services.mail
                eids = [e for _, e in await mail.uid_index(acct, box.id)]
                emails = [e for e in await mail.emails(acct, eids) if e is not None
                          and DELETED in e.keywords]
                deleted = (len(emails), sum(e.size for e in emails))
            value = deleted[0] if item == "DELETED" else deleted[1]
        else:
            continue
        values += [w.Atom(item), value]
    return w.untagged(b"STATUS " + w.mailbox_name(path, session.utf8) + b" " +
                      w.encode(values))


async def cmd_status(session, cmd: c.Status):
    target = await resolve(session, cmd.mailbox)
    if target is None:
        raise No(f'No mailbox "{cmd.mailbox}"', "NONEXISTENT")
    if not target.may("r"):
        raise No(f'No right to read "{cmd.mailbox}"', "NOPERM")
    session.out(await _status_line(session, target.box, target.path, cmd.items, target.acct))
    return "STATUS completed"


# --- APPEND (RFC 9051 §6.3.12, RFC 3502, RFC 4315, RFC 3516) -----------------------------------

async def cmd_append(session, cmd: c.Append):
    box, uids = await append_messages(session, cmd.mailbox, cmd.messages)
    # RFC 4315 §3 APPENDUID; with MULTIAPPEND, the set of UIDs
    return "APPEND completed", f"APPENDUID {box.uidvalidity} {w.sequence_set(uids)}"


async def append_messages(session, mailbox: str, messages: list[c.AppendMessage]):
    """Store ``messages`` in ``mailbox``, all or none; returns (mailbox, UIDs)."""
    services = session.services
    mail = services.mail
    target = await resolve(session, mailbox)
    if target is None:
        raise No(f'No mailbox "{mailbox}"', "TRYCREATE")
    if not target.may("i"):
        raise No(f'No right to add messages to "{mailbox}"', "NOPERM")
    box, acct = target.box, target.acct
    principal = session.principal
    # a shared mailbox counts against its owner's quota, which the owner's delivery checks
    quota = Quota(principal.quota_bytes, principal.quota_messages) if target.owner is None \
        else None
    from stalwart_mp.mail.ingest import parse_message, to_record

    done: list[int] = []
    uids: list[int] = []
    try:
        for msg in messages:
            if len(msg.data) > session.server.max_message_size:
                raise No("Message too big", "TOOBIG")
            if not msg.data:
                raise No("Empty message", "CANNOT")
            try:
                keywords = fl.to_keywords(msg.flags)
            except fl.FlagError as exc:
                raise No(str(exc), status="BAD") from None
            # the record only: the full-text indexer parses the blob again for its text
            parse = functools.partial(parse_message, search_text=False)
            if len(msg.data) < 256 * 1024:
                parsed = parse(msg.data)
            else:
                parsed = await asyncio.get_running_loop().run_in_executor(None, parse, msg.data)
            blob_id = await services.blobs.put(msg.data)
            result = await mail.append(
                acct, [box.id], blob_id=blob_id, size=len(msg.data),
                metadata=to_record(parsed), keywords=keywords, received_at=msg.date,
                quota=quota, message_id=parsed.message_id,
                references=[*parsed.references, *parsed.in_reply_to])
            done.append(result.email_id)
            uids.append(result.uids[box.id])
    except QuotaExceeded as exc:
        await _undo(session, acct, done)
        raise No(str(exc), "OVERQUOTA") from None
    except NoSuchMailbox:
        await _undo(session, acct, done)
        raise No(f'No mailbox "{mailbox}"', "TRYCREATE") from None
    except BaseException:
        await _undo(session, acct, done)
        raise
    return box, uids


async def _undo(session, acct: int, email_ids: list[int]) -> None:
    """MULTIAPPEND is all or nothing (RFC 3502 §6.3.11): remove what was appended."""
    if email_ids:
        try:
            await session.services.mail.destroy(acct, email_ids)
        except Exception:
            log.warning("could not undo a partial MULTIAPPEND", exc_info=True)


# --- QUOTA (RFC 9208) ------------------------------------------------------------------------

async def _quota_line(session) -> bytes:
    state = await session.services.mail.state(session.acct)
    p = session.principal
    resources: list[object] = []
    if p.quota_bytes:  # RFC 9208 §5.1: STORAGE in units of 1024 octets
        resources += [w.Atom("STORAGE"), (state.used_bytes + 1023) // 1024,
                      p.quota_bytes // 1024]
    if p.quota_messages:
        resources += [w.Atom("MESSAGE"), state.used_count, p.quota_messages]
    return w.untagged(b'QUOTA "" ' + w.encode(resources))


async def cmd_getquotaroot(session, cmd: c.MailboxCommand):
    folders = await _folders(session)
    box = _find(folders, cmd.mailbox)
    name = w.mailbox_name(folders.path(box.id), session.utf8)
    p = session.principal
    if not (p.quota_bytes or p.quota_messages):
        session.out(w.untagged(b"QUOTAROOT " + name))
        return "GETQUOTAROOT completed"
    session.out(w.untagged(b'QUOTAROOT ' + name + b' ""'))
    session.out(await _quota_line(session))
    return "GETQUOTAROOT completed"


async def cmd_getquota(session, cmd: c.QuotaCmd):
    p = session.principal
    if cmd.root != "" or not (p.quota_bytes or p.quota_messages):
        raise No(f'No quota root "{cmd.root}"', "NONEXISTENT")
    session.out(await _quota_line(session))
    return "GETQUOTA completed"


async def cmd_setquota(session, cmd: c.QuotaCmd):
    raise No("Quotas are set by the administrator", "NOPERM")


# --- METADATA (RFC 5464) -------------------------------------------------------------------

METADATA_MAX_SIZE = 64 * 1024     # one value (RFC 5464 §4.3: NO [METADATA MAXSIZE n])
METADATA_MAX_ENTRIES = 100        # per mailbox (NO [METADATA TOOMANY])
_ENTRY = re.compile(r"/(private|shared)(/[^/*%\x00-\x1f\x7f]+)*\Z", re.IGNORECASE)


def _check_entry(entry: str, setting: bool = False) -> str:
    """RFC 5464 §3.2: "/private/..." or "/shared/...", no wildcards, no empty level (the
    bare roots only to read with a DEPTH)."""
    if not _ENTRY.match(entry) or (setting and entry.count("/") < 2):
        raise No(f'Invalid entry name "{entry}": expected /private/... or /shared/...',
                 status="BAD")
    return entry.lower()


async def _metadata_mailbox(session, name: str) -> tuple[int, str]:
    if name == "":
        return 0, ""
    folders = await _folders(session)
    box = _find(folders, name)
    return box.id, folders.path(box.id)


async def cmd_getmetadata(session, cmd: c.Metadata):
    wanted = [_check_entry(e) for e in cmd.entries]
    mid, path = await _metadata_mailbox(session, cmd.mailbox)
    stored = await session.services.mail.annotations(session.acct, mid)
    found: dict[str, bytes] = {}
    for entry in wanted:
        for name, value in stored.items():
            if name == entry:
                found[name] = value
            elif name.startswith(entry + "/"):
                rest = name[len(entry) + 1:]
                if cmd.depth == "infinity" or (cmd.depth == "1" and "/" not in rest):
                    found[name] = value
    code = None
    if cmd.maxsize is not None:  # §4.2.1: too long entries are left out and reported
        longest = max((len(v) for v in found.values() if len(v) > cmd.maxsize), default=0)
        found = {k: v for k, v in found.items() if len(v) <= cmd.maxsize}
        if longest:
            code = f"METADATA LONGENTRIES {longest}"
    if found:
        items: list[object] = []
        for name in sorted(found):
            value = found[name]
            items += [w.Atom(name), value.decode("utf-8") if _printable(value) else value]
        session.out(w.untagged(b"METADATA " + w.mailbox_name(path, session.utf8) + b" " +
                               w.encode(items, session.utf8)))
    return "GETMETADATA completed", code


def _printable(value: bytes) -> bool:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return "\x00" not in text


async def cmd_setmetadata(session, cmd: c.Metadata):
    values = {}
    for entry, value in cmd.values.items():
        values[_check_entry(entry, setting=True)] = value
        if value is not None and len(value) > METADATA_MAX_SIZE:
            raise No(f"Value of {entry} is over {METADATA_MAX_SIZE} octets",
                     f"METADATA MAXSIZE {METADATA_MAX_SIZE}")
    mid, _ = await _metadata_mailbox(session, cmd.mailbox)
    try:
        await session.services.mail.set_annotations(session.acct, mid, values,
                                                    METADATA_MAX_ENTRIES)
    except NoSuchMailbox:
        raise No(f'No mailbox "{cmd.mailbox}"', "NONEXISTENT") from None
    except MailError as exc:
        raise No(str(exc), "METADATA TOOMANY") from None
    return "SETMETADATA completed"


# --- ACL (RFC 4314) -------------------------------------------------------------------------

_RIGHTS_RE = re.compile(r"[+-]?[a-z0-9]*\Z")


async def _acl_target(session, name: str, need_admin: bool = True):
    target = await resolve(session, name)
    if target is None:
        raise No(f'No mailbox "{name}"', "NONEXISTENT")
    if need_admin and not target.may("a"):
        raise No(f'No right to administer "{name}"', "NOPERM")
    return target


def _normalize_rights(rights: str) -> str:
    """RFC 4314 §2.1.1: the obsolete "c" and "d" stand for "k x" and "e t"."""
    rights = rights.replace("c", "kx").replace("d", "et")
    return "".join(r for r in ALL_RIGHTS if r in rights)


async def cmd_setacl(session, cmd: c.Acl):
    rights = cmd.rights.lower()
    if not _RIGHTS_RE.match(rights) or set(rights.lstrip("+-")) - set(ALL_RIGHTS + "cd"):
        raise No(f'Unknown rights "{cmd.rights}" (RFC 4314 §2.1: {ALL_RIGHTS})',
                 status="BAD")
    target = await _acl_target(session, cmd.mailbox)
    identifier = cmd.identifier.lower()
    if identifier == "authenticated" or identifier.startswith("-"):
        raise No('Rights are granted to accounts and groups by name, or to "anyone"',
                 "CANNOT")
    owner = (target.owner or session.principal.name).lower()
    if identifier == owner:
        raise No("The owner always has every right", "CANNOT")
    grantee_id = await grantee_account(session, cmd.identifier)
    if grantee_id is None:
        raise No(f'No account or group "{cmd.identifier}"', "NONEXISTENT")
    current = target.box.acl.get(identifier, "")
    body = _normalize_rights(rights.lstrip("+-"))
    if rights.startswith("+"):
        new = _normalize_rights(current + body)
    elif rights.startswith("-"):
        new = "".join(r for r in current if r not in body)
    else:
        new = body
    await session.services.mail.set_acl(target.acct, target.box.id, identifier, grantee_id,
                                        new or None, owner)
    return "SETACL completed"


async def cmd_deleteacl(session, cmd: c.Acl):
    target = await _acl_target(session, cmd.mailbox)
    grantee_id = await grantee_account(session, cmd.identifier)
    if grantee_id is not None:
        owner = (target.owner or session.principal.name).lower()
        await session.services.mail.set_acl(target.acct, target.box.id,
                                            cmd.identifier.lower(), grantee_id, None, owner)
    return "DELETEACL completed"


async def cmd_getacl(session, cmd: c.Acl):
    target = await _acl_target(session, cmd.mailbox)
    owner = target.owner or session.principal.name
    items: list[object] = [w.astring(owner), w.Atom(ALL_RIGHTS)]
    for name, rights in sorted(target.box.acl.items()):
        items += [w.astring(name), w.Atom(rights)]
    session.out(w.untagged(b"ACL " + w.mailbox_name(target.path, session.utf8) + b" " +
                           w.encode(items, session.utf8)[1:-1]))
    return "GETACL completed"


async def cmd_listrights(session, cmd: c.Acl):
    target = await _acl_target(session, cmd.mailbox)
    owner = (target.owner or session.principal.name).lower()
    if cmd.identifier.lower() == owner:  # §3.7: the owner's rights cannot change
        rights: list[object] = [w.Atom(ALL_RIGHTS)]
    else:
        rights = ["", *(w.Atom(r) for r in ALL_RIGHTS)]
    session.out(w.untagged(b"LISTRIGHTS " + w.mailbox_name(target.path, session.utf8) + b" " +
                           w.encode([w.astring(cmd.identifier), *rights],
                                    session.utf8)[1:-1]))
    return "LISTRIGHTS completed"


async def cmd_myrights(session, cmd: c.Acl):
    target = await _acl_target(session, cmd.mailbox, need_admin=False)
    session.out(w.untagged(b"MYRIGHTS " + w.mailbox_name(target.path, session.utf8) + b" " +
                           target.rights.encode()))
    return "MYRIGHTS completed"
