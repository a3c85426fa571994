"""Settings: the settings schema (``stalwart_mp.config``) rendered as forms grouped by
area, with the help text of each setting; a change is validated by the server
(Config.ValidateConfig) before it is stored (UpdateConfig) and applied (ReloadConfig),
and the outcome is shown. A raw view lists the bootstrap settings (those only the file
can set) and the stored ones.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, flash, render_template, request
from werkzeug.wrappers import Response

from admin_web.context import control, login_required
from admin_web.forms import ConfirmForm
from admin_web.grpc_client import ControlError
from stalwart_mp.config import schema as sch
from stalwart_mp.config.registry import load_settings_modules
from stalwart_mp.control.gen.stalwart_mp.v1 import config_pb2

bp = Blueprint("settings", __name__, url_prefix="/settings")
FIELD_PREFIX = "s:"
RESET_PREFIX = "reset:"

_STRINGS = (sch.Str, sch.Choice, sch.BindAddress)


@dataclass(slots=True)
class Field:
    """One setting as a form field."""

    key: str
    value: Any  # decoded JSON value in force
    text: str  # what the input shows
    source: str
    secret: bool
    bootstrap: bool
    setting: sch.Setting | None
    error: str = ""

    @property
    def widget(self) -> str:
        kind = self.setting.type if self.setting else None
        if isinstance(kind, sch.Bool):
            return "checkbox"
        if isinstance(kind, sch.Choice):
            return "select"
        if self.secret:
            return "password"
        if isinstance(kind, sch.ListOf):
            return "textarea"
        return "text"

    @property
    def choices(self) -> tuple[str, ...]:
        kind = self.setting.type if self.setting else None
        return kind.choices if isinstance(kind, sch.Choice) else ()

    @property
    def help(self) -> str:
        return self.setting.help if self.setting else ""

    @property
    def expected(self) -> str:
        return self.setting.type.label if self.setting else ""


def _shown(value: Any, setting: sch.Setting | None) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and setting and isinstance(setting.type, sch.ListOf):
        return "\n".join(v if isinstance(v, str) else json.dumps(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)


def _decode(text: str, kind: sch.Type | None) -> Any:
    """The JSON value to send for what a person typed, by the setting's type: strings stay
    strings, numbers and lists become numbers and lists; the server validates the rest."""
    if isinstance(kind, _STRINGS):
        return text
    if isinstance(kind, sch.ListOf):
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                return json.loads(stripped)
            except json.JSONDecodeError:
                return stripped  # the server explains what a list looks like
        return [_decode(line.strip(), kind.item) for line in stripped.splitlines()
                if line.strip()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()


def _bootstrap(key: str, prefixes: list[str]) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes)


def _fields(snapshot: config_pb2.ConfigSnapshot) -> OrderedDict[str, list[Field]]:
    """Every setting of the effective configuration, grouped by area (first key part)."""
    load_settings_modules()
    areas: OrderedDict[str, list[Field]] = OrderedDict()
    for row in snapshot.settings:
        setting = sch.SCHEMA.match(tuple(row.key.split(".")))
        value = json.loads(row.value)
        areas.setdefault(row.key.split(".", 1)[0], []).append(Field(
            key=row.key, value=value, text="" if row.secret else _shown(value, setting),
            source=row.source, secret=row.secret,
            bootstrap=_bootstrap(row.key, list(snapshot.bootstrap)), setting=setting))
    return OrderedDict(sorted(areas.items()))


@bp.route("/")
@login_required
def index() -> str:
    snapshot = control().config.GetConfig(config_pb2.GetConfigRequest())
    areas = _fields(snapshot)
    return render_template("settings_index.html", areas=areas, snapshot=snapshot)


@bp.route("/raw")
@login_required
def raw() -> str:
    snapshot = control().config.GetConfig(config_pb2.GetConfigRequest())
    bootstrap = [s for s in snapshot.settings
                 if _bootstrap(s.key, list(snapshot.bootstrap)) and s.source != "default"]
    return render_template("settings_raw.html", snapshot=snapshot, bootstrap=bootstrap)


@bp.route("/<area>", methods=["GET", "POST"])
@login_required
def area(area: str) -> str | Response | tuple[str, int]:
    plane = control()
    snapshot = plane.config.GetConfig(config_pb2.GetConfigRequest(prefix=f"{area}."))
    fields = _fields(snapshot).get(area)
    if not fields:
        abort(404)
    form = ConfirmForm()
    outcome: dict[str, Any] = {}
    code = 200
    if form.validate_on_submit():
        change = _change(fields, request.form)
        if not change.set and not change.unset:
            flash("Nothing changed.", "info")
        else:
            code = _apply(plane, change, fields, outcome)
    stored = {f.key for f in fields if f.source == "stored"}  # after a save too
    return render_template("settings_area.html", area=area, fields=fields, form=form,
                           stored=stored, outcome=outcome), code


def _change(fields: list[Field], form: Any) -> config_pb2.ConfigChange:
    change = config_pb2.ConfigChange()
    for f in fields:
        if f.bootstrap:
            continue
        if form.get(RESET_PREFIX + f.key):
            change.unset.append(f.key)
            continue
        kind = f.setting.type if f.setting else None
        if f.widget == "checkbox":
            new: Any = FIELD_PREFIX + f.key in form
            if new != f.value:
                change.set[f.key] = json.dumps(new)
            continue
        text = form.get(FIELD_PREFIX + f.key)
        if text is None or (f.secret and text == ""):
            continue
        text = text.replace("\r\n", "\n")
        if text.strip() == f.text.strip():
            continue
        change.set[f.key] = json.dumps(_decode(text, kind))
    return change


def _apply(plane: Any, change: config_pb2.ConfigChange, fields: list[Field],
           outcome: dict[str, Any]) -> int:
    """Validate, store, reload; fills ``outcome`` and the fields' errors; the status code."""
    result = plane.config.ValidateConfig(change)
    if not result.valid:
        by_key = {f.key: f for f in fields}
        for error in result.errors:
            if error.key in by_key:
                by_key[error.key].error = error.reason
        outcome["errors"] = [e.message for e in result.errors]
        for f in fields:  # show what was typed, not the value in force
            if f.key in change.set and not f.secret:
                f.text = _shown(json.loads(change.set[f.key]), f.setting)
        return 400
    try:
        plane.config.UpdateConfig(change)
    except ControlError as exc:
        outcome["errors"] = str(exc).splitlines()
        return 400
    try:
        reloaded = plane.config.ReloadConfig(config_pb2.ReloadConfigRequest(), timeout=40)
    except ControlError as exc:
        outcome["errors"] = ["Saved, but the reload was refused:", *str(exc).splitlines()]
        return 409
    changed = sorted([*change.set, *change.unset])
    outcome["applied"] = (f"Saved and reloaded: {', '.join(changed)}. Configuration "
                          f"generation {reloaded.generation} is in force.")
    snapshot = plane.config.GetConfig(config_pb2.GetConfigRequest(
        prefix=fields[0].key.split(".", 1)[0] + "."))
    fresh = {f.key: f for f in _fields(snapshot).get(fields[0].key.split(".", 1)[0], [])}
    for i, f in enumerate(fields):
        if f.key in fresh:
            fields[i] = fresh[f.key]
    return 200
