"""The ``stalwart-mp`` command: init, serve, check-config, store copy, mail import/export."""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys
from pathlib import Path

from stalwart_mp import __version__

DESCRIPTION = """\
stalwart-mp: a complete mail server (SMTP, IMAP, POP3, JMAP, ManageSieve).

First run, as an ordinary user, on unprivileged ports:
  stalwart-mp init --dir ./mail --dev-ports     # writes mail/config.toml, prints the admin password
  stalwart-mp serve --config ./mail/config.toml

In production (as root, standard ports, workers drop to server.user):
  stalwart-mp init --dir /var/lib/stalwart-mp --hostname mail.example.com
  systemctl enable --now stalwart-mp            # unit file: scripts/systemd/stalwart-mp.service

Signals to the master: HUP reload config · TERM graceful stop · QUIT fast stop ·
TTIN/TTOU one worker more/less · USR1 reopen log files.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stalwart-mp", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stalwart-mp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    init = sub.add_parser(
        "init", help="create a configuration, data folders and the first admin account",
        description="Write DIR/config.toml (commented), create DIR/data and DIR/run, and "
        "create the administrator account 'admin'. Its password is printed once; pass "
        "--admin-password or set STALWART_MP_ADMIN_PASSWORD for unattended installs.",
    )
    init.add_argument("--dir", required=True, type=Path, help="folder of the installation")
    init.add_argument("--hostname", default=None,
                      help="the server's FQDN (default: this machine's name)")
    init.add_argument("--dev-ports", action="store_true",
                      help="unprivileged ports (2525, 4465, 5587, 1143, 1993, 1110, 1995, "
                      "14190, 8443; admin 8080) and listeners on 127.0.0.1, for a first try "
                      "as an ordinary user")
    init.add_argument("--admin-password", default=None,
                      help="password of 'admin' (default: $STALWART_MP_ADMIN_PASSWORD, "
                      "or a generated one printed once)")
    init.add_argument("--force", action="store_true",
                      help="overwrite an existing config.toml (the data is kept)")

    serve = sub.add_parser(
        "serve", help="run the server (master, workers, control plane)",
        description="Run the master in the foreground (for systemd Type=notify) or, with "
        "--daemon, in the background.",
    )
    serve.add_argument("--config", required=True, type=Path, help="path of config.toml")
    serve.add_argument("--daemon", action="store_true",
                       help="detach into the background (set logging.file: standard error "
                       "is closed)")
    serve.add_argument("--pidfile", type=Path, default=None, help="write the master's pid here")

    check = sub.add_parser(
        "check-config", help="validate a configuration file and list every error",
        description="Exit 0 if the configuration is valid; otherwise print every error "
        "(key, value, what is expected) and exit 1. The file is checked with the settings "
        "stored in its data store laid over it (`stalwart-mp-admin config set`), as the "
        "server will run it; an error in a stored setting says so. A data store that does "
        "not exist yet holds none; one that cannot be reached is reported, and the file "
        "alone is checked.",
    )
    check.add_argument("--config", required=True, type=Path, help="path of config.toml")
    check.add_argument("--file-only", action="store_true",
                       help="check the file alone, without the stored settings")

    store = sub.add_parser(
        "store", help="store tools: copy a data store to another backend",
        description="Tools working directly on the stores named in a configuration.",
    )
    store_sub = store.add_subparsers(dest="store_command", required=True, metavar="COMMAND")
    copy = store_sub.add_parser(
        "copy", help="copy every key of one data store into another, then verify",
        description=STORE_COPY_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    copy.add_argument("--config", required=True, type=Path,
                      help="path of config.toml defining both stores")
    copy.add_argument("--from", dest="source", required=True, metavar="NAME",
                      help='the store to copy from ([store."NAME"])')
    copy.add_argument("--to", dest="destination", required=True, metavar="NAME",
                      help="the store to copy into: empty, or holding an unfinished copy")
    copy.add_argument("--batch", type=_positive_int, default=1000, metavar="N",
                      help="keys per transaction, and per checkpoint (default: 1000)")
    mode = copy.add_mutually_exclusive_group()
    mode.add_argument("--verify-only", action="store_true",
                      help="only compare the two stores; write nothing")
    mode.add_argument("--restart", action="store_true",
                      help="discard an unfinished copy in the destination and start over")

    _add_mail_commands(sub)

    args = parser.parse_args(argv)
    return {
        "init": cmd_init, "serve": cmd_serve, "check-config": cmd_check, "store": cmd_store,
        "mail": cmd_mail,
    }[args.command](args)


MAIL_IMPORT_DESCRIPTION = """\
Import a Maildir++ tree (Dovecot, Courier) or an mboxrd file into an account, keeping the
message bytes, flags, keywords, received dates, folders and order. Safe while the server
runs (clients see the mail at once; IDLE sessions are notified when the server is up).

Maildir: INBOX is the top level, ".Parent.Child" folders become nested mailboxes (created
if missing); flags from ":2,DFRST" (draft, flagged, answered, seen, deleted) and Dovecot
keyword letters (dovecot-keywords); the received date is the file's mtime; dovecot-uidlist
gives the order when present. --mailbox NAME imports only that folder.
mbox: "From " lines separate messages (date = received date), ">From " lines are
unescaped (mboxrd), Status/X-Status/X-Keywords give the flags and stay in the message.
--mailbox NAME is the target ("Parent/Child", created if missing; default INBOX).

Resumable: a checkpoint in the data store records each imported message; after an
interruption run the same command again: nothing is imported twice.

  stalwart-mp mail import --config config.toml --account jane@example.com --maildir ~/Maildir
  stalwart-mp mail import --config config.toml --account jane@example.com --mbox old.mbox \\
      --mailbox Archive/2019
"""

MAIL_EXPORT_DESCRIPTION = """\
Export an account's mailboxes, in UID order, with the stored message bytes unchanged.

Maildir (--maildir DIR): every mailbox (or --mailbox NAME), INBOX at the top level and
".Parent.Child" folders; files cur/<received>.E<email id>.<host>:2,<flags> with the
received date as mtime, dovecot-keywords for keywords and dovecot-uidlist for the order.
Rerunning writes only what is missing and renames files whose flags changed.
mbox (--mbox FILE): one mailbox (--mailbox NAME, default INBOX) as mboxrd; flags are
written as Status/X-Status/X-Keywords header fields only with --mbox-flags.

  stalwart-mp mail export --config config.toml --account jane@example.com --maildir /backup/jane
"""


def _add_mail_commands(sub) -> None:
    mail = sub.add_parser(
        "mail", help="mail tools: import and export Maildir and mbox",
        description="Tools moving messages in and out of accounts.",
    )
    mail_sub = mail.add_subparsers(dest="mail_command", required=True, metavar="COMMAND")
    for name, help_text, description in (
        ("import", "import a Maildir or an mbox file into an account", MAIL_IMPORT_DESCRIPTION),
        ("export", "export an account to a Maildir or an mbox file", MAIL_EXPORT_DESCRIPTION),
    ):
        cmd = mail_sub.add_parser(name, help=help_text, description=description,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("--config", required=True, type=Path, help="path of config.toml")
        cmd.add_argument("--account", required=True, metavar="ADDR",
                         help="the account: one of its addresses, or its login name")
        source = cmd.add_mutually_exclusive_group(required=True)
        source.add_argument("--maildir", type=Path, metavar="DIR", help="a Maildir++ folder")
        source.add_argument("--mbox", type=Path, metavar="FILE", help="an mbox (mboxrd) file")
        cmd.add_argument("--mailbox", metavar="NAME",
                         help="one mailbox, levels separated by '/' (see above)")
        if name == "export":
            cmd.add_argument("--mbox-flags", action="store_true",
                             help="mbox: write flags as Status/X-Status/X-Keywords fields "
                             "(changes the messages)")


def cmd_mail(args) -> int:
    from stalwart_mp.mail.transfer import exporter, importer

    return {"import": importer.main, "export": exporter.main}[args.mail_command](args)


STORE_COPY_DESCRIPTION = """\
Copy every key of data store --from into data store --to (both defined in --config), in
key order and in batches, then verify: both stores are scanned side by side; counts per
subspace and a BLAKE2b checksum are printed, and the first differing key if any.
Exit status: 0 if the stores are identical, 1 otherwise (or on an error).

Resumable: each batch also stores the last copied key in the destination (reserved key
0xFF "copy-progress", in the same transaction); after an interruption, run the same command
again and it continues after the last committed batch. The checkpoint is removed once the
copy is verified. Stop the server first: keys written during the copy would be missed.

  stalwart-mp store copy --config config.toml --from lmdb --to pg
  stalwart-mp store copy --config config.toml --from lmdb --to pg --verify-only

Only data stores (lmdb, sqlite, postgresql, mysql) can be copied for now; progress is
shown on standard error.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def cmd_store(args) -> int:
    from stalwart_mp.store import copy

    return {"copy": copy.main}[args.store_command](args)


def cmd_check(args) -> int:
    import asyncio

    from stalwart_mp.config.loader import ConfigInvalid, load_file
    from stalwart_mp.config.stored import load_merged, read_toml

    try:
        cfg = load_file(args.config)
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    settings: dict = {}
    if not args.file_only:
        try:
            settings = asyncio.run(_stored_settings(cfg))
        except Exception as exc:  # noqa: BLE001 - any store failure: say it, check the file
            print(f"{args.config}: the stored settings were not checked: the data store "
                  f'"{cfg.get("storage.data")}" cannot be read: {exc}', file=sys.stderr)
        if settings:
            try:
                cfg = load_merged(args.config, read_toml(args.config), settings)
            except ConfigInvalid as exc:
                print(exc, file=sys.stderr)
                return 1
    listeners = cfg.names("server.listener")
    with_stored = f" with {len(settings)} stored settings" if settings else ""
    print(f"{args.config}: configuration is valid{with_stored} ({len(listeners)} listeners: "
          + ", ".join(listeners) + ")")
    return 0


async def _stored_settings(cfg) -> dict:
    """The settings stored in the configuration's data store; {} when an embedded store
    (LMDB, SQLite) has not been created yet: checking must not create it."""
    from stalwart_mp.config.stored import read_stored
    from stalwart_mp.store.configured import open_data_store, store_settings

    settings = store_settings(cfg, cfg.get("storage.data"))
    if settings.get("type") in ("lmdb", "sqlite") and not Path(settings["path"]).exists():
        return {}
    data = await open_data_store(cfg)
    try:
        return await read_stored(data)
    finally:
        await data.close()


def cmd_init(args) -> int:
    from stalwart_mp.config.loader import ConfigInvalid, load_file
    from stalwart_mp.config.template import render
    from stalwart_mp.directory.bootstrap import create_first_admin
    from stalwart_mp.worker.registry import available_protocols

    folder: Path = args.dir.resolve()
    config_path = folder / "config.toml"
    if config_path.exists() and not args.force:
        print(f"{config_path} already exists (use --force to overwrite it; data is kept)",
              file=sys.stderr)
        return 1
    hostname = args.hostname or socket.getfqdn() or "localhost"
    folder.mkdir(parents=True, exist_ok=True)
    text = render(hostname, args.dev_ports, available_protocols(),
                  bind_host="127.0.0.1" if args.dev_ports else "0.0.0.0")
    config_path.write_text(text)
    try:
        cfg = load_file(config_path)
    except ConfigInvalid as exc:  # e.g. a hostname that is not a valid name
        print(exc, file=sys.stderr)
        return 1
    for key in ("server.data-dir", "server.run-dir"):
        cfg.path(key).mkdir(parents=True, exist_ok=True)
    password = args.admin_password or os.environ.get("STALWART_MP_ADMIN_PASSWORD")
    generated = not password
    if generated:
        password = secrets.token_urlsafe(18)
    created = create_first_admin(cfg, password)
    print(f"Wrote {config_path}")
    if created:
        print("Administrator account: admin")
        if generated:
            print(f"Administrator password: {password}")
            print("  (shown once: keep it somewhere safe)")
    else:
        print("The administrator account 'admin' already exists: its password is unchanged.")
    print(f"Start the server with: stalwart-mp serve --config {config_path}")
    if cfg.get("admin.enabled"):
        print(f"Web admin (once started): http://{cfg.get('admin.bind')}/ — sign in as admin")
    return 0


def cmd_serve(args) -> int:
    from stalwart_mp import logs
    from stalwart_mp.config.loader import ConfigInvalid
    from stalwart_mp.config.stored import load_for_start
    from stalwart_mp.master.arbiter import serve
    from stalwart_mp.master.privileges import PrivilegeError

    config_path = args.config.resolve()  # before --daemon changes the folder
    try:
        cfg, stored_problem = load_for_start(config_path)  # the file + the stored settings
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    logs.configure_from(cfg)
    if stored_problem is not None:  # start on the file alone: fix them over the control plane
        for error in stored_problem.errors:
            logging.getLogger("stalwart_mp.master").error(
                "stored settings left out", extra={"fields": {"error": str(error)}})
    if args.daemon:
        _daemonize()
    if args.pidfile:
        args.pidfile.write_text(f"{os.getpid()}\n")
    try:
        return serve(config_path, cfg)
    except PrivilegeError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.pidfile and args.pidfile.exists():
            args.pidfile.unlink()


def _daemonize() -> None:
    """Classic double fork: detach from the terminal and the session."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


if __name__ == "__main__":
    sys.exit(main())
