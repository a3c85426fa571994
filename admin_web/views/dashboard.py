"""The dashboard: server status, processes, connections per listener, messages received
and delivered and the queue size (Server.GetStatus), refused connections (a worker's
Prometheus /metrics, when configured), the domains, the disk use of the stores
(admin_web.disk), and the number of workers (Server.SetWorkers)."""
from __future__ import annotations

from collections import Counter

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from admin_web import metrics
from admin_web.context import admin_config, control, login_required
from admin_web.disk import store_disks
from admin_web.forms import WorkersForm
from admin_web.grpc_client import ControlDown, ControlError
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    config_pb2,
    domains_pb2,
    server_pb2,
)

bp = Blueprint("dashboard", __name__)
SET_WORKERS_TIMEOUT = 70.0  # the control plane waits up to 60 s for the workers


@bp.route("/")
@login_required
def index() -> str | Response:
    plane = control()
    status = plane.server.GetStatus(server_pb2.GetStatusRequest())
    domains = plane.domains.ListDomains(domains_pb2.ListDomainsRequest(page_size=1000))
    if not domains.domains:
        return redirect(url_for("setup.wizard"))
    try:
        # "st": the store.* and storage.* settings in one call
        snapshot = plane.config.GetConfig(config_pb2.GetConfigRequest(prefix="st"))
        disks = store_disks({s.key: s.value for s in snapshot.settings}, snapshot.config_path)
    except ControlDown:
        raise
    except ControlError:
        disks = []
    kinds = Counter(p.kind for p in status.processes)
    form = WorkersForm(formdata=None, count=status.workers_wanted or kinds["worker"])
    return render_template(
        "dashboard.html", status=status, kinds=kinds,
        figures=metrics.scrape(admin_config().metrics_url), disks=disks, form=form,
        queue_size=status.queue_messages if status.HasField("queue_messages") else None,
        domain_count=len(domains.domains), more_domains=bool(domains.next_page_token))


@bp.route("/workers", methods=["POST"])
@login_required
def workers() -> Response:
    form = WorkersForm()
    if form.validate_on_submit():
        status = control().server.SetWorkers(server_pb2.SetWorkersRequest(
            count=form.count.data), timeout=SET_WORKERS_TIMEOUT)
        flash(f"{status.workers_wanted} worker processes are running (until the next reload "
              "or restart: set server.workers in Settings to keep it).", "success")
    else:
        errors = "; ".join(e for f in form for e in f.errors)
        flash(f"The number of workers was not changed: {errors}", "error")
    return redirect(request.referrer if request.referrer and request.referrer.startswith(
        request.host_url) else url_for("dashboard.index"))
