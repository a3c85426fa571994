"""Aliases: the extra addresses of accounts, groups and lists (every address but the
primary one), with search and paging, added to a principal or removed. An alias is an
address of its principal, so the changes are Principals.UpdatePrincipal calls."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from admin_web.context import control, login_required
from admin_web.forms import AliasForm, ConfirmForm
from admin_web.grpc_client import ControlError
from admin_web.views.principals import segment_of
from stalwart_mp.control.gen.stalwart_mp.v1 import principals_pb2 as pb

bp = Blueprint("aliases", __name__, url_prefix="/aliases")
PAGE_SIZE = 200  # principals read per page (each may have several aliases)


@bp.route("/", methods=["GET", "POST"])
@login_required
def index() -> str | Response | tuple[str, int]:
    form = AliasForm()
    code = 200
    if form.validate_on_submit():
        address, owner = form.address.data.strip(), form.owner.data.strip()
        try:
            control().principals.UpdatePrincipal(pb.UpdatePrincipalRequest(
                name=owner, add_emails=[address]))
        except ControlError as exc:
            form.address.errors.append(str(exc))
            code = 400
        else:
            flash(f"{address} now reaches {owner}.", "success")
            return redirect(url_for("aliases.index", q=address))
    elif form.is_submitted():
        code = 400
    search = request.args.get("q", "").strip()
    page = control().principals.ListPrincipals(pb.ListPrincipalsRequest(
        search=search, page_token=request.args.get("after", ""), page_size=PAGE_SIZE))
    rows = [(alias, p) for p in page.principals if p.type != "domain"
            for alias in list(p.emails)[1:]
            if not search or search.lower() in alias.lower() or search.lower() in p.name.lower()]
    return render_template("aliases.html", form=form, rows=rows, page=page, search=search,
                           confirm=ConfirmForm(), segment_of=segment_of), code


@bp.route("/remove", methods=["POST"])
@login_required
def remove() -> Response:
    address, owner = request.form.get("address", ""), request.form.get("owner", "")
    try:
        control().principals.UpdatePrincipal(pb.UpdatePrincipalRequest(
            name=owner, remove_emails=[address]))
    except ControlError as exc:
        flash(f"{address} was not removed: {exc}", "error")
    else:
        flash(f"Alias {address} of {owner} removed.", "success")
    return redirect(url_for("aliases.index"))
