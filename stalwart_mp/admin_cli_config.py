"""``stalwart-mp-admin config get|set|unset|validate|reload``: the Config service.

Registered by ``admin_cli.build_parser``; shares its connection, error handling and exit
codes. Values are written as in the TOML file (``50``, ``true``, ``"30s"``, ``["a", "b"]``);
a bare word that is not TOML (``debug``, ``30s``) is taken as a string.
"""
from __future__ import annotations

import argparse
import json
import tomllib
from typing import Any

from stalwart_mp import admin_cli as cli
from stalwart_mp.control.client import ControlStub
from stalwart_mp.control.gen.stalwart_mp.v1 import config_pb2, config_pb2_grpc


def _config(stub: ControlStub) -> config_pb2_grpc.ConfigStub:
    return config_pb2_grpc.ConfigStub(stub.channel)


def parse_value(text: str) -> Any:
    """A TOML value (number, boolean, quoted string, list), or ``text`` itself as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignments(words: list[str]) -> dict[str, str]:
    """``KEY VALUE`` (two words) or ``KEY=VALUE ...`` -> {key: value as JSON}."""
    if len(words) == 2 and "=" not in words[0]:
        words = [f"{words[0]}={words[1]}"]
    out = {}
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not key.strip():
            raise cli.CliError(f"{word!r}: expected KEY=VALUE (or exactly KEY VALUE)",
                               cli.EXIT_USAGE)
        out[key.strip()] = json.dumps(parse_value(value.strip()))
    return out


def add_config_commands(commands: Any) -> None:
    config = commands.add_parser(
        "config", help="read, change and apply the server's settings",
        description="The configuration file holds the bootstrap settings (stores, "
        "directories, listeners, folders, control.bind); every other setting can also be "
        "stored in the data store, where it overrides the file. `set` and `unset` validate "
        "and store; `reload` makes the master apply the file and the stored settings.",
    )
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    get = actions.add_parser("get", help="show the effective configuration",
                             description="Show every setting with its value and where it "
                             "comes from (file, stored, default); secrets are redacted.")
    get.add_argument("prefix", nargs="?", default="",
                     help='only keys starting with this, e.g. "smtp." or a whole key')
    get.add_argument("--stored", action="store_true",
                     help="only the settings stored in the data store")
    get.add_argument("--json", action="store_true", help="print the result as JSON")
    get.set_defaults(run=cmd_config_get)

    for name, verb, runner in (("set", "validate and store", cmd_config_set),
                               ("validate", "check without storing", cmd_config_validate)):
        sub = actions.add_parser(
            name, help=f"{verb} settings",
            description=f"{verb.capitalize()} settings: `config {name} KEY VALUE` or "
            f"`config {name} KEY=VALUE ...`, plus --unset KEY. Every error is printed with its "
            f"key; the exit status is then {cli.EXIT_REFUSED} and nothing is stored."
            + (" Apply stored settings with `config reload` (or --reload)."
               if name == "set" else ""),
        )
        sub.add_argument("assignments", nargs="*", metavar="KEY=VALUE",
                         help="settings, values as in TOML (50, true, \"30s\", [\"a\"])")
        sub.add_argument("--unset", metavar="KEY", action="append", default=[],
                         help="remove a stored setting (the file's value applies again)")
        if name == "set":
            sub.add_argument("--reload", action="store_true",
                             help="reload at once when the change is stored")
        sub.add_argument("--json", action="store_true", help="print the result as JSON")
        sub.set_defaults(run=runner)

    unset = actions.add_parser("unset", help="remove stored settings",
                               description="Remove stored settings: the file's value or the "
                               "default applies again after `config reload`.")
    unset.add_argument("keys", nargs="+", metavar="KEY")
    unset.add_argument("--json", action="store_true", help="print the result as JSON")
    unset.set_defaults(run=cmd_config_unset)

    reload = actions.add_parser(
        "reload", help="apply the file and the stored settings",
        description="Ask the master to load the file and the stored settings and wait for "
        "the outcome. A configuration with errors is refused, the running one is kept, the "
        f"errors are printed and the exit status is {cli.EXIT_REFUSED}.")
    reload.add_argument("--json", action="store_true", help="print the result as JSON")
    reload.set_defaults(run=cmd_config_reload)


def cmd_config_get(stub: ControlStub, args: argparse.Namespace) -> int:
    snapshot = cli._call(_config(stub).GetConfig,
                         config_pb2.GetConfigRequest(prefix=args.prefix), args.control,
                         args.timeout)
    if args.json:
        if args.stored:
            print(json.dumps({s.key: json.loads(s.value) for s in snapshot.stored}, indent=2))
        else:
            print(cli._to_json(snapshot))
        return cli.EXIT_OK
    if args.stored:
        rows = [(s.key, s.value) for s in snapshot.stored]
        print("\n".join(r[2:] for r in cli._table(("KEY", "VALUE"), rows)) if rows
              else "no stored settings")
    else:
        rows = [(s.key, s.value, s.source) for s in snapshot.settings]
        print("\n".join(r[2:] for r in cli._table(("KEY", "VALUE", "SOURCE"), rows)) if rows
              else f"no setting starts with {args.prefix!r}")
    for error in snapshot.errors:
        print(f"error: {error.message}")
    return cli.EXIT_OK if not snapshot.errors else cli.EXIT_REFUSED


def _change(args: argparse.Namespace) -> config_pb2.ConfigChange:
    change = config_pb2.ConfigChange(set=parse_assignments(args.assignments),
                                     unset=args.unset)
    if not change.set and not change.unset:
        raise cli.CliError("nothing to do: give KEY=VALUE or --unset KEY", cli.EXIT_USAGE)
    return change


def cmd_config_validate(stub: ControlStub, args: argparse.Namespace) -> int:
    result = cli._call(_config(stub).ValidateConfig, _change(args), args.control, args.timeout)
    if args.json:
        print(cli._to_json(result))
    elif result.valid:
        print("valid")
    else:
        print(f"{len(result.errors)} error(s):")
        for error in result.errors:
            print(f"  - {error.message}")
    return cli.EXIT_OK if result.valid else cli.EXIT_REFUSED


def _store(stub: ControlStub, args: argparse.Namespace, change: config_pb2.ConfigChange) -> int:
    response = cli._call(_config(stub).UpdateConfig, change, args.control, args.timeout)
    if args.json:
        print(cli._to_json(response))
    else:
        for key, value in sorted(change.set.items()):
            print(f"stored {key} = {value}")
        for key in change.unset:
            print(f"removed {key}")
    if getattr(args, "reload", False):
        return cmd_config_reload(stub, args)
    if not args.json:
        print("apply with: stalwart-mp-admin config reload")
    return cli.EXIT_OK


def cmd_config_set(stub: ControlStub, args: argparse.Namespace) -> int:
    return _store(stub, args, _change(args))


def cmd_config_unset(stub: ControlStub, args: argparse.Namespace) -> int:
    return _store(stub, args, config_pb2.ConfigChange(unset=args.keys))


def cmd_config_reload(stub: ControlStub, args: argparse.Namespace) -> int:
    result = cli._call(_config(stub).ReloadConfig, config_pb2.ReloadConfigRequest(),
                       args.control, max(args.timeout, 35.0))
    if args.json:
        print(cli._to_json(result))
    else:
        print(f"reload applied: configuration generation {result.generation}")
    return cli.EXIT_OK
