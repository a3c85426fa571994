"""Accounts, groups and mailing lists: list with search and paging, create, edit (names,
addresses and aliases, quota with its usage, roles, members, password reset, app
passwords, two-factor authentication) and delete with confirmation. Everything goes through the Principals service.
"""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from admin_web.context import control, login_required
from admin_web.forms import (
    AddressForm,
    AppPasswordForm,
    ConfirmForm,
    MemberForm,
    PasswordForm,
    PrincipalEditForm,
    PrincipalForm,
)
from admin_web.grpc_client import ControlError
from stalwart_mp.control.gen.stalwart_mp.v1 import principals_pb2 as pb

bp = Blueprint("principals", __name__)
PAGE_SIZE = 50
MIB = 1024 * 1024

# URL segment -> (principal type, singular, plural)
KINDS = {
    "accounts": ("individual", "account", "Accounts"),
    "groups": ("group", "group", "Groups"),
    "lists": ("list", "mailing list", "Mailing lists"),
}
_SEGMENT = {t: seg for seg, (t, _, _) in KINDS.items()}


def _kind(segment: str) -> tuple[str, str, str]:
    if segment not in KINDS:
        abort(404)
    return KINDS[segment]


def segment_of(principal_type: str) -> str:
    return _SEGMENT.get(principal_type, "accounts")


@bp.route("/<any(accounts, groups, lists):kind>/", methods=["GET", "POST"])
@login_required
def index(kind: str) -> str | Response | tuple[str, int]:
    ptype, singular, plural = _kind(kind)
    form = PrincipalForm()
    code = 200
    if form.validate_on_submit():
        name = form.name.data.strip()
        request_ = pb.CreatePrincipalRequest(
            name=name, type=ptype, description=form.description.data or "",
            emails=form.email_list(), members=form.member_list(),
            quota_bytes=(form.quota_mb.data or 0) * MIB,
        )
        if ptype == "individual":
            request_.password = form.password.data or ""
            request_.roles.extend(["user", "admin"] if form.admin.data else ["user"])
        try:
            control().principals.CreatePrincipal(request_)
        except ControlError as exc:
            form.name.errors.append(str(exc))
            code = 400
        else:
            flash(f"{singular.capitalize()} {name} created.", "success")
            return redirect(url_for("principals.edit", kind=kind, name=name))
    elif form.is_submitted():
        code = 400
    search = request.args.get("q", "").strip()
    page = control().principals.ListPrincipals(pb.ListPrincipalsRequest(
        type=ptype, search=search, page_token=request.args.get("after", ""),
        page_size=PAGE_SIZE))
    return render_template("principals.html", form=form, page=page, search=search,
                           kind=kind, ptype=ptype, singular=singular, plural=plural), code


def _load(kind: str, name: str) -> tuple[pb.Principal, pb.Usage | None, list]:
    ptype = _kind(kind)[0]
    principal = control().principals.GetPrincipal(pb.GetPrincipalRequest(name=name))
    if principal.type != ptype:
        abort(404)
    usage = apps = None
    if ptype == "individual":
        usage = control().principals.GetUsage(pb.GetUsageRequest(name=name))
        apps = control().principals.ListAppPasswords(
            pb.ListAppPasswordsRequest(name=name)).app_passwords
    return principal, usage, list(apps or [])


def _page(kind: str, name: str, code: int = 200, **forms: object) -> tuple[str, int]:
    principal, usage, apps = _load(kind, name)
    edit_form = forms.pop("edit_form", None) or PrincipalEditForm(
        formdata=None, new_name=principal.name, description=principal.description,
        quota_mb=principal.quota_bytes // MIB if principal.quota_bytes else None,
        quota_messages=principal.quota_messages or None,
        roles=", ".join(principal.roles), disabled=principal.disabled)
    ptype, singular, plural = _kind(kind)
    return render_template(
        "principal.html", p=principal, usage=usage, apps=apps, kind=kind, ptype=ptype,
        singular=singular, plural=plural, edit_form=edit_form,
        address_form=forms.pop("address_form", None) or AddressForm(formdata=None),
        member_form=forms.pop("member_form", None) or MemberForm(formdata=None),
        password_form=forms.pop("password_form", None) or PasswordForm(formdata=None),
        app_form=forms.pop("app_form", None) or AppPasswordForm(formdata=None),
        confirm=ConfirmForm(), **forms), code


@bp.route("/<any(accounts, groups, lists):kind>/<name>", methods=["GET", "POST"])
@login_required
def edit(kind: str, name: str) -> str | Response | tuple[str, int]:
    form = PrincipalEditForm()
    if not form.is_submitted():
        return _page(kind, name)
    if not form.validate():
        return _page(kind, name, 400, edit_form=form)
    update = pb.UpdatePrincipalRequest(name=name, description=form.description.data or "",
                                       disabled=bool(form.disabled.data))
    if _kind(kind)[0] == "individual":  # quotas are an account's (no field for the others)
        update.quota_bytes = (form.quota_mb.data or 0) * MIB
        update.quota_messages = form.quota_messages.data or 0
    update.roles.values.extend(form.role_list())
    new_name = form.new_name.data.strip()
    try:
        control().principals.UpdatePrincipal(update)
        if new_name != name:
            control().principals.RenamePrincipal(pb.RenamePrincipalRequest(
                name=name, new_name=new_name))
    except ControlError as exc:
        form.new_name.errors.append(str(exc))
        return _page(kind, name, 400, edit_form=form)
    flash(f"{new_name} saved.", "success")
    return redirect(url_for("principals.edit", kind=kind, name=new_name))


def _update(kind: str, name: str, done: str, **changes: object) -> Response | None:
    try:
        control().principals.UpdatePrincipal(pb.UpdatePrincipalRequest(name=name, **changes))
    except ControlError as exc:
        flash(str(exc), "error")
        return None
    flash(done, "success")
    return redirect(url_for("principals.edit", kind=kind, name=name))


@bp.route("/<any(accounts, groups, lists):kind>/<name>/addresses", methods=["POST"])
@login_required
def add_address(kind: str, name: str) -> str | Response | tuple[str, int]:
    form = AddressForm()
    if form.validate_on_submit():
        address = form.address.data.strip()
        done = _update(kind, name, f"Address {address} added.", add_emails=[address])
        if done is not None:
            return done
    return _page(kind, name, 400, address_form=form)


@bp.route("/<any(accounts, groups, lists):kind>/<name>/addresses/remove", methods=["POST"])
@login_required
def remove_address(kind: str, name: str) -> Response | tuple[str, int]:
    address = request.form.get("address", "")
    return (_update(kind, name, f"Address {address} removed.", remove_emails=[address])
            or _page(kind, name, 400))


@bp.route("/<any(groups, lists):kind>/<name>/members", methods=["POST"])
@login_required
def add_member(kind: str, name: str) -> str | Response | tuple[str, int]:
    form = MemberForm()
    if form.validate_on_submit():
        member = form.member.data.strip()
        done = _update(kind, name, f"{member} added.", add_members=[member])
        if done is not None:
            return done
    return _page(kind, name, 400, member_form=form)


@bp.route("/<any(groups, lists):kind>/<name>/members/remove", methods=["POST"])
@login_required
def remove_member(kind: str, name: str) -> Response | tuple[str, int]:
    member = request.form.get("member", "")
    return (_update(kind, name, f"{member} removed.", remove_members=[member])
            or _page(kind, name, 400))


@bp.route("/accounts/<name>/password", methods=["POST"])
@login_required
def password(name: str) -> Response | tuple[str, int]:
    form = PasswordForm()
    if form.validate_on_submit():
        try:
            control().principals.SetPassword(pb.SetPasswordRequest(
                name=name, password=form.password.data))
        except ControlError as exc:
            form.password.errors.append(str(exc))
        else:
            flash(f"The password of {name} was replaced (its app passwords still work).",
                  "success")
            return redirect(url_for("principals.edit", kind="accounts", name=name))
    return _page("accounts", name, 400, password_form=form)


@bp.route("/accounts/<name>/app-passwords", methods=["POST"])
@login_required
def create_app_password(name: str) -> tuple[str, int]:
    form = AppPasswordForm()
    if form.validate_on_submit():
        try:
            created = control().principals.CreateAppPassword(pb.CreateAppPasswordRequest(
                name=name, label=form.label.data.strip()))
        except ControlError as exc:
            form.label.errors.append(str(exc))
        else:
            return _page("accounts", name, 200, new_secret=created)
    return _page("accounts", name, 400, app_form=form)


@bp.route("/accounts/<name>/app-passwords/revoke", methods=["POST"])
@login_required
def revoke_app_password(name: str) -> Response:
    label = request.form.get("label", "")
    try:
        control().principals.RevokeAppPassword(pb.RevokeAppPasswordRequest(
            name=name, label=label))
    except ControlError as exc:
        flash(str(exc), "error")
    else:
        flash(f"App password {label} revoked.", "success")
    return redirect(url_for("principals.edit", kind="accounts", name=name))


@bp.route("/accounts/<name>/totp", methods=["POST"])
@login_required
def enable_totp(name: str) -> Response | tuple[str, int]:
    """A new TOTP secret (replacing any previous one), shown once on the page it returns:
    as a QR code of the otpauth:// URI (what authenticator apps scan; inline SVG, so
    nothing leaves the page), the URI and the base32 secret. CSRF is checked app-wide
    (CSRFProtect), as for every POST."""
    try:
        enabled = control().principals.EnableTotp(pb.EnableTotpRequest(name=name))
    except ControlError as exc:
        flash(str(exc), "error")
        return redirect(url_for("principals.edit", kind="accounts", name=name))
    return _page("accounts", name, 200, new_totp=enabled,
                 totp_qr=totp_qr_svg(enabled.otpauth_uri))


def totp_qr_svg(uri: str) -> Markup:
    """The otpauth:// URI as an inline SVG QR code (segno: our own output, safe markup)."""
    import segno

    return Markup(segno.make(uri, error="m").svg_inline(scale=4, border=2, dark="#000",
                                                      light="#fff", title="TOTP key"))


@bp.route("/accounts/<name>/totp/disable", methods=["POST"])
@login_required
def disable_totp(name: str) -> Response:
    try:
        control().principals.DisableTotp(pb.DisableTotpRequest(name=name))
    except ControlError as exc:
        flash(str(exc), "error")
    else:
        flash(f"Two-factor authentication of {name} is off: the password alone logs in.",
              "success")
    return redirect(url_for("principals.edit", kind="accounts", name=name))


@bp.route("/<any(accounts, groups, lists):kind>/<name>/delete", methods=["GET", "POST"])
@login_required
def delete(kind: str, name: str) -> str | Response | tuple[str, int]:
    principal, _, _ = _load(kind, name)
    singular = _kind(kind)[1]
    form = ConfirmForm()
    back = url_for("principals.edit", kind=kind, name=name)
    if form.validate_on_submit():
        try:
            control().principals.DeletePrincipal(pb.DeletePrincipalRequest(name=name))
        except ControlError as exc:
            flash(f"{name} was not deleted: {exc}", "error")
            return render_template("confirm_delete.html", form=form, what=singular,
                                   name=name, back=back), 409
        flash(f"{singular.capitalize()} {name} deleted.", "success")
        return redirect(url_for("principals.index", kind=kind))
    detail = ("Its mail is deleted with it." if principal.type == "individual" else "")
    return render_template("confirm_delete.html", form=form, what=singular, name=name,
                           back=back, detail=detail)
