"""``stalwart-mp-admin``: command-line client of the gRPC control plane."""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from stalwart_mp.control.client import ClientTls, ControlStub, connect
from stalwart_mp.control.gen.stalwart_mp.v1 import server_pb2
from stalwart_mp.control.token import TokenError, read_control_token

DEFAULT_CONTROL = "127.0.0.1:50051"
ENV_SERVER = "STALWART_MP_SERVER"
ENV_CONTROL = "STALWART_MP_CONTROL"  # older name of STALWART_MP_SERVER
ENV_USER = "STALWART_MP_USER"
ENV_PASSWORD = "STALWART_MP_PASSWORD"
ENV_TOKEN_FILE = "STALWART_MP_TOKEN_FILE"
ENV_CLIENT_CONFIG = "STALWART_MP_ADMIN_CONFIG"
ENV_TLS_CA = "STALWART_MP_TLS_CA"
CLIENT_CONFIG = Path("~/.config/stalwart-mp/admin.toml")

EXIT_OK = 0
EXIT_REFUSED = 1  # the server answered with a failure: refused, invalid, not found, exists
EXIT_USAGE = 2  # bad arguments, or unusable credentials (token file, client config)
EXIT_UNREACHABLE = 3  # no control plane at that address, or no answer in time
EXIT_UNAUTHENTICATED = 4  # the control plane refused the token or the credentials
EXIT_FORBIDDEN = 5  # the credentials are valid but not an administrator's

DESCRIPTION = """\
Administer a running stalwart-mp server through its gRPC control plane.

The control plane listens where the server's config says (control.bind, default
127.0.0.1:50051, or a unix socket "unix:/path") and accepts calls that carry its token
(control.token in the server's run directory: --token-file) or the user name and password
of an account with the role "admin" (--user, --password).

Connection and credentials come from the options, else the environment
(STALWART_MP_SERVER, STALWART_MP_USER, STALWART_MP_PASSWORD, STALWART_MP_TOKEN_FILE), else
the client config file ~/.config/stalwart-mp/admin.toml (mode 0600), e.g.:

  server = "127.0.0.1:50051"   # or "unix:/run/stalwart-mp/control.sock"
  user = "admin"
  password = "..."             # or: token-file = "/var/lib/stalwart-mp/run/control.token"
"""

EPILOG = f"""\
examples:
  stalwart-mp-admin --token-file /var/lib/stalwart-mp/run/control.token server status
  export {ENV_SERVER}=127.0.0.1:50051 {ENV_USER}=admin {ENV_PASSWORD}=secret
  stalwart-mp-admin server status --json | jq .processes
  stalwart-mp-admin --server unix:/run/stalwart-mp/control.sock config reload
  stalwart-mp-admin domain create example.org
  stalwart-mp-admin dns records example.org --zone
  stalwart-mp-admin account create alice@example.org --password-stdin --name "Alice L."
  stalwart-mp-admin account update alice@example.org --quota 1000000000
  stalwart-mp-admin group create sales@example.org --member alice@example.org
  stalwart-mp-admin alias add alice@example.org al@example.org
  stalwart-mp-admin app-password create alice@example.org phone
  stalwart-mp-admin config set smtp.max-recipients 50 --reload

exit status:
  {EXIT_OK}  success
  {EXIT_REFUSED}  the server answered with a failure (invalid argument, not found, already
     exists, reload refused: config errors); the message says which
  {EXIT_USAGE}  bad arguments, or no usable credentials (token file, client config)
  {EXIT_UNREACHABLE}  the control plane cannot be reached or did not answer in time
  {EXIT_UNAUTHENTICATED}  the control plane refused the token or the user name and password
  {EXIT_FORBIDDEN}  the account is not an administrator (role "admin")
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
        "--server", "--control", dest="control", metavar="ADDRESS",
        help=f'control plane address, "HOST:PORT" or "unix:/path" (default: ${ENV_SERVER}, '
        f"the client config, or {DEFAULT_CONTROL})",
    )
    parser.add_argument("--user", metavar="NAME",
                        help=f"an administrator's login (default: ${ENV_USER} or the client "
                        "config); with it, the token file is not used")
    parser.add_argument("--password", metavar="PASSWORD",
                        help=f"its password (default: ${ENV_PASSWORD} or the client config; "
                        "asked on the terminal otherwise)")
    parser.add_argument(
        "--token-file", metavar="PATH", type=Path,
        help=f"file holding the control token: control.token in the server's run directory "
        f"(default: ${ENV_TOKEN_FILE} or the client config)",
    )
    parser.add_argument("--tls-ca", metavar="PATH", type=Path,
                        help=f"connect over TLS, trusting the CA certificates in PATH (the "
                        f"server sets control.tls.*; default: ${ENV_TLS_CA} or the client "
                        "config's tls-ca)")
    parser.add_argument("--tls-cert", metavar="PATH", type=Path,
                        help="this client's certificate, when the server asks for one "
                        "(control.tls.client-ca)")
    parser.add_argument("--tls-key", metavar="PATH", type=Path,
                        help="the private key of --tls-cert")
    parser.add_argument("--tls-server-name", metavar="NAME",
                        help="the name to verify in the server's certificate when --server "
                        "is an address it does not name")
    parser.add_argument(
        "--client-config", metavar="PATH", type=Path,
        help=f"client config file (default: ${ENV_CLIENT_CONFIG} or {CLIENT_CONFIG})",
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
    _add_server_commands(commands)
    from stalwart_mp.admin_cli_domains import add_dns_commands, add_domain_commands

    add_domain_commands(commands)
    add_dns_commands(commands)
    from stalwart_mp.admin_cli_config import add_config_commands
    from stalwart_mp.admin_cli_principals import add_principal_commands

    add_principal_commands(commands)
    add_config_commands(commands)
    from stalwart_mp.admin_cli_queue import add_queue_commands

    add_queue_commands(commands)
    return parser


def _add_server_commands(commands: Any) -> None:
    server = commands.add_parser("server", help="status and reload of the whole server",
                                 description="The running server: its processes, listeners "
                                 "and configuration generation; reloads.")
    actions = server.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="show processes, listeners and configuration",
                                description="Same as `stalwart-mp-admin status`.")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(run=cmd_status)
    reload = actions.add_parser("reload", help="reload the configuration (like SIGHUP)",
                                description="Same as `stalwart-mp-admin reload`.")
    reload.add_argument("--json", action="store_true", help="print the result as JSON")
    reload.set_defaults(run=cmd_reload)
    workers = actions.add_parser(
        "workers", help="change the number of worker processes now",
        description="Start or stop workers until COUNT run (like SIGTTIN/SIGTTOU to the "
        "master). Not kept across a reload or restart: `config set server.workers COUNT` "
        "keeps it.")
    workers.add_argument("count", type=int, help="worker processes wanted (1-512)")
    workers.set_defaults(run=cmd_workers)


def cmd_workers(stub: ControlStub, args: argparse.Namespace) -> int:
    status = _call(stub.SetWorkers, server_pb2.SetWorkersRequest(count=args.count),
                   args.control, max(args.timeout, 60.0))
    running = sum(1 for p in status.processes if p.kind == "worker")
    print(f"{running} workers running")
    return EXIT_OK


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
        connection = resolve_connection(args, os.environ)
        args.control = connection["server"]
        with connect(args.control, connection.get("token"), user=connection.get("user"),
                     password=connection.get("password"), tls=connection.get("tls")) as stub:
            return args.run(stub, args)
    except CliError as exc:
        print(f"stalwart-mp-admin: {exc}", file=sys.stderr)
        return exc.status


def resolve_connection(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """Where to connect and with which credentials: options, else the environment, else
    the client config file. Returns {"server", and "token" or "user" + "password"}."""
    file = _client_config(args.client_config or env.get(ENV_CLIENT_CONFIG) or None)
    server = (args.control or env.get(ENV_SERVER) or env.get(ENV_CONTROL)
              or file.get("server") or DEFAULT_CONTROL)
    tls = _client_tls(args, env, file)
    found = _credentials(args, env, file, server)
    if tls is not None:
        found["tls"] = tls
    return found


def _client_tls(args: argparse.Namespace, env: Mapping[str, str],
                file: dict[str, Any]) -> ClientTls | None:
    """TLS options: --tls-* options, else the environment (CA), else the client config."""
    def pick(option: Path | str | None, key: str, env_name: str | None = None) -> Any:
        return option or (env.get(env_name) if env_name else None) or file.get(key) or None

    ca = pick(args.tls_ca, "tls-ca", ENV_TLS_CA)
    cert = pick(args.tls_cert, "tls-cert")
    key = pick(args.tls_key, "tls-key")
    name = pick(args.tls_server_name, "tls-server-name")
    if not (ca or cert or key or name):
        return None
    if bool(cert) != bool(key):
        raise CliError("--tls-cert and --tls-key go together", EXIT_USAGE)

    def read(path: Any, what: str) -> bytes | None:
        if not path:
            return None
        try:
            return Path(str(path)).expanduser().read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read the {what} {path}: {exc}", EXIT_USAGE) from None

    return ClientTls(read(ca, "CA file"), read(cert, "client certificate"),
                     read(key, "client key"), str(name) if name else None)


def _credentials(args: argparse.Namespace, env: Mapping[str, str], file: dict[str, Any],
                 server: str) -> dict[str, Any]:
    # credentials: the first source that names some, in the order options, environment, file
    user: str | None = None
    token_file: Path | None = None
    if args.user or args.token_file:
        user, token_file = args.user, args.token_file
    elif env.get(ENV_USER) or env.get(ENV_TOKEN_FILE):
        user = env.get(ENV_USER) or None
        token_file = None if user else Path(env[ENV_TOKEN_FILE])
    elif file.get("user"):
        user = str(file["user"])
    elif file.get("token-file"):
        token_file = Path(str(file["token-file"])).expanduser()
    if user is not None:
        password = (args.password or env.get(ENV_PASSWORD)
                    or (file.get("password") if file.get("user") == user else None))
        if password is None:
            password = _ask_password(user)
        return {"server": server, "user": user, "password": str(password)}
    return {"server": server, "token": _token(token_file)}


def _client_config(path: str | Path | None) -> dict[str, Any]:
    """The client config file: the given one (it must exist), else the default (optional)."""
    explicit = path is not None
    path = Path(path if explicit else CLIENT_CONFIG).expanduser()
    try:
        st = path.stat()
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if explicit:
            raise CliError(f"client config {path} does not exist", EXIT_USAGE) from None
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read the client config {path}: {exc}", EXIT_USAGE) from None
    unknown = set(data) - {"server", "user", "password", "token-file", "tls-ca", "tls-cert",
                           "tls-key", "tls-server-name"}
    if unknown:
        raise CliError(f"client config {path}: unknown key(s) {', '.join(sorted(unknown))} "
                       "(expected server, user, password, token-file)", EXIT_USAGE)
    if "password" in data and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(f"client config {path} holds a password and has mode "
                       f"{stat.S_IMODE(st.st_mode):04o}: other users can read it; run "
                       f"`chmod 600 {path}`", EXIT_USAGE)
    return data


def _ask_password(user: str) -> str:
    if not sys.stdin.isatty():
        raise CliError(f"no password for {user}: pass --password, set {ENV_PASSWORD}, or put "
                       f"it in {CLIENT_CONFIG}", EXIT_USAGE)
    import getpass

    return getpass.getpass(f"password of {user}: ")


def _token(path: Path | None) -> str:
    if path is None:
        raise CliError(
            f"no credentials: pass --user NAME (and --password) of an administrator, or "
            f"--token-file PATH (or set {ENV_USER}/{ENV_PASSWORD} or {ENV_TOKEN_FILE}) to the "
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
            + _connect_hint(details), EXIT_UNREACHABLE)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliError(f"the control plane at {address} did not answer in time: {details}",
                        EXIT_UNREACHABLE)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(f"the control plane at {address} refused the credentials: {details}",
                        EXIT_UNAUTHENTICATED)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return CliError(f"the control plane at {address} refused: {details}", EXIT_FORBIDDEN)
    return CliError(f"the control plane at {address} answered {code.name}: {details}",
                    EXIT_REFUSED)


def _is_connect_failure(details: str) -> bool:
    text = details.lower()
    return any(s in text for s in ("failed to connect", "connection refused", "connect failed",
                                   "no such file", "name resolution", "dns resolution"))


def _connect_hint(details: str) -> str:
    text = details.lower()
    if "hostname verification" in text:
        return ("the certificate does not name that host: give the name it holds with "
                "--tls-server-name")
    if "certificate" in text or "handshake" in text or "ssl" in text:
        return "the TLS handshake failed: check --tls-ca, --tls-cert and --tls-key"
    if "socket closed" in text:
        return ("the server closed the connection: if it serves TLS (control.tls.*), "
                "connect with --tls-ca (and --tls-cert/--tls-key if it asks for a client "
                "certificate)")
    return "is `stalwart-mp serve` running, and is control.bind this address?"


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
    queue = str(status.queue_messages) if status.HasField("queue_messages") else "unknown"
    lines += [(f"messages     {status.messages_received} received, "
              f"{status.messages_delivered} delivered locally since start; {queue} queued "
              "for delivery")]
    lines += ["", (f"processes ({len(status.processes)}; "
              f"{status.workers_wanted or '?'} workers wanted)")]
    lines += _table(
        ("KIND", "PID", "GENERATION", "STARTED"),
        [(p.kind, str(p.pid), str(p.generation), _when(p.started_at.ToSeconds()))
         for p in status.processes],
    )
    lines += ["", f"listeners ({len(status.listeners)})"]
    lines += _table(
        ("NAME", "PROTOCOL", "TLS", "OPEN", "TOTAL", "BIND"),
        [(entry.name, entry.protocol, "implicit" if entry.implicit_tls else "-",
          str(entry.connections_active), str(entry.connections_total),
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
