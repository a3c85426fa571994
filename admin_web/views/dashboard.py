"""The dashboard: server status and processes (Server.GetStatus), connections per
listener and message counters (the workers' Prometheus /metrics), the queue size
(Queue.ListMessages), the domains, and the disk use of the stores (admin_web.disk)."""
from __future__ import annotations

from collections import Counter

from flask import Blueprint, redirect, render_template, url_for
from werkzeug.wrappers import Response

from admin_web import metrics
from admin_web.context import admin_config, control, login_required
from admin_web.disk import store_disks
from admin_web.grpc_client import ControlDown, ControlError
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    config_pb2,
    domains_pb2,
    queue_pb2,
    server_pb2,
)

bp = Blueprint("dashboard", __name__)


@bp.route("/")
@login_required
def index() -> str | Response:
    plane = control()
    status = plane.server.GetStatus(server_pb2.GetStatusRequest())
    domains = plane.domains.ListDomains(domains_pb2.ListDomainsRequest(page_size=1000))
    if not domains.domains:
        return redirect(url_for("setup.wizard"))
    figures = metrics.scrape(admin_config().metrics_url)
    try:
        queued = plane.queue.ListMessages(queue_pb2.ListMessagesRequest(page_size=1000))
        queue_size: str = f"{len(queued.messages)}{'+' if queued.next_page_token else ''}"
    except ControlDown:
        raise
    except ControlError as exc:
        queue_size = f"unknown ({exc})"
    kinds = Counter(p.kind for p in status.processes)
    try:
        snapshot = plane.config.GetConfig(config_pb2.GetConfigRequest())
        disks = store_disks({s.key: s.value for s in snapshot.settings}, snapshot.config_path)
    except ControlDown:
        raise
    except ControlError:
        disks = []
    return render_template("dashboard.html", status=status, kinds=kinds, figures=figures,
                           domain_count=len(domains.domains),
                           more_domains=bool(domains.next_page_token), queue_size=queue_size,
                           disks=disks)
