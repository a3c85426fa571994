"""Dropping root: the master binds privileged ports as root; its children run as server.user."""
from __future__ import annotations

import grp
import os
import pwd


class PrivilegeError(Exception):
    pass


def target_ids(cfg) -> tuple[int, int] | None:
    """(uid, gid) to switch to, or None to stay as we are. Raises PrivilegeError."""
    user = cfg.get("server.user") or ""
    if os.geteuid() != 0:
        return None
    if not user:
        if cfg.get("server.allow-root"):
            return None
        raise PrivilegeError(
            'running as root needs server.user (e.g. "stalwart-mp") so that the workers drop '
            "privileges, or server.allow-root = true"
        )
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f'server.user = "{user}": no such user') from None
    gid = pw.pw_gid
    group = cfg.get("server.group") or ""
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f'server.group = "{group}": no such group') from None
    return pw.pw_uid, gid


def chown_for_children(cfg, *paths) -> None:
    ids = target_ids(cfg)
    if ids is None:
        return
    for path in paths:
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, *ids)


def drop_privileges(cfg) -> None:
    ids = target_ids(cfg)
    if ids is None:
        return
    uid, gid = ids
    user = cfg.get("server.user")
    os.setgroups(os.getgrouplist(user, gid))
    os.setgid(gid)
    os.setuid(uid)
