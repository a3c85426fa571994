"""The setup wizard, shown while the server has no domain yet (first start): the host
name (stored setting server.hostname, applied by a reload), the first domain with its
DKIM keys, a new password for the signed-in administrator, then the domain's DNS records.
"""
from __future__ import annotations

import json

from flask import Blueprint, flash, redirect, render_template, session, url_for
from werkzeug.wrappers import Response

from admin_web.context import control, login_required
from admin_web.forms import SetupForm
from admin_web.grpc_client import ControlError
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    config_pb2,
    domains_pb2,
    principals_pb2,
    server_pb2,
)

bp = Blueprint("setup", __name__, url_prefix="/setup")


@bp.route("/", methods=["GET", "POST"])
@login_required
def wizard() -> str | Response | tuple[str, int]:
    plane = control()
    if plane.domains.ListDomains(domains_pb2.ListDomainsRequest(page_size=1)).domains:
        return redirect(url_for("dashboard.index"))
    status = plane.server.GetStatus(server_pb2.GetStatusRequest())
    form = SetupForm(data={"hostname": status.hostname})  # what is typed takes precedence
    if not form.validate_on_submit():
        return render_template("setup.html", form=form), 400 if form.is_submitted() else 200
    hostname = form.hostname.data.strip().lower().rstrip(".")
    domain = form.domain.data.strip().lower().rstrip(".")
    try:
        if hostname != status.hostname:
            change = config_pb2.ConfigChange(set={"server.hostname": json.dumps(hostname)})
            plane.config.UpdateConfig(change)
            plane.config.ReloadConfig(config_pb2.ReloadConfigRequest(), timeout=40)
    except ControlError as exc:
        form.hostname.errors.append(str(exc))
        return render_template("setup.html", form=form), 400
    try:
        plane.domains.CreateDomain(principals_pb2.CreateDomainRequest(name=domain))
    except ControlError as exc:
        form.domain.errors.append(str(exc))
        return render_template("setup.html", form=form), 400
    if form.password.data:
        try:
            plane.principals.SetPassword(principals_pb2.SetPasswordRequest(
                name=session["user"], password=form.password.data))
        except ControlError as exc:
            flash(f"The domain was created, but the password was not changed: {exc}", "error")
            return redirect(url_for("domains.dns", name=domain))
    flash(f"{domain} is ready. Publish these DNS records in its zone, then check them.",
          "success")
    return redirect(url_for("domains.dns", name=domain))
