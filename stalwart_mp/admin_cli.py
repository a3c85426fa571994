"""``stalwart-mp-admin``: command-line client of the gRPC control plane."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from stalwart_mp.control.client import ControlStub, connect
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    principals_pb2,
    principals_pb2_grpc,
    server_pb2,
)
from stalwart_mp.control.token import TokenError, read_control_token

DEFAULT_CONTROL = "127.0.0.1:50051"
ENV_CONTROL = "STALWART_MP_CONTROL"
ENV_TOKEN_FILE = "STALWART_MP_TOKEN_FILE"

EXIT_OK = 0
EXIT_REFUSED = 1  # the server answered: reload refused, or it reported an error
EXIT_USAGE = 2  # bad arguments or an unusable token file
EXIT_UNREACHABLE = 3  # no control plane at that address, or no answer in time
EXIT_UNAUTHENTICATED = 4  # the control plane refused the token

DESCRIPTION = """\
Administer a running stalwart-mp server through its gRPC control plane.

The control plane listens where the server's config says (control.bind, default
127.0.0.1:50051, or a unix socket "unix:/path") and accepts only calls that carry its
token, which `stalwart-mp serve` keeps in control.token inside its run directory
(server.run-dir). Run this command on the server's host as a user who can read that file.
"""

EPILOG = f"""\
examples:
  stalwart-mp-admin --token-file /var/lib/stalwart-mp/run/control.token status
  export {ENV_TOKEN_FILE}=/var/lib/stalwart-mp/run/control.token
  stalwart-mp-admin status --json | jq .processes
  stalwart-mp-admin --control unix:/run/stalwart-mp/control.sock reload
  stalwart-mp-admin domain create example.org
  stalwart-mp-admin dns records example.org --zone
  stalwart-mp-admin account add alice --email alice@example.org --password-stdin
  stalwart-mp-admin account list --search example.org

exit status:
  {EXIT_OK}  success
  {EXIT_REFUSED}  the server answered with a failure (e.g. reload refused: config errors)
  {EXIT_USAGE}  bad arguments, or the token file is missing or unreadable
  {EXIT_UNREACHABLE}  the control plane cannot be reached or did not answer in time
  {EXIT_UNAUTHENTICATED}  the control plane refused the token
"""


class CliError(Exception):
    """A failure to report on one line, with the exit status to use."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stalwart-mp-admin", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--control", metavar="ADDRESS",
        default=os.environ.get(ENV_CONTROL) or DEFAULT_CONTROL,
        help=f'control plane address, "HOST:PORT" or "unix:/path" (default: ${ENV_CONTROL} '
        f"or {DEFAULT_CONTROL})",
    )
    parser.add_argument(
        "--token-file", metavar="PATH", type=Path,
        default=os.environ.get(ENV_TOKEN_FILE) or None,
        help=f"file holding the control token: control.token in the server's run directory "
        f"(default: ${ENV_TOKEN_FILE})",
    )
    parser.add_argument(
        "--timeout", metavar="SECONDS", type=float, default=10.0,
        help="how long to wait for an answer (default: %(default)s; reload waits for the "
        "master to finish, at least 35 s)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = commands.add_parser(
        "status", help="show the server's processes, listeners and configuration",
        description="Show the master, its configuration generation, every child process "
        "(workers, control, queue, admin) and every listener.",
    )
    status.add_argument("--json", action="store_true",
                        help="print the status as JSON (field names as in server.proto)")
    status.set_defaults(run=cmd_status)
    reload = commands.add_parser(
        "reload", help="reload the configuration file (like SIGHUP to the master)",
        description="Ask the master to reload its configuration file and wait for the outcome. "
        "Workers are replaced gracefully. A configuration with errors is refused and the "
        f"running one is kept: the errors are printed and the exit status is {EXIT_REFUSED}.",
    )
    reload.add_argument("--json", action="store_true", help="print the result as JSON")
    reload.set_defaults(run=cmd_reload)
    from stalwart_mp.admin_cli_domains import add_dns_commands, add_domain_commands

    add_domain_commands(commands)
    add_dns_commands(commands)
    _add_account_commands(commands)
    return parser


def _add_account_commands(commands: Any) -> None:
    account = commands.add_parser(
        "account", help="manage the accounts of the internal directory",
        description="Create, list, show, change the password of and delete accounts. With an "
        "external directory (SQL, LDAP) accounts are managed there, and these commands fail.",
    )
    actions = account.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add", help="create an account",
        description="Create an account (login NAME) with its addresses, the primary one "
        "first; their domains must exist (`domain add`).",
    )
    add.add_argument("name", help="login name of the account, e.g. alice")
    add.add_argument("--email", metavar="ADDRESS", action="append", default=[], required=True,
                     help="an address of the account; repeat for aliases (primary first)")
    secret = add.add_mutually_exclusive_group()
    secret.add_argument("--password", metavar="PASSWORD",
                        help="the password (visible to other users in the process list: "
                        "prefer --password-stdin)")
    secret.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    add.add_argument("--quota", metavar="BYTES", type=_quota, default=0,
                     help="storage quota in bytes (default: 0, unlimited)")
    add.add_argument("--admin", action="store_true",
                     help='grant the role "admin" (in addition to "user")')
    add.add_argument("--description", default="", help="free text, e.g. the full name")
    add.add_argument("--json", action="store_true", help="print the account as JSON")
    add.set_defaults(run=cmd_account_add)

    listing = actions.add_parser("list", help="list the accounts",
                                 description="List the accounts in name order.")
    listing.add_argument("--search", metavar="TEXT", default="",
                         help="only accounts whose name, description or addresses contain TEXT")
    listing.add_argument("--json", action="store_true", help="print the accounts as JSON")
    listing.set_defaults(run=cmd_account_list)

    show = actions.add_parser("show", help="show one account",
                              description="Show an account (never its password).")
    show.add_argument("name", help="login name of the account")
    show.add_argument("--json", action="store_true", help="print the account as JSON")
    show.set_defaults(run=cmd_account_show)

    passwd = actions.add_parser(
        "passwd", help="set the password of an account",
        description="Replace the password of an account (its app passwords are kept). The "
        "password is asked for on the terminal, or read from standard input.",
    )
    passwd.add_argument("name", help="login name of the account")
    passwd.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")
    passwd.set_defaults(run=cmd_account_passwd)

    delete = actions.add_parser(
        "delete", help="delete an account and its mail",
        description="Delete an account; its mail is purged in the background.",
    )
    delete.add_argument("name", help="login name of the account")
    delete.add_argument("--yes", action="store_true",
                        help="confirm: the account and its mail cannot be recovered")
    delete.set_defaults(run=cmd_account_delete)


def _quota(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of bytes") from None
    if value < 0:
        raise argparse.ArgumentTypeError("the quota must not be negative")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        token = _token(args.token_file)
        with connect(args.control, token) as stub:
            return args.run(stub, args)
    except CliError as exc:
        print(f"stalwart-mp-admin: {exc}", file=sys.stderr)
        return exc.status


def _token(path: Path | None) -> str:
    if path is None:
        raise CliError(
            f"no control token: pass --token-file PATH or set {ENV_TOKEN_FILE} to the "
            "control.token file in the server's run directory (server.run-dir)", EXIT_USAGE,
        )
    try:
        return read_control_token(path)
    except TokenError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def cmd_status(stub: ControlStub, args: argparse.Namespace) -> int:
    status = _call(stub.GetStatus, server_pb2.GetStatusRequest(), args.control, args.timeout)
    print(_to_json(status) if args.json else format_status(status))
    return EXIT_OK


def cmd_reload(stub: ControlStub, args: argparse.Namespace) -> int:
    result = _call(stub.Reload, server_pb2.ReloadRequest(), args.control,
                   max(args.timeout, 35.0))
    if args.json:
        print(_to_json(result))
    elif result.applied:
        print(f"reload applied: configuration generation {result.generation}")
    else:
        print(f"reload refused; generation {result.generation} stays in force:")
        for error in result.errors:
            print(f"  - {error}")
    return EXIT_OK if result.applied else EXIT_REFUSED


def _principals(stub: ControlStub) -> principals_pb2_grpc.PrincipalsStub:
    return principals_pb2_grpc.PrincipalsStub(stub.channel)


def cmd_account_add(stub: ControlStub, args: argparse.Namespace) -> int:
    password = args.password or ""
    if args.password_stdin:
        password = _stdin_password()
    request = principals_pb2.CreatePrincipalRequest(
        name=args.name, type="individual", password=password, emails=args.email,
        description=args.description, quota_bytes=args.quota,
        roles=["user", "admin"] if args.admin else [],
    )
    account = _call(_principals(stub).CreatePrincipal, request, args.control, args.timeout)
    if args.json:
        print(_to_json(account))
    else:
        print(f"account {account.name} created ({', '.join(account.emails)})"
              + ("" if password else "; it has no password yet: "
                 f"`stalwart-mp-admin account passwd {account.name}`"))
    return EXIT_OK


def cmd_account_list(stub: ControlStub, args: argparse.Namespace) -> int:
    accounts: list[principals_pb2.Principal] = []
    token = ""
    while True:
        page = _call(_principals(stub).ListPrincipals,
                     principals_pb2.ListPrincipalsRequest(
                         type="individual", search=args.search, page_token=token,
                         page_size=500),
                     args.control, args.timeout)
        accounts += page.principals
        token = page.next_page_token
        if not token:
            break
    if args.json:
        print(json.dumps([json.loads(_to_json(a)) for a in accounts], indent=2))
        return EXIT_OK
    rows = _table(
        ("NAME", "EMAILS", "QUOTA", "ROLES", "STATE"),
        [(a.name, ", ".join(a.emails), _size(a.quota_bytes), ", ".join(a.roles),
          "disabled" if a.disabled else "active") for a in accounts],
    )
    print("\n".join(row[2:] for row in rows) if accounts else "no accounts")
    return EXIT_OK


def cmd_account_show(stub: ControlStub, args: argparse.Namespace) -> int:
    p = _call(_principals(stub).GetPrincipal, principals_pb2.GetPrincipalRequest(name=args.name),
              args.control, args.timeout)
    if args.json:
        print(_to_json(p))
        return EXIT_OK
    rows = [
        ("name", p.name), ("id", str(p.id)), ("type", p.type),
        ("description", p.description or "-"), ("emails", ", ".join(p.emails) or "-"),
        ("quota", _size(p.quota_bytes)),
        ("max messages", str(p.quota_messages) if p.quota_messages else "unlimited"),
        ("roles", ", ".join(p.roles) or "-"), ("member of", ", ".join(p.member_of) or "-"),
        ("state", "disabled" if p.disabled else "active"),
        ("app passwords", ", ".join(p.app_passwords) or "-"),
    ]
    if p.members:
        rows.insert(5, ("members", ", ".join(p.members)))
    print("\n".join(f"{label:<14}{value}" for label, value in rows))
    return EXIT_OK


def cmd_account_passwd(stub: ControlStub, args: argparse.Namespace) -> int:
    if args.password_stdin:
        password = _stdin_password()
    else:
        import getpass

        if not sys.stdin.isatty():
            raise CliError("standard input is not a terminal: pass --password-stdin to read "
                           "the password from it", EXIT_USAGE)
        password = getpass.getpass(f"new password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            raise CliError("the passwords differ; nothing changed", EXIT_USAGE)
    _call(_principals(stub).SetPassword,
          principals_pb2.SetPasswordRequest(name=args.name, password=password),
          args.control, args.timeout)
    print(f"password of {args.name} changed")
    return EXIT_OK


def cmd_account_delete(stub: ControlStub, args: argparse.Namespace) -> int:
    if not args.yes:
        raise CliError(f"deleting {args.name} also deletes its mail, for good: "
                       "add --yes to confirm", EXIT_USAGE)
    _call(_principals(stub).DeletePrincipal,
          principals_pb2.DeletePrincipalRequest(name=args.name), args.control, args.timeout)
    print(f"account {args.name} deleted")
    return EXIT_OK


def _stdin_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CliError("no password on standard input (the first line is read)", EXIT_USAGE)
    return password


def _size(value: int) -> str:
    if not value:
        return "unlimited"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}".replace(".0 ", " ")
    return f"{value} B"


def _call(method: Callable[..., Any], request: Message, address: str, timeout: float) -> Any:
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as exc:
        raise _explain(exc, address) from None


def _explain(exc: grpc.RpcError, address: str) -> CliError:
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or ""  # type: ignore[attr-defined]
    if code == grpc.StatusCode.UNAVAILABLE and _is_connect_failure(details):
        return CliError(
            f"cannot reach the control plane at {address}: {_connect_reason(details)} — "
            "is `stalwart-mp serve` running, and is control.bind this address?",
            EXIT_UNREACHABLE,
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliError(f"the control plane at {address} did not answer in time: {details}",
                        EXIT_UNREACHABLE)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(f"the control plane at {address} refused the token: {details}",
                        EXIT_UNAUTHENTICATED)
    return CliError(f"the control plane at {address} answered {code.name}: {details}",
                    EXIT_REFUSED)


def _is_connect_failure(details: str) -> bool:
    text = details.lower()
    return any(s in text for s in ("failed to connect", "connection refused", "connect failed",
                                   "no such file", "name resolution", "dns resolution"))


def _connect_reason(details: str) -> str:
    text = details.lower()
    for needle, reason in (
        ("connection refused", "connection refused"),
        ("no such file", "no such socket file"),
        ("permission denied", "permission denied on the socket"),
        ("resolution", "cannot resolve the host name"),
        ("timed out", "connection timed out"),
    ):
        if needle in text:
            return reason
    return details


def _to_json(message: Message) -> str:
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )
    return json.dumps(data, indent=2)


# --- the readable status --------------------------------------------------------------------


def format_status(status: server_pb2.ServerStatus) -> str:
    """The status as text: a summary, then tables of processes and listeners."""
    lines = [
        f"stalwart-mp {status.version} on {status.hostname}",
        (f"master       pid {status.master_pid}, up {format_duration(status.uptime_seconds)} "
         f"(since {_when(status.started_at.ToSeconds())})"),
        f"config       {status.config_path}",
        f"generation   {status.generation} (loaded {_when(status.config_loaded_at.ToSeconds())})",
    ]
    if status.HasField("last_reload"):
        last = status.last_reload
        outcome = "applied" if last.applied else "REFUSED"
        lines.append(f"last reload  {outcome} at {_when(last.finished_at.ToSeconds())}, "
                     f"generation {last.generation}")
        lines += [f"             - {error}" for error in last.errors]
    else:
        lines.append("last reload  none since start")
    lines += ["", f"processes ({len(status.processes)})"]
    lines += _table(
        ("KIND", "PID", "GENERATION", "STARTED"),
        [(p.kind, str(p.pid), str(p.generation), _when(p.started_at.ToSeconds()))
         for p in status.processes],
    )
    lines += ["", f"listeners ({len(status.listeners)})"]
    lines += _table(
        ("NAME", "PROTOCOL", "TLS", "BIND"),
        [(entry.name, entry.protocol, "implicit" if entry.implicit_tls else "-",
          ", ".join(entry.bind)) for entry in status.listeners],
    )
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
            for row in [header, *rows]]


def format_duration(seconds: float) -> str:
    """``93784`` -> ``"1d 2h 3m 4s"``."""
    total = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if total >= size or parts:
            parts.append(f"{total // size}{unit}")
            total %= size
    parts.append(f"{total}s")
    return " ".join(parts)


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


if __name__ == "__main__":
    sys.exit(main())
