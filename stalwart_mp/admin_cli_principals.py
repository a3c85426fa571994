"""``stalwart-mp-admin account|group|list|alias|app-password …``: the Principals service.

Registered by ``admin_cli.build_parser``; shares its connection, error handling and exit
codes. Accounts, groups and mailing lists are principals of the internal directory; an
alias is an extra address of a principal; app passwords are per-account secrets for mail
clients, shown once at creation.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from stalwart_mp import admin_cli as cli
from stalwart_mp.control.client import ControlStub
from stalwart_mp.control.gen.stalwart_mp.v1 import principals_pb2, principals_pb2_grpc

# kind -> (type in the proto, word used in messages)
KINDS = {"account": ("individual", "account"), "group": ("group", "group"),
         "list": ("list", "mailing list")}


def _principals(stub: ControlStub) -> principals_pb2_grpc.PrincipalsStub:
    return principals_pb2_grpc.PrincipalsStub(stub.channel)


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_principal_commands(commands: Any) -> None:
    _add_account_commands(commands)
    for kind in ("group", "list"):
        _add_collection_commands(commands, kind)
    _add_alias_commands(commands)
    _add_app_password_commands(commands)


# --- accounts -------------------------------------------------------------------------------


def _add_account_commands(commands: Any) -> None:
    account = commands.add_parser(
        "account", help="manage the accounts of the internal directory",
        description="Create, list, show, update, rename and delete accounts, change their "
        "password. With an external directory (SQL, LDAP) accounts are managed there, and "
        "these commands fail.",
    )
    actions = account.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", aliases=["add"], help="create an account",
        description="Create a mailbox account. `account create alice@example.org "
        "--password P` creates an account whose login is its address; with --email the "
        "login can be another name. Address domains must exist (`domain create`).",
    )
    create.add_argument("name", help="login of the account: its address, or a name")
    create.add_argument("--email", metavar="ADDRESS", action="append", default=[],
                        help="an address of the account (default: the login, if it is an "
                        "address); repeat for aliases, primary first")
    secret = create.add_mutually_exclusive_group()
    secret.add_argument("--password", metavar="PASSWORD",
                        help="the password (visible to other users in the process list: "
                        "prefer --password-stdin)")
    secret.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    create.add_argument("--quota", metavar="BYTES", type=cli._quota, default=0,
                        help="storage quota in bytes (default: 0, unlimited)")
    create.add_argument("--name", "--description", dest="description", default="",
                        metavar="TEXT", help='full name or other free text, e.g. "Alice Liddell"')
    create.add_argument("--admin", action="store_true",
                        help='grant the role "admin" (in addition to "user")')
    _json_flag(create)
    create.set_defaults(run=cmd_account_create)

    listing = actions.add_parser("list", help="list the accounts",
                                 description="List the accounts in name order.")
    listing.add_argument("--search", metavar="TEXT", default="",
                         help="only accounts whose name, description or addresses contain TEXT")
    _json_flag(listing)
    listing.set_defaults(run=cmd_principal_list, kind="account")

    show = actions.add_parser("show", help="show one account with its usage",
                              description="Show an account (never its password) and how "
                              "much of its quota its mail uses.")
    show.add_argument("name", help="login name of the account")
    _json_flag(show)
    show.set_defaults(run=cmd_principal_show, kind="account")

    update = actions.add_parser(
        "update", help="change an account",
        description="Change some fields of an account; the others are kept.")
    update.add_argument("name", help="login name of the account")
    update.add_argument("--name", "--description", dest="description", metavar="TEXT",
                        help="new full name / free text")
    update.add_argument("--quota", metavar="BYTES", type=cli._quota,
                        help="new storage quota in bytes (0: unlimited)")
    update.add_argument("--max-messages", metavar="N", type=cli._quota,
                        help="new maximum number of messages (0: unlimited)")
    update.add_argument("--add-email", metavar="ADDRESS", action="append", default=[],
                        help="add an address (alias); repeatable")
    update.add_argument("--remove-email", metavar="ADDRESS", action="append", default=[],
                        help="remove an address; repeatable")
    update.add_argument("--roles", metavar="ROLE,...",
                        help='replace the roles, e.g. "user,admin"')
    state = update.add_mutually_exclusive_group()
    state.add_argument("--disable", action="store_true",
                       help="the account can no longer log in nor receive mail")
    state.add_argument("--enable", action="store_true", help="enable the account again")
    _json_flag(update)
    update.set_defaults(run=cmd_principal_update, kind="account")

    rename = actions.add_parser("rename", help="give an account a new login name",
                                description="Rename an account; its mail and addresses stay.")
    rename.add_argument("name", help="current login name")
    rename.add_argument("new_name", help="new login name")
    rename.set_defaults(run=cmd_principal_rename, kind="account")

    passwd = actions.add_parser(
        "passwd", help="set the password of an account",
        description="Replace the password of an account (its app passwords are kept). The "
        "password is asked for on the terminal, or read from standard input.",
    )
    passwd.add_argument("name", help="login name of the account")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    passwd.set_defaults(run=cmd_account_passwd)

    totp = actions.add_parser(
        "totp", help="turn two-factor authentication (TOTP) on or off",
        description="Two-factor authentication with time-based codes (RFC 6238). `enable` "
        "creates a new secret (replacing any previous one) and prints it once, as an "
        "otpauth:// URI for an authenticator app; the account then logs in with "
        "PASSWORD$CODE (app passwords keep working alone). `disable` removes it.",
    )
    totp_actions = totp.add_subparsers(dest="totp_action", metavar="ACTION", required=True)
    for verb, run, text in (("enable", cmd_account_totp_enable, "create a TOTP secret"),
                            ("disable", cmd_account_totp_disable, "remove the TOTP secret")):
        sub = totp_actions.add_parser(verb, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("name", help="login name of the account")
        _json_flag(sub)
        sub.set_defaults(run=run)

    delete = actions.add_parser(
        "delete", help="delete an account and its mail",
        description="Delete an account; its mail is purged in the background.",
    )
    delete.add_argument("name", help="login name of the account")
    delete.add_argument("--yes", action="store_true",
                        help="confirm: the account and its mail cannot be recovered")
    delete.set_defaults(run=cmd_principal_delete, kind="account")


def cmd_account_create(stub: ControlStub, args: argparse.Namespace) -> int:
    password = args.password or ""
    if args.password_stdin:
        password = cli._stdin_password()
    emails = args.email or ([args.name] if "@" in args.name else [])
    if not emails:
        raise cli.CliError(f'"{args.name}" is not an address: give the account one with '
                           "--email ADDRESS", cli.EXIT_USAGE)
    request = principals_pb2.CreatePrincipalRequest(
        name=args.name, type="individual", password=password, emails=emails,
        description=args.description, quota_bytes=args.quota,
        roles=["user", "admin"] if args.admin else [],
    )
    account = cli._call(_principals(stub).CreatePrincipal, request, args.control, args.timeout)
    if args.json:
        print(cli._to_json(account))
    else:
        print(f"account {account.name} created ({', '.join(account.emails)})"
              + ("" if password else "; it has no password yet: "
                 f"`stalwart-mp-admin account passwd {account.name}`"))
    return cli.EXIT_OK


def cmd_account_passwd(stub: ControlStub, args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = cli._stdin_password()
    else:
        import getpass

        if not sys.stdin.isatty():
            raise cli.CliError("standard input is not a terminal: pass --password-stdin to "
                               "read the password from it", cli.EXIT_USAGE)
        password = getpass.getpass(f"new password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise cli.CliError("the passwords differ; nothing changed", cli.EXIT_USAGE)
    cli._call(_principals(stub).SetPassword,
              principals_pb2.SetPasswordRequest(name=args.name, password=password),
              args.control, args.timeout)
    print(f"password of {args.name} changed")
    return cli.EXIT_OK


def cmd_account_totp_enable(stub: ControlStub, args: argparse.Namespace) -> int:
    enabled = cli._call(_principals(stub).EnableTotp,
                        principals_pb2.EnableTotpRequest(name=args.name), args.control,
                        args.timeout)
    if args.json:
        print(cli._to_json(enabled))
        return cli.EXIT_OK
    print(f"two-factor authentication enabled for {args.name}")
    print(f"  otpauth URI: {enabled.otpauth_uri}")
    print(f"  secret:      {enabled.secret}")
    print("  (shown once: add it to an authenticator app now)")
    print(f"{args.name} now logs in with PASSWORD$CODE, e.g. mypassword$123456 (the 6-digit "
          "code of the app); app passwords keep working alone")
    return cli.EXIT_OK


def cmd_account_totp_disable(stub: ControlStub, args: argparse.Namespace) -> int:
    cli._call(_principals(stub).DisableTotp,
              principals_pb2.DisableTotpRequest(name=args.name), args.control, args.timeout)
    if args.json:
        print(json.dumps({"name": args.name, "totp": False}))
    else:
        print(f"two-factor authentication disabled for {args.name}: the password alone logs "
              "in again")
    return cli.EXIT_OK


# --- groups and mailing lists ---------------------------------------------------------------


def _add_collection_commands(commands: Any, kind: str) -> None:
    word = KINDS[kind][1]
    what = "principal names" if kind == "group" else "addresses"
    parser = commands.add_parser(
        kind, help=f"manage the {word}s of the internal directory",
        description=(f"Manage {word}s. Members of a group are accounts or groups (names); "
                     "mail to the group's addresses goes to every member."
                     if kind == "group" else
                     "Manage mailing lists. Members are addresses, local or not; mail to "
                     "the list's address is sent to every member."),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help=f"create a {word}",
                                description=f"Create a {word} with its addresses and members.")
    create.add_argument("name", help=f"name of the {word} (an address gives it that address)")
    create.add_argument("--email", metavar="ADDRESS", action="append", default=[],
                        help="an address (default: the name, if it is an address); repeatable")
    create.add_argument("--member", metavar="MEMBER", action="append", default=[],
                        help=f"a member ({what}); repeatable")
    create.add_argument("--description", default="", metavar="TEXT",
                        help="free text for administrators")
    _json_flag(create)
    create.set_defaults(run=cmd_collection_create, kind=kind)

    listing = actions.add_parser("list", help=f"list the {word}s",
                                 description=f"List the {word}s in name order.")
    listing.add_argument("--search", metavar="TEXT", default="",
                         help="only those whose name, description or addresses contain TEXT")
    _json_flag(listing)
    listing.set_defaults(run=cmd_principal_list, kind=kind)

    show = actions.add_parser("show", help=f"show a {word} and its members",
                              description=f"Show a {word} with its addresses and members.")
    show.add_argument("name", help=f"name of the {word}")
    _json_flag(show)
    show.set_defaults(run=cmd_principal_show, kind=kind)

    update = actions.add_parser("update", help=f"change a {word}",
                                description=f"Add or remove members and addresses of a {word}.")
    update.add_argument("name", help=f"name of the {word}")
    update.add_argument("--add-member", metavar="MEMBER", action="append", default=[],
                        help=f"add a member ({what}); repeatable")
    update.add_argument("--remove-member", metavar="MEMBER", action="append", default=[],
                        help="remove a member; repeatable")
    update.add_argument("--add-email", metavar="ADDRESS", action="append", default=[],
                        help="add an address; repeatable")
    update.add_argument("--remove-email", metavar="ADDRESS", action="append", default=[],
                        help="remove an address; repeatable")
    update.add_argument("--description", metavar="TEXT", help="new free text")
    _json_flag(update)
    update.set_defaults(run=cmd_principal_update, kind=kind)

    rename = actions.add_parser("rename", help=f"rename a {word}",
                                description=f"Give a {word} a new name.")
    rename.add_argument("name", help="current name")
    rename.add_argument("new_name", help="new name")
    rename.set_defaults(run=cmd_principal_rename, kind=kind)

    delete = actions.add_parser("delete", help=f"delete a {word}",
                                description=f"Delete a {word} (its members are kept).")
    delete.add_argument("name", help=f"name of the {word}")
    delete.set_defaults(run=cmd_principal_delete, kind=kind, yes=True)


def cmd_collection_create(stub: ControlStub, args: argparse.Namespace) -> int:
    kind, word = KINDS[args.kind]
    emails = args.email or ([args.name] if "@" in args.name else [])
    p = cli._call(_principals(stub).CreatePrincipal, principals_pb2.CreatePrincipalRequest(
        name=args.name, type=kind, emails=emails, members=args.member,
        description=args.description), args.control, args.timeout)
    if args.json:
        print(cli._to_json(p))
    else:
        print(f"{word} {p.name} created ({len(p.members)} members)")
    return cli.EXIT_OK


# --- shared by accounts, groups and lists ---------------------------------------------------


def _get_checked(stub: ControlStub, args: argparse.Namespace) -> principals_pb2.Principal:
    """The principal named ``args.name``, which must be of the command's kind (exit 1)."""
    kind, word = KINDS[args.kind]
    p = cli._call(_principals(stub).GetPrincipal,
                  principals_pb2.GetPrincipalRequest(name=args.name), args.control,
                  args.timeout)
    if p.type != kind:
        raise cli.CliError(f'"{args.name}" is a {p.type}, not a {word}', cli.EXIT_REFUSED)
    return p


def all_principals(stub: ControlStub, args: argparse.Namespace, kind: str = "",
                   search: str = "") -> list[principals_pb2.Principal]:
    """Every principal of ``kind`` (all kinds when empty), following the pages."""
    found: list[principals_pb2.Principal] = []
    token = ""
    while True:
        page = cli._call(_principals(stub).ListPrincipals,
                         principals_pb2.ListPrincipalsRequest(
                             type=kind, search=search, page_token=token, page_size=500),
                         args.control, args.timeout)
        found += page.principals
        token = page.next_page_token
        if not token:
            return found


def _print_json_list(messages: list) -> None:
    print(json.dumps([json.loads(cli._to_json(m)) for m in messages], indent=2))


def cmd_principal_list(stub: ControlStub, args: argparse.Namespace) -> int:
    kind, word = KINDS[args.kind]
    found = all_principals(stub, args, kind, args.search)
    if args.json:
        _print_json_list(found)
        return cli.EXIT_OK
    if not found:
        print(f"no {word}s")
        return cli.EXIT_OK
    if args.kind == "account":
        rows = cli._table(
            ("NAME", "EMAILS", "QUOTA", "ROLES", "STATE"),
            [(a.name, ", ".join(a.emails), cli._size(a.quota_bytes), ", ".join(a.roles),
              "disabled" if a.disabled else "active") for a in found])
    else:
        rows = cli._table(("NAME", "EMAILS", "MEMBERS", "DESCRIPTION"),
                          [(p.name, ", ".join(p.emails), str(len(p.members)), p.description)
                           for p in found])
    print("\n".join(row[2:] for row in rows))
    return cli.EXIT_OK


def cmd_principal_show(stub: ControlStub, args: argparse.Namespace) -> int:
    p = _get_checked(stub, args)
    usage = None
    if args.kind == "account":
        usage = cli._call(_principals(stub).GetUsage,
                          principals_pb2.GetUsageRequest(name=p.name), args.control,
                          args.timeout)
    if args.json:
        data = json.loads(cli._to_json(p))
        if usage is not None:
            data["usage"] = json.loads(cli._to_json(usage))
        print(json.dumps(data, indent=2))
        return cli.EXIT_OK
    rows = [
        ("name", p.name), ("id", str(p.id)), ("type", p.type),
        ("description", p.description or "-"), ("emails", ", ".join(p.emails) or "-"),
    ]
    if args.kind != "account":
        rows.append(("members", ", ".join(p.members) or "-"))
    else:
        assert usage is not None
        rows += [
            ("quota", cli._size(p.quota_bytes)),
            ("used", f"{cli._size(usage.used_bytes) if usage.used_bytes else '0 B'} in "
                     f"{usage.used_messages} messages"
                     + (f" ({100 * usage.used_bytes / p.quota_bytes:.0f}%)"
                        if p.quota_bytes else "")),
            ("max messages", str(p.quota_messages) if p.quota_messages else "unlimited"),
            ("roles", ", ".join(p.roles) or "-"),
            ("state", "disabled" if p.disabled else "active"),
            ("app passwords", ", ".join(p.app_passwords) or "-"),
            ("two-factor", "on (TOTP: log in with password$code)" if p.totp else "off"),
        ]
    rows.append(("member of", ", ".join(p.member_of) or "-"))
    print("\n".join(f"{label:<14}{value}" for label, value in rows))
    return cli.EXIT_OK


def cmd_principal_update(stub: ControlStub, args: argparse.Namespace) -> int:
    _, word = KINDS[args.kind]
    request = principals_pb2.UpdatePrincipalRequest(
        name=args.name, add_emails=args.add_email, remove_emails=args.remove_email,
        add_members=getattr(args, "add_member", []),
        remove_members=getattr(args, "remove_member", []))
    if args.description is not None:
        request.description = args.description
    if getattr(args, "quota", None) is not None:
        request.quota_bytes = args.quota
    if getattr(args, "max_messages", None) is not None:
        request.quota_messages = args.max_messages
    if getattr(args, "roles", None) is not None:
        request.roles.SetInParent()  # present even when empty: no roles at all
        request.roles.values.extend(r.strip() for r in args.roles.split(",") if r.strip())
    if getattr(args, "disable", False) or getattr(args, "enable", False):
        request.disabled = bool(args.disable)
    if request == principals_pb2.UpdatePrincipalRequest(name=args.name):
        raise cli.CliError("nothing to change: give at least one option (see --help)",
                           cli.EXIT_USAGE)
    _get_checked(stub, args)
    p = cli._call(_principals(stub).UpdatePrincipal, request, args.control, args.timeout)
    if args.json:
        print(cli._to_json(p))
    else:
        print(f"{word} {p.name} updated")
    return cli.EXIT_OK


def cmd_principal_rename(stub: ControlStub, args: argparse.Namespace) -> int:
    _, word = KINDS[args.kind]
    _get_checked(stub, args)
    p = cli._call(_principals(stub).RenamePrincipal, principals_pb2.RenamePrincipalRequest(
        name=args.name, new_name=args.new_name), args.control, args.timeout)
    print(f"{word} {args.name} renamed to {p.name}")
    return cli.EXIT_OK


def cmd_principal_delete(stub: ControlStub, args: argparse.Namespace) -> int:
    _, word = KINDS[args.kind]
    if not args.yes:
        raise cli.CliError(f"deleting {args.name} also deletes its mail, for good: "
                           "add --yes to confirm", cli.EXIT_USAGE)
    _get_checked(stub, args)
    cli._call(_principals(stub).DeletePrincipal,
              principals_pb2.DeletePrincipalRequest(name=args.name), args.control,
              args.timeout)
    print(f"{word} {args.name} deleted")
    return cli.EXIT_OK


# --- aliases ----------------------------------------------------------------------------------


def _add_alias_commands(commands: Any) -> None:
    alias = commands.add_parser(
        "alias", help="manage the extra addresses (aliases) of principals",
        description="An alias is an extra address of an account, group or list: mail to it "
        "is delivered as to the primary address. The first address is the primary one and "
        "is not an alias.",
    )
    actions = alias.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="give a principal more addresses",
                             description="Add addresses to a principal; their domains must "
                             "exist and nobody else may own them.")
    add.add_argument("name", help="name of the account, group or list")
    add.add_argument("address", nargs="+", help="the addresses to add")
    add.set_defaults(run=cmd_alias_change, remove=False)
    remove = actions.add_parser("remove", help="remove addresses from a principal",
                                description="Remove addresses from a principal.")
    remove.add_argument("name", help="name of the account, group or list")
    remove.add_argument("address", nargs="+", help="the addresses to remove")
    remove.set_defaults(run=cmd_alias_change, remove=True)
    listing = actions.add_parser("list", help="list aliases",
                                 description="List the aliases of one principal, or of all.")
    listing.add_argument("name", nargs="?", help="only this principal's aliases")
    _json_flag(listing)
    listing.set_defaults(run=cmd_alias_list)


def cmd_alias_change(stub: ControlStub, args: argparse.Namespace) -> int:
    request = principals_pb2.UpdatePrincipalRequest(name=args.name)
    (request.remove_emails if args.remove else request.add_emails).extend(args.address)
    p = cli._call(_principals(stub).UpdatePrincipal, request, args.control, args.timeout)
    verb = "removed from" if args.remove else "added to"
    print(f"{', '.join(args.address)} {verb} {p.name} (addresses: {', '.join(p.emails) or '-'})")
    return cli.EXIT_OK


def cmd_alias_list(stub: ControlStub, args: argparse.Namespace) -> int:
    if args.name:
        principals = [cli._call(_principals(stub).GetPrincipal,
                                principals_pb2.GetPrincipalRequest(name=args.name),
                                args.control, args.timeout)]
    else:
        principals = [p for p in all_principals(stub, args) if p.type != "domain"]
    rows = [(alias, p.name, p.emails[0]) for p in principals for alias in p.emails[1:]]
    if args.json:
        print(json.dumps([{"alias": a, "name": n, "primary": e} for a, n, e in rows],
                         indent=2))
    elif rows:
        print("\n".join(r[2:] for r in cli._table(("ALIAS", "NAME", "PRIMARY"), rows)))
    else:
        print("no aliases")
    return cli.EXIT_OK


# --- app passwords ----------------------------------------------------------------------------


def _add_app_password_commands(commands: Any) -> None:
    app = commands.add_parser(
        "app-password", help="manage the app passwords of accounts",
        description="App passwords let a mail client log in without the account's password; "
        "each can be revoked alone. The secret is shown once, at creation.",
    )
    actions = app.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create an app password (secret shown once)",
                                description="Create an app password and print its secret.")
    create.add_argument("name", help="login name of the account")
    create.add_argument("label", help='name of the app password, e.g. "phone"')
    _json_flag(create)
    create.set_defaults(run=cmd_app_password_create)
    listing = actions.add_parser("list", help="list the app passwords of an account",
                                 description="List the names of an account's app passwords.")
    listing.add_argument("name", help="login name of the account")
    _json_flag(listing)
    listing.set_defaults(run=cmd_app_password_list)
    revoke = actions.add_parser("revoke", help="revoke an app password",
                                description="Delete an app password: it stops working at once.")
    revoke.add_argument("name", help="login name of the account")
    revoke.add_argument("label", help="name of the app password")
    revoke.set_defaults(run=cmd_app_password_revoke)


def cmd_app_password_create(stub: ControlStub, args: argparse.Namespace) -> int:
    created = cli._call(_principals(stub).CreateAppPassword,
                        principals_pb2.CreateAppPasswordRequest(name=args.name,
                                                                label=args.label),
                        args.control, args.timeout)
    if args.json:
        print(cli._to_json(created))
    else:
        print(f"app password {created.label} of {args.name}: {created.secret}")
        print("  (shown once: it is not stored and cannot be shown again)")
    return cli.EXIT_OK


def cmd_app_password_list(stub: ControlStub, args: argparse.Namespace) -> int:
    listed = cli._call(_principals(stub).ListAppPasswords,
                       principals_pb2.ListAppPasswordsRequest(name=args.name),
                       args.control, args.timeout)
    if args.json:
        _print_json_list(list(listed.app_passwords))
    elif listed.app_passwords:
        rows = cli._table(("NAME", "CREATED"),
                          [(a.label, cli._when(a.created_at.ToSeconds()))
                           for a in listed.app_passwords])
        print("\n".join(r[2:] for r in rows))
    else:
        print(f"{args.name} has no app passwords")
    return cli.EXIT_OK


def cmd_app_password_revoke(stub: ControlStub, args: argparse.Namespace) -> int:
    cli._call(_principals(stub).RevokeAppPassword,
              principals_pb2.RevokeAppPasswordRequest(name=args.name, label=args.label),
              args.control, args.timeout)
    print(f"app password {args.label} of {args.name} revoked")
    return cli.EXIT_OK
