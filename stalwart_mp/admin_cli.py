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
from stalwart_mp.control.gen.stalwart_mp.v1 import server_pb2
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
    return parser


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
